"""Entity-vocabulary build throughput and peak memory on synthetic corpora at realistic scale.

    python benchmarks/bench_entity_vocab.py                      # 50M links over 5M titles, 3 languages
    python benchmarks/bench_entity_vocab.py --links 5e6 --titles 5e5 --workers 2

Writes synthetic extracted corpora (the real ``pages-*.parquet`` / ``redirects.parquet`` / ``siteinfo.json``
format) and an interwiki table, then runs ``build_entity_vocab`` in a fresh process and prints:

* links/s per worker: each language's links divided by the seconds its worker spent on it (read the
  link-title column, count, resolve redirects, filter red links), averaged over languages;
* wall-clock links/s of the whole build (counting + cross-language merge + writing);
* peak RSS of the build's parent process and of its largest worker (``resource.getrusage``), and their
  sum bound ``parent + workers x largest worker`` (all workers at their peak at once);
* side by side, the obvious pure-Python implementation (``collections.Counter`` over ``to_pylist()``
  per link) on the first pages file, as the peer the vectorised counting is measured against.

Synthetic data: link targets follow a Zipf-like law over each language's titles (a heavy head, a long
tail, like Wikipedia's links), ~10% of link targets are red links, 5% of links go through redirects (a
few double redirects and loops included), and 60% of titles have a QID shared by all languages.
Paragraph text is a short placeholder: the counting reads only the ``paragraphs.links.title`` leaf
column, so text size changes disk use, not this figure.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

LINK = pa.struct([("start", pa.int32()), ("end", pa.int32()), ("title", pa.string())])
PARAGRAPH = pa.struct([("text", pa.string()), ("links", pa.list_(LINK))])
LANG_CODES = ["en", "de", "ja", "fr", "ru", "zh", "es", "it", "ar", "pt", "pl", "nl"]


def title_array(lang: str, n: int, offset: int = 0) -> pa.Array:
    # ~20-byte titles, like Wikipedia's median title length in UTF-8.
    return pa.array([f"Synthetic {lang} title {i:08d}" for i in range(offset, offset + n)], pa.string())


def make_language(root: Path, lang: str, n_links: int, n_titles: int, pages_per_file: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    n_articles = int(n_titles * 0.9)  # the other 10% of link targets are red links
    titles = title_array(lang, n_titles)
    n_redirects = n_titles // 5
    redirect_titles = pa.array([f"Synthetic {lang} redirect {i:08d}" for i in range(n_redirects)], pa.string())
    redirect_targets = titles.take(pa.array(rng.integers(0, n_articles, n_redirects)))
    # A few double redirects (r_i -> r_{i+1} -> article) and two-cycle loops.
    k = max(2, n_redirects // 1000) & ~1
    tgt = redirect_targets.to_pylist()
    rt = redirect_titles.to_pylist()
    for i in range(0, k, 2):
        tgt[i] = rt[i + 1]  # double redirect
        tgt[k + i], tgt[k + i + 1] = rt[k + i + 1], rt[k + i]  # loop
    d = root / lang
    d.mkdir(parents=True)
    pq.write_table(pa.table({"title": redirect_titles, "target": pa.array(tgt, pa.string())}), d / "redirects.parquet")
    (d / "siteinfo.json").write_text(json.dumps({"lang": lang, "dbname": f"{lang}wiki", "case": "first-letter"}))

    # Link targets: Zipf(1.1) ranks over all titles, mapped through a fixed permutation so that popular
    # titles are spread over the id range; 5% of links use a redirect title instead.
    perm = rng.permutation(n_titles)
    links_per_page = max(1, n_links // n_articles)
    n_pages = n_articles
    written = 0
    for file_no, start in enumerate(range(0, n_pages, pages_per_file)):
        pages = min(pages_per_file, n_pages - start)
        n = links_per_page * pages if start + pages < n_pages else n_links - written
        ranks = (rng.zipf(1.1, n) - 1) % n_titles
        targets = titles.take(pa.array(perm[ranks]))
        via_redirect = rng.random(n) < 0.05
        if via_redirect.any():
            redirect_pick = redirect_titles.take(pa.array(rng.integers(0, n_redirects, int(via_redirect.sum()))))
            targets = pa.array(np.where(via_redirect, None, targets.to_numpy(zero_copy_only=False)), pa.string())
            targets = pa.compute.replace_with_mask(targets, pa.array(via_redirect), redirect_pick)
        zeros = pa.array(np.zeros(n, np.int32))
        links = pa.StructArray.from_arrays([zeros, zeros, targets], fields=list(LINK))
        # Three paragraphs per page, links spread evenly.
        per_page = np.full(pages, n // pages, np.int64)
        per_page[: n - per_page.sum()] += 1
        para_links = np.stack([per_page // 3, per_page // 3, per_page - 2 * (per_page // 3)], axis=1).reshape(-1)
        link_offsets = pa.array(np.concatenate([[0], np.cumsum(para_links)]).astype(np.int32))
        paragraphs = pa.StructArray.from_arrays(
            [pa.array(["placeholder paragraph text"] * (3 * pages)), pa.ListArray.from_arrays(link_offsets, links)],
            fields=list(PARAGRAPH),
        )
        page_offsets = pa.array(np.arange(0, 3 * pages + 1, 3, dtype=np.int32))
        table = pa.table(
            {
                "page_id": pa.array(np.arange(start, start + pages, dtype=np.int64) + 1),
                "title": titles.slice(start, pages),
                "paragraphs": pa.ListArray.from_arrays(page_offsets, paragraphs),
            }
        )
        pq.write_table(table, d / f"pages-{file_no:05d}.parquet", compression="zstd")
        written += n
    return {"dir": d, "links": written, "titles": n_titles}


def make_interwiki(path: Path, langs: list[str], n_titles: int) -> None:
    # 60% of titles have a QID; title i of every language is the same entity Q{i+1}.
    n = int(n_titles * 0.6)
    parts = []
    for lang in langs:
        parts.append(
            pa.table(
                {
                    "lang": pa.array([lang] * n, pa.string()),
                    "title": title_array(lang, n),
                    "qid": pa.array([f"Q{i + 1}" for i in range(n)], pa.string()),
                }
            )
        )
    pq.write_table(pa.concat_tables(parts), path)


def python_counter_peer(pages_file: Path) -> tuple[int, float, float]:
    """The obvious implementation: per-link Python loop over to_pylist() into a Counter."""
    start, cpu = time.perf_counter(), time.process_time()
    counts: Counter = Counter()
    n = 0
    for paragraphs in pq.read_table(pages_file, columns=["paragraphs"]).column("paragraphs").to_pylist():
        for para in paragraphs:
            for link in para["links"]:
                counts[link["title"]] += 1
                n += 1
    return n, time.perf_counter() - start, time.process_time() - cpu


def run_build(args: argparse.Namespace) -> None:
    """Child mode: build the vocabulary and print stats and peak memory as JSON."""
    from data_prep.entities.entity_vocab import build_entity_vocab

    corpora = [Path(c) for c in args.corpus]
    start = time.perf_counter()
    stats = build_entity_vocab(
        corpora, args.out, args.vocab_size, interwiki=args.interwiki, min_languages=args.min_languages, workers=args.workers, progress=False
    )
    wall = time.perf_counter() - start
    result = {
        "wall": wall,
        "langs": {
            k: {"links": v.links, "seconds": v.seconds, "cpu": v.cpu_seconds, "kept": v.kept, "distinct": v.distinct_titles}
            for k, v in stats.languages.items()
        },
        "cpu_total": resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime
        + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime,
        "size": stats.size,
        "candidates": stats.candidates,
        "self_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children_maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    print(json.dumps(result))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--links", type=float, default=50e6, help="total links over all languages")
    p.add_argument("--titles", type=float, default=5e6, help="total distinct titles over all languages")
    p.add_argument("--languages", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--vocab-size", type=int, default=1_200_000)
    p.add_argument("--min-languages", type=int, default=1)
    p.add_argument("--pages-per-file", type=int, default=100_000)
    p.add_argument("--dir", type=Path, help="where to write the synthetic corpora (default: a temp dir, removed)")
    p.add_argument("--seed", type=int, default=0)
    # child mode
    p.add_argument("--_build", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--corpus", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--interwiki", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._build:
        run_build(args)
        return 0

    langs = LANG_CODES[: args.languages]
    n_links, n_titles = int(args.links), int(args.titles)
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench_entity_vocab."))
    root.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        params = root / "params.json"
        wanted = {"links": n_links, "titles": n_titles, "langs": langs, "pages_per_file": args.pages_per_file, "seed": args.seed}
        if args.dir and params.is_file() and json.loads(params.read_text()) == wanted:
            print(f"reusing the synthetic corpora in {root}")
            info = [{"dir": root / lang, "links": n_links // len(langs)} for lang in langs]
        else:
            for lang in langs:
                shutil.rmtree(root / lang, ignore_errors=True)
            info = [
                make_language(root, lang, n_links // len(langs), n_titles // len(langs), args.pages_per_file, args.seed + i)
                for i, lang in enumerate(langs)
            ]
            make_interwiki(root / "interwiki.parquet", langs, n_titles // len(langs))
            params.write_text(json.dumps(wanted))
        inputs = [root / "interwiki.parquet", *(f for lang in langs for f in (root / lang).iterdir())]
        disk = sum(f.stat().st_size for f in inputs)
        print(f"synthetic corpora: {len(langs)} languages, {sum(i['links'] for i in info):,} links over {n_titles:,} titles, "
              f"{disk / 1e6:.0f} MB on disk, generated in {time.perf_counter() - t0:.0f}s")

        peer_links, peer_wall, peer_cpu = python_counter_peer(next((root / langs[0]).glob("pages-*.parquet")))

        cmd = [sys.executable, __file__, "--_build", "--corpus", *[str(i["dir"]) for i in info], "--interwiki", str(root / "interwiki.parquet"),
               "--out", str(root / "vocab.jsonl"), "--vocab-size", str(args.vocab_size), "--min-languages", str(args.min_languages),
               "--workers", str(args.workers)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stderr, file=sys.stderr)
            return 1
        res = json.loads(r.stdout.strip().splitlines()[-1])
        total_links = sum(v["links"] for v in res["langs"].values())
        wall_rate = np.mean([v["links"] / v["seconds"] for v in res["langs"].values()])
        cpu_rate = np.mean([v["links"] / v["cpu"] for v in res["langs"].values()])
        workers = min(args.workers, len(langs))
        parent, child = res["self_maxrss_mb"], res["children_maxrss_mb"]
        bound = parent + workers * child if workers > 1 else parent
        print(f"build: {res['wall']:.1f}s wall, {res['cpu_total']:.1f} CPU-s, {workers} worker(s); "
              f"{res['candidates']:,} candidate entities -> {res['size']:,} entries")
        print(f"{'':28}{'links/s per worker (wall)':>27}{'(per CPU-second)':>19}")
        print(f"{'vectorised (this project)':28}{wall_rate / 1e6:>25.2f} M{cpu_rate / 1e6:>17.2f} M")
        print(f"{'python Counter (peer)':28}{peer_links / peer_wall / 1e6:>25.2f} M{peer_links / peer_cpu / 1e6:>17.2f} M"
              "   (counting only, first pages file)")
        print(f"wall-clock links/s of the whole build (count + merge + write): {total_links / res['wall'] / 1e6:.2f} M")
        print(f"peak RSS: parent {parent:.0f} MB, largest worker {child:.0f} MB; "
              f"bound parent + {workers} x worker = {bound / 1024:.2f} GB")
        for lang, v in sorted(res["langs"].items()):
            print(f"  {lang}: {v['links']:,} links, {v['distinct']:,} distinct titles, {v['seconds']:.1f}s wall / {v['cpu']:.1f} CPU-s in its worker")
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
