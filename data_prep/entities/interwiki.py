"""``data_prep interwiki``: map (lang, title) to a Wikidata QID.

Two sources give the same table:

* ``--page-props``: each wiki's ``{dbname}-YYYYMMDD-page_props.sql.gz`` (rows ``pp_propname = 'wikibase_item'``,
  a few MB per language); page ids are turned into titles through the extracted corpora (articles, and
  redirects when the corpus records their page ids).
* ``--wikidata``: the Wikidata JSON dump's sitelinks (100+ GB, streamed with constant memory).

Output: parquet with string columns ``lang``, ``title``, ``qid``, one row per (lang, title), sorted by
(lang, title) in UTF-8 byte order, written atomically.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.common.atomic import write_parquet
from data_prep.common.errors import InputError
from data_prep.entities.sqldump import DumpStats, iter_table_rows
from data_prep.entities.wikidata import WikidataStats, iter_sitelinks, wiki_dbname

_QID_RE = re.compile(r"Q[1-9][0-9]*\Z")
_FILE_DBNAME_RE = re.compile(r"([a-z][a-z0-9_]*?wiki)-")
_CHUNK = 1 << 19  # rows buffered in Python lists before they become an arrow chunk


@dataclass
class InterwikiStats:
    source: str
    rows_per_language: dict[str, int] = field(default_factory=dict)  # rows written
    unresolved_pages: dict[str, int] = field(default_factory=dict)  # page ids not in the corpus (other namespaces)
    bad_values: int = 0  # wikibase_item values that are not QIDs
    bad_lines: int = 0
    bad_rows: int = 0
    conflicts: int = 0  # (lang, title) mapped to two QIDs; the first in QID order is kept
    first_errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        total = sum(self.rows_per_language.values())
        langs = " ".join(f"{k}={v}" for k, v in sorted(self.rows_per_language.items()))
        parts = [f"interwiki ({self.source}): {total} rows [{langs}]"]
        if self.unresolved_pages:
            parts.append(f"unresolved page ids {sum(self.unresolved_pages.values())}")
        parts.append(f"bad lines {self.bad_lines}, bad rows {self.bad_rows}, bad values {self.bad_values}")
        parts.append(f"conflicts {self.conflicts}")
        return "; ".join(parts)


def _corpus_siteinfo(corpus_dir: Path) -> dict:
    path = corpus_dir / "siteinfo.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: missing (is {corpus_dir} the output of 'data_prep extract'?)") from None
    except ValueError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(info, dict) or not isinstance(info.get("lang"), str):
        raise InputError(f"{path}: has no 'lang'")
    return info


def corpus_language(corpus_dir: str | Path) -> str:
    return _corpus_siteinfo(Path(corpus_dir))["lang"]


def page_files(corpus_dir: str | Path) -> list[Path]:
    files = sorted(Path(corpus_dir).glob("pages-*.parquet"))
    if not files:
        raise InputError(f"{corpus_dir}: no pages-*.parquet (is it the output of 'data_prep extract'?)")
    return files


def page_titles(corpus_dir: str | Path):
    """``pa.Table(page_id, title)`` of the corpus's articles, plus its redirects if they carry page ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = []
    for f in page_files(corpus_dir):
        try:
            parts.append(pq.read_table(f, columns=["page_id", "title"]))
        except Exception as e:
            raise InputError(f"{f}: not a readable pages table ({e})") from None
    redirects = Path(corpus_dir) / "redirects.parquet"
    if redirects.is_file():
        schema = pq.read_schema(redirects)
        if "page_id" in schema.names:
            parts.append(pq.read_table(redirects, columns=["page_id", "title"]))
    table = pa.concat_tables([p.cast(pa.schema([("page_id", pa.int64()), ("title", pa.string())])) for p in parts])
    return table


def _lang_of_page_props(path: Path, dbname_to_lang: dict[str, str], override: str | None) -> str:
    if override:
        return override
    name = path.name
    for dbname, lang in dbname_to_lang.items():
        if name.startswith(dbname + "-"):
            return lang
    m = _FILE_DBNAME_RE.match(name)
    if m is None:
        raise InputError(f"{path}: cannot tell the language from the file name (expected '{{lang}}wiki-...'; use --lang)")
    return m.group(1)[: -len("wiki")].replace("_", "-")


