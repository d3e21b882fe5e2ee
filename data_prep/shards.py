"""``data_prep shards``: extracted pages + entity vocabulary -> training shards (DESIGN.md step 4).

Per page: links are redirect-resolved and looked up in the entity vocabulary (misses are dropped and
counted); paragraphs are split into sentences (never inside a link); the text is cut at sentence and
link boundaries and every piece is encoded on its own, so no token straddles a mention and a mention
is exactly a run of tokens. A piece that continues a word is encoded without sentencepiece's dummy
"▁" prefix, so the cuts add no spurious word starts (see ``data_prep.spm``); a word starts at the text
start or after a character the model's normaliser reads as whitespace (spaces, but also LRM/RLM, ZWSP,
ZWNJ), so the tokens decode exactly like the paragraph encoded whole. Sentences of one page are
packed greedily into sequences of at most ``max_seq_length - 2`` tokens (room for <s> and </s>).

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
import itertools
import json
import multiprocessing as mp
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from data_prep.atomic import atomic_path, write_json
from data_prep.corpus_reader import PAGE_COLUMNS, Corpus, open_corpus
from data_prep.errors import InputError
from data_prep.redirects import RedirectResolver, read_redirects
from data_prep.sentences import split_sentences
from data_prep.spm import XlmrSentencePiece, sha256_file
from data_prep.vocab_file import EntityVocab, read_entity_vocab, write_entity_vocab

FORMAT_VERSION = 1  # bump when the output of the same input changes: invalidates resumable outputs
SPLITS = ("train", "validation")
SPM_COPY = "sentencepiece.bpe.model"
VOCAB_COPY = "entity_vocab.jsonl"
LOOP = -1  # link_map value for a title whose redirect chain loops
SEEN = ("links", "sentences", "sentences_split")  # counters that are not drops
_NEW, _CONT = -2, -3  # piece codes in a page plan (entity ids are >= 0)


@dataclass(frozen=True)
class ShardConfig:
    max_seq_length: int = 512
    max_entity_length: int = 128
    max_mention_length: int = 30
    valid_fraction: float = 0.005
    keep_no_entity: bool = False

    def check(self) -> None:
        if self.max_seq_length < 3:
            raise InputError(f"--max-seq-length {self.max_seq_length}: must be at least 3 (<s>, a token, </s>)")
        if self.max_entity_length < 1 or self.max_mention_length < 1:
            raise InputError("--max-entity-length and --max-mention-length must be at least 1")
        if not 0.0 <= self.valid_fraction <= 1.0:
            raise InputError(f"--valid-fraction {self.valid_fraction}: must be in [0, 1]")


@dataclass
class PackedSequence:
    spm_ids: list[int]  # sentencepiece ids (fairseq shift applied per chunk, vectorised); no <s>/</s>
    mentions: list[tuple[int, int, int]]  # (token start, token end exclusive, entity id)


@dataclass
class LanguageSummary:
    lang: str
    pages: int
    splits: dict[str, dict[str, int]]  # split -> {sequences, tokens, entities}
    seen: dict[str, int]  # input counted: links, sentences
    dropped: dict[str, int]  # what was left out, by reason (links_not_in_vocab, mentions_too_long, ...)
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
    h = int.from_bytes(hashlib.sha1(str(int(page_id)).encode()).digest()[:8], "big")
    return h < fraction * 2.0**64


# ---------------------------------------------------------------- per-page work (runs in workers)
@dataclass
class _Sentence:
    ids: list[int]  # spm ids (shifted to fairseq later, per page)
    mentions: list[tuple[int, int, int]]  # (token start, token end, entity id)


class PageProcessor:
    """Turns one page into packed sequences; everything it needs for one language, picklable."""

    def __init__(self, lang: str, source: str, tokenizer: XlmrSentencePiece, link_map: dict[str, int], config: ShardConfig):
        self.lang = lang
        self.source = source  # the corpus directory, for error messages
        self.tok = tokenizer
        self.link_map = link_map
        self.config = config

    def _links(self, page: dict, p_index: int, text: str, links: list[dict], counts: collections.Counter):
        """Valid, vocabulary-mapped links of a paragraph, sorted, non-overlapping: (start, end, entity)."""
        out = []
        n = len(text)
        if not links:
            return out
        for link in links:
            start, end = link["start"], link["end"]
            if start is None or end is None or not 0 <= start <= end <= n:
                raise InputError(
                    f"{self.source}: page {page['page_id']} ({page.get('title')!r}) paragraph {p_index}: "
                    f"link span [{start}, {end}) outside the paragraph text (length {n})"
                )
        counts["links"] += len(links)
        for link in sorted(links, key=lambda x: (x["start"], x["end"])):
            start, end = link["start"], link["end"]
            entity = self.link_map.get(link["title"])
            if entity is None:
                counts["links_not_in_vocab"] += 1
            elif entity == LOOP:
                counts["links_redirect_loop"] += 1
            elif start == end or not text[start:end].strip():
                counts["links_empty"] += 1
            elif out and start < out[-1][1]:
                counts["links_overlapping"] += 1
            else:
                out.append((start, end, entity))
        return out

    def _plan(self, page: dict, counts: collections.Counter, pieces: list[str], word_start: list[bool]) -> list[int]:
        """Cut the page's text at sentence and link boundaries and append the pieces (and whether each
        starts a word) to ``pieces``/``word_start``. Returns one code per piece: the entity id of a
        mention, ``_NEW`` for text that starts a sentence, ``_CONT`` for text that continues one."""
        plan: list[int] = []
        n_sent = 0
        gap = self.tok.word_gaps  # characters the model reads as whitespace (LRM, ZWSP, ... too)
        for p_index, para in enumerate(page["paragraphs"] or ()):
            text = para["text"] or ""
            links = self._links(page, p_index, text, para.get("links"), counts)
            n_links = len(links)
            li = 0  # links and sentences are both in text order, and no link crosses a sentence
            for s, e in split_sentences(text, self.lang, [(a, b) for a, b, _ in links]):
                n_sent += 1
                if li == n_links or links[li][0] >= e:  # the common case: a sentence without links
                    pieces.append(text[s:e])
                    word_start.append(s == 0 or text[s - 1] in gap or text[s] in gap)
                    plan.append(_NEW)
                    continue
                pos = s
                code = _NEW
                # a link belongs to the sentence it starts in (it may end in trimmed whitespace after it)
                while li < n_links and links[li][0] < e:
                    a, b, entity = links[li]
                    li += 1
                    if a > pos:
                        pieces.append(text[pos:a])
                        word_start.append(pos == 0 or text[pos - 1] in gap or text[pos] in gap)
                        plan.append(code)
                    elif code == _NEW:  # the sentence starts with the mention
                        pieces.append("")
                        word_start.append(True)
                        plan.append(_NEW)
                    # "▁" only where a word starts: text start, after a gap, or a leading gap
                    pieces.append(text[a:b])
                    word_start.append(a == 0 or text[a - 1] in gap or text[a] in gap)
                    plan.append(entity)
                    pos = b
                    code = _CONT
                if pos < e:
                    pieces.append(text[pos:e])
                    word_start.append(text[pos - 1] in gap or text[pos] in gap)
                    plan.append(_CONT)
        counts["sentences"] += n_sent
        return plan

    def _sentences(self, plan: list[int], encoded: list[list[int]], counts: collections.Counter) -> list[_Sentence]:
        sentences: list[_Sentence] = []
        max_mention = self.config.max_mention_length
        ids: list[int] = []
        mentions: list[tuple[int, int, int]] = []
        for code, piece in zip(plan, encoded):
            if code == _NEW:
                ids, mentions = [], []
                sentences.append(_Sentence(ids, mentions))
            elif code >= 0:
                n = len(piece)
                if not n:
                    counts["mentions_empty"] += 1
                elif n > max_mention:
                    counts["mentions_too_long"] += 1
                else:
                    mentions.append((len(ids), len(ids) + n, code))
            ids += piece
        return [s for s in sentences if s.ids]

    def _fit(self, sentences: list[_Sentence], limit: int, counts: collections.Counter) -> Iterator[_Sentence]:
        """Sentences no longer than ``limit``: overlong ones are cut at token boundaries outside mentions."""
        for sent in sentences:
            if len(sent.ids) <= limit:
                yield sent
                continue
            counts["sentences_split"] += 1
            start = 0
            mentions = sent.mentions
            while start < len(sent.ids):
                cut = min(start + limit, len(sent.ids))
                if cut < len(sent.ids):
                    # back off to the last boundary not strictly inside a mention (mentions <= limit long
                    # usually make one exist); otherwise cut at the limit and lose the straddling mention
                    c = cut
                    while c > start and any(ms < c < me for ms, me, _ in mentions):
                        c -= 1
                    cut = c if c > start else cut
                kept = [(ms - start, me - start, ent) for ms, me, ent in mentions if ms >= start and me <= cut]
                counts["mentions_cut"] += sum(1 for ms, me, _ in mentions if ms < cut < me)
                yield _Sentence(sent.ids[start:cut], kept)
                start = cut

    def _pack(self, sentences: Iterator[_Sentence], counts: collections.Counter) -> list[PackedSequence]:
        limit = self.config.max_seq_length - 2
        out: list[PackedSequence] = []
        ids: list[int] = []
        mentions: list[tuple[int, int, int]] = []

        def flush():
            if not ids:
                return
            kept = mentions
            if len(kept) > self.config.max_entity_length:
                counts["entities_over_limit"] += len(kept) - self.config.max_entity_length
                kept = kept[: self.config.max_entity_length]
            if not kept and not self.config.keep_no_entity:
                counts["sequences_without_entities"] += 1
                counts["tokens_without_entities"] += len(ids)
                return
            out.append(PackedSequence(ids, kept))

        for sent in sentences:
            if ids and len(ids) + len(sent.ids) > limit:
                flush()
                ids, mentions = [], []
            offset = len(ids)
            ids.extend(sent.ids)
            mentions.extend((s + offset, e + offset, ent) for s, e, ent in sent.mentions)
        flush()
        return out

    def process_batch(self, pages: list[dict]) -> tuple[list[list[PackedSequence]], collections.Counter]:
        """Sequences of each page. The pieces of all pages are encoded in one call per prefix mode:
        sentencepiece's per-call overhead would otherwise cost more than the encoding itself."""
        counts: collections.Counter = collections.Counter()
        pieces: list[str] = []
        word_start: list[bool] = []
        plans = [self._plan(page, counts, pieces, word_start) for page in pages]
        encoded = self.tok.encode_many(pieces, word_start)
        out = []
        pos = 0
        limit = self.config.max_seq_length - 2
        for plan in plans:
            sentences = self._sentences(plan, encoded[pos : pos + len(plan)], counts)
            pos += len(plan)
            out.append(self._pack(self._fit(sentences, limit, counts), counts))
        return out, counts

    def process(self, page: dict) -> tuple[list[PackedSequence], collections.Counter]:
        seqs, counts = self.process_batch([page])
        return seqs[0], counts


