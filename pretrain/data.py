"""Training data: the shards of DESIGN.md step 4, mixed over languages, as a pure function of the step.

Levanter-style: the global sample index ``g`` (0, 1, 2, ...) maps to one (language, row) by a pure function
of (seed, epoch) where ``epoch = g // epoch_size``; the global batch of step ``s`` is samples
``[s * B, (s + 1) * B)``. A data-parallel rank takes a contiguous slice of that batch, so resuming from
``consumed_samples = s * B`` gives the same global batches whatever the number of ranks.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.common.errors import InputError

SPLITS = ("train", "validation")


# ------------------------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class Limits:
    max_seq_length: int
    max_entity_length: int
    max_mention_length: int


@dataclass(frozen=True)
class Manifest:
    """What the trainer needs from DIR/manifest.json (the file's full content stays in ``raw``)."""

    root: Path
    languages: tuple[str, ...]
    limits: Limits
    spm_path: Path
    spm_sha256: str
    entity_vocab_path: Path
    entity_vocab_sha256: str
    fingerprint: str
    raw: dict[str, Any]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _pick(d: dict[str, Any], *paths: str) -> Any:
    """First present value among dotted ``paths`` (the manifest is read in one place: here)."""
    for p in paths:
        node: Any = d
        for part in p.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return node
    return None


def read_manifest(shards: str | Path) -> Manifest:
    root = Path(shards)
    mpath = root / "manifest.json"
    if not root.is_dir():
        raise InputError(f"{root}: shards directory not found (data.shards; build it with `python -m data_prep shards`)")
    if not mpath.is_file():
        raise InputError(f"{mpath}: manifest not found; is {root} a `python -m data_prep shards` output?")
    try:
        raw = json.loads(mpath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{mpath}: not valid JSON ({e})") from None
    langs = _pick(raw, "languages", "counts")
    if isinstance(langs, dict):
        languages = tuple(sorted(langs))
    elif isinstance(langs, list):
        languages = tuple(sorted(langs))
    else:
        raise InputError(f"{mpath}: no 'languages' mapping")
    try:
        limits = Limits(
            int(_pick(raw, "limits.max_seq_length", "max_seq_length")),
            int(_pick(raw, "limits.max_entity_length", "max_entity_length")),
            int(_pick(raw, "limits.max_mention_length", "max_mention_length")),
        )
    except TypeError:
        raise InputError(f"{mpath}: missing limits (max_seq_length, max_entity_length, max_mention_length)") from None
    spm_sha = _pick(raw, "spm.sha256", "spm_sha256", "sha256.spm")
    ev_sha = _pick(raw, "entity_vocab.sha256", "entity_vocab_sha256", "sha256.entity_vocab")
    if not spm_sha or not ev_sha:
        raise InputError(f"{mpath}: missing sha256 of the spm model or of the entity vocab")
    spm_name = _pick(raw, "spm.file", "spm.path", "spm_file") or "sentencepiece.bpe.model"
    ev_name = _pick(raw, "entity_vocab.file", "entity_vocab.path", "entity_vocab_file") or "entity_vocab.jsonl"
    fingerprint = _pick(raw, "fingerprint", "dataset_fingerprint")
    if not fingerprint:
        raise InputError(f"{mpath}: missing dataset fingerprint")
    return Manifest(
        root=root,
        languages=languages,
        limits=limits,
        spm_path=root / Path(str(spm_name)).name,
        spm_sha256=str(spm_sha),
        entity_vocab_path=root / Path(str(ev_name)).name,
        entity_vocab_sha256=str(ev_sha),
        fingerprint=str(fingerprint),
        raw=raw,
    )


def check_shards(
    shards: str | Path,
    languages: Sequence[str] | None = None,
    init_from: str | Path | None = None,
    entity_vocab: str | Path | None = None,
) -> Manifest:
    """Validate the shards directory against itself and the model's files; one-line ``InputError`` if not.

    The spm model and entity vocab copied into the shards must match the manifest's sha256, and so must
    the sentencepiece model of ``model.init_from`` (XLM-R or LUKE directory) and an explicit ``data.entity_vocab``:
    training on ids from another tokenizer or vocab would silently learn garbage.
    """
    m = read_manifest(shards)
    for lang in languages or ():
        if lang not in m.languages:
            raise InputError(f"{m.root}/manifest.json: language {lang!r} not in the shards ({', '.join(m.languages)})")
    for lang in languages or m.languages:
        d = m.root / lang / "train"
        if not d.is_dir():
            raise InputError(f"{d}: train split missing from the shards")
    for path, sha, what in ((m.spm_path, m.spm_sha256, "spm model"), (m.entity_vocab_path, m.entity_vocab_sha256, "entity vocab")):
        if not path.is_file():
            raise InputError(f"{path}: {what} copy missing from the shards directory")
        if sha256_file(path) != sha:
            raise InputError(f"{path}: sha256 differs from manifest.json's {what} sha256 (shards directory modified?)")
    if init_from is not None:
        spm = Path(init_from) / "sentencepiece.bpe.model"
        if not spm.is_file():
            raise InputError(f"{spm}: not found (model.init_from must be a Hugging Face XLM-R or LUKE directory)")
        if sha256_file(spm) != m.spm_sha256:
            raise InputError(f"{spm}: sha256 differs from the spm model the shards in {m.root} were tokenised with")
    if entity_vocab is not None:
        ev = Path(entity_vocab)
        if not ev.is_file():
            raise InputError(f"{ev}: entity vocab not found (data.entity_vocab)")
        source_sha = _pick(m.raw, "entity_vocab.source_sha256")  # shards may store a converted copy
        if sha256_file(ev) not in (m.entity_vocab_sha256, source_sha):
            raise InputError(f"{ev}: sha256 differs from the entity vocab the shards in {m.root} were built with")
    return m


def entity_vocab_size(path: str | Path) -> int:
    """Number of entities (lines) in a DESIGN.md JSONL entity vocab: ids are 0..n-1."""
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def spm_size(path: str | Path) -> int:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(path)).get_piece_size()


# ------------------------------------------------------------------------------------------- datasets


def load_split(shards: str | Path, lang: str, split: str = "train"):
    """Memory-mapped ``datasets.Dataset`` of one language and split."""
    import datasets

    path = Path(shards) / lang / split
    if not path.is_dir():
        raise InputError(f"{path}: split missing from the shards")
    return datasets.load_from_disk(str(path))


def language_probabilities(sizes: Sequence[int], alpha: float) -> np.ndarray:
    """p_l ∝ size_l^alpha (alpha < 1 up-samples small languages); empty languages get 0."""
    s = np.asarray(sizes, dtype=np.float64)
    w = np.where(s > 0, s, 0.0) ** alpha
    w[s <= 0] = 0.0
    if w.sum() <= 0:
        raise InputError("shards: every selected language has an empty train split")
    return w / w.sum()


class MixtureOrder:
    """Global sample index -> (language index, row), a pure function of (seed, epoch).

    An epoch is ``sum(sizes)`` samples. Within epoch ``e`` the language of each position is drawn from
    the mixture with ``default_rng([seed, e])``; the k-th draw of language ``l`` in that epoch takes row
    ``perm_j[k % n_l]`` with ``j = k // n_l`` and ``perm_j`` a permutation seeded by (seed, e, l, j),
    so an up-sampled language cycles through fresh permutations.
    """

    def __init__(self, sizes: Sequence[int], alpha: float, seed: int):
        self.sizes = [int(s) for s in sizes]
        self.probs = language_probabilities(self.sizes, alpha)
        self.seed = int(seed)
        self.epoch_size = int(sum(self.sizes))
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def epoch(self, e: int) -> tuple[np.ndarray, np.ndarray]:
        """(language index, row) for every position of epoch ``e``."""
        if e not in self._cache:
            rng = np.random.default_rng([self.seed, e])
            # 6 bytes per sample of the epoch (int16 language, int32 row): ~300 MB for 50M sequences
            langs = rng.choice(len(self.sizes), size=self.epoch_size, p=self.probs).astype(np.int16)
            rows = np.empty(self.epoch_size, dtype=np.int32)
            for li, n in enumerate(self.sizes):
                pos = np.flatnonzero(langs == li)
                if len(pos) == 0:
                    continue
                reps = math.ceil(len(pos) / n)
                perms = [np.random.default_rng([self.seed, e, li, j]).permutation(n) for j in range(reps)]
                rows[pos] = np.concatenate(perms)[: len(pos)]
            if len(self._cache) >= 2:  # a batch spans at most two epochs
                self._cache.pop(min(self._cache))
            self._cache[e] = (langs, rows)
        return self._cache[e]

    def lookup(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64)
        langs = np.empty(len(indices), dtype=np.int16)
        rows = np.empty(len(indices), dtype=np.int64)
        epochs = indices // self.epoch_size
        for e in np.unique(epochs):
            sel = epochs == e
            el, er = self.epoch(int(e))
            off = indices[sel] - e * self.epoch_size
            langs[sel], rows[sel] = el[off], er[off]
        return langs, rows


def global_batch_indices(step: int, global_batch_size: int) -> np.ndarray:
    """Global sample indices of optimiser step ``step`` (0-based)."""
    return np.arange(step * global_batch_size, (step + 1) * global_batch_size, dtype=np.int64)


def rank_slice(indices: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """The contiguous part of a global batch that data-parallel ``rank`` processes."""
    if len(indices) % world_size:
        raise ValueError(f"global batch of {len(indices)} does not split over {world_size} ranks")
    per = len(indices) // world_size
    return indices[rank * per : (rank + 1) * per]


@dataclass
class Sample:
    index: int  # global sample index (seeds the masking)
    lang: str
    word_ids: list[int]
    entity_ids: list[int]
    entity_starts: list[int]
    entity_ends: list[int]


class PretrainingData:
    """The mixed training stream over the shards' ``{lang}/train`` datasets."""

    COLUMNS = ("word_ids", "entity_ids", "entity_starts", "entity_ends")

    def __init__(self, manifest: Manifest, languages: Sequence[str] | None, alpha: float, seed: int):
        self.manifest = manifest
        self.languages = tuple(sorted(languages)) if languages else manifest.languages
        self.datasets = [load_split(manifest.root, lang, "train") for lang in self.languages]
        self.sizes = [len(d) for d in self.datasets]
        self.order = MixtureOrder(self.sizes, alpha, seed)
        self.alpha, self.seed = alpha, seed

    @property
    def probabilities(self) -> dict[str, float]:
        return dict(zip(self.languages, self.order.probs.tolist()))

    def fingerprint(self) -> str:
        """Identifies the sample stream: a resume on other shards/languages/seed must not pass silently."""
        key = json.dumps([self.manifest.fingerprint, self.languages, self.sizes, self.alpha, self.seed])
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def get(self, indices: Sequence[int]) -> list[Sample]:
        idx = np.asarray(indices, dtype=np.int64)
        langs, rows = self.order.lookup(idx)
        out: list[Sample | None] = [None] * len(idx)
        for li in np.unique(langs):
            where = np.flatnonzero(langs == li)
            batch = self.datasets[li][rows[where].tolist()]  # one columnar read per language
            for k, pos in enumerate(where):
                out[pos] = Sample(int(idx[pos]), self.languages[li], *(batch[c][k] for c in self.COLUMNS))
        return out  # type: ignore[return-value]

    def step_samples(self, step: int, global_batch_size: int, rank: int, world_size: int) -> list[Sample]:
        return self.get(rank_slice(global_batch_indices(step, global_batch_size), rank, world_size))
