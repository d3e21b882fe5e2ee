"""Entity vocabulary: counting, redirects, red links, QID merging, cut-offs, determinism, CLI errors.

The hand-built corpus below is small enough that every expected count is worked out in the comments.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from data_prep.common.errors import InputError
from data_prep.entities import entity_vocab as ev
from data_prep.entities.entity_vocab import build_entity_vocab, count_language, resolve_titles
from data_prep.entities.vocab_file import read_entity_vocab
from data_prep.pages.redirects import RedirectResolver
from tests.corpus_fixtures import page, write_corpus, write_interwiki

EN_PAGES = [
    page(1, "Tokyo", ["Japan", "Nippon", "Kyoto"], ["Tokio"]),
    page(2, "Japan", ["Tokyo", "Tokyo", "Loop A", "Red Link"]),
    page(3, "Kyoto", ["Japan", "Cat", "Self"], ["Osaka", "Osaka"]),
    page(4, "Paris", ["France"]),
    page(5, "France", ["Paris", "Tokyo"]),
    page(6, "Cat"),
    page(7, "Osaka", []),
]
EN_REDIRECTS = {
    "Tokio": "Tokyo",
    "Nippon": "Japan Country",  # a double redirect: Nippon -> Japan Country -> Japan
    "Japan Country": "Japan",
    "Loop A": "Loop B",
    "Loop B": "Loop A",
    "Self": "Self",
}
# en after resolution: Japan 3 (Japan, Nippon->Japan, Japan), Tokyo 4 (Tokio, Tokyo x2, Tokyo), Kyoto 1,
# Cat 1, Osaka 2, Paris 1, France 1; "Loop A" and "Self" are loops (2 dropped); "Red Link" is red (1).
JA_PAGES = [
    page(10, "東京都", ["日本", "日本"]),
    page(11, "日本", ["東京", "東京都", "パリ"]),
    page(12, "パリ", ["猫"]),
    page(13, "猫", ["存在しない"]),
]
JA_REDIRECTS = {"東京": "東京都"}
# ja: 日本 2, 東京都 2 (東京->東京都, 東京都), パリ 1, 猫 1; red: 存在しない 1.
DE_PAGES = [
    page(20, "Tokio", ["Japan", "Berlin"]),
    page(21, "Japan", ["Tokio", "Katze", "Katze"]),
    page(22, "Katze"),
    page(23, "Berlin"),
]
# de: Japan 1, Berlin 1, Tokio 1, Katze 2.
INTERWIKI = [
    ("en", "Tokyo", "Q1490"),
    ("ja", "東京都", "Q1490"),
    ("de", "Tokio", "Q1490"),
    ("en", "Japan", "Q17"),
    ("ja", "日本", "Q17"),
    ("de", "Japan", "Q17"),
    ("en", "Paris", "Q90"),
    ("ja", "パリ", "Q90"),
    ("fr", "Paris", "Q90"),  # not a corpus language: not in the vocabulary's names
    ("en", "Cat", "Q146"),
    ("ja", "猫", "Q146"),
    ("de", "Katze", "Q146"),
    ("en", "France", "Q142"),
    ("en", "Kyoto", "Q34600"),
    ("ja", "京都市", "Q34600"),  # an article nobody links in ja: still one of the entity's names
]
# Totals: Q1490 4+2+1=7 (3 langs), Q17 3+2+1=6 (3), Q146 1+1+2=4 (3), Q90 1+1=2 (2), en:Osaka 2 (1),
# Q142 1, Q34600 1, de:Berlin 1. Ties: by key in byte order, "Q..." < "de:..." < "en:...".
EXPECTED = [
    (4, "Q1490", [["Tokio", "de"], ["Tokyo", "en"], ["東京都", "ja"]], 7),
    (5, "Q17", [["Japan", "de"], ["Japan", "en"], ["日本", "ja"]], 6),
    (6, "Q146", [["Katze", "de"], ["Cat", "en"], ["猫", "ja"]], 4),
    (7, "Q90", [["Paris", "en"], ["パリ", "ja"]], 2),
    (8, None, [["Osaka", "en"]], 2),
    (9, "Q142", [["France", "en"]], 1),
    (10, "Q34600", [["Kyoto", "en"], ["京都市", "ja"]], 1),
    (11, None, [["Berlin", "de"]], 1),
]
SPECIALS = [
    {"id": 0, "qid": None, "entities": [["[PAD]", None]], "count": 0},
    {"id": 1, "qid": None, "entities": [["[UNK]", None]], "count": 0},
    {"id": 2, "qid": None, "entities": [["[MASK]", None]], "count": 0},
    {"id": 3, "qid": None, "entities": [["[MASK2]", None]], "count": 0},
]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpora")
    return {
        "en": write_corpus(root / "en", "en", EN_PAGES, EN_REDIRECTS, files=2),
        "ja": write_corpus(root / "ja", "ja", JA_PAGES, JA_REDIRECTS),
        "de": write_corpus(root / "de", "de", DE_PAGES),
        "iw": write_interwiki(root / "interwiki.parquet", INTERWIKI),
    }


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def as_dicts(expected) -> list[dict]:
    return [{"id": i, "qid": q, "entities": e, "count": c} for i, q, e, c in expected]


def build(corpora, tmp_path, name="vocab.jsonl", langs=("en", "ja", "de"), **kw) -> Path:
    out = tmp_path / name
    kw.setdefault("vocab_size", 100)
    kw.setdefault("interwiki", corpora["iw"])
    build_entity_vocab([corpora[lang] for lang in langs], out, progress=False, **kw)
    return out


def test_count_language_resolves_chains_drops_loops_and_red_links(corpora):
    table, st = count_language(corpora["en"])
    counts = dict(zip(table["title"].to_pylist(), table["count"].to_pylist()))
    assert counts == {"Japan": 3, "Tokyo": 4, "Kyoto": 1, "Cat": 1, "Osaka": 2, "Paris": 1, "France": 1}
    assert (st.links, st.kept, st.dropped_loops, st.dropped_red, st.redirected) == (16, 13, 2, 1, 4)
    assert st.distinct_titles == 12 and st.distinct_targets == 7


def test_count_language_attaches_qids_and_prunes_plain_entities(corpora):
    table, st = count_language(corpora["en"], interwiki=corpora["iw"], min_count=2)
    rows = {r["title"]: (r["count"], r["qid"]) for r in table.to_pylist()}
    # Plain (QID-less) Osaka has 2 links and stays; every QID row stays whatever its count (other
    # languages add to it in the parent).
    assert rows == {
        "Japan": (3, "Q17"), "Tokyo": (4, "Q1490"), "Kyoto": (1, "Q34600"), "Cat": (1, "Q146"),
        "Osaka": (2, None), "Paris": (1, "Q90"), "France": (1, "Q142"),
    }  # fmt: skip
    assert (st.targets_with_qid, st.pruned_plain) == (6, 0)
    table, st = count_language(corpora["en"], interwiki=corpora["iw"], min_languages=2)
    assert None not in table["qid"].to_pylist() and st.pruned_plain == 1


def test_count_language_keep_red_links(corpora):
    table, st = count_language(corpora["ja"], keep_red_links=True)
    counts = dict(zip(table["title"].to_pylist(), table["count"].to_pylist()))
    assert counts == {"日本": 2, "東京都": 2, "パリ": 1, "猫": 1, "存在しない": 1}
    assert (st.kept_red, st.dropped_red) == (1, 0)


def test_partial_count_merging_gives_the_same_counts(corpora, monkeypatch):
    # One page per batch, a count every 3 links, merges from 2 rows on: the same totals as one big batch.
    full, _ = count_language(corpora["en"])
    monkeypatch.setattr(ev, "_BATCH_ROWS", 1)
    monkeypatch.setattr(ev, "_FLUSH_LINKS", 3)
    monkeypatch.setattr(ev, "_COMPACT_MIN_ROWS", 2)
    small, _ = count_language(corpora["en"])
    assert sorted(zip(full["title"].to_pylist(), full["count"].to_pylist())) == sorted(
        zip(small["title"].to_pylist(), small["count"].to_pylist())
    )


def test_exact_vocab_ids_merged_counts_and_specials(corpora, tmp_path):
    out = build(corpora, tmp_path)
    assert load(out) == SPECIALS + as_dicts(EXPECTED)
    vocab = read_entity_vocab(out)
    # The same QID in any language is one id.
    assert vocab.lookup("en", "Tokyo") == vocab.lookup("ja", "東京都") == vocab.lookup("de", "Tokio") == 4
    assert vocab.lookup("ja", "京都市") == 10
    assert vocab.lookup("fr", "Paris") is None
    assert vocab.lookup("en", "Tokio") is None  # redirects are resolved before lookup, not in the vocab


def test_keep_red_links_adds_them_as_plain_entities(corpora, tmp_path):
    out = build(corpora, tmp_path, keep_red_links=True)
    tail = [(e["qid"], e["entities"], e["count"]) for e in load(out)[9:]]
    assert tail == [
        ("Q142", [["France", "en"]], 1),
        ("Q34600", [["Kyoto", "en"], ["京都市", "ja"]], 1),
        (None, [["Berlin", "de"]], 1),
        (None, [["Red Link", "en"]], 1),
        (None, [["存在しない", "ja"]], 1),
    ]


def test_min_languages_min_count_and_vocab_size(corpora, tmp_path):
    by3 = load(build(corpora, tmp_path, "a.jsonl", min_languages=3))
    assert [e["qid"] for e in by3[4:]] == ["Q1490", "Q17", "Q146"]
    by2 = load(build(corpora, tmp_path, "b.jsonl", min_languages=2))
    assert [e["qid"] for e in by2[4:]] == ["Q1490", "Q17", "Q146", "Q90"]
    mc = load(build(corpora, tmp_path, "c.jsonl", min_count=2))
    assert [(e["qid"], e["count"]) for e in mc[4:]] == [("Q1490", 7), ("Q17", 6), ("Q146", 4), ("Q90", 2), (None, 2)]
    small = load(build(corpora, tmp_path, "d.jsonl", vocab_size=6))
    assert small == SPECIALS + as_dicts(EXPECTED[:2])
    only_specials = load(build(corpora, tmp_path, "e.jsonl", vocab_size=4))
    assert only_specials == SPECIALS


def test_without_interwiki_every_title_is_its_own_entity(corpora, tmp_path):
    out = build(corpora, tmp_path, langs=("en", "de"), interwiki=None, vocab_size=7)
    got = [(e["qid"], e["entities"], e["count"]) for e in load(out)[4:]]
    # en:Tokyo 4, en:Japan 3, then count 2: "de:Katze" < "en:Osaka".
    assert got == [(None, [["Tokyo", "en"]], 4), (None, [["Japan", "en"]], 3), (None, [["Katze", "de"]], 2)]


def test_per_language_top_keeps_each_languages_top_n_before_the_qid_merge(corpora, tmp_path):
    # Top 2 per language (count descending, ties by title): en Tokyo 4, Japan 3 (Osaka 2 is out);
    # ja 日本 2, 東京都 2; de Katze 2, then Berlin < Japan < Tokio at 1: Berlin. So Q1490 = en 4 + ja 2
    # (de Tokio is outside de's top 2), Q17 = en 3 + ja 2, Q146 = de 2 only (en Cat and ja 猫 are out).
    table, st = count_language(corpora["en"], per_language_top=2)
    assert dict(zip(table["title"].to_pylist(), table["count"].to_pylist())) == {"Tokyo": 4, "Japan": 3}
    assert (st.beyond_top, st.kept, st.distinct_targets) == (5, 7, 2)
    got = [(e["qid"], e["count"]) for e in load(build(corpora, tmp_path, per_language_top=2))[4:]]
    assert got == [("Q1490", 6), ("Q17", 5), ("Q146", 2), (None, 1)]
    # an entity in one language's top N but not another's loses that language for min_languages
    by2 = load(build(corpora, tmp_path, "b.jsonl", per_language_top=2, min_languages=2))
    assert [(e["qid"], e["count"]) for e in by2[4:]] == [("Q1490", 6), ("Q17", 5)]
    # a top N as large as every language's targets changes nothing
    assert build(corpora, tmp_path, "all.jsonl", per_language_top=7).read_bytes() == build(corpora, tmp_path).read_bytes()
    with pytest.raises(InputError, match="--per-language-top 0"):
        build(corpora, tmp_path, "bad.jsonl", per_language_top=0)


def test_output_is_byte_identical_whatever_workers_and_corpus_order(corpora, tmp_path):
    a = build(corpora, tmp_path, "a.jsonl", langs=("en", "ja", "de"), workers=1, hf_out=tmp_path / "a.json")
    b = build(corpora, tmp_path, "b.jsonl", langs=("de", "ja", "en"), workers=2, hf_out=tmp_path / "b.json")
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    # Same pages split into another number of files: same counts, same bytes.
    resplit = write_corpus(tmp_path / "en3", "en", EN_PAGES, EN_REDIRECTS, files=3)
    c = tmp_path / "c.jsonl"
    build_entity_vocab([resplit, corpora["ja"], corpora["de"]], c, 100, interwiki=corpora["iw"], progress=False)
    assert a.read_bytes() == c.read_bytes()


def test_hf_entity_vocab_maps_every_name_to_the_entity_id(corpora, tmp_path):
    build(corpora, tmp_path, vocab_size=7, hf_out=tmp_path / "entity_vocab.json")
    flat = json.loads((tmp_path / "entity_vocab.json").read_text(encoding="utf-8"))
    assert flat == {
        "[PAD]": 0, "[UNK]": 1, "[MASK]": 2, "[MASK2]": 3,
        "de:Tokio": 4, "en:Tokyo": 4, "ja:東京都": 4,
        "de:Japan": 5, "en:Japan": 5, "ja:日本": 5,
        "de:Katze": 6, "en:Cat": 6, "ja:猫": 6,
    }  # fmt: skip


def test_vectorised_resolution_matches_redirect_resolver():
    rng = random.Random(0)
    names = [f"T{i}" for i in range(300)]
    redirects: dict[str, str] = {}
    for name in rng.sample(names, 150):  # chains, merges, loops and self-loops at random
        redirects[name] = rng.choice(names)
    table = pa.table({"title": list(redirects), "target": list(redirects.values())})
    got = resolve_titles(pa.array(names + ["absent"]), table).to_pylist()
    resolver = RedirectResolver(redirects)
    assert got == [resolver.resolve(n) for n in names + ["absent"]]
    assert any(g is None for g in got) and any(g not in (None, n) for g, n in zip(got, names))


def test_long_chain_resolves_and_a_too_long_one_counts_as_a_loop():
    chain = {f"C{i}": f"C{i + 1}" for i in range(20)}
    table = pa.table({"title": list(chain), "target": list(chain.values())})
    # At most MAX_HOPS - 1 = 15 hops are followed (MAX_HOPS lookups, as in RedirectResolver): C5 -> C20 is
    # 15 hops, C4 -> C20 is 16.
    got = resolve_titles(pa.array(["C4", "C5", "C19", "C20"]), table).to_pylist()
    assert got == [None, "C20", "C20", "C20"]


def test_duplicate_redirect_rows_last_wins(tmp_path):
    d = write_corpus(tmp_path / "x", "en", [page(1, "New", ["X"]), page(2, "Old")], [("X", "Old"), ("X", "New")])
    table, _ = count_language(d)
    assert table.to_pylist() == [{"title": "New", "count": 1, "qid": None}]


def test_bad_arguments_raise_input_error(corpora, tmp_path):
    with pytest.raises(InputError, match="vocab-size"):
        build(corpora, tmp_path, vocab_size=3)
    with pytest.raises(InputError, match="second corpus for language 'en'"):
        build_entity_vocab([corpora["en"], corpora["en"]], tmp_path / "v.jsonl", 10, progress=False)
    bad_iw = write_interwiki(tmp_path / "dup.parquet", [("en", "Tokyo", "Q1"), ("en", "Tokyo", "Q2")])
    with pytest.raises(InputError, match=r"some \(en, title\) appears twice"):
        build(corpora, tmp_path, interwiki=bad_iw)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "data_prep", "entity-vocab", *args], capture_output=True, text=True)


def test_cli_builds_the_vocab_and_reports(corpora, tmp_path):
    out = tmp_path / "cli.jsonl"
    corpus_args = [str(corpora[x]) for x in ("en", "ja", "de")]
    r = run_cli("--corpus", *corpus_args, "--interwiki", str(corpora["iw"]), "--vocab-size", "100", "--out", str(out), "--workers", "1", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert load(out) == SPECIALS + as_dicts(EXPECTED)
    assert "entity-vocab: 3 languages, 28 links (24 counted, 2 red links dropped, 2 in redirect loops dropped)" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--corpus", "/nonexistent/corpus", "--vocab-size", "10"], "/nonexistent/corpus/siteinfo.json: missing"),
        (["--corpus", "{en}", "--vocab-size", "2"], "--vocab-size 2"),
        (["--corpus", "{en}", "--vocab-size", "10", "--per-language-top", "0"], "--per-language-top 0: must be at least 1"),
        (["--corpus", "{en}", "--vocab-size", "10", "--interwiki", "/nonexistent/iw.parquet"], "/nonexistent/iw.parquet: interwiki table not found"),
    ],
)
def test_cli_errors_are_one_line_exit_2(corpora, tmp_path, args, message):
    args = [a.replace("{en}", str(corpora["en"])) for a in args]
    r = run_cli(*args, "--out", str(tmp_path / "v.jsonl"), "--no-progress")
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and message in r.stderr
    assert r.stderr.count("\n") == 1
    assert not (tmp_path / "v.jsonl").exists()


# ---------------------------------------------------------------------------------------------------
# The bundled sample: interwiki sources generated from entities.tsv, corpora extracted from its dumps.

SAMPLE = Path(__file__).resolve().parents[1] / "data_prep" / "sample"
SAMPLE_LANGS = ("en", "de", "ru", "ja", "zh", "ar", "th")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from data_prep.entities.interwiki import interwiki_from_page_props, interwiki_from_wikidata
    from data_prep.pages.extract import extract

    root = tmp_path_factory.mktemp("sample")
    corpora = {}
    for lang in SAMPLE_LANGS:
        dump = SAMPLE / "dumps" / f"{lang}wiki-20261101-pages-articles.xml"
        corpora[lang] = root / lang
        extract(dump=dump, out=corpora[lang], workers=1, progress=False)
    props = sorted((SAMPLE / "interwiki").glob("*wiki-20261101-page_props.sql.gz"))
    assert len(props) == len(SAMPLE_LANGS)
    pp = root / "iw_page_props.parquet"
    pp_stats = interwiki_from_page_props(props, list(corpora.values()), pp, languages=SAMPLE_LANGS, progress=False)
    wd = root / "iw_wikidata.parquet"
    wd_stats = interwiki_from_wikidata(SAMPLE / "interwiki" / "wikidata-20261101-all.json.bz2", wd, SAMPLE_LANGS, progress=False)
    vocab = root / "vocab.jsonl"
    build_entity_vocab(list(corpora.values()), vocab, 100_000, interwiki=pp, keep_red_links=True, workers=2, progress=False)
    return {"corpora": corpora, "pp": pp, "wd": wd, "pp_stats": pp_stats, "wd_stats": wd_stats, "vocab": vocab}


def sample_entities() -> dict[str, list[tuple[str, str]]]:
    by_qid: dict[str, list[tuple[str, str]]] = {}
    for line in (SAMPLE / "entities.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        qid, lang, title = line.split("\t")
        by_qid.setdefault(qid, []).append((lang, title))
    return by_qid


def test_sample_interwiki_sources_are_up_to_date():
    r = subprocess.run([sys.executable, str(SAMPLE / "make_interwiki_sources.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_sample_interwiki_page_props_equals_wikidata(sample):
    import pyarrow.parquet as pq

    pp = pq.read_table(sample["pp"]).to_pylist()
    wd = pq.read_table(sample["wd"]).to_pylist()
    articles = {(lang, t) for lang, c in sample["corpora"].items() for t in ev.article_titles(c).to_pylist()}
    # Wikidata also links category pages; page_props can only name pages the corpora hold (articles).
    assert pp == [r for r in wd if (r["lang"], r["title"]) in articles]
    expected = sorted((lang, title, qid) for qid, names in sample_entities().items() for lang, title in names)
    assert sorted((r["lang"], r["title"], r["qid"]) for r in pp) == expected
    assert sample["wd_stats"].bad_lines == 1 and sample["pp_stats"].bad_lines == 0
    assert sum(sample["pp_stats"].unresolved_pages.values()) > 0  # category/template items


def test_sample_cross_language_entities_share_one_id_with_exact_counts(sample):
    from collections import Counter

    import pyarrow.parquet as pq

    from data_prep.pages.redirects import read_redirects

    # Independent count: a plain Python loop over every link with the lead's RedirectResolver.
    counts: Counter = Counter()
    for lang, corpus in sample["corpora"].items():
        resolver = RedirectResolver(read_redirects(corpus))
        for f in sorted(corpus.glob("pages-*.parquet")):
            for paragraphs in pq.read_table(f, columns=["paragraphs"]).column("paragraphs").to_pylist():
                for para in paragraphs:
                    for link in para["links"]:
                        target = resolver.resolve(link["title"])
                        if target is not None:
                            counts[(lang, target)] += 1
    vocab = read_entity_vocab(sample["vocab"])
    entries = {e.qid: e for e in vocab.entries if e.qid}
    shared = 0
    for qid, names in sample_entities().items():
        total = sum(counts[name] for name in names)
        if total == 0:
            assert qid not in entries
            continue
        entry = entries[qid]
        assert entry.count == total, qid
        assert list(entry.entities) == sorted(((t, lang) for lang, t in names), key=lambda x: (x[1], x[0]))
        assert {vocab.lookup(lang, t) for lang, t in names} == {entry.id}
        shared += len(names) > 1
    assert shared >= 20
    # Every counted target is in the vocabulary (nothing cut): plain entities carry their own counts.
    plain = {(e.entities[0][1], e.entities[0][0]): e.count for e in vocab.entries[4:] if e.qid is None}
    qid_names = {(lang, t) for names in sample_entities().values() for lang, t in names}
    assert plain == {k: v for k, v in counts.items() if k not in qid_names}
