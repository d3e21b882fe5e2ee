"""``data_prep shards``: exact mention spans, packing limits, split, determinism, resume, bad input."""

from __future__ import annotations

import collections
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from corpus_builders import (
    MULTILINGUAL,
    MULTILINGUAL_ENTITIES,
    MULTILINGUAL_REDIRECTS,
    para,
    write_corpus,
    write_multilingual,
    write_vocab,
)

from data_prep.shards import build as shards
from data_prep.shards.build import build_shards
from data_prep.shards.spm import XlmrSentencePiece, train_spm


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    dirs, vocab = write_multilingual(root)
    train_spm(dirs, 400, root / "spm.model", seed=0)
    return root, dirs, vocab, root / "spm.model"


def load(out: Path, lang: str, split: str = "train"):
    import datasets

    return datasets.load_from_disk(str(out / lang / split))


def rows_by_page(out: Path, lang: str) -> dict[int, list[dict]]:
    pages: dict[int, list[dict]] = {}
    for split in ("train", "validation"):
        for row in load(out, lang, split):
            pages.setdefault(row["page_id"], []).append(row)
    return pages


def expected_mentions(lang: str, paragraphs: list[str]) -> list[tuple[int, str]]:
    """(entity id, anchor) of every link that survives: worked out from the fixture tables directly."""
    ids = {(title, lg): 4 + i for i, (_, names) in enumerate(MULTILINGUAL_ENTITIES) for title, lg in names}
    redirects = MULTILINGUAL_REDIRECTS.get(lang, {})
    out = []
    for markup in paragraphs:
        p = para(markup)
        for link in p["links"]:
            target = redirects.get(link["title"], link["title"])
            if (target, lang) in ids:
                out.append((ids[(target, lang)], p["text"][link["start"] : link["end"]]))
    return out


def test_mentions_decode_to_their_anchor_text_in_every_script(fixture, tmp_path):
    root, dirs, vocab, spm = fixture
    out = tmp_path / "out"
    summary = build_shards(dirs, vocab, spm, out, valid_fraction=0.0, keep_no_entity=True, progress=False)
    tok = XlmrSentencePiece.load(spm)
    assert set(summary.languages) == set(MULTILINGUAL)
    checked = 0
    for lang, pages in MULTILINGUAL.items():
        got_pages = rows_by_page(out, lang)
        for page_id, _, paragraphs in pages:
            rows = got_pages[page_id]
            got = [
                (e, tok.decode(r["word_ids"][s:t]))
                for r in rows
                for e, s, t in zip(r["entity_ids"], r["entity_starts"], r["entity_ends"])
            ]
            want = [(e, tok.normalize(anchor).strip()) for e, anchor in expected_mentions(lang, paragraphs)]
            assert got == want, (lang, page_id)
            checked += len(got)
            # The cuts add no "▁": the page decodes exactly like its paragraphs encoded whole (the
            # segmentation inside a cut word may differ, the text may not). Paragraphs start words.
            ids = [i for r in rows for i in r["word_ids"]]
            whole = " ".join(tok.decode(tok.encode(para(p)["text"])) for p in paragraphs)
            assert tok.decode(ids) == whole, (lang, page_id)
            for r in rows:  # mentions are in order, inside the sequence, non-empty
                assert all(0 <= s < t <= len(r["word_ids"]) for s, t in zip(r["entity_starts"], r["entity_ends"]))
    assert checked == 44  # counted by hand from the fixture tables
    # continuation pieces (link inside a word or in text without spaces) start without "▁"
    ja = rows_by_page(out, "ja")[40][0]
    bay = ja["entity_ids"].index(5)
    assert not tok.id_to_piece(ja["word_ids"][ja["entity_starts"][bay]]).startswith("\u2581")
    en = rows_by_page(out, "en")[2][0]
    bird = en["entity_ids"].index(10)
    assert tok.decode(en["word_ids"][en["entity_starts"][bird] : en["entity_ends"][bird]]) == "bird"
    assert not tok.id_to_piece(en["word_ids"][en["entity_starts"][bird]]).startswith("\u2581")
    dropped = summary.languages["en"].dropped
    assert dropped["links_not_in_vocab"] == 3  # Salt Festival, North Hills, Native plants
    assert dropped["links_redirect_loop"] == 1  # "Loop A" <-> "Loop B"
    assert summary.languages["en"].seen == {"links": 15, "sentences": 12, "sentences_split": 0, "mentions_long": 0}  # counted by hand


