"""``data_prep entity-vocab``: count redirect-resolved link targets -> one multilingual entity vocabulary.

Pipeline (all counting is vectorised with pyarrow; no Python loop runs per link):

1. Per language, in a worker process: read only the ``paragraphs.links.title`` leaf column of every
   ``pages-*.parquet`` batch by batch, ``value_counts`` every ~4M links, and merge the partial counts
   (``group_by(...).sum``) when they double, so a worker holds O(distinct titles), never O(links).
2. Resolve the distinct titles through the wiki's redirects, hop by hop (``index_in`` against the
   redirect table; hops after the first only look at redirects that are themselves redirect targets).
   Titles still redirecting after ``max_hops`` are in a loop (or an absurd chain): dropped and counted.
   Targets that are not articles of that wiki (red links) are dropped unless ``keep_red_links``.
   With ``per_language_top`` N only the language's N most linked targets stay (count descending, ties
   by title in UTF-8 byte order), as the reference mLUKE recipe builds one vocabulary per language
   before merging them: a target outside its language's top N adds neither its count nor its language.
3. Still in the worker: look up each target's QID in this language's slice of the interwiki table;
   an entity without QID is complete already, so the cut-offs decide it here (dropped if its count is
   below ``min_count``, or at once if ``min_languages > 1``). Only QID rows and surviving plain rows
   travel to the parent.
4. In the parent: entities with the same QID are merged across languages (counts summed, languages
   counted); filter by ``min_count`` and ``min_languages``, sort, keep ``vocab_size - 4``; stream the
   interwiki table once more for the kept QIDs' names; write the JSONL block by block.

Order and keys (what makes the output byte-identical for the same input, whatever ``workers`` or the
order of the corpora): entities are sorted by total count descending, ties broken by the entity key in
ascending UTF-8 byte order, where the key is the QID string for a QID entity (e.g. ``"Q42"``, so
``"Q10" < "Q9"``) and ``"{lang}:{title}"`` for an entity without QID. The ``entities`` list of a QID
entity is every (title, lang) the interwiki table maps to that QID in the corpora's languages, sorted by
(lang, title); ids 0-3 are the specials, entities start at 4.

Workers are spawned (not forked): a script calling ``build_entity_vocab(workers>1)`` needs the usual
``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from data_prep.common.errors import InputError
from data_prep.entities.interwiki import corpus_language, page_files
from data_prep.entities.vocab_file import (
    SPECIAL_TOKENS,
    EntityEntry,
    EntityVocab,
    special_entries,
    write_entity_vocab,
    write_hf_entity_vocab,
)

MAX_HOPS = 16  # same bound as data_prep.pages.redirects.RedirectResolver
_BATCH_ROWS = 16384  # pages per parquet batch
_FLUSH_LINKS = 1 << 22  # link titles buffered per value_counts (~150 MB of strings)
_COMPACT_MIN_ROWS = 1 << 21  # merge partial counts once they hold this many rows (and doubled)
_LINK_TITLE_PATH = ("paragraphs", "links", "title")


@dataclass
class LanguageCounts:
    """What happened to one language's links (counts of link occurrences)."""

    lang: str
    links: int = 0  # link occurrences read (empty titles included)
    distinct_titles: int = 0  # distinct raw link titles
    redirected: int = 0  # occurrences whose target was a redirect (followed)
    dropped_loops: int = 0  # target in a redirect loop (or a chain longer than MAX_HOPS)
    dropped_red: int = 0  # target is not an article of this wiki (dropped unless keep_red_links)
    kept_red: int = 0  # red links kept because of keep_red_links
    dropped_empty: int = 0  # empty or null link title
    kept: int = 0  # occurrences counted in the vocabulary's candidates
    distinct_targets: int = 0  # distinct resolved targets kept
    beyond_top: int = 0  # distinct targets left out by per_language_top (their occurrences are not in kept)
    targets_with_qid: int = 0  # of those, how many the interwiki table maps to a QID
    pruned_plain: int = 0  # targets without QID dropped in the worker by min_count / min_languages
    seconds: float = 0.0  # wall-clock seconds in the worker
    cpu_seconds: float = 0.0  # CPU seconds of the worker process (throughput on a shared machine)


