"""``data_prep shards``: extracted pages + entity vocabulary -> training shards (DESIGN.md step 4).

Links are redirect-resolved (per wiki) and mapped to entity ids through one title -> id table per
language (misses are dropped and counted); each page becomes packed sequences with exact entity spans
in ``data_prep.shards.packing``, in worker processes that read their own row ranges of the pages files; the
main process writes the columns they send back (``data_prep.shards.shard_writer``).

Output: OUT/{lang}/{train,validation} (``datasets.Dataset.save_to_disk``), OUT/manifest.json and copies
of the spm model and entity vocabulary. Each language is built in a temporary directory and renamed
into place with a ``build.json`` holding its input hash, so an interrupted run resumes language by
language.
"""

from __future__ import annotations

import argparse
import collections
import gc
import hashlib
import json
import multiprocessing as mp
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from data_prep.common.atomic import atomic_path, write_json
from data_prep.common.errors import InputError
from data_prep.entities.vocab_file import EntityVocab, read_entity_vocab, write_entity_vocab
from data_prep.pages.corpus_reader import PAGE_COLUMNS, Corpus, open_corpus
from data_prep.pages.redirects import RedirectResolver, read_redirects
from data_prep.shards.packing import LOOP, SEEN, PageProcessor, ShardConfig
from data_prep.shards.shard_writer import Chunk, SplitWriter, save_dataset
from data_prep.shards.spm import XlmrSentencePiece, sha256_file

FORMAT_VERSION = 2  # bump when the output of the same input changes: invalidates resumable outputs
SPLITS = ("train", "validation")
SPM_COPY = "sentencepiece.bpe.model"
VOCAB_COPY = "entity_vocab.jsonl"


@dataclass
class LanguageSummary:
    lang: str
    pages: int
    splits: dict[str, dict[str, int]]  # split -> {sequences, tokens, entities}
    seen: dict[str, int]  # input counted: links, sentences, sentences_split, mentions_long (kept whole)
    dropped: dict[str, int]  # what was left out, by reason (links_not_in_vocab, sentences_short, ...)
    fingerprint: str
    input_hash: str
    skipped: bool = False  # True when an existing output was reused

    @property
    def sequences(self) -> int:
        return sum(self.splits[k]["sequences"] for k in SPLITS)

    @property
    def tokens(self) -> int:
        return sum(self.splits[k]["tokens"] for k in SPLITS)

    @property
    def entities(self) -> int:
        return sum(self.splits[k]["entities"] for k in SPLITS)


@dataclass
class ShardSummary:
    out: Path
    fingerprint: str
    languages: dict[str, LanguageSummary] = field(default_factory=dict)

    def line(self) -> str:
        seqs = sum(s.sequences for s in self.languages.values())
        toks = sum(s.tokens for s in self.languages.values())
        ents = sum(s.entities for s in self.languages.values())
        reused = [lang for lang, s in self.languages.items() if s.skipped]
        extra = f", reused {','.join(reused)}" if reused else ""
        return (
            f"shards: {len(self.languages)} languages, {seqs} sequences, {toks} tokens, {ents} entities"
            f"{extra} -> {self.out} (fingerprint {self.fingerprint[:12]})"
        )


def is_validation(page_id: int, fraction: float) -> bool:
    """Stable split: depends on the page id only, never on the vocabulary, order or run."""
    if fraction <= 0.0:
        return False
    h = int.from_bytes(hashlib.sha1(b"%d" % page_id).digest()[:8], "big")
    return h < fraction * 2.0**64


_WORKER: PageProcessor | None = None


def _init_worker(processor: PageProcessor) -> None:
    global _WORKER
    _WORKER = processor


_TABLE: tuple[tuple[str, int], object] | None = None  # the row group a worker is reading: ((path, index), table)
TASK_PAGES = 4096  # pages per worker task at most: a task is a row group, cut only when bigger than this