def test_output_format_and_manifest(fixture, tmp_path):
    root, dirs, vocab, spm = fixture
    out = tmp_path / "out"
    summary = build_shards(dirs[:2], vocab, spm, out, valid_fraction=0.5, progress=False)
    ds = load(out, "en")
    schema = ds.data.schema
    for name in ("word_ids", "entity_ids", "entity_starts", "entity_ends"):
        assert schema.field(name).type == pa.list_(pa.int32()), name
    assert schema.field("page_id").type == pa.int64()
    manifest = json.loads((out / "manifest.json").read_text())
    tok = XlmrSentencePiece.load(spm)
    assert manifest["spm"]["sha256"] == hashlib.sha256(spm.read_bytes()).hexdigest()
    assert manifest["spm"]["mask_id"] == tok.mask_id and manifest["spm"]["vocab_size"] == tok.vocab_size
    assert (out / "sentencepiece.bpe.model").read_bytes() == spm.read_bytes()
    assert (out / "entity_vocab.jsonl").read_bytes() == vocab.read_bytes()
    assert manifest["entity_vocab"]["sha256"] == hashlib.sha256(vocab.read_bytes()).hexdigest()
    assert manifest["limits"] == {
        "max_seq_length": 512, "max_entity_length": 128, "max_mention_length": 30, "valid_fraction": 0.5,
        "keep_no_entity": False, "min_sentence_tokens": 0,
    }
    assert manifest["fingerprint"] == summary.fingerprint
    for lang in ("en", "de"):
        m = manifest["languages"][lang]
        for split in ("train", "validation"):
            d = load(out, lang, split)
            assert m[split]["sequences"] == len(d)
            assert m[split]["tokens"] == sum(map(len, d["word_ids"]))
            assert m[split]["entities"] == sum(map(len, d["entity_ids"]))
    assert not [p.name for p in out.rglob(".*")]  # no temporaries left


def _sentence_tokens(tok, sentence: str) -> list[int]:
    return tok.encode(sentence).tolist()