class _Progress:
    """A byte-based tqdm bar over one input file."""

    def __init__(self, path: Path, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=path.name, leave=False)

    def __call__(self, pos: int) -> None:
        if self.bar is not None and pos > self.bar.n:
            self.bar.update(pos - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def interwiki_from_page_props(
    page_props: Sequence[str | Path],
    corpora: Sequence[str | Path],
    out: str | Path,
    languages: Iterable[str] | None = None,
    lang: str | None = None,
    progress: bool = True,
) -> InterwikiStats:
    """Build the interwiki table from page_props SQL dumps and the extracted corpora of the same wikis."""
    import pyarrow as pa

    if lang and len(page_props) != 1:
        raise InputError("--lang: only with exactly one --page-props file (the language of the others comes from their names)")
    corpus_by_lang: dict[str, Path] = {}
    dbname_to_lang: dict[str, str] = {}
    for c in map(Path, corpora):
        info = _corpus_siteinfo(c)
        if info["lang"] in corpus_by_lang:
            raise InputError(f"{c}: a second corpus for language {info['lang']!r} (first: {corpus_by_lang[info['lang']]})")
        corpus_by_lang[info["lang"]] = c
        dbname_to_lang[info.get("dbname") or wiki_dbname(info["lang"])] = info["lang"]
    wanted = set(languages) if languages else None
    stats = InterwikiStats(source="page_props")
    tables = []
    seen_langs: dict[str, Path] = {}
    for path in map(Path, page_props):
        file_lang = _lang_of_page_props(path, dbname_to_lang, lang)
        if wanted is not None and file_lang not in wanted:
            raise InputError(f"{path}: page_props of language {file_lang!r}, which is not in --languages")
        if file_lang in seen_langs:
            raise InputError(f"{path}: a second page_props file for language {file_lang!r} (first: {seen_langs[file_lang]})")
        seen_langs[file_lang] = path
        if file_lang not in corpus_by_lang:
            raise InputError(f"{path}: no --corpus for language {file_lang!r} to resolve its page ids")
        page_ids: list[int] = []
        qids: list[str] = []
        chunks = []
        dump_stats = DumpStats()
        bar = _Progress(path, progress)
        try:
            rows = iter_table_rows(path, "page_props", dump_stats, on_progress=bar, where=("pp_propname", "wikibase_item"))
            for row in rows:
                if isinstance(row, tuple):  # no CREATE TABLE: the standard column order
                    row = dict(zip(("pp_page", "pp_propname", "pp_value", "pp_sortkey"), row))
                name = row.get("pp_propname")
                if isinstance(name, bytes):
                    name = name.decode("utf-8", "replace")
                if name != "wikibase_item":
                    continue
                page, value = row.get("pp_page"), row.get("pp_value")
                if isinstance(value, bytes):
                    value = value.decode("utf-8", "replace")
                if not isinstance(page, int) or not isinstance(value, str) or not _QID_RE.match(value):
                    stats.bad_values += 1
                    if len(stats.first_errors) < 5:
                        stats.first_errors.append(f"{path}: bad wikibase_item row {row!r}")
                    continue
                page_ids.append(page)
                qids.append(value)
                if len(page_ids) >= _CHUNK:
                    chunks.append(pa.table({"page_id": pa.array(page_ids, pa.int64()), "qid": pa.array(qids, pa.string())}))
                    page_ids, qids = [], []
        finally:
            bar.close()
        chunks.append(pa.table({"page_id": pa.array(page_ids, pa.int64()), "qid": pa.array(qids, pa.string())}))
        stats.bad_lines += dump_stats.bad_lines
        stats.bad_rows += dump_stats.bad_rows
        stats.first_errors.extend(f"{path}: {e}" for e in dump_stats.first_errors[: 5 - len(stats.first_errors)])
        props = pa.concat_tables(chunks)
        titles = page_titles(corpus_by_lang[file_lang])
        joined = props.join(titles, keys="page_id", join_type="inner")
        stats.unresolved_pages[file_lang] = props.num_rows - joined.num_rows
        tables.append(
            pa.table(
                {
                    "lang": pa.array([file_lang] * joined.num_rows, pa.string()),
                    "title": joined.column("title"),
                    "qid": joined.column("qid"),
                }
            )
        )
    _write_sorted(tables, out, stats)
    return stats


def interwiki_from_wikidata(
    wikidata: str | Path,
    out: str | Path,
    languages: Iterable[str],
    progress: bool = True,
) -> InterwikiStats:
    """Build the interwiki table from the Wikidata JSON dump's sitelinks of the given languages."""

    languages = sorted(set(languages))
    if not languages:
        raise InputError("--languages: at least one language is needed")
    path = Path(wikidata)
    wd_stats = WikidataStats()
    stats = InterwikiStats(source="wikidata")
    cols: tuple[list[str], list[str], list[str]] = ([], [], [])
    tables = []
    bar = _Progress(path, progress)
    try:
        for lang, title, qid in iter_sitelinks(path, languages, wd_stats, on_progress=bar):
            cols[0].append(lang)
            cols[1].append(title)
            cols[2].append(qid)
            if len(cols[0]) >= _CHUNK:
                tables.append(_table_from_lists(*cols))
                cols = ([], [], [])
    finally:
        bar.close()
    tables.append(_table_from_lists(*cols))
    stats.bad_lines = wd_stats.bad_lines
    stats.first_errors = list(wd_stats.first_errors)
    _write_sorted(tables, out, stats)
    return stats


def _table_from_lists(langs: list[str], titles: list[str], qids: list[str]):
    import pyarrow as pa

    return pa.table({"lang": pa.array(langs, pa.string()), "title": pa.array(titles, pa.string()), "qid": pa.array(qids, pa.string())})


def _write_sorted(tables: list, out: str | Path, stats: InterwikiStats) -> None:
    """Sort by (lang, title, qid), keep one row per (lang, title), count rows per language, write."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    table = pa.concat_tables(tables).combine_chunks()
    # Sorting on the QID's number makes "which QID wins a conflict" mean something (the oldest item).
    qnum = pc.cast(pc.utf8_slice_codeunits(table.column("qid"), 1), pa.int64())
    table = table.append_column("_qnum", qnum)
    table = table.take(pc.sort_indices(table, [("lang", "ascending"), ("title", "ascending"), ("_qnum", "ascending")]))
    table = table.drop_columns(["_qnum"])
    if table.num_rows > 1:
        lang, title = table.column("lang"), table.column("title")
        same = pc.and_(
            pc.equal(lang.slice(1), lang.slice(0, table.num_rows - 1)),
            pc.equal(title.slice(1), title.slice(0, table.num_rows - 1)),
        )
        dup = np.concatenate([[False], same.to_numpy(zero_copy_only=False)])
        stats.conflicts = int(dup.sum())
        if stats.conflicts:
            table = table.filter(pa.array(~dup))
    counts = pc.value_counts(table.column("lang")) if table.num_rows else []
    stats.rows_per_language = {c["values"].as_py(): c["counts"].as_py() for c in counts}
    write_parquet(out, table)


def read_interwiki(path: str | Path, languages: Iterable[str] | None = None):
    """Read an interwiki table (``lang``, ``title``, ``qid``), optionally only the given languages."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: interwiki table not found")
    try:
        table = pq.read_table(path, columns=["lang", "title", "qid"])
    except Exception as e:
        raise InputError(f"{path}: not an interwiki table with columns lang, title, qid ({e})") from None
    table = table.cast(pa.schema([("lang", pa.string()), ("title", pa.string()), ("qid", pa.string())]))
    if languages is not None:
        table = table.filter(pc.is_in(table.column("lang"), pa.array(sorted(set(languages)), pa.string())))
    return table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--page-props", nargs="+", type=Path, metavar="FILE", help="{lang}wiki-*-page_props.sql[.gz] dumps")
    src.add_argument("--wikidata", type=Path, metavar="FILE", help="Wikidata JSON dump (.json, .json.gz or .json.bz2)")
    parser.add_argument("--corpus", nargs="+", type=Path, default=[], metavar="DIR", help="extracted corpora (with --page-props)")
    parser.add_argument("--languages", help="comma-separated language codes, e.g. en,ja (required with --wikidata)")
    parser.add_argument("--lang", help="language of the single --page-props file when its name does not say")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.parquet")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parse_languages(text: str | None) -> list[str] | None:
    if text is None:
        return None
    langs = [x.strip() for x in text.split(",") if x.strip()]
    if not langs:
        raise InputError("--languages: empty list")
    return langs


def run_cli(args: argparse.Namespace) -> int:
    languages = _parse_languages(args.languages)
    if args.wikidata is not None:
        if languages is None:
            raise InputError("--languages is required with --wikidata")
        if args.lang:
            raise InputError("--lang only applies to --page-props")
        stats = interwiki_from_wikidata(args.wikidata, args.out, languages, progress=not args.no_progress)
    else:
        if not args.corpus:
            raise InputError("--corpus is required with --page-props (page ids are resolved to titles through it)")
        stats = interwiki_from_page_props(
            args.page_props, args.corpus, args.out, languages=languages, lang=args.lang, progress=not args.no_progress
        )
    print(stats.summary())
    for err in stats.first_errors:
        print(f"  e.g. {err}")
    return 0