def _read_rows(path: str, group: int, start: int, stop: int):
    """Rows [start, stop) of a row group of a pages file. Workers read the pages themselves (the main
    process only hands out row ranges), keeping the current row group: a group is cut into several
    tasks only when it holds more than TASK_PAGES pages, so usually one worker decodes each group."""
    global _TABLE
    if _TABLE is None or _TABLE[0] != (path, group):
        import pyarrow.parquet as pq

        _TABLE = None  # drop the previous group first
        _TABLE = ((path, group), pq.ParquetFile(path, memory_map=True).read_row_group(group, columns=list(PAGE_COLUMNS)))
    return _TABLE[1].slice(start, stop - start)


def _process_rows(task: tuple[str, int, int, int, int]) -> tuple[int, dict[str, Chunk], collections.Counter]:
    """One task: its pages in batches of ``batch_pages``, the sequences split into train and validation."""
    assert _WORKER is not None
    path, group, start, stop, batch_pages = task
    table = _read_rows(path, group, start, stop)
    counts: collections.Counter = collections.Counter()
    parts: dict[str, list[Chunk]] = {name: [] for name in SPLITS}
    fraction = _WORKER.config.valid_fraction
    for at in range(0, len(table), batch_pages):
        page_ids, chunk, batch_counts = _WORKER.process_table(table.slice(at, batch_pages))
        counts.update(batch_counts)
        valid_pages = {p for p in page_ids.tolist() if is_validation(p, fraction)}
        valid = np.fromiter(map(valid_pages.__contains__, chunk.page_ids.tolist()), dtype=bool, count=len(chunk.page_ids))
        parts["train"].append(chunk.take(~valid))
        parts["validation"].append(chunk.take(valid))
    return len(table), {name: Chunk.concat(c) for name, c in parts.items()}, counts


def _row_ranges(corpus: Corpus, batch_pages: int) -> Iterator[tuple[str, int, int, int, int]]:
    """Worker tasks: row ranges of the pages files' row groups (the output does not depend on them)."""
    import pyarrow.parquet as pq

    for f in corpus.page_files:
        meta = pq.ParquetFile(f).metadata
        for group in range(meta.num_row_groups):
            n = meta.row_group(group).num_rows
            for start in range(0, n, TASK_PAGES):
                yield (str(f), group, start, min(start + TASK_PAGES, n), max(1, batch_pages))


def _ordered_map(fn, tasks: Iterator, workers: int, processor: PageProcessor) -> Iterator:
    """``map`` in task order; with workers > 1 a bounded window of tasks is in flight (back-pressure:
    ``Pool.imap`` would read the whole corpus ahead into its queue)."""
    global _TABLE
    if workers <= 1:
        _init_worker(processor)
        try:
            for t in tasks:
                yield fn(t)
        finally:
            _TABLE = None
        return
    processor.prepare()
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("fork" if "fork" in methods else "spawn")
    # Forked workers share the parent's heap copy-on-write; a garbage collection in a worker would
    # walk (and so copy) all of it. Frozen objects are left alone by the collector.
    gc.freeze()
    try:
        with ctx.Pool(workers, initializer=_init_worker, initargs=(processor,)) as pool:
            window: collections.deque = collections.deque()
            for t in tasks:
                window.append(pool.apply_async(fn, (t,)))
                if len(window) >= 4 * workers:
                    yield window.popleft().get()
            while window:
                yield window.popleft().get()
    finally:
        gc.unfreeze()


# ---------------------------------------------------------------- one language
def build_link_map(lang: str, vocab: EntityVocab, redirects: dict[str, str]) -> dict[str, int]:
    """title as linked -> entity id, redirects followed (LOOP for a looping chain); misses absent."""
    link_map = dict(vocab.titles(lang))
    resolver = RedirectResolver(redirects)
    for title in redirects:
        final = resolver.resolve(title)
        if final is None:
            link_map[title] = LOOP
            continue
        entity = vocab.lookup(lang, final)
        if entity is None:
            link_map.pop(title, None)
        else:
            link_map[title] = entity
    return link_map