@dataclass
class VocabStats:
    languages: dict[str, LanguageCounts] = field(default_factory=dict)
    candidates: int = 0  # entities before the cut-offs
    qid_candidates: int = 0
    after_filters: int = 0  # after min_count / min_languages
    size: int = 0  # entries written, specials included
    cut_count: int = 0  # count of the last entity kept (0 if none)
    seconds: float = 0.0

    def summary(self) -> str:
        links = sum(c.links for c in self.languages.values())
        kept = sum(c.kept for c in self.languages.values())
        loops = sum(c.dropped_loops for c in self.languages.values())
        red = sum(c.dropped_red for c in self.languages.values())
        return (
            f"entity-vocab: {len(self.languages)} languages, {links} links ({kept} counted, {red} red links dropped, "
            f"{loops} in redirect loops dropped); {self.candidates} candidate entities ({self.qid_candidates} with QID), "
            f"{self.after_filters} after cut-offs, vocabulary {self.size} entries incl. {len(SPECIAL_TOKENS)} specials "
            f"(last count {self.cut_count}) in {self.seconds:.1f}s"
        )


# ---------------------------------------------------------------------------------------------------
# Per-language counting (runs in worker processes)


def _link_title_column(pf) -> str:
    """The parquet leaf path of ``paragraphs[].links[].title`` (``paragraphs.list.element.links...``)."""
    for i in range(pf.metadata.num_columns):
        path = pf.metadata.schema.column(i).path
        parts = [p for p in path.split(".") if p not in ("list", "element", "item", "array", "bag")]
        if tuple(parts) == _LINK_TITLE_PATH:
            return path
    raise InputError(f"{pf.reader_path if hasattr(pf, 'reader_path') else 'pages file'}: no paragraphs.links.title column")


def _flatten_link_titles(column):
    """``list<struct<links: list<struct<title>>>>`` -> flat string array of link titles."""
    import pyarrow.compute as pc

    paragraphs = pc.list_flatten(column)
    links = pc.list_flatten(pc.struct_field(paragraphs, "links"))
    return pc.struct_field(links, "title")


def _merge_counts(tables: list):
    import pyarrow as pa

    table = pa.concat_tables(tables)
    merged = table.group_by("title", use_threads=False).aggregate([("count", "sum")])
    return merged.rename_columns(["title", "count"])


def count_links(corpus_dir: str | Path):
    """``pa.Table(title, count)`` of the raw (unresolved) link titles of a corpus, and (links, empty)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    # Raw titles are buffered up to _FLUSH_LINKS links before one value_counts: a big batch dedupes the
    # head of the Zipf distribution once instead of once per small batch. Partial counts are merged
    # when they reach twice the size of the last merge, so each title is re-hashed O(log) times.
    buffered: list = []
    buffered_links = 0
    partial: list = []
    partial_rows = 0
    compact_at = _COMPACT_MIN_ROWS
    links = empty = 0

    def flush() -> None:
        nonlocal buffered, buffered_links, partial, partial_rows, compact_at
        vc = pc.value_counts(pa.chunked_array(buffered, pa.string()).combine_chunks())
        buffered, buffered_links = [], 0
        partial.append(pa.table({"title": vc.field("values"), "count": vc.field("counts")}))
        partial_rows += len(vc)
        if partial_rows >= compact_at:
            partial = [_merge_counts(partial)]
            partial_rows = partial[0].num_rows
            compact_at = max(_COMPACT_MIN_ROWS, 2 * partial_rows)

    for f in page_files(corpus_dir):
        try:
            pf = pq.ParquetFile(f)
            column = _link_title_column(pf)
            for batch in pf.iter_batches(batch_size=_BATCH_ROWS, columns=[column], use_threads=False):
                titles = _flatten_link_titles(batch.column(0))
                links += len(titles)
                nonempty = pc.fill_null(pc.and_kleene(pc.is_valid(titles), pc.not_equal(titles, "")), False)
                kept = titles.filter(nonempty)
                empty += len(titles) - len(kept)
                if len(kept):
                    buffered.append(kept)
                    buffered_links += len(kept)
                if buffered_links >= _FLUSH_LINKS:
                    flush()
        except InputError:
            raise
        except Exception as e:  # a broken parquet file: name it
            raise InputError(f"{f}: not a readable pages table ({type(e).__name__}: {e})") from None
    if buffered:
        flush()
    if not partial:
        return pa.table({"title": pa.array([], pa.string()), "count": pa.array([], pa.int64())}), links, empty
    return _merge_counts(partial), links, empty


def read_redirect_table(corpus_dir: str | Path):
    """``redirects.parquet`` as ``pa.Table(title, target)`` with unique titles (the last row wins, as in
    :func:`data_prep.pages.redirects.read_redirects`)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = Path(corpus_dir) / "redirects.parquet"
    if not path.is_file():
        raise InputError(f"{path}: missing (is {corpus_dir} the output of 'data_prep extract'?)")
    try:
        table = pq.read_table(path, columns=["title", "target"]).combine_chunks()
    except Exception as e:
        raise InputError(f"{path}: not a readable redirects table ({e})") from None
    table = table.filter(pc.fill_null(pc.and_(pc.is_valid(table["title"]), pc.is_valid(table["target"])), False))
    if table.num_rows and pc.count_distinct(table["title"]).as_py() != table.num_rows:
        # index_in finds the first occurrence: reversing makes it the last one.
        table = table.take(pa.array(np.arange(table.num_rows - 1, -1, -1)))
    return table