_WORKER: PageProcessor | None = None


def _init_worker(processor: PageProcessor) -> None:
    global _WORKER
    _WORKER = processor


@dataclass
class Chunk:
    """The sequences of one split from a batch of pages, as flat columns (cheap to pickle and to
    turn into an Arrow record batch): a list column is its values plus per-row lengths."""

    page_ids: np.ndarray  # int64 [rows]
    word_lens: np.ndarray  # int64 [rows]
    word_ids: np.ndarray  # int32 [sum of word_lens], fairseq ids
    entity_lens: np.ndarray  # int64 [rows]
    entity_ids: np.ndarray  # int32
    entity_starts: np.ndarray  # int32
    entity_ends: np.ndarray  # int32

    @classmethod
    def build(cls, rows: list[tuple[int, PackedSequence]]) -> Chunk:
        mentions = [m for _, seq in rows for m in seq.mentions]
        ments = np.array(mentions, dtype=np.int32).reshape(-1, 3)
        words = np.fromiter(itertools.chain.from_iterable(seq.spm_ids for _, seq in rows), dtype=np.int32)
        return cls(
            np.array([pid for pid, _ in rows], dtype=np.int64),
            np.array([len(seq.spm_ids) for _, seq in rows], dtype=np.int64),
            XlmrSentencePiece.to_fairseq(words),
            np.array([len(seq.mentions) for _, seq in rows], dtype=np.int64),
            np.ascontiguousarray(ments[:, 2]),
            np.ascontiguousarray(ments[:, 0]),
            np.ascontiguousarray(ments[:, 1]),
        )