def _corpus_hash(corpus: Corpus) -> dict[str, str]:
    files = [*corpus.page_files, corpus.path / "redirects.parquet", corpus.path / "siteinfo.json"]
    return {f.name: sha256_file(f) for f in files if f.exists()}


def _build_language(
    corpus: Corpus,
    tokenizer: XlmrSentencePiece,
    vocab: EntityVocab,
    config: ShardConfig,
    out: Path,
    input_hash: str,
    workers: int,
    batch_pages: int,
    progress: bool,
) -> LanguageSummary:
    from tqdm.auto import tqdm

    processor = PageProcessor(corpus.lang, str(corpus.path), tokenizer, build_link_map(corpus.lang, vocab, read_redirects(corpus.path)), config)
    dest = out / corpus.lang
    counts: collections.Counter = collections.Counter()
    pages = 0
    with atomic_path(dest) as tmp:
        tmp.mkdir()
        writers = {name: SplitWriter(tmp / f".{name}.arrow") for name in SPLITS}
        # disable=None: a bar on a terminal only, so piped stderr keeps the one-line error contract
        with tqdm(total=corpus.num_pages, unit="page", desc=f"shards {corpus.lang}", disable=None if progress else True) as bar:
            for n_pages, chunks, batch_counts in _ordered_map(_process_rows, _row_ranges(corpus, batch_pages), workers, processor):
                counts.update(batch_counts)
                for name, chunk in chunks.items():
                    writers[name].add(chunk)
                pages += n_pages
                bar.update(n_pages)
        hashes = {name: w.close() for name, w in writers.items()}
        for name, w in writers.items():
            save_dataset(w.path, tmp / name, hashes[name], workers)
            w.path.unlink()
        fingerprint = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()
        summary = LanguageSummary(
            corpus.lang,
            pages,
            {n: w.stats for n, w in writers.items()},
            {k: counts[k] for k in SEEN},
            {k: v for k, v in sorted(counts.items()) if k not in SEEN and v},
            fingerprint,
            input_hash,
        )
        write_json(tmp / "build.json", asdict(summary))
    return summary


