"""A stand-in for XLM-R's ``sentencepiece.bpe.model``: a ~250k-piece unigram model from word frequencies.

    pip install 'wordfreq>=3.1,<4'      # the bench extra
    python benchmarks/make_bench_spm.py --out /tmp/bench-250k.model
    python benchmarks/bench_shards.py --spm /tmp/bench-250k.model

XLM-R's own model cannot be fetched on machines that only reach package registries, and a model trained
on the bundled sample has a few thousand pieces: it cuts text into more, shorter tokens and encodes
each faster than a 250k-piece one (1.4x here), which flatters bare sentencepiece per token in the
shards benchmark. This trains a model of XLM-R's kind and size instead: unigram, ~250k pieces, XLM-R's normaliser and
special pieces (the layout ``data_prep.shards.spm.train_spm`` writes), on the word frequency lists of the
``wordfreq`` package for the mLUKE languages it has (``configs/data/mluke24.yaml``).

Each language contributes its top ``--words-per-language`` words as ``word<TAB>count`` lines, the
count being the word's frequency times a constant (rounded, at least 1), so the trainer sees each
language's Zipf distribution and every language the same total weight. wordfreq folds case; for
scripts with case a title-cased copy of every word gets ``--title-case-share`` of its count, since real
text (and XLM-R's vocabulary) holds sentence-initial and proper-noun forms such as "▁The" and
"▁London". Chinese and Japanese words are mostly written run together (see ``UNSPACED``), and
punctuation, which the lists lack, is added character by character. Swahili, Telugu and Thai have no
list: their text encodes as ``<unk>``. Training takes about 1.5 minutes and 7 GB of memory on a 2-core
machine; the same inputs give a byte-identical model. It is a benchmark fixture, not a tokeniser to
pretrain with: its pieces follow word lists, not running text.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_prep.common.atomic import atomic_path  # noqa: E402
from data_prep.shards.spm import XLMR_KIND, XlmrSentencePiece  # noqa: E402

# frequency -> count. The trainer's seed-piece search runs over the text with every line repeated
# ``count`` times, so the counts must stay small: 2e6 makes that ~240M characters for 21 languages
# (about 30 s); words rarer than 1 in 2M (past rank ~40k in English) are counted once.
SCALE = 2e6

# Characters the word lists lack but every wiki page has: punctuation and symbols of the scripts in play
# (wordfreq's words carry none), "ß" (folded to "ss") and the Arabic harakat (stripped). Each is one line
# with a count as high as a common word's, so the trainer's character coverage keeps it; without them
# commas, brackets and "。" would all be <unk>.
PUNCTUATION_BLOCKS = [(0x21, 0x7F), (0xA1, 0x100), (0x600, 0x700), (0x964, 0x966), (0x2010, 0x2060), (0x20A0, 0x20C1),
                      (0x3000, 0x3040), (0x30FB, 0x30FC)]
FOLDED_LETTERS = "ß" + "".join(map(chr, range(0x064B, 0x0653)))
EXTRA_CHAR_COUNT = round(SCALE * 1e-2)
# The trainer's character coverage (0.9995, XLM-R's) is taken over these lists, where a CJK character
# of a 20,000th-rank word weighs next to nothing, and would leave common ones such as "柏" (Berlin's)
# as <unk>; XLM-R's alphabet, from 2.5 TB of text, has them. So the letters, marks and digits of each
# language's top words are required characters.
REQUIRED_FROM_TOP = 20_000
# Chinese and Japanese are written without spaces: a word on a line of its own would teach only
# "▁"-prefixed pieces ("▁東京"), which running text seldom uses, and leave it in single characters. So
# in these languages most of a word's weight goes to lines of GROUP words of neighbouring rank written
# together (count: the group's rarest word's), the rest to the word alone (after punctuation, a space).
UNSPACED = {"ja", "zh", "th"}
GROUP = 4
UNSPACED_ALONE_SHARE = 0.2


def extra_chars() -> list[str]:
    import unicodedata

    punct = (chr(c) for a, b in PUNCTUATION_BLOCKS for c in range(a, b) if unicodedata.category(chr(c))[0] in "PS")
    return sorted(set(punct) | set(FOLDED_LETTERS))


def mluke_languages() -> list[str]:
    return list(yaml.safe_load((ROOT / "configs" / "data" / "mluke24.yaml").read_text())["languages"])


def word_counts(
    languages: list[str], words_per_language: int, title_case_share: float,
) -> tuple[dict[str, int], set[str], list[str], list[str]]:
    """(word -> summed count over languages, plus ``extra_chars``; required characters; languages used;
    languages wordfreq lacks)."""
    import unicodedata

    import wordfreq

    available = wordfreq.available_languages("best")
    counts: dict[str, int] = {}
    required: set[str] = set()
    used, missing = [], []
    for lang in languages:
        if lang not in available:
            missing.append(lang)
            continue
        used.append(lang)
        freqs = wordfreq.get_frequency_dict(lang, "best")
        unspaced = lang in UNSPACED
        group: list[tuple[str, int]] = []
        # top_n_list drops wordfreq's digit-smashed entries ("0000" standing for every 4-digit number)
        for rank, word in enumerate(wordfreq.top_n_list(lang, words_per_language, "best")):
            if "\t" in word or not word.strip():
                continue
            if rank < REQUIRED_FROM_TOP:
                required.update(c for c in unicodedata.normalize("NFKC", word + word.upper()) if unicodedata.category(c)[0] in "LMN")
            n = max(1, round(freqs[word] * SCALE))
            if unspaced:
                group.append((word, n))
                if len(group) == GROUP:
                    line = "".join(w for w, _ in group)
                    counts[line] = counts.get(line, 0) + min(c for _, c in group)
                    group = []
                n = max(1, round(n * UNSPACED_ALONE_SHARE))
            counts[word] = counts.get(word, 0) + n
            title = word[:1].upper() + word[1:]
            if title_case_share > 0 and title != word:
                counts[title] = counts.get(title, 0) + max(1, round(n * title_case_share))
    for ch in extra_chars():
        counts[ch] = counts.get(ch, 0) + EXTRA_CHAR_COUNT
    return counts, required, used, missing


def make_bench_spm(
    out: Path, vocab_size: int = 250_000, words_per_language: int = 60_000, title_case_share: float = 0.2,
    threads: int = 2, seed: int = 0,
) -> tuple[int, list[str], list[str], int]:
    """Train the model and write it to ``out`` atomically; (pieces, languages used, missing, TSV lines)."""
    import sentencepiece

    counts, required, used, missing = word_counts(mluke_languages(), words_per_language, title_case_share)
    model = io.BytesIO()
    # in the temporary directory, so the model (which records its input's name) is byte-identical run to run
    with tempfile.TemporaryDirectory(prefix="make_bench_spm.") as tmp, contextlib.chdir(tmp):
        tsv = Path("words.tsv")
        # sorted: the same lists give the same file, whatever the dict order
        tsv.write_text("".join(f"{w}\t{n}\n" for w, n in sorted(counts.items())), encoding="utf-8")
        sentencepiece.set_random_generator_seed(seed)
        sentencepiece.SentencePieceTrainer.train(
            input=str(tsv),
            input_format="tsv",
            model_writer=model,
            vocab_size=vocab_size,
            **XLMR_KIND,
            character_coverage=0.9995,
            required_chars="".join(sorted(required)),
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
