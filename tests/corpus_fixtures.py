"""Write small extracted corpora (the on-disk format of ``data_prep extract``, DESIGN.md step 1) by hand.

Tests use these instead of running the extractor, so the counting and mapping stages are tested on
exactly the rows written here.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

LINK = pa.struct([("start", pa.int32()), ("end", pa.int32()), ("title", pa.string())])
PARAGRAPH = pa.struct([("text", pa.string()), ("links", pa.list_(LINK))])
PAGES_SCHEMA = pa.schema([("page_id", pa.int64()), ("title", pa.string()), ("paragraphs", pa.list_(PARAGRAPH))])
REDIRECTS_SCHEMA = pa.schema([("title", pa.string()), ("target", pa.string())])


def page(page_id: int, title: str, *paragraphs: Sequence[str]) -> dict:
    """A page whose paragraphs are lists of link targets; each paragraph's text is the anchors joined."""
    out = []
    for targets in paragraphs:
        text, links = "", []
        for t in targets:
            start = len(text)
            text += t
            links.append({"start": start, "end": len(text), "title": t})
            text += " "
        out.append({"text": text, "links": links})
    return {"page_id": page_id, "title": title, "paragraphs": out}


def write_corpus(
    directory: Path,
    lang: str,
    pages: Sequence[dict],
    redirects: dict[str, str] | Sequence[tuple[str, str]] = (),
    files: int = 1,
    redirect_page_ids: dict[str, int] | None = None,
) -> Path:
    """Write ``pages-NNNNN.parquet`` (split into ``files`` files), ``redirects.parquet``, ``siteinfo.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    per_file = max(1, -(-len(pages) // files))
    for i in range(files):
        chunk = list(pages[i * per_file : (i + 1) * per_file])
        pq.write_table(pa.Table.from_pylist(chunk, schema=PAGES_SCHEMA), directory / f"pages-{i:05d}.parquet")
    items = list(redirects.items()) if isinstance(redirects, dict) else list(redirects)
    table = pa.table({"title": [a for a, _ in items], "target": [b for _, b in items]}, schema=REDIRECTS_SCHEMA)
    if redirect_page_ids is not None:
        table = table.append_column("page_id", pa.array([redirect_page_ids[a] for a, _ in items], pa.int64()))
    pq.write_table(table, directory / "redirects.parquet")
    info = {"lang": lang, "dbname": f"{lang}wiki", "case": "first-letter", "namespaces": {}}
    (directory / "siteinfo.json").write_text(json.dumps(info), encoding="utf-8")
    n_links = sum(len(p["links"]) for pg in pages for p in pg["paragraphs"])
    stats = {"pages_total": len(pages) + len(items), "articles": len(pages), "redirects": len(items), "links": n_links}
    (directory / "stats.json").write_text(json.dumps(stats), encoding="utf-8")
    return directory


def write_interwiki(path: Path, rows: Sequence[tuple[str, str, str]]) -> Path:
    """An interwiki table of (lang, title, qid) rows."""
    table = pa.table(
        {"lang": [r[0] for r in rows], "title": [r[1] for r in rows], "qid": [r[2] for r in rows]},
        schema=pa.schema([("lang", pa.string()), ("title", pa.string()), ("qid", pa.string())]),
    )
    pq.write_table(table, path)
    return path


# A page_props SQL dump as mysqldump writes it, up to the first INSERT (data_prep.entities.sqldump, interwiki).
PAGE_PROPS_HEADER = b"""-- MySQL dump 10.19  Distrib 10.3.39-MariaDB, for debian-linux-gnu (x86_64)
--
-- Host: db1234    Database: enwiki
/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
DROP TABLE IF EXISTS `page_props`;
CREATE TABLE `page_props` (
  `pp_page` int(10) unsigned NOT NULL,
  `pp_propname` varbinary(60) NOT NULL,
  `pp_value` blob NOT NULL,
  `pp_sortkey` float DEFAULT NULL,
  PRIMARY KEY (`pp_page`,`pp_propname`),
  UNIQUE KEY `pp_propname_page` (`pp_propname`,`pp_page`)
) ENGINE=InnoDB DEFAULT CHARSET=binary;
LOCK TABLES `page_props` WRITE;
"""


def write_gz(path: Path, data: bytes) -> Path:
    """gzip ``data`` to ``path`` with a fixed mtime (byte-stable fixtures)."""
    with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
        gz.write(data)
    return path