def resolve_titles(titles, redirects, max_hops: int = MAX_HOPS):
    """Final redirect target of every title (the title itself if it is no redirect; null in a loop).

    Vectorised equivalent of :class:`data_prep.pages.redirects.RedirectResolver` for many titles at once,
    holding the redirects as arrow columns instead of a Python dict (a tenth of the memory for enwiki's
    ~11M redirects).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    src, dst = redirects.column("title").combine_chunks(), redirects.column("target").combine_chunks()
    # After the first hop every title is some redirect's target: only redirects whose title is itself a
    # target can apply there (double redirects, rare), so deeper hops search a tiny table.
    chained = pc.is_in(src, value_set=dst)
    deep = (src.filter(chained), dst.filter(chained))

    def step(cur, table, hops_left: int):
        if len(cur) == 0 or len(table[0]) == 0:
            return cur
        idx = pc.index_in(cur, value_set=table[0])
        mask = pc.is_valid(idx)
        if not pc.any(mask).as_py():
            return cur
        if hops_left == 0:  # still redirecting: a loop (or a chain longer than max_hops)
            return pc.if_else(mask, pa.scalar(None, pa.string()), cur)
        nxt = table[1].take(idx.filter(mask))
        return pc.replace_with_mask(cur, mask, step(nxt, deep, hops_left - 1))

    titles = titles.combine_chunks() if isinstance(titles, pa.ChunkedArray) else titles
    return step(titles, (src, dst), max_hops - 1)


def article_titles(corpus_dir: str | Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = []
    for f in page_files(corpus_dir):
        try:
            parts.append(pq.read_table(f, columns=["title"]).column("title"))
        except Exception as e:
            raise InputError(f"{f}: not a readable pages table ({e})") from None
    return pa.chunked_array([c for p in parts for c in p.chunks], pa.string()).combine_chunks()


def read_interwiki_language(path: str | Path, lang: str):
    """``(titles, qids)`` of one language's rows of an interwiki table (row groups of other languages are
    skipped by their statistics: the table is sorted by language)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path, columns=["title", "qid"], filters=[("lang", "=", lang)])
    except Exception as e:
        raise InputError(f"{path}: not an interwiki table with columns lang, title, qid ({e})") from None
    titles = table["title"].cast(pa.string()).combine_chunks()
    if pc.count_distinct(titles).as_py() != len(titles):
        # A (lang, title) twice would make its QID depend on row order.
        raise InputError(f"{path}: some ({lang}, title) appears twice (write it with 'data_prep interwiki')")
    return titles, table["qid"].cast(pa.string()).combine_chunks()


