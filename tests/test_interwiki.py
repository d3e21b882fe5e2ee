"""Interwiki table from page_props SQL dumps and from the Wikidata JSON dump; both give the same rows."""

from __future__ import annotations

import bz2
import gzip
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from data_prep.common.errors import InputError
from data_prep.entities.interwiki import interwiki_from_page_props, interwiki_from_wikidata, read_interwiki
from data_prep.entities.wikidata import WikidataStats, iter_sitelinks
from tests.corpus_fixtures import PAGE_PROPS_HEADER, page, write_corpus, write_gz


def write_sql_gz(path: Path, inserts: list[str]) -> Path:
    body = "".join(f"INSERT INTO `page_props` VALUES {x};\n" for x in inserts) + "UNLOCK TABLES;\n"
    return write_gz(path, PAGE_PROPS_HEADER + body.encode())


def entity_line(qid: str, sitelinks: dict[str, str], kind: str = "item") -> str:
    obj = {
        "type": kind,
        "id": qid,
        "labels": {"en": {"language": "en", "value": f"label of {qid}"}},
        "claims": {"P31": [{"mainsnak": {"snaktype": "value", "property": "P31"}}]},
        "sitelinks": {s: {"site": s, "title": t, "badges": []} for s, t in sitelinks.items()},
    }
    return json.dumps(obj, ensure_ascii=False)


@pytest.fixture
def corpora(tmp_path) -> dict[str, Path]:
    en = write_corpus(
        tmp_path / "en",
        "en",
        [page(10, "Tokyo"), page(11, "Japan"), page(12, "O'Brien, Ann"), page(13, "Back\\slash")],
        {"Tokio": "Tokyo"},
        redirect_page_ids={"Tokio": 14},
    )
    ja = write_corpus(tmp_path / "ja", "ja", [page(20, "東京都"), page(21, "日本")])
    return {"en": en, "ja": ja}


def page_props_files(tmp_path: Path) -> list[Path]:
    en = write_sql_gz(
        tmp_path / "enwiki-20261101-page_props.sql.gz",
        [
            "(10,'page_image_free','Tokyo_skyline.jpg',NULL),(10,'wikibase_item','Q1490',NULL),"
            "(10,'wikibase-shortdesc','Capital of Japan, (city)',NULL)",
            "(11,'defaultsort','Japan\\'s',NULL),(11,'wikibase_item','Q17',NULL),(12,'wikibase_item','Q555',NULL)",
            "(13,'wikibase_item',_binary'Q777',NULL),(14,'wikibase_item','Q1490',NULL)",
            "(15,'wikibase_item','Q999',NULL),(16,'wikibase_item','not-a-qid',NULL)",  # 15: a category page
            "(17,'wikibase_item','Q1',NULL),(BROKEN",
        ],
    )
    ja = write_sql_gz(tmp_path / "jawiki-20261101-page_props.sql.gz", ["(20,'wikibase_item','Q1490',NULL),(21,'wikibase_item','Q17',0)"])
    return [en, ja]


EXPECTED_ROWS = [
    {"lang": "en", "title": "Back\\slash", "qid": "Q777"},
    {"lang": "en", "title": "Japan", "qid": "Q17"},
    {"lang": "en", "title": "O'Brien, Ann", "qid": "Q555"},
    {"lang": "en", "title": "Tokio", "qid": "Q1490"},  # the redirect, through redirects.parquet's page_id
    {"lang": "en", "title": "Tokyo", "qid": "Q1490"},
    {"lang": "ja", "title": "日本", "qid": "Q17"},
    {"lang": "ja", "title": "東京都", "qid": "Q1490"},
]


def test_page_props_route(corpora, tmp_path):
    out = tmp_path / "iw.parquet"
    stats = interwiki_from_page_props(page_props_files(tmp_path), [corpora["ja"], corpora["en"]], out, progress=False)
    assert pq.read_table(out).to_pylist() == EXPECTED_ROWS
    assert stats.rows_per_language == {"en": 5, "ja": 2}
    assert stats.unresolved_pages == {"en": 1, "ja": 0}
    assert (stats.bad_lines, stats.bad_values, stats.conflicts) == (1, 1, 0)