_TABLE: tuple[str, object] | None = None  # the pages file a worker is reading: (path, pyarrow.Table)


def _read_rows(path: str, start: int, stop: int) -> list[dict]:
    """Rows [start, stop) of a pages file. Workers read the pages themselves (the main process only
    hands out row ranges), keeping the current file's table: tasks come in file order."""
    global _TABLE
    if _TABLE is None or _TABLE[0] != path:
        import pyarrow.parquet as pq

        _TABLE = None  # drop the previous file first
        _TABLE = (path, pq.read_table(path, columns=list(PAGE_COLUMNS), memory_map=True))
    return _TABLE[1].slice(start, stop - start).to_pylist()


def _process_rows(task: tuple[str, int, int]) -> tuple[int, dict[str, Chunk], collections.Counter]:
    assert _WORKER is not None
    pages = _read_rows(*task)
    seqs, counts = _WORKER.process_batch(pages)
    fraction = _WORKER.config.valid_fraction
    rows: dict[str, list[tuple[int, PackedSequence]]] = {name: [] for name in SPLITS}
    for page, page_seqs in zip(pages, seqs):
        split = "validation" if is_validation(page["page_id"], fraction) else "train"
        rows[split].extend((int(page["page_id"]), seq) for seq in page_seqs)
    return len(pages), {name: Chunk.build(r) for name, r in rows.items()}, counts