def count_language(
    corpus_dir: str | Path,
    keep_red_links: bool = False,
    interwiki: str | Path | None = None,
    min_count: int = 1,
    min_languages: int = 1,
    per_language_top: int | None = None,
):
    """Redirect-resolved, article-filtered link counts of one corpus with their QIDs.

    Returns (``pa.Table(title, count, qid)``, stats). An entity without QID is this one row, so the
    cut-offs already decide it here: it is dropped if ``count < min_count`` or ``min_languages > 1``.
    Pruning in the worker keeps the parent's merge to QID rows plus the plain entities that can survive.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    start, cpu_start = time.perf_counter(), time.process_time()
    stats = LanguageCounts(lang=corpus_language(corpus_dir))
    counts, stats.links, stats.dropped_empty = count_links(corpus_dir)
    stats.distinct_titles = counts.num_rows
    redirects = read_redirect_table(corpus_dir)
    is_redirect = pc.is_in(counts["title"], value_set=redirects["title"])
    stats.redirected = int(pc.sum(counts["count"].filter(is_redirect)).as_py() or 0)
    final = resolve_titles(counts["title"], redirects)
    del redirects
    in_loop = pc.is_null(final)
    stats.dropped_loops = int(pc.sum(counts["count"].filter(in_loop)).as_py() or 0)
    counts = pa.table({"title": final, "count": counts["count"]}).filter(pc.invert(in_loop))
    is_article = pc.is_in(counts["title"], value_set=article_titles(corpus_dir))
    red = int(pc.sum(counts["count"].filter(pc.invert(is_article))).as_py() or 0)
    if keep_red_links:
        stats.kept_red = red
    else:
        stats.dropped_red = red
        counts = counts.filter(is_article)
    counts = _merge_counts([counts]) if counts.num_rows else counts
    if per_language_top is not None and counts.num_rows > per_language_top:
        order = pc.sort_indices(counts, [("count", "descending"), ("title", "ascending")])
        stats.beyond_top = counts.num_rows - per_language_top
        counts = counts.take(order.slice(0, per_language_top))
    stats.kept = int(pc.sum(counts["count"]).as_py() or 0)
    stats.distinct_targets = counts.num_rows
    if interwiki is not None:
        titles, qids = read_interwiki_language(interwiki, stats.lang)
        qid = qids.take(pc.index_in(counts["title"], value_set=titles))
    else:
        qid = pa.nulls(counts.num_rows, pa.string())
    counts = counts.append_column("qid", qid)
    stats.targets_with_qid = int(pc.sum(pc.is_valid(qid).cast(pa.int64())).as_py() or 0)
    plain = pc.is_null(counts["qid"])
    if min_languages > 1:
        drop = plain
    else:
        drop = pc.and_(plain, pc.less(counts["count"], min_count))
    stats.pruned_plain = int(pc.sum(drop.cast(pa.int64())).as_py() or 0)
    if stats.pruned_plain:
        counts = counts.filter(pc.invert(drop))
    stats.seconds = time.perf_counter() - start
    stats.cpu_seconds = time.process_time() - cpu_start
    # One chunk: a chunked table pickles every chunk with the whole shared buffers (6x larger here).
    return counts.combine_chunks(), stats


def _count_language_task(args: tuple):
    return count_language(*args)


# ---------------------------------------------------------------------------------------------------
# Merge across languages (parent process)


def build_entity_vocab(
    corpora: Sequence[str | Path],
    out: str | Path,
    vocab_size: int,
    interwiki: str | Path | None = None,
    min_languages: int = 1,
    min_count: int = 1,
    keep_red_links: bool = False,
    workers: int = 1,
    hf_out: str | Path | None = None,
    progress: bool = True,
    per_language_top: int | None = None,
) -> VocabStats:
    """Build the entity vocabulary of ``corpora`` and write it (JSONL, optionally also HF's JSON)."""

    start = time.perf_counter()
    if vocab_size < len(SPECIAL_TOKENS):
        raise InputError(f"--vocab-size {vocab_size}: must be at least {len(SPECIAL_TOKENS)} (the special entities)")
    if min_languages < 1 or min_count < 1:
        raise InputError("--min-languages and --min-count must be at least 1")
    if per_language_top is not None and per_language_top < 1:
        raise InputError(f"--per-language-top {per_language_top}: must be at least 1")
    if not corpora:
        raise InputError("--corpus: at least one extracted corpus is needed")
    by_lang: dict[str, Path] = {}
    for c in map(Path, corpora):
        lang = corpus_language(c)
        if lang in by_lang:
            raise InputError(f"{c}: a second corpus for language {lang!r} (first: {by_lang[lang]})")
        page_files(c)  # fail early on an empty corpus
        by_lang[lang] = c
    langs = sorted(by_lang)  # fixed order: the result never depends on argument order
    if interwiki is not None:
        _check_interwiki(interwiki)  # fail early, once, in the parent

    results: dict[str, tuple] = {}
    iw_arg = str(interwiki) if interwiki is not None else None
    tasks = [(str(by_lang[lang]), keep_red_links, iw_arg, min_count, min_languages, per_language_top) for lang in langs]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), unit="lang", desc="counting links", leave=False)
    try:
        if workers <= 1 or len(tasks) == 1:
            for task in tasks:
                table, st = _count_language_task(task)
                results[st.lang] = (table, st)
                if bar is not None:
                    bar.update(1)
        else:
            import multiprocessing as mp

            # spawn: the parent may have imported threaded libraries (fork would copy their locks).
            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as pool:
                for table, st in pool.map(_count_language_task, tasks):
                    results[st.lang] = (table, st)
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    stats = VocabStats(languages={lang: results[lang][1] for lang in langs})
    counts = {lang: results[lang][0] for lang in langs}
    del results
    entities = rank_entities(counts, min_count, min_languages, vocab_size - len(SPECIAL_TOKENS), stats)
    del counts
    names = entity_names(entities, interwiki, langs) if interwiki is not None else None
    n = entities.num_rows
    stats.size = len(SPECIAL_TOKENS) + n
    stats.cut_count = int(entities["count"][n - 1].as_py()) if n else 0
    write_entity_vocab(out, _iter_entries(entities, names))
    if hf_out is not None:
        write_hf_entity_vocab(hf_out, EntityVocab(list(_iter_entries(entities, names))))
    stats.seconds = time.perf_counter() - start
    return stats


