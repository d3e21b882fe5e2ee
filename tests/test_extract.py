"""``data_prep extract`` end to end on small dumps written here: formats, outputs, errors, robustness."""

from __future__ import annotations

import bz2
import gzip
import json
import subprocess
import sys
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import pyarrow.parquet as pq
import pytest

import data_prep.pages.extract as extract_mod
from data_prep.common.errors import InputError
from data_prep.pages.extract import extract, read_pages
from data_prep.pages.multistream import make_multistream

SITEINFO = """  <siteinfo>
    <sitename>Wikipedia</sitename>
    <dbname>{lang}wiki</dbname>
    <base>https://{lang}.wikipedia.org/wiki/Main_Page</base>
    <generator>MediaWiki 1.46.0-wmf.3</generator>
    <case>first-letter</case>
    <namespaces>
      <namespace key="-2" case="first-letter">Media</namespace>
      <namespace key="0" case="first-letter" />
      <namespace key="6" case="first-letter">{file}</namespace>
      <namespace key="10" case="first-letter">{template}</namespace>
      <namespace key="14" case="first-letter">{category}</namespace>
    </namespaces>
  </siteinfo>
"""


def page_xml(title: str, page_id: int, text: str, ns: int = 0, redirect: str | None = None) -> str:
    red = f"    <redirect title={quoteattr(redirect)} />\n" if redirect is not None else ""
    return (
        f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{page_id}</id>\n{red}"
        f"    <revision>\n      <id>{page_id + 9000}</id>\n      <model>wikitext</model>\n      <format>text/x-wiki</format>\n"
        f'      <text bytes="{len(text.encode())}" xml:space="preserve">{escape(text)}</text>\n'
        f"    </revision>\n  </page>\n"
    )


def dump_xml(pages: list[tuple], lang: str = "en", names=("File", "Template", "Category")) -> str:
    head = (
        f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" xml:lang="{lang}">\n'
        + SITEINFO.format(lang=lang, file=names[0], template=names[1], category=names[2])
    )
    return head + "".join(page_xml(*p) for p in pages) + "</mediawiki>\n"


def en_pages(n_filler: int = 0) -> list[tuple]:
    pages = [
        ("Paris", 1, "'''Paris''' is the capital of [[France]].<ref>A source</ref>\n\n== History ==\n"
                     "Founded by the [[Parisii]]s. [[Category:Cities]][[fr:Paris]]"),
        ("Capital of France", 2, "#REDIRECT [[paris#History]]", 0, "Paris#History"),
        ("Mercury", 3, "'''Mercury''' may refer to:\n* [[Mercury (planet)]]\n{{disambiguation}}"),
        ("Category:Cities", 4, "Cities of the world.", 14),
        ("Template:Infobox", 5, "{{{name}}}", 10),
        ("Only infobox", 6, "{{Infobox city|name=X}}"),
        ("France", 7, "'''France''' has {{nowrap|[[Paris]]}} and [[Lyon|its second city]]."),
    ]
    for i in range(n_filler):
        pages.append((f"Filler {i}", 100 + i, f"Filler {i} links to [[Paris]] and [[France]]s at a café."))
    return pages


def write(path: Path, text: str, encoding: str = "utf-8", bom: bool = False, decl: bool = True) -> Path:
    body = (f'<?xml version="1.0" encoding="{encoding}"?>\n' if decl else "") + text
    data = body.encode(encoding)
    if bom and encoding.lower().startswith("utf-16"):
        data = b"\xff\xfe" + body.encode("utf-16-le")
    if path.suffix == ".bz2":
        data = bz2.compress(data)
    elif path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def rows(out: Path) -> list[dict]:
    return read_pages(out).to_pylist()


# --- outputs ----------------------------------------------------------------------------------------