def test_packing_limits_give_exact_sequences(fixture, tmp_path):
    root, _, vocab, spm = fixture
    tok = XlmrSentencePiece.load(spm)
    # Links start and end on word boundaries, where a unigram model's segmentation of a
    # whitespace-split text does not depend on the cut, so whole-sentence encodings are the oracle.
    s = [
        "The [[Bay|bay]] is calm.",
        "Boats leave at dawn near the [[Harbour town]].",
        "The [[Grey River]] rises in the hills and flows past the [[Lighthouse|lighthouse]] and the [[Old Mill|mill]] into the [[Bay|bay]].",
        "Otters live here.",
        "Nothing else happens.",
        "The [[Harbour town]] is old.",
        "Quiet words only here.",
    ]
    pages = [(100, "A", [" ".join(s[0:3]), " ".join(s[3:5])]), (101, "B", [s[5]]), (102, "C", [s[6]])]
    corpus = write_corpus(tmp_path / "en", "en", pages, MULTILINGUAL_REDIRECTS["en"])
    plain = [para(x)["text"] for x in s]
    enc = [_sentence_tokens(tok, x) for x in plain]
    L = [len(e) for e in enc]
    limit = L[0] + L[1]
    assert L[2] > limit and L[3] + L[4] <= limit  # the corpus exercises what it should

    def spans(i: int, offset: int = 0):
        p = para(s[i])
        out = []
        for link in p["links"]:
            a = len(tok.encode(p["text"][: link["start"]]))
            b = a + len(tok.encode(p["text"][link["start"] : link["end"]]))
            out.append((offset + a, offset + b))
        return out

    ids = {"Bay": 5, "Harbour town": 4, "Grey River": 7, "Lighthouse": 6, "Old Mill": 8}
    # "lighthouse" is 6 tokens with this model, every other anchor at most 4: with a limit of 5 it is
    # the one long mention, kept with its whole span (the trainer reads its first 5 positions)
    mention_len = [b - a for a, b in spans(2)]
    assert mention_len[1] == 6 and max(mention_len[:1] + mention_len[2:]) <= 5
    out = tmp_path / "out"
    summary = build_shards(
        [corpus], vocab, spm, out, max_seq_length=limit + 2, max_entity_length=3,
        max_mention_length=5, valid_fraction=0.0, progress=False,
    )
    rows = list(load(out, "en"))
    # sentence 2 is overlong: it is cut at the last token boundary <= limit outside a mention
    s2 = spans(2)
    cut = limit
    while any(a < cut < b for a, b in s2):
        cut -= 1
    assert 0 < cut
    kept2 = s2
    names2 = ["Grey River", "Lighthouse", "Old Mill", "Bay"]

    def mentions(pairs, names, offset=0):
        return [(ids[n], a - offset, b - offset) for n, (a, b) in zip(names, pairs)]

    first = mentions(spans(0), ["Bay"]) + mentions(spans(1, L[0]), ["Harbour town"])
    part1 = [m for m in mentions(kept2, names2) if m[2] <= cut]
    part2 = [(e, a - cut, b - cut) for e, a, b in mentions(kept2, names2) if a >= cut]
    # the rest of sentence 2 is packed on with sentences 3 and 4 (the next paragraph, same page)
    assert len(enc[2]) - cut + L[3] + L[4] <= limit and part1 and part2
    expected = [
        (enc[0] + enc[1], first),
        (enc[2][:cut], part1[:3]),
        (enc[2][cut:] + enc[3] + enc[4], part2[:3]),
        (enc[5], mentions(spans(5), ["Harbour town"])),
    ]  # page 102 has no entity: dropped
    got = [(r["word_ids"], list(zip(r["entity_ids"], r["entity_starts"], r["entity_ends"]))) for r in rows]
    assert got == expected
    assert [r["page_id"] for r in rows] == [100, 100, 100, 101]  # never across pages
    assert all(len(r["word_ids"]) <= limit for r in rows)
    d = summary.languages["en"].dropped
    assert summary.languages["en"].seen["sentences_split"] == 1
    assert summary.languages["en"].seen["mentions_long"] == 1 and "mentions_too_long" not in d
    assert d["sequences_without_entities"] == 1 and d["tokens_without_entities"] == L[6]
    assert d.get("entities_over_limit", 0) == max(0, len(part1) - 3) + max(0, len(part2) - 3)

    # the entity cap: one entity per sequence keeps the first; keep_no_entity keeps the plain sequence
    out2 = tmp_path / "out2"
    summary = build_shards(
        [corpus], vocab, spm, out2, max_seq_length=512, max_entity_length=1, valid_fraction=0.0,
        keep_no_entity=True, progress=False,
    )
    rows = list(load(out2, "en"))
    assert [r["word_ids"] for r in rows] == [enc[0] + enc[1] + enc[2] + enc[3] + enc[4], enc[5], enc[6]]
    assert [r["entity_ids"] for r in rows] == [[5], [4], []]
    assert summary.languages["en"].dropped["entities_over_limit"] == 5


def test_validation_split_is_a_stable_hash_of_the_page_id(fixture, tmp_path):
    root, _, vocab, spm = fixture
    pages = [(pid, f"P{pid}", ["The [[Bay|bay]] is calm."]) for pid in range(1, 61)]
    corpus = write_corpus(tmp_path / "en", "en", pages)
    out = tmp_path / "out"
    build_shards([corpus], vocab, spm, out, valid_fraction=0.3, progress=False)
    valid = set(load(out, "en", "validation")["page_id"])
    train = set(load(out, "en", "train")["page_id"])
    want = {p for p in range(1, 61) if int(hashlib.sha1(str(p).encode()).hexdigest()[:16], 16) < 0.3 * 2**64}
    assert valid == want and train == set(range(1, 61)) - want
    assert 5 <= len(valid) <= 30
    # a different vocabulary (and a different set of kept sequences) moves no page between splits
    small = write_vocab(tmp_path / "small.jsonl", [("Q2", [("Bay", "en")])])
    build_shards([corpus], small, spm, tmp_path / "out2", valid_fraction=0.3, progress=False)
    assert set(load(tmp_path / "out2", "en", "validation")["page_id"]) == want


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_same_input_gives_identical_data_with_1_or_2_workers(fixture, tmp_path, monkeypatch):
    root, dirs, vocab, spm = fixture
    a = build_shards(dirs, vocab, spm, tmp_path / "a", max_seq_length=24, valid_fraction=0.3, workers=1, batch_pages=1, progress=False)
    b = build_shards(dirs, vocab, spm, tmp_path / "b", max_seq_length=24, valid_fraction=0.3, workers=2, batch_pages=1, progress=False)
    assert a.fingerprint == b.fingerprint
    ta, tb = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert ta.keys() == tb.keys() and ta == tb
    assert any(k.endswith(".arrow") for k in ta)
    # neither the data nor the fingerprint depends on how pages were batched into worker tasks
    d = build_shards(dirs, vocab, spm, tmp_path / "d", max_seq_length=24, valid_fraction=0.3, batch_pages=7, progress=False)
    assert d.fingerprint == a.fingerprint and _tree(tmp_path / "d") == ta
    # nor on how row groups were cut into tasks
    monkeypatch.setattr(shards, "TASK_PAGES", 2)
    e = build_shards(dirs, vocab, spm, tmp_path / "e", max_seq_length=24, valid_fraction=0.3, workers=2, batch_pages=3, progress=False)
    assert e.fingerprint == a.fingerprint and _tree(tmp_path / "e") == ta
    c = build_shards(dirs, vocab, spm, tmp_path / "c", max_seq_length=32, valid_fraction=0.3, progress=False)
    assert c.fingerprint != a.fingerprint


