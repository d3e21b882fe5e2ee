"""A stand-in for XLM-R's ``sentencepiece.bpe.model``: a ~250k-piece unigram model from word frequencies.

    pip install 'wordfreq>=3.1,<4'      # the bench extra
    python benchmarks/make_bench_spm.py --out /tmp/bench-250k.model
    python benchmarks/bench_shards.py --spm /tmp/bench-250k.model

XLM-R's own model cannot be fetched on machines that only reach package registries, and a model trained
on the bundled sample has a few thousand pieces: its lattice is small and it encodes several times
faster per token than a 250k-piece one, which flatters bare sentencepiece in the shards benchmark.
This trains a model of XLM-R's kind and size instead: unigram, ~250k pieces, XLM-R's normaliser and
special pieces (the layout ``data_prep.spm.train_spm`` writes), on the word frequency lists of the
``wordfreq`` package for the mLUKE languages it has (``configs/data/mluke24.yaml``).

Each language contributes its top ``--words-per-language`` words as ``word<TAB>count`` lines, the count
being the word's frequency times a constant (rounded, at least 1), so the trainer sees each language's Zipf distribution and
every language the same total weight. wordfreq folds case; for scripts with case a title-cased copy of
every word gets ``--title-case-share`` of its count, since real text (and XLM-R's vocabulary) holds
sentence-initial and proper-noun forms such as "▁The" and "▁London". It is a benchmark fixture, not a
tokeniser to train on: its pieces follow word lists, not running text.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_prep.atomic import atomic_path  # noqa: E402
from data_prep.spm import XlmrSentencePiece  # noqa: E402

# frequency -> count. The trainer's seed-piece search runs over the text with every line repeated
# ``count`` times, so the counts must stay small: 2e6 makes that ~240M characters for 21 languages
# (about 30 s); words rarer than 1 in 2M (past rank ~40k in English) are counted once.
SCALE = 2e6


def mluke_languages() -> list[str]:
    return list(yaml.safe_load((ROOT / "configs" / "data" / "mluke24.yaml").read_text())["languages"])


def word_counts(languages: list[str], words_per_language: int, title_case_share: float) -> tuple[dict[str, int], list[str], list[str]]:
    """(word -> summed count over languages, languages used, languages wordfreq lacks)."""
    import wordfreq

    available = wordfreq.available_languages("best")
    counts: dict[str, int] = {}
    used, missing = [], []
    for lang in languages:
        if lang not in available:
            missing.append(lang)
            continue
        used.append(lang)
        freqs = wordfreq.get_frequency_dict(lang, "best")
        # top_n_list drops wordfreq's digit-smashed entries ("0000" standing for every 4-digit number)
        for word in wordfreq.top_n_list(lang, words_per_language, "best"):
            if "\t" in word or not word.strip():
                continue
            n = max(1, round(freqs[word] * SCALE))
            counts[word] = counts.get(word, 0) + n
            title = word[:1].upper() + word[1:]
            if title_case_share > 0 and title != word:
                counts[title] = counts.get(title, 0) + max(1, round(n * title_case_share))
    return counts, used, missing


def make_bench_spm(
    out: Path, vocab_size: int = 250_000, words_per_language: int = 60_000, title_case_share: float = 0.2,
    threads: int = 2, seed: int = 0,
) -> tuple[int, list[str], list[str], int]:
    """Train the model and write it to ``out`` atomically; (pieces, languages used, missing, TSV lines)."""
    import sentencepiece

    counts, used, missing = word_counts(mluke_languages(), words_per_language, title_case_share)
    model = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="make_bench_spm.") as tmp:
        tsv = Path(tmp) / "words.tsv"
        # sorted: the same lists give the same file, whatever the dict order
        tsv.write_text("".join(f"{w}\t{n}\n" for w, n in sorted(counts.items())), encoding="utf-8")
        sentencepiece.set_random_generator_seed(seed)
        sentencepiece.SentencePieceTrainer.train(
            input=str(tsv),
            input_format="tsv",
            model_writer=model,
            model_type="unigram",
            vocab_size=vocab_size,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=-1,
            normalization_rule_name="nmt_nfkc",
            add_dummy_prefix=True,
            remove_extra_whitespaces=True,
            byte_fallback=False,
            character_coverage=0.9995,
            hard_vocab_limit=False,
            input_sentence_size=0,  # every word: no trainer-side sampling
            shuffle_input_sentence=False,
            num_threads=threads,
            minloglevel=2,
        )
    proto = model.getvalue()
    tok = XlmrSentencePiece(proto, out)  # checks XLM-R's special-piece layout before anything is written
    with atomic_path(out) as tmp_out:
        tmp_out.write_bytes(proto)
    XlmrSentencePiece.load(out)
    return tok.spm_size, used, missing, len(counts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="model file to write")
    ap.add_argument("--vocab-size", type=int, default=250_000, help="pieces to aim for (XLM-R: 250,002 ids, 250,000 spm pieces)")
    ap.add_argument("--words-per-language", type=int, default=60_000, help="top words taken from each language's list")
    ap.add_argument("--title-case-share", type=float, default=0.2, help="count of a title-cased copy relative to the word's; 0: none")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    pieces, used, missing, lines = make_bench_spm(
        args.out, args.vocab_size, args.words_per_language, args.title_case_share, args.threads, args.seed,
    )
    if missing:
        print(f"wordfreq has no list for: {', '.join(missing)} (skipped)")
    print(
        f"make_bench_spm: {pieces:,} pieces from {lines:,} words in {len(used)} languages ({' '.join(used)}) "
        f"in {time.perf_counter() - t0:.0f} s -> {args.out}"
    )


if __name__ == "__main__":
    main()
