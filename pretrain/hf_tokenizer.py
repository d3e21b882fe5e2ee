"""Tokenizer files of an exported model, written so that ``MLukeTokenizer.from_pretrained`` gives the ids
the model was trained on (fairseq/XLM-R layout, see ``data_prep.shards.spm``).

The trap (transformers 5.x, verified with 5.23.0 and tokenizers 0.23.3): ``MLukeTokenizer`` is a
``TokenizersBackend`` whose ``__init__`` builds ``Unigram(vocab, unk_id=0)`` from whatever vocabulary list
``from_pretrained`` hands it, and turns tokens into ids with the backend's ``token_to_id`` (its own
fairseq-offset code is bypassed). Given only ``sentencepiece.bpe.model`` it extracts the RAW spm
vocabulary (``<unk>``0 ``<s>``1 ``</s>``2, pieces at their spm ids), so every word id comes out one lower
than ``XLMRobertaTokenizer``'s, ``<s>`` becomes 1, ``<pad>`` is appended at the end, and the
``<ent>``/``<ent2>`` markers are registered as ``"▁<ent>"``/``"▁<ent2>"`` so ``"<ent>"`` maps to ``<unk>``.

When a ``tokenizer.json`` is present, ``from_pretrained`` takes the Unigram vocabulary LIST from it instead
(normaliser, pre-tokeniser and unk id are still MLukeTokenizer's own). So we write a ``tokenizer.json``
whose vocabulary is already in fairseq order::

    <s> <pad> </s> <unk> | spm pieces 3..n-1 (scores kept) | <mask>        (ids 0 .. n+1)

plus ``<ent>`` = n+2 and ``<ent2>`` = n+3 as added tokens, as the released mLUKE has them. The Unigram
model MLukeTokenizer rebuilds then yields the right piece ids; an unknown character comes out as its own
surface string, which ``convert_tokens_to_ids`` maps to ``unk_token_id`` = 3, as fairseq does. The file
itself is a complete, correct XLM-R tokenizer (spm's precompiled NFKC charsmap, ``unk_id`` 3), so
``XLMRobertaTokenizer`` / ``tokenizers.Tokenizer.from_file`` users get the same ids.

What stays different in MLukeTokenizer 5.23 (transformers' code, not fixable from files; documented in the
export README): it ignores the spm normaliser (no NFKC, no whitespace collapsing), so text that NFKC would
change (full-width forms, compatibility characters) tokenises differently unless normalised first; and with
``entity_spans`` a ``<mask>`` preceded by a space becomes ``<unk>`` (the lstrip-ed token string " <mask>"
is looked up verbatim). ``tokenizer_config.json`` stores the entity markers as ``AddedToken`` objects so
reloading does not add the ``"▁<ent>"`` variants.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from data_prep.entities.vocab_file import EntityVocab, write_hf_entity_vocab
from data_prep.shards.spm import XlmrSentencePiece

ENT_TOKENS = ("<ent>", "<ent2>")
ENTITY_SPECIALS = ("[UNK]", "[PAD]", "[MASK]", "[MASK2]")


def _added(content: str, id_: int, lstrip: bool = False) -> dict:
    return {
        "id": id_,
        "content": content,
        "single_word": False,
        "lstrip": lstrip,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def fairseq_tokenizer_json(spm_path: str | Path) -> dict:
    """A ``tokenizers`` JSON description of XLM-R's tokenizer over this spm model, in fairseq id order.

    Ids: ``<s>``0 ``<pad>``1 ``</s>``2 ``<unk>``3, spm piece i -> i+1, ``<mask>`` = n+1, ``<ent>`` = n+2,
    ``<ent2>`` = n+3 (n = number of spm pieces). Built from the spm proto, so the normaliser is spm's own
    precompiled charsmap (nmt_nfkc for XLM-R) followed by whitespace collapsing, as transformers'
    XLM-R converter does.
    """
    import base64

    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(spm_path).read_bytes())
    n = len(proto.pieces)
    vocab = [["<s>", 0.0], ["<pad>", 0.0], ["</s>", 0.0], ["<unk>", 0.0]]
    vocab += [[p.piece, float(p.score)] for p in proto.pieces[3:]]
    vocab.append(["<mask>", 0.0])
    normalizers = []
    charsmap = proto.normalizer_spec.precompiled_charsmap
    if charsmap:
        normalizers.append({"type": "Precompiled", "precompiled_charsmap": base64.b64encode(charsmap).decode("ascii")})
    normalizers.append({"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "})
    metaspace = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
    added = [_added("<s>", 0), _added("<pad>", 1), _added("</s>", 2), _added("<unk>", 3)]
    added += [_added("<mask>", n + 1, lstrip=True), _added("<ent>", n + 2), _added("<ent2>", n + 3)]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": metaspace,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "</s>", "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "</s>", "type_id": 0}},
                {"SpecialToken": {"id": "</s>", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 0}},
                {"SpecialToken": {"id": "</s>", "type_id": 0}},
            ],
            "special_tokens": {
                "<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]},
                "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]},
            },
        },
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": 3, "vocab": vocab, "byte_fallback": False},
    }


def _token_dict(content: str, lstrip: bool = False) -> dict:
    """An ``AddedToken`` as transformers serialises it in tokenizer_config.json (reloaded as-is)."""
    return {
        "__type": "AddedToken",
        "content": content,
        "lstrip": lstrip,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": True,
    }


def tokenizer_config(spm_size: int, max_seq_length: int, max_entity_length: int, max_mention_length: int) -> dict:
    n = spm_size
    decoder = {str(d["id"]): {k: v for k, v in d.items() if k != "id"} for d in (
        _added("<s>", 0), _added("<pad>", 1), _added("</s>", 2), _added("<unk>", 3),
        _added("<mask>", n + 1, lstrip=True), _added("<ent>", n + 2), _added("<ent2>", n + 3),
    )}
    return {
        "tokenizer_class": "MLukeTokenizer",
        "backend": "tokenizers",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": _token_dict("<mask>", lstrip=True),
        "entity_1_token": _token_dict("<ent>"),
        "entity_2_token": _token_dict("<ent2>"),
        "entity_unk_token": "[UNK]",
        "entity_pad_token": "[PAD]",
        "entity_mask_token": "[MASK]",
        "entity_mask2_token": "[MASK2]",
        "extra_special_tokens": list(ENT_TOKENS) + list(ENTITY_SPECIALS),
        "added_tokens_decoder": decoder,
        "task": None,
        "max_entity_length": max_entity_length,
        "max_mention_length": max_mention_length,
        "model_max_length": max_seq_length,
        "clean_up_tokenization_spaces": False,
    }


def write_tokenizer_files(
    out: Path,
    spm_path: Path,
    entity_vocab: EntityVocab,
    max_seq_length: int = 512,
    max_entity_length: int = 128,
    max_mention_length: int = 30,
) -> list[str]:
    """Write sentencepiece.bpe.model, tokenizer.json, entity_vocab.json, tokenizer_config.json and
    special_tokens_map.json into ``out`` (an existing directory); returns the file names."""
    spm = XlmrSentencePiece.load(spm_path)  # checks the XLM-R id layout (<unk>0 <s>1 </s>2)
    shutil.copyfile(spm_path, out / "sentencepiece.bpe.model")
    (out / "tokenizer.json").write_text(json.dumps(fairseq_tokenizer_json(spm_path), ensure_ascii=False), encoding="utf-8")
    write_hf_entity_vocab(out / "entity_vocab.json", entity_vocab)
    cfg = tokenizer_config(spm.spm_size, max_seq_length, max_entity_length, max_mention_length)
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    special = {
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
        "pad_token": "<pad>", "cls_token": "<s>", "mask_token": _token_dict("<mask>", lstrip=True),
        "additional_special_tokens": list(ENT_TOKENS),
    }
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    return ["sentencepiece.bpe.model", "tokenizer.json", "entity_vocab.json", "tokenizer_config.json", "special_tokens_map.json"]
