"""Export of real DeepSpeed checkpoints (ZeRO 0/1/2/3, stage 1 and 2) to transformers' LukeForMaskedLM."""

from __future__ import annotations

import io
import json
import logging
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch
from export_fixtures import run, shards, xl_run

from data_prep.spm import XlmrSentencePiece
from data_prep.vocab_file import read_entity_vocab
from pretrain import checkpoint as ckpt
from pretrain.collator import Collator, MaskingConfig, unit_table
from pretrain.data import Sample, load_split
from pretrain.export import (
    MLUKE_WEIGHTS,
    UnsupportedForHF,
    export,
    load_exported,
    load_weights,
    resolve_checkpoint,
)
from pretrain.model import MLukeForMaskedLM

HEAD_PREFIXES = ("lm_head.", "entity_predictions.")


def trained_model(run_dir: Path) -> MLukeForMaskedLM:
    """The trained model: this project's class with the checkpoint's (consolidated) weights."""
    src = resolve_checkpoint(run_dir)
    model = MLukeForMaskedLM(src.model_config)
    ckpt.load_into(model, load_weights(src), str(src.tag_dir))
    model.tie_weights()
    return model.eval()


def validation_batches(lang: str) -> list[dict[str, torch.Tensor]]:
    """Masked validation batches of the fixture shards, through the trainer's collator (padding included)."""
    d = shards()
    spm = XlmrSentencePiece.load(d / "sentencepiece.bpe.model")
    collate = Collator(MaskingConfig(spm_size=spm.spm_size, max_mention_length=4, seed=3), unit_table(str(d / "sentencepiece.bpe.model")))
    ds = load_split(d, lang, "validation")
    cols = ("word_ids", "entity_ids", "entity_starts", "entity_ends")
    samples = [Sample(i, lang, *(ds[i][c] for c in cols)) for i in range(len(ds))]
    return [collate(samples[i : i + 3]) for i in range(0, len(samples), 3)]


class LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def load_hf(path: Path):
    """LukeForMaskedLM + LukeModel from ``path`` with their loading info and every log line transformers wrote."""
    import transformers
    from transformers import LukeForMaskedLM, LukeModel

    handler = LogCapture()
    transformers.logging.add_handler(handler)
    old = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_info()
    try:
        mlm, mlm_info = LukeForMaskedLM.from_pretrained(path, output_loading_info=True)
        base, base_info = LukeModel.from_pretrained(path, output_loading_info=True)
    finally:
        transformers.logging.set_verbosity(old)
        transformers.logging.remove_handler(handler)
    return mlm.eval(), mlm_info, base.eval(), base_info, "\n".join(handler.messages)


def assert_same_logits(model: MLukeForMaskedLM, hf, batches) -> None:
    V = model.config.vocab_size
    for batch in batches:
        inputs = {k: v for k, v in batch.items() if k not in ("mlm_labels", "mep_labels")}
        with torch.no_grad():
            ref = model(**inputs, return_logits=True)
            out = hf(**inputs)
        word = batch["attention_mask"].bool()
        ents = batch["entity_attention_mask"].bool()
        assert out.logits.shape[-1] == V + 2  # <ent>, <ent2>
        torch.testing.assert_close(out.logits[..., :V][word], ref.mlm_logits[word], atol=1e-5, rtol=0)
        keep = [i for i in range(ref.mep_logits.shape[-1]) if i != 3]  # [MASK2] is re-initialised from [MASK]
        torch.testing.assert_close(out.entity_logits[ents][:, keep], ref.mep_logits[ents][:, keep], atol=1e-5, rtol=0)
        assert ents.any() and word.any()


