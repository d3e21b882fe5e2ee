"""Extraction throughput and memory, side by side with ``wikipedia2vec build-dump-db``.

    python benchmarks/bench_extract.py                         # ~20 MB of wikitext synthesised from the sample
    python benchmarks/bench_extract.py --mb 50 --workers 2
    python benchmarks/bench_extract.py --dump X-multistream.xml.bz2 --index X-multistream-index.txt.bz2

Without ``--dump`` it synthesises a dump by replicating the bundled sample articles of one language
(new page ids and titles, same wikitext) and writes it as a multistream bz2 with its index.  Every run is
a fresh subprocess; the table shows, per run:

* wall seconds (process start to exit, the same clock for both tools);
* articles/s: namespace-0 non-redirect pages in the dump divided by wall seconds (the same count for
  both tools, so the ratio is the ratio of speeds);
* MB/s/worker: MB of article wikitext divided by wall seconds and by the worker count;
* CPU s: user + system seconds of all its processes (less sensitive to other load on the machine);
* peak RSS: the peak of the summed resident memory of all its processes (main + workers), in MiB.

CPU and memory come from sampling the run's process tree with psutil every 50 ms (a process that
lives less than that may be missed; the last 50 ms of each process are not counted).

Equal process count: ``--workers N`` for us (N workers; the main process only writes parquet) vs
``--pool-size N`` for wikipedia2vec (N workers plus its main process that decompresses and parses XML).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data_prep" / "sample" / "dumps"


def synthesise(lang: str, mb: float, out_dir: Path) -> tuple[Path, Path, int, int]:
    """Replicate the sample's articles to about ``mb`` MB of wikitext; returns (dump, index, articles, bytes)."""
    from data_prep.pages.dump import parse_pages, read_header_and_chunks
    from data_prep.pages.multistream import make_multistream

    src = next(SAMPLE.glob(f"{lang}wiki-*-pages-articles.xml"))
    info, chunks = read_header_and_chunks(src)
    pages = [p for c in chunks for p in parse_pages(c.data)]
    articles = [p for p in pages if p.ns == 0 and p.redirect is None]
    per_copy = sum(len(p.text.encode()) for p in articles)
    copies = max(1, int(mb * 1e6 / per_copy))
    xml = out_dir / f"{lang}wiki-bench-pages-articles.xml"
    n_articles = n_bytes = 0
    with open(xml, "w", encoding="utf-8") as f:
        f.write(info.header.decode("utf-8") + "\n")
        page_id = 1
        for k in range(copies):
            for p in pages:
                title = p.title if k == 0 else f"{p.title} ({k})"
                red = f'    <redirect title="{escape(p.redirect, {chr(34): "&quot;"})}" />\n' if p.redirect is not None else ""
                f.write(
                    f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{p.ns}</ns>\n    <id>{page_id}</id>\n{red}"
                    f"    <revision>\n      <id>{page_id + 10**8}</id>\n      <model>wikitext</model>\n"
                    f'      <format>text/x-wiki</format>\n      <text xml:space="preserve">{escape(p.text)}</text>\n'
                    f"    </revision>\n  </page>\n"
                )
                page_id += 1
                if p.ns == 0 and p.redirect is None:
                    n_articles += 1
                    n_bytes += len(p.text.encode())
        f.write("</mediawiki>\n")
    ms = make_multistream(xml, out_dir)
    xml.unlink()
    return ms.dump, ms.index, n_articles, n_bytes


def count_articles(dump: Path) -> tuple[int, int]:
    from data_prep.pages.dump import parse_pages, read_header_and_chunks

    n = b = 0
    _, chunks = read_header_and_chunks(dump)
    for c in chunks:
        for p in parse_pages(c.data):
            if p.ns == 0 and p.redirect is None and not re.match(r"\s*#redirect", p.text, re.I):
                n += 1
                b += len(p.text.encode())
    return n, b


_WRAPPER = r"""
import json, subprocess, sys, time
import psutil
t = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
root = psutil.Process(p.pid)
cpu, peak = {}, 0
while p.poll() is None:
    rss = 0
    try:
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        procs = []
    for q in procs:
        try:
            c = q.cpu_times()
            cpu[q.pid] = c.user + c.system
            rss += q.memory_info().rss
        except psutil.Error:
            pass
    peak = max(peak, rss)
    time.sleep(0.05)
err = p.stderr.read()
dt = time.perf_counter() - t
print(json.dumps({"rc": p.returncode, "seconds": dt, "cpu": sum(cpu.values()), "peak_rss": peak, "stderr": err[-2000:]}))
"""