# ---------------------------------------------------------------- the stage
def build_shards(
    corpus_dirs: Sequence[str | Path],
    entity_vocab: str | Path,
    spm_model: str | Path,
    out: str | Path,
    max_seq_length: int = 512,
    max_entity_length: int = 128,
    max_mention_length: int = 30,
    valid_fraction: float = 0.005,
    workers: int = 1,
    keep_no_entity: bool = False,
    batch_pages: int = 256,
    progress: bool = True,
    min_sentence_tokens: int = 0,
) -> ShardSummary:
    """Build OUT/{lang}/{train,validation}, OUT/manifest.json and copies of the model and vocabulary."""
    config = ShardConfig(max_seq_length, max_entity_length, max_mention_length, valid_fraction, keep_no_entity, min_sentence_tokens)
    config.check()
    out = Path(out)
    tokenizer = XlmrSentencePiece.load(spm_model)
    vocab = read_entity_vocab(entity_vocab)
    corpora = [open_corpus(d) for d in corpus_dirs]
    seen: dict[str, Path] = {}
    for c in corpora:
        if c.lang in seen:
            raise InputError(f"{c.path}: language {c.lang!r} given twice (also {seen[c.lang]})")
        seen[c.lang] = c.path
    spm_sha = sha256_file(spm_model)
    vocab_sha = sha256_file(entity_vocab)
    out.mkdir(parents=True, exist_ok=True)

    summary = ShardSummary(out, "")
    for corpus in corpora:
        input_hash = hashlib.sha256(
            json.dumps(
                {"format": FORMAT_VERSION, "config": asdict(config), "spm": spm_sha, "vocab": vocab_sha, "corpus": _corpus_hash(corpus)},
                sort_keys=True,
            ).encode()
        ).hexdigest()
        done = out / corpus.lang / "build.json"
        try:
            previous = json.loads(done.read_text(encoding="utf-8")) if done.is_file() else None
        except ValueError:  # unreadable: rebuild the language
            previous = None
        if previous and previous.get("input_hash") == input_hash and all((out / corpus.lang / s).is_dir() for s in SPLITS):
            summary.languages[corpus.lang] = LanguageSummary(**{**previous, "skipped": True})
            continue
        summary.languages[corpus.lang] = _build_language(
            corpus, tokenizer, vocab, config, out, input_hash, workers, batch_pages, progress
        )

    summary.fingerprint = hashlib.sha256(
        "".join(f"{lang}:{s.fingerprint}\n" for lang, s in sorted(summary.languages.items())).encode()
    ).hexdigest()
    with atomic_path(out / SPM_COPY) as tmp:
        shutil.copyfile(spm_model, tmp)
    vocab_text = Path(entity_vocab).read_text(encoding="utf-8")
    if vocab_text.lstrip().startswith('{"id"'):  # already JSONL: a byte copy
        with atomic_path(out / VOCAB_COPY) as tmp:
            shutil.copyfile(entity_vocab, tmp)
    else:  # transformers' flat entity_vocab.json: store it in the project's JSONL format
        write_entity_vocab(out / VOCAB_COPY, vocab.entries)
    manifest = {
        "format_version": FORMAT_VERSION,
        "fingerprint": summary.fingerprint,
        "limits": asdict(config),
        "spm": {
            "file": SPM_COPY,
            "sha256": spm_sha,
            "pieces": tokenizer.spm_size,
            "vocab_size": tokenizer.vocab_size,
            "mask_id": tokenizer.mask_id,
            "bos_id": 0,
            "pad_id": 1,
            "eos_id": 2,
            "unk_id": 3,
        },
        "entity_vocab": {"file": VOCAB_COPY, "sha256": sha256_file(out / VOCAB_COPY), "source_sha256": vocab_sha, "size": len(vocab)},
        "languages": {
            lang: {
                "pages": s.pages,
                **{name: s.splits[name] for name in SPLITS},
                "seen": s.seen,
                "dropped": s.dropped,
                "fingerprint": s.fingerprint,
                "input_hash": s.input_hash,
            }
            for lang, s in sorted(summary.languages.items())
        },
    }
    write_json(out / "manifest.json", manifest)
    return summary


# ---------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", nargs="+", required=True, type=Path, help="extracted corpus directories")
    parser.add_argument("--entity-vocab", required=True, type=Path, help="entity vocabulary (JSONL)")
    parser.add_argument("--spm", required=True, type=Path, help="XLM-R sentencepiece model (sentencepiece.bpe.model)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--max-seq-length", type=int, default=512, help="incl. <s> and </s>")
    parser.add_argument("--max-entity-length", type=int, default=128)
    parser.add_argument(
        "--max-mention-length", type=int, default=30,
        help="mention tokens the trainer reads; a longer mention is kept whole and counted (seen.mentions_long)",
    )
    parser.add_argument(
        "--min-sentence-tokens", type=int, default=0,
        help="drop sentences of fewer tokens with their links (mLUKE: 5; default 0 keeps all)",
    )
    parser.add_argument("--valid-fraction", type=float, default=0.005)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--keep-no-entity", action="store_true", help="keep sequences without any entity")


def run_cli(args: argparse.Namespace) -> int:
    summary = build_shards(
        args.corpus, args.entity_vocab, args.spm, args.out, max_seq_length=args.max_seq_length,
        max_entity_length=args.max_entity_length, max_mention_length=args.max_mention_length,
        valid_fraction=args.valid_fraction, workers=args.workers, keep_no_entity=args.keep_no_entity,
        min_sentence_tokens=args.min_sentence_tokens,
    )
    print(summary.line())
    return 0