def test_resumes_language_by_language(fixture, tmp_path):
    root, dirs, vocab, spm = fixture
    out = tmp_path / "out"
    corpora = {d.name: d for d in dirs}
    sel = [corpora["en"], corpora["ja"], corpora["th"]]
    first = build_shards(sel, vocab, spm, out, progress=False)
    assert not any(s.skipped for s in first.languages.values())
    again = build_shards(sel, vocab, spm, out, progress=False)
    assert all(s.skipped for s in again.languages.values()) and again.fingerprint == first.fingerprint
    # an interrupted run leaves a language missing; a changed corpus invalidates only its language
    import shutil

    shutil.rmtree(out / "th")
    ja = write_corpus(tmp_path / "ja", "ja", [(41, "港町", ["[[港町]]は[[湾]]のほとりにある。"])])
    third = build_shards([corpora["en"], ja, corpora["th"]], vocab, spm, out, progress=False)
    assert {lang: s.skipped for lang, s in third.languages.items()} == {"en": True, "ja": False, "th": False}
    assert set(load(out, "ja")["page_id"]) == {41}
    assert third.fingerprint != first.fingerprint
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fingerprint"] == third.fingerprint
    assert manifest["languages"]["en"] == json.loads(json.dumps(manifest["languages"]["en"]))


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "data_prep", "shards", *map(str, args)], capture_output=True, text=True)


def _assert_one_line_error(r, *needles):
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_bad_input_gives_one_line_and_exit_2(fixture, tmp_path):
    root, dirs, vocab, spm = fixture
    en = [d for d in dirs if d.name == "en"][0]
    out = tmp_path / "out"

    r = run_cli("--corpus", en, "--entity-vocab", vocab, "--spm", spm, "--out", out)
    assert r.returncode == 0 and r.stdout.startswith("shards: 1 languages"), r.stderr

    bad_corpus = tmp_path / "nocol"
    write_corpus(bad_corpus, "en", [(1, "A", ["x"])])
    pq.write_table(pa.table({"page_id": [1], "title": ["A"]}), bad_corpus / "pages-00000.parquet")
    _assert_one_line_error(run_cli("--corpus", bad_corpus, "--entity-vocab", vocab, "--spm", spm, "--out", out), "pages-00000.parquet", "paragraphs")

    not_model = tmp_path / "not.model"
    not_model.write_text("this is not a sentencepiece model\n")
    _assert_one_line_error(run_cli("--corpus", en, "--entity-vocab", vocab, "--spm", not_model, "--out", out), "not.model", "not a sentencepiece model")

    dup = tmp_path / "dup.jsonl"
    lines = vocab.read_text().splitlines()
    dup.write_text("\n".join([*lines[:5], lines[4]]) + "\n")
    _assert_one_line_error(run_cli("--corpus", en, "--entity-vocab", dup, "--spm", spm, "--out", out), "dup.jsonl", "duplicate")

    outside = tmp_path / "outside"
    write_corpus(outside, "en", [(7, "A", [{"text": "The bay.", "links": [{"start": 4, "end": 20, "title": "Bay"}]}])])
    _assert_one_line_error(run_cli("--corpus", outside, "--entity-vocab", vocab, "--spm", spm, "--out", out), "outside", "page 7", "[4, 20)")

    _assert_one_line_error(run_cli("--corpus", en, en, "--entity-vocab", vocab, "--spm", spm, "--out", out), "given twice")
    assert not (out / "xx").exists()