def test_page_props_without_redirect_page_ids_maps_articles_only(corpora, tmp_path):
    # An extractor whose redirects.parquet has no page_id column: the redirect's row is unresolved.
    write_corpus(corpora["en"], "en", [page(10, "Tokyo"), page(11, "Japan"), page(12, "O'Brien, Ann"), page(13, "Back\\slash")], {"Tokio": "Tokyo"})
    out = tmp_path / "iw.parquet"
    stats = interwiki_from_page_props(page_props_files(tmp_path), [corpora["en"], corpora["ja"]], out, progress=False)
    assert [r for r in EXPECTED_ROWS if r["title"] != "Tokio"] == pq.read_table(out).to_pylist()
    assert stats.unresolved_pages["en"] == 2


def wikidata_lines() -> list[str]:
    return [
        entity_line("Q1490", {"enwiki": "Tokyo", "jawiki": "東京都", "commonswiki": "Category:Tokyo", "enwikiquote": "Tokyo", "frwiki": "Tokyo"}),
        entity_line("Q17", {"jawiki": "日本", "enwiki": "Japan", "specieswiki": "Japan", "simplewiki": "Japan"}),
        entity_line("P31", {"enwiki": "Instance of"}, kind="property"),
        '{"type":"lexeme","id":"L1","lemmas":{"en":{"language":"en","value":"cat"}}}',
        '{"type":"item","id":"Q555","sitelinks":{"enwiki":{"site":"enwiki","title":"O\'Brien, Ann"',  # truncated line
        entity_line("Q555", {"enwiki": "O'Brien, Ann"}),
        entity_line("Q777", {"enwiki": "Back\\slash"}),
        entity_line("Q4", {"dewiki": "Nur Deutsch"}),
        entity_line("Q5", {}),
    ]


def write_wikidata(path: Path, lines: list[str], compress=bz2.compress) -> Path:
    text = "[\n" + ",\n".join(lines) + "\n]\n"
    path.write_bytes(compress(text.encode("utf-8")) if compress else text.encode("utf-8"))
    return path


def test_wikidata_filters_sites_and_entity_types(tmp_path):
    path = write_wikidata(tmp_path / "wikidata-20261101-all.json.bz2", wikidata_lines())
    stats = WikidataStats()
    rows = list(iter_sitelinks(path, ["en", "ja"], stats))
    assert rows == [
        ("en", "Tokyo", "Q1490"),
        ("ja", "東京都", "Q1490"),
        ("en", "Japan", "Q17"),
        ("ja", "日本", "Q17"),
        ("en", "O'Brien, Ann", "Q555"),
        ("en", "Back\\slash", "Q777"),
    ]
    # The property has an enwiki key, so it is parsed and skipped by type; the lexeme, Q4 (dewiki only) and
    # Q5 (no sitelinks) hold no requested site key and are skipped unparsed; the truncated line is bad.
    assert stats.skipped_entities == {"property": 1}
    assert (stats.without_sitelinks, stats.bad_lines, stats.items, stats.items_with_sitelinks) == (3, 1, 4, 4)
    assert list(iter_sitelinks(path, ["de"])) == [("de", "Nur Deutsch", "Q4")]
    assert stats.sitelinks == {"en": 4, "ja": 2}
    # simplewiki is the language "simple" only when asked for.
    assert [r for r in iter_sitelinks(path, ["simple"]) if r[0] == "simple"] == [("simple", "Japan", "Q17")]