def _row_ranges(corpus: Corpus, batch_pages: int) -> Iterator[tuple[str, int, int]]:
    """Row ranges of the pages files, one per worker task (the output does not depend on them)."""
    import pyarrow.parquet as pq

    for f in corpus.page_files:
        n = pq.ParquetFile(f).metadata.num_rows
        for start in range(0, n, max(1, batch_pages)):
            yield (str(f), start, min(start + batch_pages, n))


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


# ---------------------------------------------------------------- writing
def _schema():
    import pyarrow as pa

    ints = pa.list_(pa.int32())
    return pa.schema(
        [("word_ids", ints), ("entity_ids", ints), ("entity_starts", ints), ("entity_ends", ints), ("page_id", pa.int64())]
    )


class _SplitWriter:
    """Streams the chunks of one split to an Arrow IPC file and hashes them for the fingerprint.

    The hash covers every column as one stream (values and row lengths), so it depends on the data
    only, not on how pages were batched."""

    COLUMNS = ("page_ids", "word_lens", "word_ids", "entity_lens", "entity_ids", "entity_starts", "entity_ends")

    def __init__(self, path: Path):
        import pyarrow as pa

        self.path = path
        self.schema = _schema()
        self.sink = pa.OSFile(str(path), "wb")
        self.writer = pa.ipc.new_stream(self.sink, self.schema)
        self.hashes = {c: hashlib.sha256() for c in self.COLUMNS}
        self.stats = {"sequences": 0, "tokens": 0, "entities": 0}

    def add(self, chunk: Chunk) -> None:
        import pyarrow as pa

        rows = len(chunk.page_ids)
        if not rows:
            return
        for c in self.COLUMNS:
            a = getattr(chunk, c)
            self.hashes[c].update(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
        self.stats["sequences"] += rows
        self.stats["tokens"] += len(chunk.word_ids)
        self.stats["entities"] += len(chunk.entity_ids)

        def lists(values: np.ndarray, lens: np.ndarray) -> pa.Array:
            offsets = np.zeros(rows + 1, dtype=np.int32)
            np.cumsum(lens, out=offsets[1:])
            return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.int32()))

        columns = [
            lists(chunk.word_ids, chunk.word_lens),
            lists(chunk.entity_ids, chunk.entity_lens),
            lists(chunk.entity_starts, chunk.entity_lens),
            lists(chunk.entity_ends, chunk.entity_lens),
            pa.array(chunk.page_ids, type=pa.int64()),
        ]
        self.writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=self.schema))

    def close(self) -> str:
        self.writer.close()
        self.sink.close()
        joined = "".join(f"{c}:{self.hashes[c].hexdigest()}\n" for c in self.COLUMNS)
        return hashlib.sha256(joined.encode()).hexdigest()