SAMPLE_DUMPS = Path(__file__).resolve().parents[1] / "data_prep" / "sample" / "dumps"


def _matches(decoded: str, anchor: str) -> bool:
    """``decoded`` equals ``anchor``, where each " ⁇ " (an unknown piece) stands for a non-empty run."""
    if "\u2047" not in decoded:
        return decoded == anchor
    parts = [re.escape(p.strip()) for p in decoded.split("\u2047")]
    return re.fullmatch(r"\s*.+?\s*".join(parts), anchor) is not None


def test_whole_bundled_sample_round_trip(tmp_path):
    """Every bundled language: extract -> train-spm -> shards; every mention of every page decodes to
    its anchor text, and every page decodes like its paragraphs encoded whole."""
    from data_prep.pages.corpus_reader import iter_pages, open_corpus
    from data_prep.pages.extract import extract
    from data_prep.pages.redirects import RedirectResolver, read_redirects

    dumps = sorted(SAMPLE_DUMPS.glob("*wiki-*-pages-articles.xml"))
    assert len(dumps) >= 7
    dirs = []
    for dump in dumps:
        lang = dump.name.split("wiki-")[0]
        extract(dump, tmp_path / "corpora" / lang, progress=False)
        dirs.append(tmp_path / "corpora" / lang)
    # the vocabulary: every target linked at least twice in its wiki (so some links are dropped)
    counts: collections.Counter = collections.Counter()
    resolvers = {}
    for d in dirs:
        corpus = open_corpus(d)
        resolvers[corpus.lang] = resolver = RedirectResolver(read_redirects(d))
        for page in iter_pages(corpus):
            for p in page["paragraphs"]:
                counts.update((corpus.lang, resolver.resolve(link["title"])) for link in p["links"])
    entities = [(None, [(t, lang)]) for (lang, t), n in sorted(counts.items(), key=str) if t and n >= 2]
    vocab = write_vocab(tmp_path / "vocab.jsonl", entities)
    ids = {(lang, t): 4 + i for i, (_, [(t, lang)]) in enumerate(entities)}
    spm = tmp_path / "sentencepiece.bpe.model"
    train_spm(dirs, 2000, spm)
    tok = XlmrSentencePiece.load(spm)
    out = tmp_path / "shards"
    summary = build_shards(
        dirs, vocab, spm, out, max_mention_length=510, max_entity_length=512, valid_fraction=0.1,
        keep_no_entity=True, progress=False,
    )
    checked = 0
    for d in dirs:
        corpus = open_corpus(d)
        got_pages = rows_by_page(out, corpus.lang)
        for page in iter_pages(corpus):
            want, texts = [], []
            for p in page["paragraphs"]:
                for link in sorted(p["links"], key=lambda x: x["start"]):
                    entity = ids.get((corpus.lang, resolvers[corpus.lang].resolve(link["title"])))
                    if entity is not None:
                        want.append((entity, tok.normalize(p["text"][link["start"] : link["end"]]).strip()))
                decoded = tok.decode(tok.encode(p["text"]))
                if decoded:
                    texts.append(decoded)
            rows = got_pages.get(page["page_id"], [])
            got = [
                (e, tok.decode(r["word_ids"][s:t]))
                for r in rows
                for e, s, t in zip(r["entity_ids"], r["entity_starts"], r["entity_ends"])
            ]
            assert [e for e, _ in got] == [e for e, _ in want], (corpus.lang, page["title"])
            for (_, dec), (_, anchor) in zip(got, want):
                assert _matches(dec, anchor), (corpus.lang, page["title"], dec, anchor)
            assert tok.decode([i for r in rows for i in r["word_ids"]]) == " ".join(texts), (corpus.lang, page["title"])
            checked += len(got)
        dropped = summary.languages[corpus.lang].dropped
        assert not {"mentions_cut", "entities_over_limit", "links_overlapping"} & set(dropped)
        assert dropped["links_not_in_vocab"] > 0
    assert checked == sum(s.entities for s in summary.languages.values()) > 300