def test_outputs_and_stats(tmp_path):
    dump = write(tmp_path / "enwiki-pages-articles.xml", dump_xml(en_pages()))
    stats = extract(dump, tmp_path / "out", progress=False)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "pages-00000.parquet", "redirects.parquet", "siteinfo.json", "stats.json"]
    table = pq.read_table(out / "pages-00000.parquet")
    assert str(table.schema.field("page_id").type) == "int64"
    assert str(table.schema.field("paragraphs").type) == (
        "list<element: struct<text: string, links: list<element: struct<start: int32, end: int32, title: string>>>>"
    ) or str(table.schema.field("paragraphs").type) == (
        "list<item: struct<text: string, links: list<item: struct<start: int32, end: int32, title: string>>>>"
    )
    got = rows(out)
    assert [r["title"] for r in got] == ["Paris", "France"]  # dump order; no redirect/disambig/other ns/empty
    paris = got[0]
    assert paris["page_id"] == 1
    assert paris["paragraphs"] == [
        {"text": "Paris is the capital of France.", "links": [{"start": 24, "end": 30, "title": "France"}]},
        {"text": "Founded by the Parisiis.", "links": [{"start": 15, "end": 23, "title": "Parisii"}]},
    ]
    assert got[1]["paragraphs"][0] == {
        "text": "France has Paris and its second city.",
        "links": [{"start": 11, "end": 16, "title": "Paris"}, {"start": 21, "end": 36, "title": "Lyon"}],
    }
    assert pq.read_table(out / "redirects.parquet").to_pylist() == [
        {"page_id": 2, "title": "Capital of France", "target": "Paris"}
    ]
    site = json.loads((out / "siteinfo.json").read_text())
    assert (site["lang"], site["dbname"], site["case"]) == ("en", "enwiki", "first-letter")
    assert site["namespaces"]["14"] == "Category"
    st = json.loads((out / "stats.json").read_text())
    assert (st["pages_total"], st["articles"], st["redirects"], st["links"], st["failed"]) == (7, 2, 1, 4, 0)
    assert st["skipped"] == {"disambiguation": 1, "empty": 1, "namespace": 2}
    assert st["failed_pages"] == [] and st["seconds"] >= 0
    assert stats.articles == 2


def test_localised_namespaces_from_siteinfo(tmp_path):
    text = ("'''Paris''' est la [[capitale]] de la [[France]].[[Catégorie:Ville de France]]"
            "[[Fichier:Paris.jpg|vignette|La [[tour Eiffel]]]]{{Modèle:Infobox}}")
    dump = write(tmp_path / "frwiki.xml", dump_xml([("Paris", 1, text)], "fr", ("Fichier", "Modèle", "Catégorie")))
    extract(dump, tmp_path / "out", progress=False)
    assert rows(tmp_path / "out")[0]["paragraphs"] == [{
        "text": "Paris est la capitale de la France.",
        "links": [{"start": 13, "end": 21, "title": "Capitale"}, {"start": 28, "end": 34, "title": "France"}],
    }]


# --- formats ----------------------------------------------------------------------------------------


def test_formats_give_identical_output(tmp_path):
    text = dump_xml(en_pages(12))
    ref_dump = write(tmp_path / "a.xml", text)
    extract(ref_dump, tmp_path / "ref", progress=False)
    ref = rows(tmp_path / "ref")
    assert len(ref) == 14
    assert ref[2]["paragraphs"] == [{
        "text": "Filler 0 links to Paris and Frances at a café.",
        "links": [{"start": 18, "end": 23, "title": "Paris"}, {"start": 28, "end": 35, "title": "France"}],
    }]
    variants = {
        "bz2": write(tmp_path / "b.xml.bz2", text),
        "gz": write(tmp_path / "c.xml.gz", text),
        "utf16_bom": write(tmp_path / "d.xml", text, encoding="UTF-16", bom=True),
        "utf16_le_decl_no_bom": write(tmp_path / "e.xml", text, encoding="UTF-16LE"),
        "no_decl": write(tmp_path / "f.xml", text, decl=False),
        "latin1": write(tmp_path / "g.xml", text, encoding="ISO-8859-1"),
        "utf16_be_decl_no_bom": write(tmp_path / "h.xml", text, encoding="UTF-16BE"),
    }
    for name, dump in variants.items():
        extract(dump, tmp_path / name, progress=False)
        assert rows(tmp_path / name) == ref, name
    ms = make_multistream(ref_dump, tmp_path / "ms", pages_per_stream=4)
    extract(ms.dump, tmp_path / "ms_out", index=ms.index, progress=False)
    assert rows(tmp_path / "ms_out") == ref
    # the multistream file is also a plain bz2 dump
    extract(ms.dump, tmp_path / "ms_plain", progress=False)
    assert rows(tmp_path / "ms_plain") == ref