SHARD_BYTES = 500 * 1000 * 1000  # data file size of a split on disk (datasets' own default)


def _save_dataset(arrow_file: Path, dest: Path, fingerprint: str, workers: int = 1) -> None:
    """Write a split with ``save_to_disk``: ``SHARD_BYTES`` data files, written by up to ``workers``
    processes when there are several (the number of files depends on the size only, so the layout is
    the same whatever the worker count)."""
    import datasets
    from datasets.table import MemoryMappedTable

    features = datasets.Features(
        {
            "word_ids": datasets.List(datasets.Value("int32")),
            "entity_ids": datasets.List(datasets.Value("int32")),
            "entity_starts": datasets.List(datasets.Value("int32")),
            "entity_ends": datasets.List(datasets.Value("int32")),
            "page_id": datasets.Value("int64"),
        }
    )
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # one bar per language is ours; theirs would print per split
    table = MemoryMappedTable.from_file(str(arrow_file))
    # An explicit fingerprint keeps state.json byte-stable (datasets would otherwise hash the temp path).
    ds = datasets.Dataset(table, info=datasets.DatasetInfo(features=features), fingerprint=fingerprint)
    try:
        shards = max(1, min(len(ds), -(-table.nbytes // SHARD_BYTES)))
        num_proc = min(workers, shards) if shards > 1 and workers > 1 else None
        # (an empty split still gets one empty data file: datasets cannot load a zero-shard directory)
        ds.save_to_disk(str(dest), num_shards=shards, num_proc=num_proc)
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
    del ds, table


# ---------------------------------------------------------------- one language
def build_link_map(lang: str, vocab: EntityVocab, redirects: dict[str, str]) -> dict[str, int]:
    """title as linked -> entity id, redirects followed (LOOP for a looping chain); misses absent."""
    link_map: dict[str, int] = {}
    for entry in vocab.entries[4:]:
        for title, entity_lang in entry.entities:
            if entity_lang == lang:
                link_map[title] = entry.id
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
        writers = {name: _SplitWriter(tmp / f".{name}.arrow") for name in SPLITS}
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
            _save_dataset(w.path, tmp / name, hashes[name], workers)
            w.path.unlink()
        fingerprint = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()
        summary = LanguageSummary(
            corpus.lang,
            pages,
            {n: w.stats for n, w in writers.items()},
            {k: counts[k] for k in SEEN},
            {k: v for k, v in sorted(counts.items()) if k not in SEEN},
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
    batch_pages: int = 64,
    progress: bool = True,
) -> ShardSummary:
    """Build OUT/{lang}/{train,validation}, OUT/manifest.json and copies of the model and vocabulary."""
    config = ShardConfig(max_seq_length, max_entity_length, max_mention_length, valid_fraction, keep_no_entity)
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
    parser.add_argument("--max-mention-length", type=int, default=30)
    parser.add_argument("--valid-fraction", type=float, default=0.005)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--keep-no-entity", action="store_true", help="keep sequences without any entity")


def run_cli(args: argparse.Namespace) -> int:
    summary = build_shards(
        args.corpus, args.entity_vocab, args.spm, args.out, max_seq_length=args.max_seq_length,
        max_entity_length=args.max_entity_length, max_mention_length=args.max_mention_length,
        valid_fraction=args.valid_fraction, workers=args.workers, keep_no_entity=args.keep_no_entity,
    )
    print(summary.line())
    return 0