@pytest.mark.slow
def test_big_splits_are_sharded_the_same_whatever_the_worker_count(fixture, tmp_path, monkeypatch):
    """Splits over SHARD_BYTES are written as several files, in parallel with workers > 1."""
    import data_prep.shards.shard_writer as shard_writer

    root, dirs, vocab, spm = fixture
    ref = build_shards(dirs[:1], vocab, spm, tmp_path / "ref", valid_fraction=0.0, progress=False)
    monkeypatch.setattr(shard_writer, "SHARD_BYTES", 300)
    a = build_shards(dirs[:1], vocab, spm, tmp_path / "a", valid_fraction=0.0, workers=1, progress=False)
    b = build_shards(dirs[:1], vocab, spm, tmp_path / "b", valid_fraction=0.0, workers=2, progress=False)
    assert ref.fingerprint == a.fingerprint == b.fingerprint
    files = sorted(p.name for p in (tmp_path / "b" / "en" / "train").glob("data-*.arrow"))
    assert len(files) > 1
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert load(tmp_path / "b", "en").to_dict() == load(tmp_path / "ref", "en").to_dict()


def test_transformers_flat_entity_vocab_is_stored_as_jsonl(fixture, tmp_path):
    from data_prep.entities.vocab_file import read_entity_vocab, write_hf_entity_vocab

    root, dirs, vocab, spm = fixture
    flat = tmp_path / "entity_vocab.json"
    write_hf_entity_vocab(flat, read_entity_vocab(vocab))
    a = build_shards(dirs[:1], vocab, spm, tmp_path / "a", progress=False)
    b = build_shards(dirs[:1], flat, spm, tmp_path / "b", progress=False)
    assert a.fingerprint == b.fingerprint  # same ids either way
    copy = read_entity_vocab(tmp_path / "b" / "entity_vocab.jsonl")
    assert [(e.id, e.entities) for e in copy.entries] == [(e.id, e.entities) for e in read_entity_vocab(flat).entries]
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["entity_vocab"]["source_sha256"] == hashlib.sha256(flat.read_bytes()).hexdigest()
    assert manifest["entity_vocab"]["sha256"] == hashlib.sha256((tmp_path / "b" / "entity_vocab.jsonl").read_bytes()).hexdigest()


def test_marked_batch_encoding_equals_piece_by_piece_encoding(fixture, tmp_path, monkeypatch):
    """The fast path (all pieces of a batch marked in one string, words through the cache) gives
    the same shards as slicing every piece out and encoding it on its own; text holding the mark
    characters or an odd space sends its batch down the piece-by-piece path with the same result."""
    root, dirs, vocab, spm = fixture
    odd = [
        (900, "Odd", ["A [[Bay]] with \ue000 and \ue001 marks.", "An [[Otter|otters]]\x1cswam \x85 in [[Bay|the bay]] today."]),
        (901, "Plain", ["The [[Bay]] is calm. An [[Otter]]s swims."]),
    ]
    en = write_corpus(tmp_path / "corpora" / "en", "en", MULTILINGUAL["en"] + odd, MULTILINGUAL_REDIRECTS.get("en"))
    corpora = [en, *(d for d in dirs if d.name != "en")]
    fast = build_shards(corpora, vocab, spm, tmp_path / "fast", max_seq_length=24, valid_fraction=0.3, batch_pages=64, progress=False)
    alone = build_shards(corpora, vocab, spm, tmp_path / "alone", max_seq_length=24, valid_fraction=0.3, batch_pages=1, progress=False)
    monkeypatch.setattr(XlmrSentencePiece, "can_mark", lambda self, text: False)
    slow = build_shards(corpora, vocab, spm, tmp_path / "slow", max_seq_length=24, valid_fraction=0.3, batch_pages=64, progress=False)
    assert fast.fingerprint == slow.fingerprint == alone.fingerprint
    assert _tree(tmp_path / "fast") == _tree(tmp_path / "slow")
    tok = XlmrSentencePiece.load(spm)
    rows = rows_by_page(tmp_path / "fast", "en")
    decoded = [tok.decode(r["word_ids"][s:t]) for r in rows[900] + rows[901] for s, t in zip(r["entity_starts"], r["entity_ends"])]
    assert decoded == ["Bay", "otters", "the bay", "Bay", "Otter"]


