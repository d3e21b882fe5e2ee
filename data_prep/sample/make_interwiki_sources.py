"""Build the sample's interwiki sources from ``entities.tsv`` and the sample dumps.

    python data_prep/sample/make_interwiki_sources.py            # rewrite interwiki/*
    python data_prep/sample/make_interwiki_sources.py --check    # exit 1 if a file is stale

Writes, in the formats Wikimedia publishes:

* ``interwiki/{lang}wiki-20261101-page_props.sql.gz``: a mysqldump of ``page_props`` with its real
  ``CREATE TABLE`` header and multi-row INSERTs in primary-key order. Besides ``wikibase_item`` (the rows
  that matter) every article carries other properties that must be ignored (``wikibase-shortdesc`` with
  quotes, commas and parentheses, ``page_image_free``, ``defaultsort``, ``page_top_level_section_count``
  with a sort key); category and template pages have ``wikibase_item`` rows too (their page ids are not
  articles: a consumer counts them as unresolved).
* ``interwiki/wikidata-20261101-all.json.bz2``: the Wikidata JSON dump (``[``, one entity per line with
  a trailing comma, ``]``): an item per QID with labels, descriptions, claim stubs and sitelinks for the
  sample languages plus sites that must be ignored (``commonswiki``, ``enwikiquote``, ``frwiki``,
  ``specieswiki``), items for the category pages, a property (P31), a lexeme (L1) and one truncated line.

Page ids come from the dumps themselves; the output is a pure function of ``entities.tsv`` and
``dumps/*.xml`` (gzip mtime 0, no file name in the gzip header, bz2 level 9).
"""

from __future__ import annotations

import argparse
import bz2
import csv
import gzip
import io
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
DUMP_DATE = "20261101"
LANGS = ("en", "de", "ru", "ja", "zh", "ar", "th")
OUT = HERE / "interwiki"
_NS = "{http://www.mediawiki.org/xml/export-0.11/}"

SQL_HEADER = """-- MySQL dump 10.19  Distrib 10.5.26-MariaDB, for debian-linux-gnu (x86_64)
--
-- Host: db-sample    Database: {dbname}
-- ------------------------------------------------------
-- Server version	10.6.20-MariaDB-log

/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET @OLD_CHARACTER_SET_RESULTS=@@CHARACTER_SET_RESULTS */;
/*!40101 SET @OLD_COLLATION_CONNECTION=@@COLLATION_CONNECTION */;
/*!40101 SET NAMES utf8mb4 */;
/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;
/*!40103 SET TIME_ZONE='+00:00' */;
/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;
/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;
/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;
/*!40111 SET @OLD_SQL_NOTES=@@SQL_NOTES, SQL_NOTES=0 */;

--
-- Table structure for table `page_props`
--

DROP TABLE IF EXISTS `page_props`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
/*!40101 SET character_set_client = utf8mb4 */;
CREATE TABLE `page_props` (
  `pp_page` int(10) unsigned NOT NULL,
  `pp_propname` varbinary(60) NOT NULL,
  `pp_value` mediumblob NOT NULL,
  `pp_sortkey` float DEFAULT NULL,
  PRIMARY KEY (`pp_page`,`pp_propname`),
  UNIQUE KEY `pp_propname_page` (`pp_propname`,`pp_page`),
  UNIQUE KEY `pp_propname_sortkey_page` (`pp_propname`,`pp_sortkey`,`pp_page`)
) ENGINE=InnoDB DEFAULT CHARSET=binary ROW_FORMAT=COMPRESSED;
/*!40101 SET character_set_client = @saved_cs_client */;

--
-- Dumping data for table `page_props`
--

/*!40000 ALTER TABLE `page_props` DISABLE KEYS */;
"""

SQL_FOOTER = """/*!40000 ALTER TABLE `page_props` ENABLE KEYS */;
/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;

/*!40101 SET SQL_MODE=@OLD_SQL_MODE */;
/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;
/*!40014 SET UNIQUE_CHECKS=@OLD_UNIQUE_CHECKS */;
/*!40101 SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT */;
/*!40101 SET CHARACTER_SET_RESULTS=@OLD_CHARACTER_SET_RESULTS */;
/*!40101 SET COLLATION_CONNECTION=@OLD_COLLATION_CONNECTION */;
/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;

-- Dump completed on 2026-11-01 21:14:07
"""

