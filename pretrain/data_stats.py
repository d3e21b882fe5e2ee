"""``python -m pretrain data-stats --config CFG [key.path=value ...] [--json F] [--samples N]``

What the trainer will see, per language, before any GPU hour is spent: sampling probability, sequence and
entity counts, the share of words and entities masked, the longest masked unit and the padding of its
micro-batches. It reads only ``data.*`` and ``train.micro_batch_size`` (no model, no GPU, no process
group), and every number comes from the trainer's own code: the sample stream and masking of
``batches.training_stream``, ``mask_sample`` with the collator's units, and micro-batches built by
``batches.StepBatches``.

Per language the first ``--samples`` sequences of that language in the stream are read (a small language
up-sampled by ``data.alpha`` repeats rows, masked afresh, as in training). Padding is that of the
trainer's packed micro-batches: overall, on the stream's first ``--samples`` x languages sequences in whole
micro-batches; per language, on micro-batches made of that language's sequences alone (a packed row
mixes languages, so its pads belong to none of them).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.common.atomic import write_json
from data_prep.common.errors import InputError
from pretrain.batches import StepBatches, make_collator, training_stream
from pretrain.collator import mask_sample, position_counts
from pretrain.config import ExperimentConfig, load_config
from pretrain.data import PretrainingData, check_shards, spm_size

MAX_EPOCHS = 10_000  # scanning the stream for a rarely drawn language stops here


@dataclass
class Share:
    mean: float
    p5: float
    p95: float

    @classmethod
    def of(cls, values: list[float]) -> Share | None:
        if not values:
            return None
        v = np.asarray(values, dtype=np.float64)
        return cls(float(v.mean()), float(np.percentile(v, 5)), float(np.percentile(v, 95)))


@dataclass
class LanguageStats:
    probability: float  # of each draw of the stream (data.alpha)
    sequences: int  # in the train split
    samples: int  # sequences read here
    words_per_sequence: float
    entities_per_sequence: float
    masked_word_share: Share | None  # masked tokens / tokens, per sequence
    masked_entity_share: Share | None  # masked / entities, per sequence with entities
    longest_masked_run: int  # pieces of the longest unit masked as one (1 under subword masking)
    pad_fraction: float | None  # of packed micro-batches of this language alone (None: no sequences)


@dataclass
class DataStats:
    languages: dict[str, LanguageStats]
    pad_fraction: float  # over all micro-batches measured
    micro_batch_size: int
    whole_word_masking: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        def pct(x: float | None) -> str:
            return "-" if x is None else f"{100 * x:.1f}"

        def share(s: Share | None) -> str:
            return "-" if s is None else f"{pct(s.mean)} ({pct(s.p5)}-{pct(s.p95)})"

        lines = [f"{'lang':<6}{'prob':>7}{'seqs':>9}{'sampled':>9}{'words':>8}{'ents':>7}"
                 f"{'masked words % (p5-p95)':>26}{'masked ents % (p5-p95)':>26}{'run':>5}{'pad %':>7}"]
        for lang, s in self.languages.items():
            lines.append(
                f"{lang:<6}{s.probability:>7.3f}{s.sequences:>9}{s.samples:>9}{s.words_per_sequence:>8.1f}"
                f"{s.entities_per_sequence:>7.1f}{share(s.masked_word_share):>26}{share(s.masked_entity_share):>26}"
                f"{s.longest_masked_run:>5}{pct(s.pad_fraction):>7}"
            )
        mode = "whole-word" if self.whole_word_masking else "subword"
        lines.append(f"{mode} masking; micro-batches of {self.micro_batch_size}: {pct(self.pad_fraction)}% padding")
        return "\n".join(lines)


def first_indices(stream: PretrainingData, n: int) -> list[np.ndarray]:
    """Per language, the global indices of its first ``n`` draws in the stream (fewer for an empty one)."""
    order = stream.order
    found: list[list[np.ndarray]] = [[] for _ in stream.languages]
    counts = [0] * len(stream.languages)
    wanted = [n if p > 0 else 0 for p in order.probs]
    for e in range(MAX_EPOCHS):
        if all(c >= w for c, w in zip(counts, wanted)):
            break
        langs, _ = order.epoch(e)
        for li in range(len(found)):
            if counts[li] < wanted[li]:
                idx = np.flatnonzero(langs == li)[: wanted[li] - counts[li]] + e * order.epoch_size
                found[li].append(idx)
                counts[li] += len(idx)
    return [np.concatenate(f) if f else np.zeros(0, np.int64) for f in found]


def _pad_share(micro: list[dict]) -> float | None:
    """Padding positions / computed positions (words and entity slots of every row) of micro-batches."""
    computed, pads = np.sum([position_counts(b) for b in micro], axis=0) if micro else (0, 0)
    return float(pads / computed) if computed else None


def data_stats(cfg: ExperimentConfig, samples: int = 1000) -> DataStats:
    if samples < 1:
        raise InputError(f"--samples: must be >= 1, got {samples}")
    manifest = check_shards(cfg.data.shards, cfg.data.languages, entity_vocab=cfg.data.entity_vocab)
    stream, masking = training_stream(cfg.data, manifest, spm_size(manifest.spm_path))
    collate = make_collator(cfg.data, masking, manifest, layout="packed", languages=stream.languages)

    # Padding: the trainer's micro-batches (consecutive groups of micro_batch_size in the stream, whatever
    # the global batch and world size), from the start of the stream.
    m = cfg.train.micro_batch_size
    n_pad = math.ceil(samples * len(stream.languages) / m) * m
    micro = StepBatches(stream, collate, n_pad, m, rank=0, world_size=1, max_steps=1)[0].micro

    out: dict[str, LanguageStats] = {}
    for li, (lang, idx) in enumerate(zip(stream.languages, first_indices(stream, samples))):
        seqs = stream.get(idx) if len(idx) else []
        masked = [mask_sample(s, collate.cfg, collate.units) for s in seqs]
        word_share = [float((ms.mlm_labels != -100).sum()) / len(s.word_ids) for s, ms in zip(seqs, masked) if s.word_ids]
        ent_share = [float((ms.mep_labels != -100).sum()) / len(s.entity_ids) for s, ms in zip(seqs, masked) if s.entity_ids]
        runs = [int(ms.masked_units.max()) for ms in masked if len(ms.masked_units)]
        out[lang] = LanguageStats(
            probability=float(stream.order.probs[li]),
            sequences=stream.sizes[li],
            samples=len(seqs),
            words_per_sequence=float(np.mean([len(s.word_ids) for s in seqs])) if seqs else 0.0,
            entities_per_sequence=float(np.mean([len(s.entity_ids) for s in seqs])) if seqs else 0.0,
            masked_word_share=Share.of(word_share),
            masked_entity_share=Share.of(ent_share),
            longest_masked_run=max(runs, default=0),
            pad_fraction=_pad_share([collate(seqs[k : k + m]) for k in range(0, len(seqs), m)]),
        )
    return DataStats(out, _pad_share(micro) or 0.0, m, cfg.data.whole_word_masking)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="YAML experiment config (configs/train/*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="override config values")
    parser.add_argument("--json", type=Path, default=None, help="write the statistics as JSON here")
    parser.add_argument("--samples", type=int, default=1000, help="sequences read per language (default 1000)")


def run_cli(args: argparse.Namespace) -> int:
    stats = data_stats(load_config(args.config, args.overrides), args.samples)
    print(stats.table())
    if args.json is not None:
        write_json(args.json, stats.to_dict())
    print(f"data-stats: {len(stats.languages)} languages, {sum(s.samples for s in stats.languages.values())} "
          f"sequences sampled -> {args.json or 'stdout'}")
    return 0