@pytest.mark.parametrize("zero_stage,stage", [(0, 2), (1, 1), (3, 2)])
def test_export_loads_cleanly_and_computes_the_same_logits(tmp_path, zero_stage, stage):
    run_dir = run(zero_stage, stage)
    out = export(run_dir / "checkpoints", tmp_path / "hf")  # `latest` -> step000002
    info = json.loads((out / "export.json").read_text())
    assert info["tag"] == "step000002" and info["trainer_state"]["stage"] == stage
    assert info["trainer_state"]["zero_stage"] == zero_stage

    mlm, mlm_info, base, base_info, log = load_hf(out)
    assert mlm_info["missing_keys"] == set() and mlm_info["unexpected_keys"] == set()
    assert mlm_info["mismatched_keys"] == set() and not mlm_info["error_msgs"]
    assert base_info["missing_keys"] == set()
    assert base_info["unexpected_keys"] and all(k.startswith(HEAD_PREFIXES) for k in base_info["unexpected_keys"])
    assert "newly initialized" not in log and "not initialized" not in log

    cfg = mlm.config
    model = trained_model(run_dir)
    V = model.config.vocab_size
    assert cfg.use_entity_aware_attention and cfg.vocab_size == V + 2
    assert cfg.max_position_embeddings == 66 and cfg.type_vocab_size == 1 and cfg.layer_norm_eps == 1e-5

    assert_same_logits(model, mlm, validation_batches("en") + validation_batches("fr"))
    # LukeModel gives the same encoder states as the masked-LM model's backbone.
    batch = validation_batches("fr")[0]
    inputs = {k: v for k, v in batch.items() if k not in ("mlm_labels", "mep_labels")}
    with torch.no_grad():
        torch.testing.assert_close(base(**inputs).entity_last_hidden_state, mlm.luke(**inputs).entity_last_hidden_state)

    # What the export adds, as LUKE's conversion does.
    sp = XlmrSentencePiece.load(shards() / "sentencepiece.bpe.model").sp
    at, hash_ = (sp.piece_to_id(p) for p in ("@", "#"))
    at, hash_ = (3 if i == sp.unk_id() else i + 1 for i in (at, hash_))
    W = mlm.luke.embeddings.word_embeddings.weight
    assert torch.equal(W[:V], model.luke.embeddings.word_embeddings.weight)
    assert torch.equal(W[V], W[at]) and torch.equal(W[V + 1], W[hash_])
    assert torch.equal(mlm.lm_head.decoder.weight, W)  # written explicitly, not tied by transformers 5
    assert torch.equal(mlm.lm_head.bias[V:], mlm.lm_head.bias[[at, hash_]])
    E = mlm.luke.entity_embeddings.entity_embeddings.weight
    assert torch.equal(E[3], E[2]) and torch.equal(mlm.entity_predictions.bias[3], mlm.entity_predictions.bias[2])
    for layer in mlm.luke.encoder.layer:
        att = layer.attention.self
        for q in (att.w2e_query, att.e2w_query, att.e2e_query):
            assert torch.equal(q.weight, att.query.weight) and torch.equal(q.bias, att.query.bias)


def test_consolidated_zero_weights_match_the_unpartitioned_run():
    """ZeRO-2/3 shard the fp32 weights; consolidated, they equal the ZeRO-0 run's module weights
    (read straight from DeepSpeed's model-states file, not through zero_to_fp32)."""
    z0 = run(0, 2) / "checkpoints" / "step000002" / "mp_rank_00_model_states.pt"
    ref = torch.load(z0, map_location="cpu", weights_only=False)["module"]
    for zero_stage in (3,):
        got = load_weights(resolve_checkpoint(run(zero_stage, 2)))
        assert set(got) == set(ref)
        for k in ref:
            torch.testing.assert_close(got[k], ref[k].float(), atol=1e-5, rtol=0, msg=k)
        # and the tags differ: step 2 is not step 1 (the export reads the tag it is given)
        step1 = load_weights(resolve_checkpoint(run(zero_stage, 2) / "checkpoints" / "step000001"))
        assert not torch.equal(step1["luke.encoder.layer.0.attention.self.query.weight"], got["luke.encoder.layer.0.attention.self.query.weight"])


