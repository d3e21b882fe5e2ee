"""One optimiser step's input for one rank: its slice of the global batch, masked and laid out into micro-batches.

A step's batches are a pure function of (seed, step, rank, world size), so they can be built ahead of time
in DataLoader worker processes (``data.num_workers``) while the accelerator runs the previous step.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch

from pretrain.collator import Collator, MaskingConfig, count_targets, position_counts, unit_table
from pretrain.config import DataConfig
from pretrain.data import Manifest, PretrainingData


def training_stream(data: DataConfig, manifest: Manifest, spm_size: int) -> tuple[PretrainingData, MaskingConfig]:
    """The sample stream and masking of ``data.*``: what the trainer reads (``data-stats`` reads the same)."""
    stream = PretrainingData(manifest, data.languages, data.alpha, data.seed)
    masking = MaskingConfig(
        spm_size=spm_size,
        max_mention_length=manifest.limits.max_mention_length,
        mlm_probability=data.mlm_probability,
        mep_probability=data.mep_probability,
        mask_ratio=data.mask_ratio,
        random_ratio=data.random_ratio,
        seed=data.seed,
        max_word_pieces=data.max_word_pieces,
    )
    return stream, masking


def make_collator(data: DataConfig, masking: MaskingConfig, manifest: Manifest, layout: str = "padded",
                  languages: tuple[str, ...] = ()) -> Collator:
    """The collator of ``data.*``; the trainer asks for the packed layout with its languages.

    Packed rows hold at most ``data.row_capacity`` positions (default: one longest sample's), so attention
    over a row costs what one padded sample costs, never the square of a whole micro-batch.
    """
    units = unit_table(str(manifest.spm_path)) if data.whole_word_masking else None
    lim = manifest.limits
    capacity = data.row_capacity or lim.max_seq_length + 2 + lim.max_entity_length
    return Collator(masking, units, layout=layout, languages=languages, row_capacity=capacity)


@dataclass
class StepBatch:
    step: int
    micro: list[dict[str, torch.Tensor]]  # collated micro-batches, in order
    first_index: list[int]  # global index of each micro-batch's first sample (seeds its dropout)
    n_mlm: int  # masked words on this rank over the whole step
    n_mep: int  # masked entities on this rank over the whole step
    lengths: list[list[tuple[int, int]]]  # per micro-batch, per sample: (tokens with <s> </s>, entities)
    positions: int  # positions the encoder computes over the step (words + entity slots, pads included)
    pad_positions: int  # of which padding

    def pin_memory(self) -> StepBatch:
        """Page-locked copies of the micro-batches (the DataLoader's pin thread calls this), so the
        trainer's ``.to(device, non_blocking=True)`` is an asynchronous copy that overlaps compute."""
        micro = [{k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in b.items()} for b in self.micro]
        return replace(self, micro=micro)


class StepBatches(torch.utils.data.Dataset):
    """``dataset[step]`` -> this rank's ``StepBatch`` of that step."""

    def __init__(self, data: PretrainingData, collate: Collator, global_batch_size: int, micro_batch_size: int,
                 rank: int, world_size: int, max_steps: int):
        self.data, self.collate = data, collate
        self.global_batch_size, self.micro_batch_size = global_batch_size, micro_batch_size
        self.rank, self.world_size, self.max_steps = rank, world_size, max_steps

    def __len__(self) -> int:
        return self.max_steps

    def __getitem__(self, step: int) -> StepBatch:
        samples = self.data.step_samples(step, self.global_batch_size, self.rank, self.world_size)
        m = self.micro_batch_size
        groups = [samples[i : i + m] for i in range(0, len(samples), m)]
        micro = [self.collate(g) for g in groups]
        counts = [count_targets(b) for b in micro]
        lengths = [[(len(s.word_ids) + 2, len(s.entity_ids)) for s in g] for g in groups]
        positions = [position_counts(b) for b in micro]
        return StepBatch(step, micro, [g[0].index for g in groups], sum(c[0] for c in counts), sum(c[1] for c in counts),
                         lengths, sum(p[0] for p in positions), sum(p[1] for p in positions))


def _ignore_stop_signals(_worker_id: int) -> None:
    # The main process turns SIGTERM/SIGUSR1 into "checkpoint and exit"; a scheduler signals the whole
    # process group, and a worker killed by it would turn that clean stop into a DataLoader error.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def _identity(item: StepBatch) -> StepBatch:
    return item


def iterate_steps(batches: StepBatches, start: int, stop: int, num_workers: int, pin_memory: bool = False) -> Iterator[StepBatch]:
    """Steps ``start..stop-1`` in order; with workers, up to 2 steps per worker are prepared ahead.
    ``pin_memory`` (GPU ranks): batches come in page-locked memory."""
    if num_workers <= 0:
        return (batches[s].pin_memory() if pin_memory else batches[s] for s in range(start, stop))
    loader = torch.utils.data.DataLoader(
        batches,
        batch_size=None,  # each item is already a whole step
        sampler=range(start, stop),
        num_workers=num_workers,
        prefetch_factor=2,
        pin_memory=pin_memory,
        worker_init_fn=_ignore_stop_signals,
        collate_fn=_identity,
    )
    return iter(loader)