def test_limit_pages(tmp_path):
    dump = write(tmp_path / "a.xml", dump_xml(en_pages(12)))
    st = extract(dump, tmp_path / "o1", limit_pages=9, progress=False)
    assert st.pages_total == 9 and st.articles == 4  # Paris, France, Filler 0, Filler 1
    ms = make_multistream(dump, tmp_path / "ms", pages_per_stream=4)
    st = extract(ms.dump, tmp_path / "o2", index=ms.index, limit_pages=9, progress=False)
    assert st.pages_total == 9 and rows(tmp_path / "o2") == rows(tmp_path / "o1")


# --- determinism, parallelism, rotation -------------------------------------------------------------


@pytest.mark.slow
def test_one_and_two_workers_give_identical_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(extract_mod, "TASK_PAGES", 7)  # many small tasks (streams of 5 grouped in pairs)
    dump = write(tmp_path / "a.xml", dump_xml(en_pages(60)))
    ms = make_multistream(dump, tmp_path / "ms", pages_per_stream=5)
    for mode, kwargs in {"plain": {}, "multi": {"index": ms.index}}.items():
        src = ms.dump if mode == "multi" else dump
        outs = []
        for w in (1, 2):
            out = tmp_path / f"{mode}{w}"
            st = extract(src, out, workers=w, rows_per_file=25, progress=False, **kwargs)
            assert st.files == ["pages-00000.parquet", "pages-00001.parquet", "pages-00002.parquet"]
            outs.append([(out / f).read_bytes() for f in st.files] + [(out / "redirects.parquet").read_bytes()])
        assert outs[0] == outs[1], mode
    assert [len(pq.read_table(tmp_path / "multi2" / f)) for f in st.files] == [25, 25, 12]


def test_killed_run_leaves_no_parquet(tmp_path, monkeypatch):
    dump = write(tmp_path / "a.xml", dump_xml(en_pages(30)))
    ms = make_multistream(dump, tmp_path / "ms", pages_per_stream=5)
    real = extract_mod.process_pages
    calls = {"n": 0}

    def dying(pages):
        calls["n"] += 1
        if calls["n"] == 5:  # after two 8-row files would have been complete
            raise KeyboardInterrupt
        return real(pages)

    monkeypatch.setattr(extract_mod, "process_pages", dying)
    monkeypatch.setattr(extract_mod, "TASK_PAGES", 5)  # one task per 5-page stream
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        extract(ms.dump, out, index=ms.index, rows_per_file=8, progress=False)
    assert list(out.iterdir()) == []  # no pages-*.parquet, no stats.json, no temporary directory left


# --- robustness -------------------------------------------------------------------------------------


