"""The XLM-R tokeniser wrapper (fairseq ids) and ``train-spm``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from corpus_builders import write_multilingual

from data_prep.shards.spm import XlmrSentencePiece, model_proto, train_spm

# text with characters the tiny model has never seen: emoji, rare CJK (𠮷 is outside the BMP), a
# full-width Latin run, symbols, plus ordinary text in every fixture script and odd whitespace
TEXTS = [
    "The Harbour town lies on a quiet bay.",
    "Visitors 😀 come for the festival 🎉🎉 today",
    "港町は静かな湾のほとりにある。𠮷野家と䶮",
    "港口城市位于一个安静的海湾旁边。鬱",
    "เมืองท่าตั้งอยู่ริมอ่าว ที่เงียบสงบ",
    "تقع مدينة الميناء على خليج هادئ؟",
    "Портовый город стоит на берегу.",
    "Το λιμάνι βρίσκεται σε έναν κόλπο;",
    "ＡＢＣ　１２３ and ½ ™ ﬁ",
    "  leading   and trailing   spaces  ",
    "tab\tand\nnewline",
    "",
]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("spm")
    dirs, _ = write_multilingual(root)
    train_spm(dirs, 300, root / "sentencepiece.bpe.model", seed=1)
    return root / "sentencepiece.bpe.model"


def test_fairseq_ids_equal_transformers_xlmr_tokenizer(model, tmp_path):
    from transformers import XLMRobertaTokenizer

    hf_dir = tmp_path / "xlmr"
    hf_dir.mkdir()
    shutil.copy(model, hf_dir / "sentencepiece.bpe.model")
    hf = XLMRobertaTokenizer.from_pretrained(str(hf_dir))
    tok = XlmrSentencePiece.load(model)

    assert hf.mask_token_id == tok.mask_id == tok.spm_size + 1
    assert len(hf) == tok.vocab_size
    assert (hf.bos_token_id, hf.pad_token_id, hf.eos_token_id, hf.unk_token_id) == (0, 1, 2, 3)
    unknown_seen = 0
    for text in TEXTS:
        ours = [0, *tok.encode(text).tolist(), 2]
        theirs = hf(text)["input_ids"]
        assert ours == theirs, text
        assert hf.convert_ids_to_tokens(theirs[1:-1]) == [tok.id_to_piece(i) for i in ours[1:-1]]
        unknown_seen += ours.count(3)
    assert unknown_seen >= 4  # the test really exercised spm's unknown -> fairseq <unk>


def test_special_token_strings_stay_plain_text(model, tmp_path):
    """The one difference from transformers: it turns a literal "<mask>" in the text into the mask id."""
    from transformers import XLMRobertaTokenizer

    (tmp_path / "x").mkdir()
    shutil.copy(model, tmp_path / "x" / "sentencepiece.bpe.model")
    hf = XLMRobertaTokenizer.from_pretrained(str(tmp_path / "x"))
    tok = XlmrSentencePiece.load(model)
    text = "A <mask> and <s> here"
    assert hf.mask_token_id in hf(text)["input_ids"]
    ours = tok.encode(text).tolist()
    assert tok.mask_id not in ours and 0 not in ours
    assert tok.decode(ours).replace("\u2047", "?").count("mask") == 1


def test_id_layout_matches_the_spm_pieces(model):
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(model))
    tok = XlmrSentencePiece.load(model)
    assert [sp.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    ids = sp.encode("港町 harbour")
    assert tok.encode("港町 harbour").tolist() == [3 if i == 0 else i + 1 for i in ids]
    assert tok.id_to_piece(4) == sp.id_to_piece(3)
    assert tok.id_to_piece(tok.mask_id) == "<mask>"


def test_continuation_encoding_has_no_word_start_marker(model):
    tok = XlmrSentencePiece.load(model)
    first = tok.encode("harbour", word_start=True)
    cont = tok.encode("harbour", word_start=False)
    assert tok.id_to_piece(first[0]).startswith("\u2581")
    assert not tok.id_to_piece(cont[0]).startswith("\u2581")
    assert tok.decode(cont) == "harbour"
    # only the dummy prefix differs: inner word starts are kept
    assert [tok.id_to_piece(i) for i in tok.encode("s and more", word_start=False)][0] == "s"
    assert tok.decode(tok.encode("s and more", word_start=False)) == "s and more"


def test_train_spm_is_xlmr_kind_and_deterministic(model, tmp_path):
    data = model.read_bytes()
    assert model_proto(data).trainer_spec.model_type == 1  # UNIGRAM
    tok = XlmrSentencePiece.load(model)
    assert not any(tok.sp.is_byte(i) for i in range(tok.spm_size))  # no byte fallback, like XLM-R
    assert tok.sp.pad_id() == -1
    dirs, _ = write_multilingual(tmp_path)
    again = train_spm(dirs, 300, tmp_path / "again.model", seed=1)
    assert (tmp_path / "again.model").read_bytes() == data
    assert again.vocab_size == tok.spm_size


def test_train_spm_balances_languages_with_a_cap(tmp_path):
    dirs, _ = write_multilingual(tmp_path, ["en", "ja", "th"])
    stats = train_spm(dirs, 120, tmp_path / "a.model", seed=0, max_sentences=12)
    # 4 per language; the en fixture has more sentences than that, th exactly 4
    assert stats.languages == {"en": 4, "ja": 4, "th": 4}
    other = train_spm(dirs, 120, tmp_path / "b.model", seed=5, max_sentences=12)
    assert other.languages == stats.languages
    assert (tmp_path / "a.model").read_bytes() != (tmp_path / "b.model").read_bytes()  # the seed picks the sample


def test_train_spm_cli(tmp_path):
    dirs, _ = write_multilingual(tmp_path, ["en", "zh"])
    out = tmp_path / "m" / "sentencepiece.bpe.model"
    r = subprocess.run(
        [sys.executable, "-m", "data_prep", "train-spm", "--corpus", *map(str, dirs), "--vocab-size", "150", "--out", str(out)],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    assert out.is_file() and XlmrSentencePiece.load(out).spm_size > 50
    assert r.stdout.count("\n") == 1 and "train-spm:" in r.stdout
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_word_cached_encoding_equals_direct_encoding(model):
    """``encode_pieces`` encodes word by word through a cache, the whole batch joined into one string;
    it must equal encoding each text whole, in either prefix mode, whatever the texts hold."""
    tok = XlmrSentencePiece.load(model)
    assert tok._word_cache  # the XLM-R kind of model qualifies
    odd = "a\x1cb c\x85d e\u2028f g\u3000h i\u00a0j k\u2003l"  # separators spm may or may not split on
    texts = [*TEXTS, odd, "s and more", "bird", "港", "ที่เงียบสงบ อ่าว", " x ", "x\n\ny", "", "  "]

    def direct(texts, word_start):
        return [(tok.sp if ws else tok.sp_cont).encode(t) for t, ws in zip(texts, word_start)]

    def pieces(texts, word_start):
        ids, counts = tok.encode_pieces(texts, word_start)
        assert ids.dtype == np.int32 and counts.sum() == len(ids) and len(counts) == len(texts)
        return [ids[a - n : a].tolist() for a, n in zip(np.cumsum(counts), counts)]

    for word_start in ([True] * len(texts), [False] * len(texts), [i % 2 == 0 for i in range(len(texts))]):
        assert pieces(texts, word_start) == direct(texts, word_start)
        assert pieces(texts, word_start) == direct(texts, word_start)  # now from the cache
    # texts holding the private-use characters the batch is joined with, and a cache that overflows
    marked = ["x \ue000 y", "\ue001z", "港\ue000"]
    assert pieces(marked, [True, False, True]) == direct(marked, [True, False, True])
    tok.CACHE_LIMIT = 3
    assert pieces(texts, [False] * len(texts)) == direct(texts, [False] * len(texts))
    assert len(tok._cache) <= len(texts) + len(" ".join(texts).split())  # emptied, then this batch only


def test_word_gaps_are_what_the_normaliser_reads_as_whitespace(model):
    tok = XlmrSentencePiece.load(model)
    for gap in (" ", "\t", "\n", "\u3000", "\u00a0", "\u200e", "\u200f", "\u200b", "\ufeff"):
        assert gap in tok.word_gaps, hex(ord(gap))
    for not_gap in ("a", "-", "\u00ad", "\u200d", "\x1c"):  # soft hyphen and ZWJ are removed, not spaces
        assert not_gap not in tok.word_gaps, hex(ord(not_gap))
    # after a gap the next piece starts a word, exactly as in the whole text
    whole = tok.encode("x\u200flink").tolist()
    assert whole == tok.encode("x").tolist() + tok.encode("link", word_start=True).tolist()
