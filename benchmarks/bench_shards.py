"""Shard-building throughput, side by side with bare ``sentencepiece`` encoding of the same text.

    python benchmarks/bench_shards.py                      # sample x 300 copies, workers 1 and 2
    python benchmarks/bench_shards.py --copies 100 --workers 1,2 --vocab-size 8000

The bundled sample dumps (every language) are extracted, their pages replicated ``--copies`` times
(new page ids, same text) into fresh corpora, an entity vocabulary is made of every linked title and a
unigram model is trained with ``train-spm``. Then, on the same machine and the same paragraph texts:

* bare: ``SentencePieceProcessor.encode(all paragraph texts, num_threads=1)`` and one ``encode(text)``
  call per paragraph, texts already in memory (nothing but the encoder); the faster is the reference;
* stage: ``build_shards`` end to end (parquet read, redirects and vocabulary, sentence split, cut-aware
  encoding, packing, Arrow/datasets writing, hashing), with N worker processes.

tokens/s/worker = tokens of the bare encoding / wall seconds / workers. "x bare (CPU)" = CPU seconds of
the stage (main process and workers) / CPU seconds of the reference bare encoding: the cost per token relative to
the encoder (target <= 2); CPU time, not wall time, because the 2-core CI machine is shared.
"extra us/token" = (stage CPU - bare CPU) / tokens: the stage's own cost per token, which does not
depend on the model. Scaling = 1-worker wall seconds / N-worker wall seconds. Peak RSS is the largest
process (main or a worker), in MiB.

Caveats: the replicated pages make the tokeniser's word cache hit far more often than on a real wiki
(a small bias in the stage's favour), and per-language fixed costs (pool start, link map, writing)
weigh more on these small corpora than on real ones. The model is trained on the tiny sample (a few thousand pieces), and a unigram model that small
encodes several times faster per token than XLM-R's 250k-piece model, so "x bare" here is pessimistic;
with XLM-R the ratio is 1 + extra/bare-per-token of that model.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data_prep" / "sample" / "dumps"


def build_inputs(work: Path, copies: int, vocab_size: int) -> tuple[list[Path], Path, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(ROOT / "tests"))
    from corpus_builders import write_vocab

    from data_prep.corpus_reader import open_corpus
    from data_prep.extract import extract
    from data_prep.redirects import RedirectResolver, read_redirects
    from data_prep.spm import train_spm

    dirs = []
    titles: set[tuple[str, str]] = set()
    for dump in sorted(SAMPLE.glob("*wiki-*-pages-articles.xml")):
        lang = dump.name.split("wiki-")[0]
        src = work / "extracted" / lang
        extract(dump, src, progress=False)
        table = pq.read_table(open_corpus(src).page_files[0])
        for f in open_corpus(src).page_files[1:]:
            table = pa.concat_tables([table, pq.read_table(f)])
        dst = work / "corpora" / lang
        dst.mkdir(parents=True)
        parts = []
        for k in range(copies):
            ids = pa.compute.add(table.column("page_id"), pa.scalar(k * 10_000_000, pa.int64()))
            parts.append(table.set_column(0, "page_id", ids))
        pq.write_table(pa.concat_tables(parts), dst / "pages-00000.parquet", row_group_size=2000)
        for name in ("redirects.parquet", "siteinfo.json"):
            (dst / name).write_bytes((src / name).read_bytes())
        resolver = RedirectResolver(read_redirects(src))
        for links in table.column("paragraphs").combine_chunks().flatten().field("links").to_pylist():
            titles.update((lang, t) for t in (resolver.resolve(x["title"]) for x in links) if t)
        dirs.append(dst)
    vocab = write_vocab(work / "vocab.jsonl", [(None, [(t, lang)]) for lang, t in sorted(titles)])
    spm = work / "sentencepiece.bpe.model"
    train_spm([work / "extracted" / d.name for d in dirs], vocab_size, spm)
    return dirs, vocab, spm


def bare_encode(dirs: list[Path], spm: Path) -> tuple[float, float, float, int, int]:
    import pyarrow.parquet as pq
    import sentencepiece

    texts: list[str] = []
    for d in dirs:
        col = pq.read_table(d / "pages-00000.parquet", columns=["paragraphs"]).column("paragraphs")
        texts.extend(t for t in col.combine_chunks().flatten().field("text").to_pylist() if t)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm))
    sp.encode(texts[:10], num_threads=1)  # warm up (lazy initialisation)
    best = best_cpu = loop_cpu = float("inf")
    for _ in range(3):
        c0, t0 = time.process_time(), time.perf_counter()
        ids = sp.encode(texts, num_threads=1)
        best, best_cpu = min(best, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
        c0 = time.process_time()
        for t in texts:
            sp.encode(t)
        loop_cpu = min(loop_cpu, time.process_time() - c0)
    return best, best_cpu, loop_cpu, sum(map(len, ids)), sum(map(len, texts))


def peak_rss_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the worker pools)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=300)
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()

    import datasets  # noqa: F401  (imported up front: the bare run pays no import either)

    from data_prep.shards import build_shards

    with tempfile.TemporaryDirectory(prefix="bench_shards.") as tmp:
        work = Path(tmp)
        dirs, vocab, spm = build_inputs(work, args.copies, args.vocab_size)
        bare_s, batch_cpu, loop_cpu, tokens, chars = bare_encode(dirs, spm)
        bare_cpu = min(batch_cpu, loop_cpu)  # the reference: the faster way to call the encoder
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other jobs make wall times noisy)")
        print(f"input: {len(dirs)} languages, {chars / 1e6:.1f} M characters of paragraph text, {tokens / 1e6:.2f} M tokens")
        print(
            f"{'run':<28}{'wall s':>8}{'CPU s':>8}{'tokens/s/worker':>17}{'x bare (CPU)':>14}{'extra us/token':>16}"
            f"{'scaling':>9}{'peak RSS MiB':>14}"
        )
        print(f"{'bare spm, one batch call':<28}{bare_s:>8.2f}{batch_cpu:>8.2f}{tokens / batch_cpu:>17,.0f}{batch_cpu / bare_cpu:>14.2f}")
        print(f"{'bare spm, call per paragraph':<28}{'':>8}{loop_cpu:>8.2f}{tokens / loop_cpu:>17,.0f}{loop_cpu / bare_cpu:>14.2f}")
        first = None
        for w in (int(x) for x in args.workers.split(",")):
            out = work / f"out{w}"
            c0, t0 = cpu_seconds(), time.perf_counter()
            summary = build_shards(dirs, vocab, spm, out, workers=w, progress=False)
            secs, cpu = time.perf_counter() - t0, cpu_seconds() - c0
            first = first or secs
            print(
                f"{f'shards, {w} worker(s)':<28}{secs:>8.2f}{cpu:>8.2f}{tokens / secs / w:>17,.0f}{cpu / bare_cpu:>14.2f}"
                f"{(cpu - bare_cpu) / tokens * 1e6:>16.2f}{first / secs:>9.2f}{peak_rss_mib():>14.0f}"
            )
        print(summary.line())


if __name__ == "__main__":
    main()
