"""Dynamic masking and padding: samples of the shards -> model tensors.

Masking is seeded by (seed, global sample index), so a sample is masked the same way whichever rank,
micro-batch or resumed run sees it. Ids follow fairseq's XLM-R layout: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2,
``<unk>`` 3, spm piece i -> i + 1, ``<mask>`` = spm size + 1; entity ``[PAD]`` 0, ``[MASK]`` 2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pretrain.data import Sample

BOS_ID, PAD_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
ENTITY_PAD_ID, ENTITY_MASK_ID = 0, 2
IGNORE = -100  # label of positions that are not predicted


@dataclass(frozen=True)
class MaskingConfig:
    spm_size: int  # pieces in the sentencepiece model; <mask> = spm_size + 1
    max_mention_length: int = 30
    mlm_probability: float = 0.15
    mep_probability: float = 0.15
    mask_ratio: float = 0.8
    random_ratio: float = 0.1
    seed: int = 0

    @property
    def mask_id(self) -> int:
        return self.spm_size + 1


def word_spans(word_ids: np.ndarray, word_start: np.ndarray | None) -> np.ndarray:
    """Start offsets of the masking units: every token (subword) or every word (spm "▁" pieces)."""
    if word_start is None or len(word_ids) == 0:
        return np.arange(len(word_ids) + 1)
    starts = word_start[word_ids].copy()
    starts[0] = True
    return np.append(np.flatnonzero(starts), len(word_ids))


def n_to_mask(n: int, p: float) -> int:
    """round(p * n), at least one where there is anything to mask."""
    return 0 if n == 0 else min(n, max(1, int(round(p * n))))


@dataclass
class MaskedSample:
    input_ids: np.ndarray  # with <s> ... </s>
    mlm_labels: np.ndarray
    entity_ids: np.ndarray
    mep_labels: np.ndarray
    entity_position_ids: np.ndarray  # [n_entities, max_mention_length], -1 padded


def mask_sample(sample: Sample, cfg: MaskingConfig, word_start: np.ndarray | None) -> MaskedSample:
    rng = np.random.default_rng([cfg.seed, sample.index])
    words = np.asarray(sample.word_ids, dtype=np.int64)
    n = len(words)

    # Words: choose whole units, then decide <mask> / random / keep per token.
    bounds = word_spans(words, word_start)
    n_units = len(bounds) - 1
    chosen = np.sort(rng.choice(n_units, size=n_to_mask(n_units, cfg.mlm_probability), replace=False))
    pos = np.concatenate([np.arange(bounds[u], bounds[u + 1]) for u in chosen]) if len(chosen) else np.zeros(0, np.int64)
    labels = np.full(n, IGNORE, dtype=np.int64)
    labels[pos] = words[pos]
    r = rng.random(len(pos))
    random_ids = rng.integers(UNK_ID + 1, cfg.spm_size + 1, size=len(pos))  # ordinary pieces only
    masked = words.copy()
    to_mask = r < cfg.mask_ratio
    to_random = (r >= cfg.mask_ratio) & (r < cfg.mask_ratio + cfg.random_ratio)
    masked[pos[to_mask]] = cfg.mask_id
    masked[pos[to_random]] = random_ids[to_random]

    input_ids = np.concatenate([[BOS_ID], masked, [EOS_ID]])
    mlm_labels = np.concatenate([[IGNORE], labels, [IGNORE]])

    # Entities: 15% -> [MASK].
    ents = np.asarray(sample.entity_ids, dtype=np.int64)
    e_chosen = rng.choice(len(ents), size=n_to_mask(len(ents), cfg.mep_probability), replace=False)
    mep_labels = np.full(len(ents), IGNORE, dtype=np.int64)
    mep_labels[e_chosen] = ents[e_chosen]
    ent_in = ents.copy()
    ent_in[e_chosen] = ENTITY_MASK_ID

    positions = np.full((len(ents), cfg.max_mention_length), -1, dtype=np.int64)
    for j, (s, e) in enumerate(zip(sample.entity_starts, sample.entity_ends)):
        span = np.arange(s + 1, e + 1)[: cfg.max_mention_length]  # +1: <s> comes first
        positions[j, : len(span)] = span
    return MaskedSample(input_ids, mlm_labels, ent_in, mep_labels, positions)


class Collator:
    """Masks each sample and pads a micro-batch to its longest sequence / entity list."""

    def __init__(self, cfg: MaskingConfig, word_start: np.ndarray | None):
        self.cfg = cfg
        self.word_start = word_start  # None: subword masking

    def __call__(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        masked = [mask_sample(s, self.cfg, self.word_start) for s in samples]
        b = len(masked)
        t = max(len(m.input_ids) for m in masked)
        e = max(1, max(len(m.entity_ids) for m in masked))  # width >= 1 keeps shapes valid without entities
        mm = self.cfg.max_mention_length
        input_ids = np.full((b, t), PAD_ID, dtype=np.int64)
        attention = np.zeros((b, t), dtype=np.int64)
        mlm = np.full((b, t), IGNORE, dtype=np.int64)
        ent = np.full((b, e), ENTITY_PAD_ID, dtype=np.int64)
        ent_att = np.zeros((b, e), dtype=np.int64)
        mep = np.full((b, e), IGNORE, dtype=np.int64)
        ent_pos = np.full((b, e, mm), -1, dtype=np.int64)
        for i, m in enumerate(masked):
            n, k = len(m.input_ids), len(m.entity_ids)
            input_ids[i, :n], attention[i, :n], mlm[i, :n] = m.input_ids, 1, m.mlm_labels
            ent[i, :k], ent_att[i, :k], mep[i, :k], ent_pos[i, :k] = m.entity_ids, 1, m.mep_labels, m.entity_position_ids
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention),
            "mlm_labels": torch.from_numpy(mlm),
            "entity_ids": torch.from_numpy(ent),
            "entity_attention_mask": torch.from_numpy(ent_att),
            "entity_position_ids": torch.from_numpy(ent_pos),
            "mep_labels": torch.from_numpy(mep),
        }


def count_targets(batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(masked words, masked entities) of a collated micro-batch."""
    return int((batch["mlm_labels"] != IGNORE).sum()), int((batch["mep_labels"] != IGNORE).sum())