def rank_entities(counts: dict, min_count: int, min_languages: int, limit: int, stats: VocabStats):
    """Merge per-language ``(title, count, qid)`` tables into entities, apply the cut-offs, sort, keep ``limit``.

    Returns ``pa.Table(key, qid, lang, title, count, n_langs)`` in id order (``lang``/``title`` are set for
    entities without QID only).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = [
        pa.table(
            {
                "lang": pa.array([lang] * c.num_rows, pa.string()),
                "title": c["title"],
                "count": c["count"].cast(pa.int64()),
                "qid": c["qid"],
            }
        )
        for lang, c in sorted(counts.items())
    ]
    table = pa.concat_tables(parts).combine_chunks()
    del parts
    counts = table
    del table
    has_qid = pc.is_valid(counts["qid"])
    with_qid = counts.filter(has_qid)
    grouped = with_qid.group_by("qid", use_threads=False).aggregate([("count", "sum"), ("lang", "count_distinct")])
    qid_entities = pa.table(
        {
            "key": grouped["qid"],
            "qid": grouped["qid"],
            "lang": pa.nulls(grouped.num_rows, pa.string()),
            "title": pa.nulls(grouped.num_rows, pa.string()),
            "count": grouped["count_sum"],
            "n_langs": grouped["lang_count_distinct"].cast(pa.int64()),
        }
    )
    plain = counts.filter(pc.invert(has_qid))
    plain_entities = pa.table(
        {
            "key": pc.binary_join_element_wise(plain["lang"], plain["title"], ":"),
            "qid": plain["qid"],
            "lang": plain["lang"],
            "title": plain["title"],
            "count": plain["count"],
            "n_langs": pa.array(np.ones(plain.num_rows, dtype=np.int64)),
        }
    )
    del counts, with_qid, plain
    entities = pa.concat_tables([qid_entities, plain_entities]).combine_chunks()
    stats.candidates = entities.num_rows + sum(c.pruned_plain for c in stats.languages.values())
    stats.qid_candidates = qid_entities.num_rows
    keep = pc.and_(pc.greater_equal(entities["count"], min_count), pc.greater_equal(entities["n_langs"], min_languages))
    entities = entities.filter(keep)
    stats.after_filters = entities.num_rows
    order = pc.sort_indices(entities, [("count", "descending"), ("key", "ascending")])
    return entities.take(order.slice(0, limit))



def entity_names(entities, interwiki: str | Path, langs: Sequence[str], batch_rows: int = 1 << 20):
    """Every (lang, title) the interwiki table gives the kept QIDs in ``langs``, as
    ``pa.Table(lang, title, qid, rank)`` sorted by (rank, lang, title); arrow's string order is UTF-8 byte
    order, which is Python's code-point order. The table is streamed: only the kept names are held."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    kept = entities["qid"].combine_chunks() if isinstance(entities["qid"], pa.ChunkedArray) else entities["qid"]
    lang_set = pa.array(sorted(langs), pa.string())
    parts = []
    for batch in pq.ParquetFile(interwiki).iter_batches(batch_size=batch_rows, columns=["lang", "title", "qid"]):
        rank = pc.index_in(batch.column("qid"), value_set=kept)  # kept QIDs are unique; nulls never match
        mask = pc.and_(pc.is_valid(rank), pc.is_in(batch.column("lang"), value_set=lang_set))
        mask = pc.and_(mask, pc.is_valid(batch.column("qid")))  # a null would match the plain entities' nulls
        if pc.any(mask).as_py():
            t = pa.Table.from_batches([batch]).filter(mask)
            parts.append(t.append_column("rank", rank.filter(mask).cast(pa.int64())))
    if not parts:
        return None
    names = pa.concat_tables([p.cast(parts[0].schema) for p in parts])
    return names.sort_by([("rank", "ascending"), ("lang", "ascending"), ("title", "ascending")])