def test_tokenizer_gives_the_shard_ids_with_entity_spans(tmp_path):
    """MLukeTokenizer.from_pretrained(HF_DIR) on shard rows turned back into text: same word ids, spans, entities."""
    from transformers import MLukeTokenizer

    out = export(run(0, 2), tmp_path / "hf")
    tok = MLukeTokenizer.from_pretrained(out)
    sp = XlmrSentencePiece.load(shards() / "sentencepiece.bpe.model")
    vocab = read_entity_vocab(shards() / "entity_vocab.jsonl")
    assert [tok.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == [0, 1, 2, 3, sp.mask_id]
    assert tok.convert_tokens_to_ids(["<ent>", "<ent2>"]) == [sp.vocab_size, sp.vocab_size + 1]
    checked = 0
    for lang in ("en", "fr"):
        ds = load_split(shards(), lang, "validation")
        for row in ds:
            if not row["entity_ids"]:
                continue
            ids = row["word_ids"]
            text = sp.decode(ids)  # fixture words: every word starts with "▁", no <unk>
            spans = [
                (len(sp.decode(ids[:s])) + (1 if s else 0), len(sp.decode(ids[:e])))
                for s, e in zip(row["entity_starts"], row["entity_ends"])
            ]
            names = [f"{t_lang}:{title}" for e in row["entity_ids"] for title, t_lang in vocab.entries[e].entities]
            enc = tok(text, entity_spans=spans, entities=names)
            assert enc["input_ids"] == [0, *ids, 2]
            assert enc["entity_ids"] == row["entity_ids"]
            for pos, s, e in zip(enc["entity_position_ids"], row["entity_starts"], row["entity_ends"]):
                assert [p for p in pos if p != -1] == list(range(s + 1, e + 1))
            assert tok(text)["input_ids"] == [0, *ids, 2]
            checked += 1
    assert checked >= 3


def test_xl_backbone_is_exported_as_project_weights_with_a_clear_error(tmp_path):
    from transformers import MLukeTokenizer

    run_dir = xl_run()
    with pytest.raises(UnsupportedForHF, match="pre-LayerNorm"):
        export(run_dir, tmp_path / "xl")
    out = tmp_path / "xl"
    assert (out / MLUKE_WEIGHTS).is_file() and not (out / "config.json").exists()
    assert "Not a transformers model" in (out / "README.md").read_text()
    model = trained_model(run_dir)
    loaded = load_exported(out).eval()
    batch = validation_batches("en")[0]
    inputs = {k: v for k, v in batch.items() if k not in ("mlm_labels", "mep_labels")}
    with torch.no_grad():
        a, b = model(**inputs, return_logits=True), loaded(**inputs, return_logits=True)
    torch.testing.assert_close(a.mlm_logits, b.mlm_logits, atol=0, rtol=0)
    torch.testing.assert_close(a.mep_logits, b.mep_logits, atol=0, rtol=0)
    assert MLukeTokenizer.from_pretrained(out)("kalo")["input_ids"][0] == 0


def test_load_exported_round_trips_an_hf_export(tmp_path):
    out = export(run(0, 2), tmp_path / "hf")
    model, again = trained_model(run(0, 2)).state_dict(), load_exported(out).state_dict()
    assert set(model) == set(again)
    for k, v in model.items():
        if k in ("luke.entity_embeddings.entity_embeddings.weight", "entity_predictions.decoder.weight", "entity_predictions.bias"):
            rows = [i for i in range(v.shape[0]) if i != 3]  # [MASK2] re-initialised from [MASK]
            assert torch.equal(v[rows], again[k][rows]) and torch.equal(again[k][3], v[2]), k
        else:
            assert torch.equal(v, again[k]), k


def test_cli_exports_a_tag_and_reports_bad_input(tmp_path):
    from pretrain.__main__ import main

    tag = run(0, 2) / "checkpoints" / "step000001"
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        assert main(["export", "--checkpoint", str(tag), "--out", str(tmp_path / "hf1")]) == 0
    assert "step 1" in stdout.getvalue() and json.loads((tmp_path / "hf1" / "export.json").read_text())["tag"] == "step000001"
    stderr = io.StringIO()
    with redirect_stderr(stderr):
        assert main(["export", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert stderr.getvalue().startswith("error: ") and "nope" in stderr.getvalue() and len(stderr.getvalue().splitlines()) == 1
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------ tokenizer files

MULTILINGUAL = [  # (lang, sentence, links as (anchor text, linked title)); written for this test
    ("en", "Tokyo is the capital of Japan", [("Tokyo", "Tokyo"), ("Japan", "Japan")]),
    ("en", "The river Rhine flows through Germany and the Netherlands", [("Rhine", "Rhine"), ("Germany", "Germany")]),
    ("de", "Die Hauptstadt von Deutschland ist Berlin", [("Deutschland", "Deutschland"), ("Berlin", "Berlin")]),
    ("ru", "Москва — столица России", [("Москва", "Москва"), ("России", "Россия")]),
    ("ja", "東京は日本の首都です。", []),
    ("zh", "北京是中国的首都。", []),
    ("th", "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย", []),
    ("ar", "القاهرة هي عاصمة مصر", [("مصر", "مصر")]),
]
ENTITIES = [  # qid, [(title, lang)]
    ("Q1490", [("Tokyo", "en")]),
    ("Q17", [("Japan", "en")]),
    ("Q584", [("Rhine", "en")]),
    ("Q183", [("Germany", "en"), ("Deutschland", "de")]),
    ("Q64", [("Berlin", "de")]),
    ("Q649", [("Москва", "ru")]),
    ("Q159", [("Россия", "ru")]),
    ("Q79", [("مصر", "ar")]),
]


def multilingual_tokenizer(tmp_path: Path):
    """A unigram spm trained here on the sentences above, the entity vocab, and the exported tokenizer files."""
    import sentencepiece

    from data_prep.vocab_file import EntityEntry, EntityVocab, special_entries
    from pretrain.hf_tokenizer import write_tokenizer_files

    corpus = [s for _, s, _ in MULTILINGUAL] + ["the and of is river city capital flows through", "Netherlands Japan Tokyo"]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus * 5), model_writer=model, vocab_size=200, hard_vocab_limit=False,
        model_type="unigram", character_coverage=1.0, minloglevel=2, num_threads=1,
    )
    spm_path = tmp_path / "sentencepiece.bpe.model"
    spm_path.write_bytes(model.getvalue())
    entries = special_entries() + [EntityEntry(4 + i, q, tuple(names), 10 - i) for i, (q, names) in enumerate(ENTITIES)]
    vocab = EntityVocab(entries)
    out = tmp_path / "tok"
    out.mkdir()
    write_tokenizer_files(out, spm_path, vocab, 64, 8, 10)
    return out, XlmrSentencePiece.load(spm_path), vocab


def test_tokenizer_json_is_exactly_xlmr_fairseq_ids(tmp_path):
    """tokenizer.json (also read by XLM-R tokenizers) = spm + fairseq ids, NFKC, spaces and <unk> included."""
    from tokenizers import Tokenizer

    out, sp, _ = multilingual_tokenizer(tmp_path)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    texts = [s for _, s, _ in MULTILINGUAL] + ["ＴＯＫＹＯ  is   the ｃａｐｉｔａｌ", "snow ☃ man ☃☃"]
    for text in texts:
        assert tok.encode(text).ids == [0, *sp.encode(text).tolist(), 2], text
    assert 3 in tok.encode("snow ☃ man").ids
    # <mask> takes the space before it, as XLM-R's tokenizer does
    want = [0, *sp.encode("Tokyo").tolist(), sp.mask_id, *sp.encode("Japan").tolist(), 2]
    assert tok.encode("Tokyo <mask> Japan").ids == want
    assert tok.token_to_id("<mask>") == sp.mask_id and tok.token_to_id("<ent>") == sp.vocab_size


def test_mluke_tokenizer_matches_the_shard_builder(tmp_path):
    """Pages with links through `data_prep shards` (build_shards) vs MLukeTokenizer with entity spans."""
    from corpus_fixtures import write_corpus
    from transformers import MLukeTokenizer

    from data_prep.shards import build_shards
    from data_prep.vocab_file import write_entity_vocab

    out, sp, vocab = multilingual_tokenizer(tmp_path)
    write_entity_vocab(tmp_path / "vocab.jsonl", vocab.entries)
    pages: dict[str, list[dict]] = {}
    expected: dict[int, tuple[str, str, list[tuple[int, int]], list[str]]] = {}
    for k, (lang, text, links) in enumerate(MULTILINGUAL):
        spans = [(text.index(a), text.index(a) + len(a)) for a, _ in links]
        paragraph = {"text": text, "links": [{"start": s, "end": e, "title": t} for (s, e), (_, t) in zip(spans, links)]}
        pages.setdefault(lang, []).append({"page_id": 100 + k, "title": f"Page {k}", "paragraphs": [paragraph]})
        expected[100 + k] = (lang, text, spans, [t for _, t in links])
    corpora = [write_corpus(tmp_path / "corpus" / lang, lang, p) for lang, p in pages.items()]
    build_shards(corpora, tmp_path / "vocab.jsonl", tmp_path / "sentencepiece.bpe.model", tmp_path / "shards",
                 max_seq_length=64, max_entity_length=8, max_mention_length=10, valid_fraction=0.0,
                 keep_no_entity=True, progress=False)

    tok = MLukeTokenizer.from_pretrained(out)
    seen = 0
    for lang in pages:
        for row in load_split(tmp_path / "shards", lang, "train"):
            lang_, text, spans, titles = expected[row["page_id"]]
            names = [f"{lang}:{t}" for t in titles]
            enc = tok(text, entity_spans=spans, entities=names) if spans else tok(text)
            assert enc["input_ids"] == [0, *row["word_ids"], 2], text
            if spans:
                assert enc["entity_ids"] == row["entity_ids"] == [vocab.lookup(lang, t) for t in titles]
                for pos, s, e in zip(enc["entity_position_ids"], row["entity_starts"], row["entity_ends"]):
                    assert [p for p in pos if p != -1] == list(range(s + 1, e + 1))
            seen += 1
    assert seen == len(MULTILINGUAL)


def test_a_recorded_model_config_wins_over_the_rebuilt_one(tmp_path):
    import dataclasses
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(run(0, 2), run_dir)
    mc = resolve_checkpoint(run_dir).model_config
    assert mc.num_attention_heads == 4  # from config.yaml
    (run_dir / "model_config.json").write_text(json.dumps(dataclasses.replace(mc, num_attention_heads=2).to_dict()))
    out = export(run_dir, tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["num_attention_heads"] == 2