def test_blank_overlapping_and_cut_links(fixture, tmp_path):
    """Links that cannot become mentions are dropped and counted by reason; a link may start in the
    whitespace before its sentence; a mention longer than a whole sequence is cut and counted."""
    root, dirs, vocab, spm = fixture
    text = "  Lighthouse stands. The Bay and the Otter swim  ."
    bay, otter = text.index("Bay"), text.index("Otter")
    links = [
        {"start": 0, "end": 12, "title": "Lighthouse"},  # starts in the leading whitespace
        {"start": bay, "end": bay + 3, "title": "Bay"},
        {"start": bay, "end": bay + 3, "title": "Otter"},  # the same span again: overlapping
        {"start": bay + 1, "end": otter + 2, "title": "Otter"},  # overlaps the Bay link
        {"start": otter - 1, "end": otter, "title": "Otter"},  # a blank anchor
        {"start": otter, "end": otter, "title": "Otter"},  # an empty anchor
        {"start": otter, "end": otter + 5, "title": "Otter"},
    ]
    corpus = write_corpus(tmp_path / "corpora" / "en", "en", [(1, "Page", [{"text": text, "links": links}])])
    summary = build_shards([corpus], vocab, spm, tmp_path / "out", valid_fraction=0.0, progress=False)
    lang = summary.languages["en"]
    assert lang.seen == {"links": 7, "sentences": 2, "sentences_split": 0, "mentions_long": 0}
    assert lang.dropped == {"links_empty": 2, "links_overlapping": 2}
    tok = XlmrSentencePiece.load(spm)
    [row] = load(tmp_path / "out", "en")
    mentions = [(e, tok.decode(row["word_ids"][s:t])) for e, s, t in zip(row["entity_ids"], row["entity_starts"], row["entity_ends"])]
    assert mentions == [(6, "Lighthouse"), (5, "Bay"), (9, "Otter")]
    assert tok.decode(row["word_ids"]) == tok.decode(tok.encode(text))
    # a 4-token sequence leaves room for 2 tokens: longer mentions cannot fit whole
    cut = build_shards([corpus], vocab, spm, tmp_path / "cut", max_seq_length=4, valid_fraction=0.0, keep_no_entity=True, progress=False)
    n_tokens = [len(tok.encode(x)) for x in ("Lighthouse", "Bay", "Otter")]  # the mentions kept above
    assert cut.languages["en"].dropped["mentions_cut"] == sum(n > 2 for n in n_tokens)
    assert cut.languages["en"].seen["sentences_split"] == 2


def test_short_sentences_and_links_crossing_a_sentence_boundary(fixture, tmp_path):
    """As in the reference pipeline: a sentence of fewer than --min-sentence-tokens tokens is dropped
    with its links; a link reaching over a sentence boundary is dropped (its text stays) and counted."""
    root, dirs, vocab, spm = fixture
    tok = XlmrSentencePiece.load(spm)
    sentences = ["Bay.", "Otter.", "The harbour.", "Town is old."]
    enc = [_sentence_tokens(tok, x) for x in sentences]
    assert [len(e) for e in enc[:2]] == [4, 5] and min(len(e) for e in enc[2:]) >= 5
    bay, otter = (len(tok.encode(x)) for x in ("Bay", "Otter"))  # the anchors: each sentence but its "."
    assert (bay, otter) == (3, 4)
    markup = "[[Bay]]. [[Otter]]. The [[Harbour town|harbour. Town]] is old."
    corpus = write_corpus(tmp_path / "corpora" / "en", "en", [(1, "Page", [markup])])
    assert " ".join(sentences) == para(markup)["text"]

    summary = build_shards([corpus], vocab, spm, tmp_path / "out", valid_fraction=0.0, min_sentence_tokens=5, progress=False)
    lang = summary.languages["en"]
    assert lang.seen == {"links": 3, "sentences": 4, "sentences_split": 0, "mentions_long": 0}
    assert lang.dropped == {
        "links_crossing_sentences": 1, "sentences_short": 1, "tokens_short_sentences": 4, "mentions_short_sentences": 1,
    }
    [row] = load(tmp_path / "out", "en")
    assert row["word_ids"] == enc[1] + enc[2] + enc[3]
    assert (row["entity_ids"], row["entity_starts"], row["entity_ends"]) == ([9], [0], [otter])  # Otter

    # the default keeps every sentence; the crossing link is dropped all the same
    summary = build_shards([corpus], vocab, spm, tmp_path / "all", valid_fraction=0.0, progress=False)
    assert summary.languages["en"].dropped == {"links_crossing_sentences": 1}
    [row] = load(tmp_path / "all", "en")
    assert row["word_ids"] == enc[0] + enc[1] + enc[2] + enc[3]
    assert (row["entity_ids"], row["entity_starts"], row["entity_ends"]) == ([5, 9], [0, 4], [bay, 4 + otter])
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["limits"]["min_sentence_tokens"] == 5 and manifest["languages"]["en"]["dropped"]["sentences_short"] == 1