def _iter_entries(entities, names, block: int = 1 << 16):
    """Yield the specials then every entity as an ``EntityEntry``, converting to Python one block at a
    time so that a vocabulary of millions never exists as Python objects all at once."""
    import numpy as np

    yield from special_entries()
    name_rank = names["rank"].to_numpy() if names is not None else np.zeros(0, np.int64)
    for lo in range(0, entities.num_rows, block):
        part = entities.slice(lo, block)
        hi = lo + part.num_rows
        a, b = np.searchsorted(name_rank, [lo, hi])
        by_rank: dict[int, list[tuple[str, str]]] = {}
        if b > a:
            sl = names.slice(int(a), int(b - a))
            for rank, lang, title in zip(sl["rank"].to_pylist(), sl["lang"].to_pylist(), sl["title"].to_pylist()):
                by_rank.setdefault(rank, []).append((title, lang))
        cols = zip(part["qid"].to_pylist(), part["lang"].to_pylist(), part["title"].to_pylist(), part["count"].to_pylist())
        for rank, (qid, lang, title, count) in enumerate(cols, lo):
            pairs = tuple(by_rank[rank]) if qid is not None else ((title, lang),)
            yield EntityEntry(len(SPECIAL_TOKENS) + rank, qid, pairs, int(count))


def _check_interwiki(path: str | Path) -> None:
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: interwiki table not found")
    try:
        names = pq.read_schema(path).names
    except Exception as e:
        raise InputError(f"{path}: not a parquet interwiki table ({e})") from None
    missing = [c for c in ("lang", "title", "qid") if c not in names]
    if missing:
        raise InputError(f"{path}: not an interwiki table (no column {', '.join(missing)})")


# ---------------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", nargs="+", type=Path, required=True, metavar="DIR", help="extracted corpora, one per language")
    parser.add_argument("--interwiki", type=Path, metavar="FILE", help="interwiki parquet from 'data_prep interwiki'")
    parser.add_argument("--vocab-size", type=int, required=True, help="entries including the 4 specials")
    parser.add_argument("--min-languages", type=int, default=1, help="keep entities linked in at least K languages")
    parser.add_argument("--min-count", type=int, default=1, help="keep entities linked at least C times in all")
    parser.add_argument("--keep-red-links", action="store_true", help="keep targets that are not articles (partial dumps)")
    parser.add_argument(
        "--per-language-top", type=int, metavar="N",
        help="keep only each language's N most linked targets before the merge by QID (mLUKE: 1000000; default all)",
    )
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="language-counting processes")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.jsonl")
    parser.add_argument("--hf-out", type=Path, metavar="entity_vocab.json", help="also write transformers' flat format")
    parser.add_argument("--no-progress", action="store_true")


def run_cli(args: argparse.Namespace) -> int:
    stats = build_entity_vocab(
        args.corpus,
        args.out,
        vocab_size=args.vocab_size,
        interwiki=args.interwiki,
        min_languages=args.min_languages,
        min_count=args.min_count,
        keep_red_links=args.keep_red_links,
        workers=args.workers,
        hf_out=args.hf_out,
        progress=not args.no_progress,
        per_language_top=args.per_language_top,
    )
    for lang, c in sorted(stats.languages.items()):
        d = asdict(c)
        print(f"  {lang}: " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in d.items() if k != "lang"))
    print(stats.summary())
    return 0