def timed(cmd: list[str]) -> tuple[float, float, float]:
    """Run ``cmd``, sampling its whole process tree every 50 ms: (wall s, CPU s of all its processes,
    peak of the summed RSS of all its processes in MiB)."""
    out = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)
    if res["rc"] != 0:
        raise SystemExit(f"command failed ({res['rc']}): {' '.join(cmd)}\n{res['stderr']}")
    return res["seconds"], res["cpu"], res["peak_rss"] / 2**20


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dump", type=Path, help="a multistream .xml.bz2 (default: synthesise one)")
    ap.add_argument("--index", type=Path, help="its index (required with --dump for the multistream runs)")
    ap.add_argument("--lang", default="en", help="sample language to replicate (default en)")
    ap.add_argument("--mb", type=float, default=20.0, help="MB of article wikitext to synthesise (default 20)")
    ap.add_argument("--workers", type=int, default=2, help="N for the parallel runs (default 2)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run every configuration this many times (interleaved) and keep the fastest wall time; "
                         "on a machine shared with other jobs this approaches the unloaded figure")
    ap.add_argument("--skip-wikipedia2vec", action="store_true")
    ap.add_argument("--keep", type=Path, help="keep the synthesised dump and outputs in this directory")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-extract-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.dump is None:
            t = time.perf_counter()
            dump, index, n_articles, n_bytes = synthesise(args.lang, args.mb, work)
            print(f"synthesised {dump.name}: {n_articles} articles, {n_bytes / 1e6:.1f} MB wikitext, "
                  f"{dump.stat().st_size / 1e6:.1f} MB bz2 ({time.perf_counter() - t:.0f} s)")
        else:
            dump, index = args.dump, args.index
            n_articles, n_bytes = count_articles(dump)
            print(f"{dump.name}: {n_articles} articles, {n_bytes / 1e6:.1f} MB wikitext")
        print(f"machine: {os.cpu_count()} CPUs, load average before: {loadavg()}")

        py = sys.executable
        w2v = shutil.which("wikipedia2vec") or str(Path(py).with_name("wikipedia2vec"))
        runs: list[tuple[str, int, list[str]]] = []
        for w in sorted({1, args.workers}):
            if index is not None:
                runs.append(("ours multistream+index", w, [py, "-m", "data_prep", "extract", "--dump", str(dump),
                             "--index", str(index), "--out", str(work / f"ours-ms-{w}"), "--workers", str(w), "--no-progress"]))
            runs.append(("ours one reader", w, [py, "-m", "data_prep", "extract", "--dump", str(dump),
                         "--out", str(work / f"ours-plain-{w}"), "--workers", str(w), "--no-progress"]))
            if not args.skip_wikipedia2vec:
                runs.append(("wikipedia2vec build-dump-db", w, [w2v, "build-dump-db", str(dump), str(work / f"w2v-{w}.db"),
                             "--pool-size", str(w)]))
        best: dict[tuple[str, int], tuple[float, float, float]] = {}
        for rep in range(args.repeat):
            for name, w, cmd in runs:
                out_db = work / f"w2v-{w}.db"
                if out_db.exists():
                    out_db.unlink()
                sec, cpu, rss = timed(cmd)
                if (name, w) not in best or sec < best[(name, w)][0]:
                    best[(name, w)] = (sec, cpu, rss)
                print(f"  [{rep + 1}/{args.repeat}] {name:30s} workers={w}: {sec:7.1f} s wall, {cpu:7.1f} s CPU  "
                      f"(load {loadavg()})", flush=True)
        results = [(name, w, *best[(name, w)]) for name, w, _ in runs]
        print()
        print(f"{'tool':30s} {'workers':>7s} {'wall s':>7s} {'CPU s':>7s} {'articles/s':>11s} {'MB/s/worker':>12s} "
              f"{'articles/CPU-s':>15s} {'peak RSS MiB':>13s}")
        for name, w, sec, cpu, rss in results:
            print(f"{name:30s} {w:7d} {sec:7.1f} {cpu:7.1f} {n_articles / sec:11.0f} {n_bytes / 1e6 / sec / w:12.2f} "
                  f"{n_articles / cpu:15.0f} {rss:13.0f}")
        by = {(n, w): s for n, w, s, _, _ in results}
        by_cpu = {(n, w): c for n, w, _, c, _ in results}
        print()
        for w in sorted({1, args.workers}):
            ref = by.get(("wikipedia2vec build-dump-db", w))
            for name in ("ours multistream+index", "ours one reader"):
                if ref and (name, w) in by:
                    print(f"speed vs wikipedia2vec, {w} worker(s), {name}: {ref / by[(name, w)]:.2f}x wall, "
                          f"{by_cpu[('wikipedia2vec build-dump-db', w)] / by_cpu[(name, w)]:.2f}x CPU")
        for name in ("ours multistream+index", "ours one reader", "wikipedia2vec build-dump-db"):
            if (name, 1) in by and (name, args.workers) in by and args.workers > 1:
                print(f"speed-up 1 -> {args.workers} workers, {name}: {by[(name, 1)] / by[(name, args.workers)]:.2f}x wall; "
                      f"CPU of the {args.workers}-worker run / 1-worker run: "
                      f"{by_cpu[(name, args.workers)] / by_cpu[(name, 1)]:.2f} (1.00 = no parallel overhead)")
        print(f"load average after: {loadavg()}")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
