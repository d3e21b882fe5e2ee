"""Writing the shards of one split: columnar chunks -> Arrow IPC -> ``datasets.Dataset.save_to_disk``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np


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
    def concat(cls, chunks: list[Chunk]) -> Chunk:
        return cls(**{f: np.concatenate([getattr(c, f) for c in chunks]) for f in SplitWriter.COLUMNS})

    def take(self, rows: np.ndarray) -> Chunk:
        """The rows where the boolean mask ``rows`` is true."""
        ent_rows = np.repeat(rows, self.entity_lens)
        return Chunk(
            self.page_ids[rows],
            self.word_lens[rows],
            self.word_ids[np.repeat(rows, self.word_lens)],
            self.entity_lens[rows],
            self.entity_ids[ent_rows],
            self.entity_starts[ent_rows],
            self.entity_ends[ent_rows],
        )


def schema():
    import pyarrow as pa

    ints = pa.list_(pa.int32())
    return pa.schema(
        [("word_ids", ints), ("entity_ids", ints), ("entity_starts", ints), ("entity_ends", ints), ("page_id", pa.int64())]
    )


class SplitWriter:
    """Streams the chunks of one split to an Arrow IPC file and hashes them for the fingerprint.

    The hash covers every column as one stream (values and row lengths), so it depends on the data
    only, not on how pages were batched."""

    COLUMNS = ("page_ids", "word_lens", "word_ids", "entity_lens", "entity_ids", "entity_starts", "entity_ends")

    def __init__(self, path: Path):
        import pyarrow as pa

        self.path = path
        self.schema = schema()
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
            # (pa.array of an int32 numpy array is zero-copy; passing type= would convert value by value)
            return pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.ascontiguousarray(values, dtype=np.int32)))

        columns = [
            lists(chunk.word_ids, chunk.word_lens),
            lists(chunk.entity_ids, chunk.entity_lens),
            lists(chunk.entity_starts, chunk.entity_lens),
            lists(chunk.entity_ends, chunk.entity_lens),
            pa.array(np.ascontiguousarray(chunk.page_ids, dtype=np.int64)),
        ]
        self.writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=self.schema))

    def close(self) -> str:
        self.writer.close()
        self.sink.close()
        joined = "".join(f"{c}:{self.hashes[c].hexdigest()}\n" for c in self.COLUMNS)
        return hashlib.sha256(joined.encode()).hexdigest()


SHARD_BYTES = 500 * 1000 * 1000  # data file size of a split on disk (datasets' own default)


def shard_features():
    """The columns of a shard split (DESIGN.md, step 4) as ``datasets.Features``: the on-disk contract."""
    import datasets

    ids = datasets.List(datasets.Value("int32"))
    return datasets.Features(
        {"word_ids": ids, "entity_ids": ids, "entity_starts": ids, "entity_ends": ids, "page_id": datasets.Value("int64")}
    )


def save_dataset(arrow_file: Path, dest: Path, fingerprint: str, workers: int = 1) -> None:
    """Write a split with ``save_to_disk``: ``SHARD_BYTES`` data files, written by up to ``workers``
    processes when there are several (the number of files depends on the size only, so the layout is
    the same whatever the worker count)."""
    import datasets
    from datasets.table import MemoryMappedTable

    features = shard_features()
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
