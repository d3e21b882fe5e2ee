"""Shard-building throughput, side by side with bare ``sentencepiece`` encoding of the same text.

    python benchmarks/bench_shards.py                      # sample x 300 copies, workers 1 and 2
    python benchmarks/bench_shards.py --languages en --copies 3000   # one bigger language: worker scaling
    python benchmarks/bench_shards.py --spm sentencepiece.bpe.model  # XLM-R's model (or make_bench_spm.py's)

The bundled sample dumps (every language) are extracted, their pages replicated ``--copies`` times
(new page ids, same text) into fresh corpora, an entity vocabulary is made of every linked title and a
unigram model is trained with ``train-spm`` (unless ``--spm`` names one). Then, on the same machine and
the same paragraph texts:

* bare: ``SentencePieceProcessor.encode(all paragraph texts, num_threads=1)`` and one ``encode(text)``
  call per paragraph, texts already in memory (nothing but the encoder); the faster is the reference;
* stage: ``python -m data_prep shards --workers N`` end to end in a fresh process (parquet read,
  redirects and vocabulary, sentence split, cut-aware encoding, packing, Arrow/datasets writing,
  hashing), minus the interpreter's start-up, imports and loading the model (measured alone and
  shown; the bare encoding does not count loading its model either).

tokens/s/worker = tokens of the bare encoding / wall seconds / workers. "x bare (CPU)" = CPU seconds of
the stage (main process and the workers it reaped) / CPU seconds of the reference bare encoding: the
cost per token relative to the encoder (target <= 2); CPU time, because wall time on the shared 2-core
CI machine depends on the other jobs. "extra us/token" = (stage CPU - bare CPU) / tokens: the stage's own
cost per token. Scaling = 1-worker wall seconds / N-worker wall seconds. Peak RSS is what ``wait4``
reports for the CLI process, in MiB. Each configuration runs ``--repeat`` times; the fastest is shown.

Caveats: the replicated pages make the tokeniser's word cache hit more often than on a real wiki (a
small bias in the stage's favour), and per-language fixed costs (worker start, link map, writing) weigh
more on these small corpora than on real ones. Without ``--spm`` the model is trained on the tiny sample
and has a few thousand pieces; such a model cuts text into more, shorter tokens and encodes each faster
than XLM-R's 250k-piece one, so bare sentencepiece looks fast per token and "x bare" comes out
pessimistic. For figures that carry over to the real recipe pass ``--spm`` with XLM-R's
``sentencepiece.bpe.model`` or, where it cannot be downloaded, the 250k-piece unigram stand-in that
``benchmarks/make_bench_spm.py`` trains on word frequency lists. Such a model knows none of the sample's
text, so its pieces are not fitted to it, as on a real wiki; languages it lacks (the stand-in has no
Thai) encode as runs of ``<unk>``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data_prep" / "sample" / "dumps"


def build_inputs(
    work: Path, copies: int, vocab_size: int, languages: set[str] | None = None, spm_model: Path | None = None,
) -> tuple[list[Path], Path, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(ROOT / "tests"))
    from corpus_builders import write_vocab

    from data_prep.pages.corpus_reader import open_corpus
    from data_prep.pages.extract import PAGES_PER_ROW_GROUP, extract
    from data_prep.pages.redirects import RedirectResolver, read_redirects
    from data_prep.shards.spm import train_spm

    dirs = []
    titles: set[tuple[str, str]] = set()
    for dump in sorted(SAMPLE.glob("*wiki-*-pages-articles.xml")):
        lang = dump.name.split("wiki-")[0]
        if languages and lang not in languages:
            continue
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
        pq.write_table(pa.concat_tables(parts), dst / "pages-00000.parquet", row_group_size=PAGES_PER_ROW_GROUP)
        for name in ("redirects.parquet", "siteinfo.json"):
            (dst / name).write_bytes((src / name).read_bytes())
        resolver = RedirectResolver(read_redirects(src))
        for links in table.column("paragraphs").combine_chunks().flatten().field("links").to_pylist():
            titles.update((lang, t) for t in (resolver.resolve(x["title"]) for x in links) if t)
        dirs.append(dst)
    vocab = write_vocab(work / "vocab.jsonl", [(None, [(t, lang)]) for lang, t in sorted(titles)])
    spm = work / "sentencepiece.bpe.model"
    if spm_model is not None:
        shutil.copyfile(spm_model, spm)
    else:
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


def timed_subprocess(argv: list[str]) -> tuple[float, float, float, str]:
    """(wall s, CPU s of the process and the workers it reaped, peak RSS MiB, stdout) of one command."""
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(argv)}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=300)
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--repeat", type=int, default=2, help="runs per configuration; the fastest is shown")
    ap.add_argument("--languages", default="", help="comma-separated subset of the sample's languages (default: all)")
    ap.add_argument(
        "--spm", type=Path, default=None,
        help="use this sentencepiece model, e.g. XLM-R's sentencepiece.bpe.model or one from make_bench_spm.py, "
        "instead of training a small one on the sample",
    )
    args = ap.parse_args()
    if args.spm is not None and not args.spm.is_file():
        ap.error(f"--spm {args.spm}: no such file")

    with tempfile.TemporaryDirectory(prefix="bench_shards.") as tmp:
        work = Path(tmp)
        # Inputs and the bare encoding are made in a spawned helper process: a child forked from a big
        # parent would report the parent's memory as its own peak RSS.
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(1) as helper:
            dirs, vocab, spm = helper.apply(
                build_inputs, (work, args.copies, args.vocab_size, set(filter(None, args.languages.split(","))), args.spm)
            )
            bare_s, batch_cpu, loop_cpu, tokens, chars = helper.apply(bare_encode, (dirs, spm))
            helper.close()
            helper.join()
        bare_cpu = min(batch_cpu, loop_cpu)  # the reference: the faster way to call the encoder
        # the CLI's fixed start-up (interpreter, imports, the model loaded as the stage loads it), subtracted below
        load = f"import data_prep.shards.build, datasets, pyarrow.parquet; data_prep.shards.build.XlmrSentencePiece.load({str(spm)!r})"
        startup = [timed_subprocess([sys.executable, "-c", load])
                   for _ in range(args.repeat)]
        start_wall, start_cpu = min(x[0] for x in startup), min(x[1] for x in startup)
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other jobs make wall times noisy)")
        print(f"input: {len(dirs)} languages, {chars / 1e6:.1f} M characters of paragraph text, {tokens / 1e6:.2f} M tokens")
        print(f"CLI start-up (imports, model load), subtracted from the shards runs: {start_wall:.2f} s wall, {start_cpu:.2f} s CPU")
        print(
            f"{'run':<30}{'wall s':>8}{'CPU s':>8}{'tokens/s/worker':>17}{'x bare (CPU)':>14}{'extra us/token':>16}"
            f"{'scaling':>9}{'peak RSS MiB':>14}"
        )
        print(f"{'bare spm, one batch call':<30}{bare_s:>8.2f}{batch_cpu:>8.2f}{tokens / batch_cpu:>17,.0f}{batch_cpu / bare_cpu:>14.2f}")
        print(f"{'bare spm, call per paragraph':<30}{'':>8}{loop_cpu:>8.2f}{tokens / loop_cpu:>17,.0f}{loop_cpu / bare_cpu:>14.2f}")
        first = None
        line = ""
        for w in (int(x) for x in args.workers.split(",")):
            runs = []
            for r in range(args.repeat):
                argv = [sys.executable, "-m", "data_prep", "shards", "--corpus", *map(str, dirs), "--entity-vocab", str(vocab),
                        "--spm", str(spm), "--out", str(work / f"out{w}-{r}"), "--workers", str(w)]
                runs.append(timed_subprocess(argv))
            secs = min(x[0] for x in runs) - start_wall
            cpu = min(x[1] for x in runs) - start_cpu
            first = first or secs
            line = runs[-1][3].strip()
            print(
                f"{f'python -m data_prep shards -w {w}':<30}{secs:>8.2f}{cpu:>8.2f}{tokens / secs / w:>17,.0f}"
                f"{cpu / bare_cpu:>14.2f}{(cpu - bare_cpu) / tokens * 1e6:>16.2f}{first / secs:>9.2f}{max(x[2] for x in runs):>14.0f}"
            )
        print(line)


if __name__ == "__main__":
    main()