def test_thai_sentences_are_kept_whole_around_links_and_measured_by_paragraph(fixture, tmp_path):
    """Thai boundaries are guessed from spaces: a link with a space in it keeps its sentence whole, and
    the minimum length applies to the paragraph (the reference's ICU splitter seldom breaks Thai text)."""
    root, dirs, vocab, spm = fixture
    tok = XlmrSentencePiece.load(spm)
    text = "อ่าว ประภาคาร สูง"  # three space-separated "sentences"
    links = [{"start": 0, "end": text.index(" สูง"), "title": "อ่าว"}]  # "อ่าว ประภาคาร": over the first space
    corpus = write_corpus(tmp_path / "corpora" / "th", "th", [(1, "หน้า", [{"text": text, "links": links}])])
    n = len(tok.encode(text))
    words = [len(tok.encode(w)) for w in text.split()]
    assert words[2] < 5 <= n  # the last "sentence" alone is short, the paragraph is not
    summary = build_shards([corpus], vocab, spm, tmp_path / "out", valid_fraction=0.0, min_sentence_tokens=5, progress=False)
    th = summary.languages["th"]
    assert th.seen["sentences"] == 2 and th.dropped == {}
    [row] = load(tmp_path / "out", "th")
    anchor = len(tok.encode(text[: links[0]["end"]]))
    assert row["word_ids"] == tok.encode(text).tolist()
    assert (row["entity_ids"], row["entity_starts"], row["entity_ends"]) == ([5], [0], [anchor])  # อ่าว: Q2


def test_a_mention_longer_than_max_mention_length_is_kept_whole(fixture, tmp_path):
    """As in the reference: the entity stays, the shards keep its whole span (token offsets, end
    exclusive), and the trainer's collator reads only its first max_mention_length positions."""
    from pretrain.collator import MaskingConfig, mask_sample
    from pretrain.data import Sample

    root, dirs, vocab, spm = fixture
    tok = XlmrSentencePiece.load(spm)
    anchor = " ".join(["Lighthouse"] * 6)
    text = f"The {anchor} stands."
    a, n = len(tok.encode("The")), len(tok.encode(anchor))
    assert n == 42
    links = [{"start": 4, "end": 4 + len(anchor), "title": "Lighthouse"}]
    corpus = write_corpus(tmp_path / "corpora" / "en", "en", [(1, "Page", [{"text": text, "links": links}])])
    summary = build_shards([corpus], vocab, spm, tmp_path / "out", max_mention_length=30, valid_fraction=0.0, progress=False)
    assert summary.languages["en"].seen["mentions_long"] == 1 and summary.languages["en"].dropped == {}
    [row] = load(tmp_path / "out", "en")
    assert row["word_ids"] == tok.encode(text).tolist()
    assert (row["entity_ids"], row["entity_starts"], row["entity_ends"]) == ([6], [a], [a + n])

    sample = Sample(0, "en", row["word_ids"], row["entity_ids"], row["entity_starts"], row["entity_ends"])
    masked = mask_sample(sample, MaskingConfig(spm_size=tok.spm_size, max_mention_length=30), None)
    assert masked.entity_position_ids.tolist() == [list(range(a + 1, a + 31))]  # +1: <s> comes first
    wide = mask_sample(sample, MaskingConfig(spm_size=tok.spm_size, max_mention_length=50), None)
    assert wide.entity_position_ids.tolist() == [list(range(a + 1, a + n + 1)) + [-1] * (50 - n)]
