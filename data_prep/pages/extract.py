"""``data_prep extract``: a Wikipedia XML dump -> pages-NNNNN.parquet, redirects.parquet, siteinfo.json, stats.json.

Work is cut into chunks of about 100 pages: with a multistream index each chunk is one bz2 stream that
a worker reads and decompresses itself (``RangeTask``); without one, the main process decompresses and
cuts the dump into chunks of raw page bytes (``BytesTask``).  Workers parse the XML with expat, render
each article (:mod:`data_prep.pages.wikitext`) under a time limit, and send back an Arrow record batch.
Results are consumed in submission order, so the output is the same whatever the worker count.

Output files are first written into a hidden temporary directory inside ``out`` and moved into place
only when the whole run has succeeded (stats.json last): a killed run leaves no ``pages-*.parquet``
that a later stage could mistake for a finished extraction.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import re
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from data_prep.common.atomic import write_json, write_parquet
from data_prep.common.errors import InputError
from data_prep.pages.dump import (
    PageXMLError,
    RawPage,
    check_stream_start,
    decompress_range,
    parse_pages,
    read_header_and_chunks,
    read_multistream_header,
    read_streams,
    strip_closing,
)
from data_prep.pages.titles import TitleParser, link_trail_re
from data_prep.pages.wikitext import parse_wikitext

LINK_TYPE = pa.struct([("start", pa.int32()), ("end", pa.int32()), ("title", pa.string())])
PARAGRAPH_TYPE = pa.struct([("text", pa.string()), ("links", pa.list_(LINK_TYPE))])
PAGES_SCHEMA = pa.schema([("page_id", pa.int64()), ("title", pa.string()), ("paragraphs", pa.list_(PARAGRAPH_TYPE))])
# page_id goes beyond DESIGN.md (title, target): page_props rows of redirect pages are keyed by page id.
REDIRECTS_SCHEMA = pa.schema([("page_id", pa.int64()), ("title", pa.string()), ("target", pa.string())])

PAGES_PER_ROW_GROUP = 1024
DEFAULT_ROWS_PER_FILE = 20_000
DEFAULT_PAGE_TIMEOUT = 30.0
DEFAULT_WORKER_MEMORY_GB = 8.0
# Pages per work item (whole multistream streams are grouped up to this): large enough that the
# per-task cost (futures, IPC) is negligible, small enough to balance the workers.
TASK_PAGES = 500

# Old or hand-made dumps may lack <redirect/>; the magic word (a few localised forms) still marks them.
_REDIRECT_RE = re.compile(
    r"\s*#(?:REDIRECT|WEITERLEITUNG|REDIRECTION|REDIRECCIÓN|RINVIA|REDIRECIONAMENTO|ПЕРЕНАПРАВЛЕНИЕ|"
    r"перенаправление|転送|重定向|تحويل|YÖNLENDİRME|DOORVERWIJZING|PATRZ|OHJAUS|OMDIRIGERING)\s*:?\s*\[\[([^\]|]*)",
    re.IGNORECASE,
)


@dataclass
class ExtractStats:
    pages_total: int = 0
    articles: int = 0
    redirects: int = 0
    links: int = 0
    paragraphs: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    failed_pages: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    wikitext_bytes: int = 0
    files: list[str] = field(default_factory=list)
    lang: str = ""

    def to_json(self) -> dict:
        d = asdict(self)
        d["skipped"] = dict(sorted(self.skipped.items()))
        return d


# --- worker side ------------------------------------------------------------------------------------


@dataclass
class WorkerConfig:
    dump: str
    index: str
    lang: str
    case: str
    namespaces: dict[int, str]
    page_timeout: float
    worker_memory_gb: float = 0.0


@dataclass
class BytesTask:
    data: bytes
    first_line: int
    n_pages: int


@dataclass
class RangeTask:
    start: int
    end: int
    offsets: list[int]  # every stream start in [start, end): each is checked against the file
    page_ids: list[int]
    max_pages: int | None


@dataclass
class ChunkResult:
    batch: bytes  # the articles as one Arrow IPC stream: decoded in C++, unlike a pickled RecordBatch
    rows: int
    redirects: list[tuple[int, str, str]]  # (page_id, title, target)
    pages: int
    skipped: Counter
    failed_pages: list[dict[str, str]]
    links: int
    paragraphs: int
    wikitext_bytes: int


class PageTimeout(Exception):
    """Raised by the SIGALRM handler when one page exceeds the time limit."""


_W: dict = {}  # per-process worker state (title parser, open files, timer)


def _on_alarm(signum, frame):  # noqa: ARG001
    if _W.get("armed"):
        _W["armed"] = False
        _W["fired"] = True
        raise PageTimeout()


def init_worker(cfg: WorkerConfig, pool_worker: bool = True) -> None:
    _W.clear()
    if pool_worker and cfg.worker_memory_gb > 0:
        # A page that makes the parser allocate without bound fails with MemoryError (counted as a
        # failed page) instead of the kernel killing the worker.
        limit = int(cfg.worker_memory_gb * 2**30)
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or hard >= limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    # Rendering allocates many short-lived, acyclic objects: collect cycles less often (a few % CPU).
    _W["gc_threshold"] = gc.get_threshold()
    gc.set_threshold(100_000, 50, 100)
    _W["cfg"] = cfg
    _W["parser"] = TitleParser(cfg.lang or "en", cfg.case, cfg.namespaces)
    _W["trail"] = link_trail_re(cfg.lang or "en")
    _W["armed"] = False
    _W["timer"] = False
    if cfg.page_timeout and cfg.page_timeout > 0 and threading.current_thread() is threading.main_thread():
        _W["old_handler"] = signal.signal(signal.SIGALRM, _on_alarm)
        _W["timer"] = True


def close_worker() -> None:
    f = _W.pop("file", None)
    if f is not None:
        f.close()
    if _W.get("timer"):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, _W.get("old_handler") or signal.SIG_DFL)
    if "gc_threshold" in _W:
        gc.set_threshold(*_W["gc_threshold"])
    _W.clear()


def _render(page: RawPage):
    cfg: WorkerConfig = _W["cfg"]
    _W["fired"] = False
    if _W["timer"]:
        _W["armed"] = True
        signal.setitimer(signal.ITIMER_REAL, cfg.page_timeout)
    try:
        return parse_wikitext(page.text, _W["parser"], _W["trail"])
    finally:
        if _W["timer"]:
            _W["armed"] = False
            signal.setitimer(signal.ITIMER_REAL, 0)


def process_pages(pages: list[RawPage]) -> ChunkResult:
    parser: TitleParser = _W["parser"]
    ids: list[int] = []
    titles: list[str] = []
    paras_col: list[list] = []
    redirects: list[tuple[int, str, str]] = []
    skipped: Counter = Counter()
    failed: list[dict[str, str]] = []
    n_links = n_paras = n_bytes = 0
    for page in pages:
        if page.ns != 0:
            skipped["namespace"] += 1
            continue
        redirect = page.redirect
        if redirect is None:
            m = _REDIRECT_RE.match(page.text)
            if m:
                redirect = m.group(1)
        if redirect is not None:
            target = parser.normalize_any(redirect)
            if target:
                redirects.append((page.page_id, page.title, target))
            else:
                skipped["redirect_bad_target"] += 1
            continue
        n_bytes += len(page.text)
        try:
            parsed = _render(page)
        except Exception as e:  # a bad page is counted, never fatal
            if isinstance(e, PageTimeout) or _W.get("fired"):
                # (the signal may surface from inside the C tokenizer as another exception type)
                failed.append({"title": page.title, "error": f"timed out after {_W['cfg'].page_timeout:g} s"})
            elif isinstance(e, RecursionError):
                failed.append({"title": page.title, "error": "RecursionError: nesting too deep"})
            elif isinstance(e, MemoryError):
                failed.append({"title": page.title, "error": "MemoryError: the page needs more than the worker's memory limit"})
            else:
                failed.append({"title": page.title, "error": f"{type(e).__name__}: {e}"[:500]})
            continue
        if parsed.disambiguation:
            skipped["disambiguation"] += 1
            continue
        if not parsed.paragraphs:
            skipped["empty"] += 1
            continue
        paras = []
        for p in parsed.paragraphs:
            paras.append((p.text, p.links))
            n_links += len(p.links)
        n_paras += len(paras)
        ids.append(page.page_id)
        titles.append(page.title)
        paras_col.append(paras)
    batch = pa.RecordBatch.from_arrays(
        [pa.array(ids, pa.int64()), pa.array(titles, pa.string()), pa.array(paras_col, pa.list_(PARAGRAPH_TYPE))],
        schema=PAGES_SCHEMA,
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, PAGES_SCHEMA) as w:
        w.write_batch(batch)
    return ChunkResult(sink.getvalue().to_pybytes(), batch.num_rows, redirects, len(pages), skipped, failed,
                       n_links, n_paras, n_bytes)


def _xml_error(where: str, e: PageXMLError, line_base: int | None) -> InputError:
    line = f"line {line_base + e.line - 1}" if line_base is not None else f"line {e.line} of their content"
    after = f" (in or after page {e.title!r})" if e.title else ""
    return InputError(f"{where}: malformed XML at {line}, column {e.column}{after}: {e.message}")


def run_bytes_task(task: BytesTask) -> ChunkResult:
    cfg: WorkerConfig = _W["cfg"]
    try:
        pages = parse_pages(task.data)
    except PageXMLError as e:
        raise _xml_error(cfg.dump, e, task.first_line) from None
    return process_pages(pages)


def run_range_task(task: RangeTask) -> ChunkResult:
    cfg: WorkerConfig = _W["cfg"]
    dump, index = Path(cfg.dump), Path(cfg.index)
    f = _W.get("file")
    if f is None:
        f = _W["file"] = open(dump, "rb")
    for offset in task.offsets[1:]:
        check_stream_start(f, offset, dump, index)
    data = strip_closing(decompress_range(f, task.start, task.end, dump, index))
    try:
        pages = parse_pages(data)
    except PageXMLError as e:
        raise _xml_error(f"{dump} (bz2 streams from byte offset {task.start})", e, None) from None
    found = {p.page_id for p in pages}
    for page_id in task.page_ids:
        if page_id not in found:
            raise InputError(
                f"{index}: page id {page_id} is listed in the index but is not in the bz2 streams at byte "
                f"offsets {task.start}..{task.end} of {dump}; index does not match the dump"
            )
    if task.max_pages is not None:
        pages = pages[: task.max_pages]
    return process_pages(pages)


def run_task(task) -> ChunkResult:
    return run_bytes_task(task) if isinstance(task, BytesTask) else run_range_task(task)


# --- main side --------------------------------------------------------------------------------------


def _ordered_results(tasks: Iterator, cfg: WorkerConfig, workers: int) -> Iterator[ChunkResult]:
    """Run tasks (in this process or a pool) and yield results in submission order, bounded in flight."""
    if workers <= 1:
        init_worker(cfg, pool_worker=False)
        try:
            for task in tasks:
                yield run_task(task)
        finally:
            close_worker()
        return
    ctx = _mp_context()
    # ProcessPoolExecutor, not multiprocessing.Pool: a worker that dies (killed for memory) breaks
    # the executor with an error instead of leaving its task waiting forever.
    executor = ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_worker, initargs=(cfg,))
    try:
        pending: deque = deque()
        for task in tasks:
            pending.append(executor.submit(run_task, task))
            # enough work in flight that workers never idle while this process writes a parquet file
            if len(pending) >= max(8, 4 * workers):
                yield _result(pending.popleft(), cfg)
        while pending:
            yield _result(pending.popleft(), cfg)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _mp_context():
    """fork where available: workers start in milliseconds and inherit the loaded modules.

    The workers only use bz2, expat, the tokenizer, re and pyarrow's array building (pyarrow resets
    its thread pools in a forked child), so forking a process that has other threads is safe here.
    """
    if sys.platform.startswith("linux"):
        return mp.get_context("fork")
    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(["data_prep.pages.extract"])
    return ctx


def _result(future, cfg: WorkerConfig) -> ChunkResult:
    try:
        return future.result()
    except BrokenProcessPool:
        raise RuntimeError(
            f"{cfg.dump}: a worker process died (killed for memory?); pages are limited to "
            f"{cfg.worker_memory_gb:g} GiB of address space per worker (--worker-memory-gb)"
        ) from None


class _PagesWriter:
    """Collects record batches and writes pages-NNNNN.parquet files of exactly ``rows_per_file`` rows."""

    def __init__(self, tmp_dir: Path, rows_per_file: int) -> None:
        self.tmp_dir = tmp_dir
        self.rows_per_file = rows_per_file
        self.batches: list[pa.RecordBatch] = []
        self.rows = 0
        self.files: list[str] = []

    def add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self.batches.append(batch)
            self.rows += batch.num_rows
        while self.rows >= self.rows_per_file:
            self._flush(self.rows_per_file)

    def _flush(self, n: int) -> None:
        table = pa.Table.from_batches(self.batches, schema=PAGES_SCHEMA)
        head, tail = table.slice(0, n), table.slice(n)
        name = f"pages-{len(self.files):05d}.parquet"
        # combine_chunks: the file's bytes do not depend on how the rows arrived in batches. Row groups
        # of PAGES_PER_ROW_GROUP pages let the shards stage's workers each decode only their own part.
        write_parquet(self.tmp_dir / name, head.combine_chunks(), row_group_size=PAGES_PER_ROW_GROUP)
        self.files.append(name)
        self.batches = tail.combine_chunks().to_batches() if tail.num_rows else []
        self.rows = tail.num_rows

    def close(self) -> None:
        if self.rows or not self.files:
            self._flush(self.rows)


def extract(
    dump: Path,
    out: Path,
    index: Path | None = None,
    workers: int = 1,
    limit_pages: int | None = None,
    page_timeout: float = DEFAULT_PAGE_TIMEOUT,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    progress: bool = True,
    worker_memory_gb: float = DEFAULT_WORKER_MEMORY_GB,
) -> ExtractStats:
    """Extract the articles, redirects and site info of one dump into ``out`` (see module docstring)."""
    t0 = time.perf_counter()
    dump, out = Path(dump), Path(out)
    for path, what in ((dump, "dump file"), (index, "index file")):
        if path is not None and not Path(path).is_file():
            raise InputError(f"{path}: {what} {'is not a file' if Path(path).exists() else 'not found'}")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: --out exists and is not a directory")
    if workers < 1:
        raise InputError(f"--workers must be >= 1 (got {workers})")
    if limit_pages is not None and limit_pages < 1:
        raise InputError(f"--limit-pages must be >= 1 (got {limit_pages})")
    if rows_per_file < 1:
        raise InputError(f"rows_per_file must be >= 1 (got {rows_per_file})")

    total_pages: int | None = None
    if index is not None:
        index = Path(index)
        streams = read_streams(dump, index)
        info = read_multistream_header(dump, streams[0].offset, index)
        n_entries = sum(len(s.page_ids) for s in streams)
        total_pages = n_entries if limit_pages is None else min(limit_pages, n_entries)

        def task_iter() -> Iterator:
            # consecutive streams are one contiguous byte range: group them into tasks of ~TASK_PAGES
            left = limit_pages
            group: list = []
            n = 0
            for k, s in enumerate(streams):
                group.append(s)
                n += len(s.page_ids)
                last = k == len(streams) - 1 or (left is not None and n >= left)
                if n >= TASK_PAGES or last:
                    ids = [i for g in group for i in g.page_ids]
                    yield RangeTask(group[0].offset, group[-1].end, [g.offset for g in group], ids,
                                    left if left is not None and left < n else None)
                    if left is not None:
                        left -= n
                        if left <= 0:
                            return
                    group, n = [], 0

        tasks = task_iter()
    else:
        info, chunks = read_header_and_chunks(dump, limit_pages, chunk_pages=TASK_PAGES)
        tasks = (BytesTask(c.data, c.first_line, c.n_pages) for c in chunks)

    cfg = WorkerConfig(str(dump), str(index or ""), info.lang, info.case, dict(info.namespaces), page_timeout,
                       worker_memory_gb)
    stats = ExtractStats(lang=info.lang)
    skipped: Counter = Counter()
    redirects: list[tuple[int, str, str]] = []
    out.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=".extract-", dir=out))
    try:
        writer = _PagesWriter(tmp_dir, rows_per_file)
        bar = tqdm(total=total_pages, unit="page", desc=f"extract {info.lang or dump.name}", disable=not progress,
                   smoothing=0.1, mininterval=0.5)
        with bar:
            for res in _ordered_results(tasks, cfg, workers):
                if res.rows:
                    for batch in pa.ipc.open_stream(res.batch).read_all().to_batches():
                        writer.add(batch)
                redirects.extend(res.redirects)
                skipped.update(res.skipped)
                stats.pages_total += res.pages
                stats.articles += res.rows
                stats.links += res.links
                stats.paragraphs += res.paragraphs
                stats.wikitext_bytes += res.wikitext_bytes
                stats.failed_pages.extend(res.failed_pages)
                bar.update(res.pages)
                bar.set_postfix(articles=stats.articles, failed=len(stats.failed_pages), refresh=False)
        writer.close()
        stats.redirects = len(redirects)
        stats.failed = len(stats.failed_pages)
        stats.skipped = dict(skipped)
        stats.files = writer.files
        write_parquet(
            tmp_dir / "redirects.parquet",
            pa.table([pa.array([r[i] for r in redirects], t) for i, t in enumerate(REDIRECTS_SCHEMA.types)],
                     schema=REDIRECTS_SCHEMA),
        )
        # Publish: drop a previous run's files first, so no stale pages-*.parquet is mixed in.
        for old in out.glob("pages-*.parquet"):
            old.unlink()
        (out / "stats.json").unlink(missing_ok=True)
        for name in [*writer.files, "redirects.parquet"]:
            os.replace(tmp_dir / name, out / name)
        write_json(out / "siteinfo.json", info.to_json())
        stats.seconds = round(time.perf_counter() - t0, 3)
        write_json(out / "stats.json", stats.to_json())
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return stats


def summary_line(stats: ExtractStats, out: Path) -> str:
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(stats.skipped.items())) or "none"
    rate = stats.pages_total / stats.seconds if stats.seconds else 0.0
    return (
        f"extract [{stats.lang}]: {stats.pages_total} pages -> {stats.articles} articles, {stats.redirects} redirects, "
        f"{stats.links} links; skipped: {skipped}; failed {stats.failed}; {stats.seconds:.1f} s ({rate:.0f} pages/s) -> {out}"
    )


def read_pages(out: Path) -> pa.Table:
    """All pages-*.parquet of an extraction directory, in order (a helper for tests and later stages)."""
    files = sorted(Path(out).glob("pages-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else PAGES_SCHEMA.empty_table()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dump", type=Path, required=True, help="*-pages-articles[-multistream].xml[.bz2]")
    parser.add_argument("--index", type=Path, default=None, help="the multistream index (*-multistream-index.txt[.bz2])")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--limit-pages", type=int, default=None, help="stop after this many pages (any namespace)")
    parser.add_argument("--page-timeout", type=float, default=DEFAULT_PAGE_TIMEOUT,
                        help=f"seconds allowed to render one page before it is counted as failed (default {DEFAULT_PAGE_TIMEOUT:g})")
    parser.add_argument("--rows-per-file", type=int, default=DEFAULT_ROWS_PER_FILE,
                        help=f"articles per pages-NNNNN.parquet (default {DEFAULT_ROWS_PER_FILE})")
    parser.add_argument("--worker-memory-gb", type=float, default=DEFAULT_WORKER_MEMORY_GB,
                        help="address-space limit per worker process; a page exceeding it is counted as failed "
                             f"(0 = no limit; default {DEFAULT_WORKER_MEMORY_GB:g})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_cli(args: argparse.Namespace) -> int:
    stats = extract(args.dump, args.out, index=args.index, workers=args.workers, limit_pages=args.limit_pages,
                    page_timeout=args.page_timeout, rows_per_file=args.rows_per_file, progress=not args.no_progress,
                    worker_memory_gb=args.worker_memory_gb)
    print(summary_line(stats, args.out), file=sys.stderr)
    return 0