ROWS_PER_INSERT = 7  # small, so the sample has several multi-row INSERT lines
CATEGORY_QID_BASE = 6_000_000  # invented QIDs for the category / template pages' items


def read_entities() -> list[tuple[str, str, str]]:
    """(qid, lang, title) rows of entities.tsv."""
    with open(HERE / "entities.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [(r["qid"], r["lang"], r["title"]) for r in rows]


def read_dump_pages(lang: str) -> list[tuple[int, int, str, bool]]:
    """(page_id, ns, title, is_redirect) of every page of the sample dump, in dump order."""
    path = HERE / "dumps" / f"{lang}wiki-{DUMP_DATE}-pages-articles.xml"
    pages = []
    for _, elem in ET.iterparse(path, events=("end",)):
        if elem.tag != _NS + "page":
            continue
        pages.append(
            (
                int(elem.findtext(_NS + "id")),
                int(elem.findtext(_NS + "ns")),
                elem.findtext(_NS + "title"),
                elem.find(_NS + "redirect") is not None,
            )
        )
        elem.clear()
    return pages


def sql_string(value: str) -> str:
    """A MySQL string literal as mysqldump writes it."""
    out = value.replace("\\", "\\\\").replace("'", "\\'").replace('"', '\\"')
    out = out.replace("\n", "\\n").replace("\r", "\\r").replace("\x00", "\\0").replace("\x1a", "\\Z")
    return f"'{out}'"


def page_props_rows(lang: str, pages, qid_of: dict[tuple[str, str], str], category_qid: dict[tuple[str, str], str]):
    """(pp_page, pp_propname, pp_value, pp_sortkey) rows in primary-key order."""
    rows = []
    for i, (page_id, ns, title, redirect) in enumerate(pages):
        if redirect:
            continue
        if ns == 0:
            if (lang, title) in qid_of:
                rows.append((page_id, "wikibase_item", qid_of[(lang, title)], None))
            # Descriptions written for this sample: quotes, commas and parentheses exercise the escaping.
            rows.append((page_id, "wikibase-shortdesc", f'Sample article "{title}" (it\'s short, by design)', None))
            if i % 3 == 0:
                rows.append((page_id, "page_image_free", title.replace(" ", "_") + "_(sample's view).jpg", None))
            if " (" in title:
                rows.append((page_id, "defaultsort", title.split(" (")[0] + ", " + title.split(" (")[1].rstrip(")"), None))
            sections = 1 + page_id % 5
            rows.append((page_id, "page_top_level_section_count", str(sections), float(sections)))
        elif (lang, title) in category_qid:
            rows.append((page_id, "wikibase_item", category_qid[(lang, title)], None))
    rows.sort(key=lambda r: (r[0], r[1].encode()))
    return rows


def build_page_props(lang: str, pages, qid_of, category_qid) -> bytes:
    rows = page_props_rows(lang, pages, qid_of, category_qid)
    text = io.StringIO()
    text.write(SQL_HEADER.format(dbname=f"{lang}wiki"))
    for start in range(0, len(rows), ROWS_PER_INSERT):
        values = ",".join(
            f"({p},{sql_string(name)},{sql_string(value)},{'NULL' if key is None else f'{key:g}'})"
            for p, name, value, key in rows[start : start + ROWS_PER_INSERT]
        )
        text.write(f"INSERT INTO `page_props` VALUES {values};\n")
    text.write(SQL_FOOTER)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=buf, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(text.getvalue().encode("utf-8"))
    return buf.getvalue()


def _item(qid: str, label: str, sitelinks: dict[str, str], instance_of: str) -> str:
    # Labels in each sample language that has a sitelink (the title), as Wikidata items usually have.
    labels = {site[:-4]: {"language": site[:-4], "value": title} for site, title in sitelinks.items() if site[:-4] in LANGS}
    obj = {
        "type": "item",
        "id": qid,
        "labels": labels or {"en": {"language": "en", "value": label}},
        "descriptions": {"en": {"language": "en", "value": f"entity of the mLUKE sample ({label})"}},
        "aliases": {},
        "claims": {
            "P31": [
                {
                    "mainsnak": {
                        "snaktype": "value",
                        "property": "P31",
                        "datavalue": {"value": {"entity-type": "item", "numeric-id": int(instance_of[1:]), "id": instance_of}, "type": "wikibase-entityid"},
                        "datatype": "wikibase-item",
                    },
                    "type": "statement",
                    "id": f"{qid}$sample-p31",
                    "rank": "normal",
                }
            ]
        },
        "sitelinks": {site: {"site": site, "title": title, "badges": []} for site, title in sitelinks.items()},
        "lastrevid": 2_300_000_000 + int(qid[1:]) % 1_000_000,
    }
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def build_wikidata(entities, category_qid: dict[tuple[str, str], str]) -> bytes:
    by_qid: dict[str, dict[str, str]] = {}
    for qid, lang, title in entities:
        by_qid.setdefault(qid, {})[f"{lang}wiki"] = title
    for (lang, title), qid in category_qid.items():
        by_qid.setdefault(qid, {})[f"{lang}wiki"] = title
    lines = []
    for n, qid in enumerate(sorted(by_qid, key=lambda q: int(q[1:]))):
        links = dict(by_qid[qid])
        label = links.get("enwiki") or links[sorted(links)[0]]
        category = int(qid[1:]) >= CATEGORY_QID_BASE
        # Sites the interwiki stage must ignore: other projects, and a language outside the sample.
        if category:
            links["commonswiki"] = f"Category:{label.split(':', 1)[-1]}"
        else:
            links["frwiki"] = label
            if n % 2 == 0:
                links["enwikiquote"] = label
            if n % 5 == 0:
                links["commonswiki"] = f"Category:{label}"
            if n % 7 == 0:
                links["specieswiki"] = label
        sitelinks = {site: links[site] for site in sorted(links)}
        lines.append(_item(qid, label, sitelinks, "Q4167836" if category else "Q35120"))
        if n == 3:  # a line cut short, as a damaged download would have it: counted, not fatal
            lines.append(_item("Q999999", "cut", {"enwiki": "Cut short"}, "Q35120")[:60])
    prop = {
        "type": "property",
        "datatype": "wikibase-item",
        "id": "P31",
        "labels": {"en": {"language": "en", "value": "instance of"}},
        "claims": {},
        "sitelinks": {"enwiki": {"site": "enwiki", "title": "Instance of", "badges": []}},
    }
    lexeme = {"type": "lexeme", "id": "L1", "lemmas": {"en": {"language": "en", "value": "planet"}}, "lexicalCategory": "Q1084", "language": "Q1860"}
    lines.insert(1, json.dumps(prop, separators=(",", ":")))
    lines.append(json.dumps(lexeme, separators=(",", ":")))
    text = "[\n" + ",\n".join(lines) + "\n]\n"
    return bz2.compress(text.encode("utf-8"), compresslevel=9)


def build_all() -> dict[Path, bytes]:
    entities = read_entities()
    qid_of = {(lang, title): qid for qid, lang, title in entities}
    pages = {lang: read_dump_pages(lang) for lang in LANGS}
    category_qid: dict[tuple[str, str], str] = {}
    for lang in LANGS:
        for _, ns, title, redirect in pages[lang]:
            if ns in (10, 14) and not redirect:
                category_qid[(lang, title)] = f"Q{CATEGORY_QID_BASE + len(category_qid) + 1}"
    files = {OUT / f"{lang}wiki-{DUMP_DATE}-page_props.sql.gz": build_page_props(lang, pages[lang], qid_of, category_qid) for lang in LANGS}
    files[OUT / f"wikidata-{DUMP_DATE}-all.json.bz2"] = build_wikidata(entities, category_qid)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file differs from what would be written")
    args = parser.parse_args(argv)
    files = build_all()
    stale = [p for p, data in files.items() if not p.is_file() or p.read_bytes() != data]
    if args.check:
        for p in stale:
            print(f"stale: {p.relative_to(HERE)}", file=sys.stderr)
        return 1 if stale else 0
    OUT.mkdir(exist_ok=True)
    for p, data in files.items():
        p.write_bytes(data)
    print(f"wrote {len(files)} files to {OUT} ({len(stale)} changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