def test_timed_out_page_counted_and_run_goes_on(tmp_path):
    pages = en_pages() + [("Pathological", 50, "{{a|" * 2000), ("After", 51, "Still [[here]].")]
    dump = write(tmp_path / "a.xml", dump_xml(pages))
    st = extract(dump, tmp_path / "out", page_timeout=0.25, progress=False)
    assert st.failed == 1
    assert st.failed_pages == [{"title": "Pathological", "error": "timed out after 0.25 s"}]
    assert [r["title"] for r in rows(tmp_path / "out")] == ["Paris", "France", "After"]
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["failed_pages"][0]["title"] == "Pathological"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "data_prep", "extract", "--no-progress", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_bad_inputs(tmp_path):
    good = dump_xml(en_pages(3))
    cases = {}
    cases["missing"] = (tmp_path / "nope.xml", "not found")
    (tmp_path / "notes.txt").write_text("just some notes\nnot xml at all\n")
    cases["text"] = (tmp_path / "notes.txt", "not a MediaWiki XML dump")
    cases["root"] = (write(tmp_path / "root.xml", "<feed><entry/></feed>\n"), "root element is <feed>")
    full = bz2.compress(good.encode())
    (tmp_path / "trunc.xml.bz2").write_bytes(full[: len(full) // 2])
    cases["truncated"] = (tmp_path / "trunc.xml.bz2", "truncated")
    bad = good.replace("<title>France</title>", "<title>France</titel>")
    cases["malformed"] = (write(tmp_path / "bad.xml", bad), "malformed XML at line")
    cut = good[: good.index("<title>France")]
    cases["cut"] = (write(tmp_path / "cut.xml", cut), "ends inside a page")
    for name, (path, message) in cases.items():
        r = run_cli("--dump", str(path), "--out", str(tmp_path / f"out-{name}"))
        assert r.returncode == 2, (name, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, r.stderr)
        assert str(path) in lines[0] and message in lines[0], (name, lines[0])
    # the malformed page is located: line of the bad tag in the file
    r = run_cli("--dump", str(tmp_path / "bad.xml"), "--out", str(tmp_path / "o"))
    bad_line = bad.splitlines().index(next(ln for ln in bad.splitlines() if "</titel>" in ln)) + 1 + 1  # + declaration
    assert f"line {bad_line}," in r.stderr


def test_index_that_does_not_match(tmp_path):
    dump = write(tmp_path / "a.xml", dump_xml(en_pages(12)))
    ms = make_multistream(dump, tmp_path / "ms", pages_per_stream=4)
    lines = bz2.decompress(ms.index.read_bytes()).decode().splitlines()
    offs = sorted({int(ln.split(":", 1)[0]) for ln in lines})
    assert len(offs) == 5  # 19 pages in streams of 4 pages
    shifted = "".join(f"{int(o) + 1}:{i}:{t}\n" for o, i, t in (ln.split(":", 2) for ln in lines))
    (tmp_path / "shifted.txt").write_text(shifted)
    with pytest.raises(InputError, match="is not the start of a bz2 stream"):
        extract(ms.dump, tmp_path / "o1", index=tmp_path / "shifted.txt", progress=False)
    wrong_id = "".join(ln.replace(":7:", ":777:") + "\n" for ln in lines)
    (tmp_path / "wrong_id.txt").write_text(wrong_id)
    with pytest.raises(InputError, match="page id 777 is listed in the index but is not in the bz2 streams"):
        extract(ms.dump, tmp_path / "o2", index=tmp_path / "wrong_id.txt", progress=False)
    # only an interior offset of a task's group of streams is wrong
    interior = "".join(ln.replace(f"{offs[1]}:", f"{offs[1] + 3}:", 1) + "\n" if ln.startswith(f"{offs[1]}:") else ln + "\n"
                       for ln in lines)
    (tmp_path / "interior.txt").write_text(interior)
    with pytest.raises(InputError, match=f"offset {offs[1] + 3} is not the start of a bz2 stream"):
        extract(ms.dump, tmp_path / "o5", index=tmp_path / "interior.txt", progress=False)
    (tmp_path / "garbage.txt").write_text("hello world\n")
    r = run_cli("--dump", str(ms.dump), "--index", str(tmp_path / "garbage.txt"), "--out", str(tmp_path / "o3"))
    assert r.returncode == 2 and "garbage.txt" in r.stderr and "offset:page_id:title" in r.stderr
    # an index for a different dump: offsets beyond this file
    other = make_multistream(write(tmp_path / "big.xml", dump_xml(en_pages(200))), tmp_path / "ms2")
    with pytest.raises(InputError, match="does not match"):
        extract(ms.dump, tmp_path / "o4", index=other.index, progress=False)


def test_cli_success_prints_one_summary_line(tmp_path):
    dump = write(tmp_path / "a.xml.bz2", dump_xml(en_pages(3)))
    r = run_cli("--dump", str(dump), "--out", str(tmp_path / "out"), "--workers", "2", "--limit-pages", "8")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("extract [en]: 8 pages -> 3 articles, 1 redirects, ")
    assert "skipped: disambiguation 1, empty 1, namespace 2; failed 0;" in lines[0]