@pytest.mark.parametrize("compress", [bz2.compress, lambda b: gzip.compress(b, mtime=0), None])
def test_wikidata_route_equals_page_props_route(corpora, tmp_path, compress):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    interwiki_from_page_props(page_props_files(tmp_path), [corpora["en"], corpora["ja"]], a, progress=False)
    lines = wikidata_lines() + [entity_line("Q1490x", {"enwiki": "Tokio"})]  # not a QID: ignored
    dump = write_wikidata(tmp_path / "wd.json.x", lines, compress)
    stats = interwiki_from_wikidata(dump, b, ["ja", "en"], progress=False)
    # The Wikidata dump has no sitelink for the redirect "Tokio"; every other row agrees.
    rows_a = [r for r in pq.read_table(a).to_pylist() if r["title"] != "Tokio"]
    assert pq.read_table(b).to_pylist() == rows_a
    assert stats.bad_lines == 1 and stats.rows_per_language == {"en": 4, "ja": 2}


def test_conflicting_rows_keep_the_lowest_qid(tmp_path):
    lines = [entity_line("Q20", {"enwiki": "Twin"}), entity_line("Q3", {"enwiki": "Twin"})]
    out = tmp_path / "iw.parquet"
    stats = interwiki_from_wikidata(write_wikidata(tmp_path / "wd.json.bz2", lines), out, ["en"], progress=False)
    assert pq.read_table(out).to_pylist() == [{"lang": "en", "title": "Twin", "qid": "Q3"}]
    assert stats.conflicts == 1


def test_read_interwiki_filters_languages(corpora, tmp_path):
    out = tmp_path / "iw.parquet"
    interwiki_from_page_props(page_props_files(tmp_path), [corpora["en"], corpora["ja"]], out, progress=False)
    assert read_interwiki(out, ["ja"]).to_pylist() == [r for r in EXPECTED_ROWS if r["lang"] == "ja"]


def test_language_errors(corpora, tmp_path):
    files = page_props_files(tmp_path)
    with pytest.raises(InputError, match="no --corpus for language 'ja'"):
        interwiki_from_page_props(files, [corpora["en"]], tmp_path / "x.parquet", progress=False)
    with pytest.raises(InputError, match="not in --languages"):
        interwiki_from_page_props(files, [corpora["en"], corpora["ja"]], tmp_path / "x.parquet", languages=["en"], progress=False)
    odd = files[1].rename(tmp_path / "props.sql.gz")
    with pytest.raises(InputError, match="cannot tell the language"):
        interwiki_from_page_props([odd], [corpora["ja"]], tmp_path / "x.parquet", progress=False)
    interwiki_from_page_props([odd], [corpora["ja"]], tmp_path / "x.parquet", lang="ja", progress=False)
    assert pq.read_table(tmp_path / "x.parquet").num_rows == 2


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "data_prep", "interwiki", *args], capture_output=True, text=True)


def test_cli_page_props(corpora, tmp_path):
    files = [str(f) for f in page_props_files(tmp_path)]
    out = tmp_path / "iw.parquet"
    r = run_cli("--page-props", *files, "--corpus", str(corpora["en"]), str(corpora["ja"]), "--languages", "en,ja", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert pq.read_table(out).to_pylist() == EXPECTED_ROWS
    assert r.stdout.startswith("interwiki (page_props): 7 rows [en=5 ja=2]; unresolved page ids 1; bad lines 1, bad rows 0, bad values 1")


def test_cli_wrong_file_for_the_flag_is_one_line_exit_2(corpora, tmp_path):
    sql = page_props_files(tmp_path)[0]
    wd = write_wikidata(tmp_path / "wd.json.bz2", wikidata_lines())
    out = tmp_path / "iw.parquet"
    cases = [
        (["--wikidata", str(sql), "--languages", "en"], f"{sql}: not a Wikidata JSON dump"),
        (["--page-props", str(wd), "--lang", "en", "--corpus", str(corpora["en"])], f"{wd}: not a SQL dump"),
        (["--wikidata", str(wd)], "--languages is required with --wikidata"),
        (["--page-props", str(sql)], "--corpus is required with --page-props"),
        (["--wikidata", str(tmp_path / "missing.bz2"), "--languages", "en"], "missing.bz2: cannot open"),
    ]
    for args, message in cases:
        r = run_cli(*args, "--out", str(out), "--no-progress")
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("error: ") and message in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not out.exists()
