"""make-multistream: Wikimedia's layout, a matching index, deterministic bytes; the bundled files are current."""

from __future__ import annotations

import bz2
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep.pages.multistream import make_multistream, output_names

SAMPLE_DUMPS = Path(__file__).resolve().parents[1] / "data_prep" / "sample" / "dumps"
SAMPLE_XML = sorted(SAMPLE_DUMPS.glob("*-pages-articles.xml"))


def _pages_xml(n: int) -> str:
    pages = "".join(
        f"  <page>\n    <title>Page {i}</title>\n    <ns>0</ns>\n    <id>{i + 1}</id>\n    <revision>\n"
        f'      <id>{i + 500}</id>\n      <text xml:space="preserve">Text [[Page {i + 1}]] &amp; more</text>\n'
        f"    </revision>\n  </page>\n"
        for i in range(n)
    )
    return (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" xml:lang="en">\n  <siteinfo>\n'
        "    <dbname>enwiki</dbname>\n    <case>first-letter</case>\n    <namespaces>\n"
        '      <namespace key="14" case="first-letter">Category</namespace>\n    </namespaces>\n  </siteinfo>\n'
        + pages + "</mediawiki>\n"
    )


def _streams(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        d = bz2.BZ2Decompressor()
        out.append(d.decompress(data[pos:]))
        assert d.eof
        pos = len(data) - len(d.unused_data)
    return out


def test_layout_and_index(tmp_path):
    src = tmp_path / "enwiki-20260101-pages-articles.xml"
    src.write_text(_pages_xml(250), encoding="utf-8")
    res = make_multistream(src, tmp_path / "out")
    assert res.dump.name == "enwiki-20260101-pages-articles-multistream.xml.bz2"
    assert res.index.name == "enwiki-20260101-pages-articles-multistream-index.txt.bz2"
    data = res.dump.read_bytes()
    streams = _streams(data)
    assert len(streams) == 1 + 3 + 1 == res.streams  # header, 100 + 100 + 50 pages, closing tag
    assert streams[0].startswith(b"<mediawiki") and streams[0].rstrip().endswith(b"</siteinfo>")
    assert b"<page>" not in streams[0]
    assert [s.count(b"<page>") for s in streams[1:-1]] == [100, 100, 50]
    assert streams[-1] == b"</mediawiki>\n"
    assert b"".join(streams).count(b"</page>") == 250
    index = bz2.decompress(res.index.read_bytes()).decode().splitlines()
    assert len(index) == 250 and index[0].endswith(":1:Page 0") and index[249].endswith(":250:Page 249")
    offsets = sorted({int(line.split(":", 1)[0]) for line in index})
    assert len(offsets) == 3
    for k, off in enumerate(offsets):  # every offset is a stream start holding the pages it lists
        nxt = offsets[k + 1] if k + 1 < len(offsets) else len(data)
        chunk = bz2.decompress(data[off:nxt])
        for line in index:
            o, pid, title = line.split(":", 2)
            if int(o) == off:
                assert f"<id>{pid}</id>".encode() in chunk and f"<title>{title}</title>".encode() in chunk
    # decompressed as one file it is the same XML (minus the declaration and whitespace layout)
    assert b"".join(streams).decode().count("Text [[Page 7]] &amp; more") == 1


def test_deterministic_and_cli(tmp_path):
    src = tmp_path / "x-pages-articles.xml"
    src.write_text(_pages_xml(30), encoding="utf-8")
    a = make_multistream(src, tmp_path / "a")
    r = subprocess.run([sys.executable, "-m", "data_prep", "make-multistream", "--dump", str(src), "--out-dir",
                        str(tmp_path / "b")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    b_dump, b_index = output_names(src, tmp_path / "b")
    assert a.dump.read_bytes() == b_dump.read_bytes() and a.index.read_bytes() == b_index.read_bytes()


def test_bad_input_is_one_line(tmp_path):
    src = tmp_path / "bad-pages-articles.xml"
    src.write_text(_pages_xml(5).replace("<ns>0</ns>", "<ns>0</nz>", 1), encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "data_prep", "make-multistream", "--dump", str(src), "--out-dir",
                        str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith(f"error: {src}: malformed XML at line 11,") and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.parametrize("xml", SAMPLE_XML, ids=[p.name.split("-")[0] for p in SAMPLE_XML])
def test_bundled_multistream_files_are_regenerated_identically(xml, tmp_path):
    """The committed sample multistream files must be what make-multistream writes from the XML today."""
    bundled_dump, bundled_index = output_names(xml, SAMPLE_DUMPS)
    if not bundled_dump.exists():
        pytest.fail(f"{bundled_dump.name} missing: run python -m data_prep make-multistream --dump {xml} --out-dir {SAMPLE_DUMPS}")
    res = make_multistream(xml, tmp_path)
    assert res.dump.read_bytes() == bundled_dump.read_bytes()
    assert res.index.read_bytes() == bundled_index.read_bytes()
