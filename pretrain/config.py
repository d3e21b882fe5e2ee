"""Typed experiment configuration: YAML file + dotted ``key.path=value`` overrides -> ``ExperimentConfig``.

One dataclass per concern (data, model, train, deepspeed, wandb). Loading is strict: an unknown key, a
value of the wrong type or out of range raises ``InputError`` with one line naming the file and the key,
so a bad config fails before any process group starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from data_prep.common.errors import InputError
from data_prep.common.typed_yaml import build_dataclass, load_dataclass


@dataclass
class DataConfig:
    shards: str = ""  # directory written by `python -m data_prep shards` (required)
    seed: int = 0  # sample order, masking and dropout are pure functions of this seed and the step
    languages: list[str] | None = None  # subset of the manifest's languages; None = all
    alpha: float = 0.7  # language sampling p ∝ size^alpha
    mlm_probability: float = 0.15
    mep_probability: float = 0.15
    mask_ratio: float = 0.8  # of the masked words: replaced by <mask>
    random_ratio: float = 0.1  # replaced by a random piece (the rest are kept)
    # False: every piece is a masking unit, as mLUKE (studio-ousia/luke) was trained: its whole-word option
    # only knew BERT's "##" and RoBERTa's BPE markers, so with XLM-R's pieces each piece was its own unit.
    # True: a word ("▁" to "▁"), one piece in scripts written without spaces (CJK, Thai, ...), at most
    # max_word_pieces pieces; either way mlm_probability of the TOKENS is masked.
    whole_word_masking: bool = False
    max_word_pieces: int = 8
    entity_vocab: str | None = None  # optional: must be the vocab the shards were built with (sha256)
    num_workers: int = 1  # processes preparing the next steps' batches (0: in the training loop)
    # Positions (words with <s> </s>, plus entities) of one packed row of a training micro-batch. None: the
    # longest sample (max_seq_length + 2 + max_entity_length of the shards), so attention over a row, which
    # a dense block-diagonal mask computes in full, never costs more than one padded sample; short samples
    # still share rows. Larger rows waste less on padding and more on attention between samples.
    row_capacity: int | None = None


@dataclass
class ModelConfig:
    # Local HF directory: XLM-R (stage 1 of the recipe) or LUKE/mLUKE (continued pretraining, e.g. mluke-base or
    # an export of this project); None = random model with the dims below.
    init_from: str | None = None
    entity_emb_size: int = 256  # with a LUKE init_from: must equal its config.json's
    # Dimensions of a randomly initialised model (used only when init_from is None: tests, debugging).
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 514
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    # Activation recomputation: none | selective (keep matmul outputs, recompute attention core, GELU,
    # LayerNorm, dropout) | full (keep each layer's input only). gradient_checkpointing: true is the older
    # spelling of recompute: full.
    recompute: str = "none"
    gradient_checkpointing: bool = False


@dataclass
class TrainConfig:
    stage: int = 2  # 1: only entity parameters train; 2: all parameters
    init_checkpoint: str | None = None  # stage 2: stage-1 output dir (latest tag) or OUT/checkpoints/<tag>
    max_steps: int = 1000  # length of the LR schedule and of the run
    stop_at_step: int | None = None  # stop (and checkpoint) early without changing the schedule
    global_batch_size: int = 32  # samples per optimiser step over all ranks
    micro_batch_size: int = 4  # samples per forward/backward on one rank
    lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-6
    # False: no bias correction of Adam's moments, as the reference's DeepSpeed Adam (bias_correction: false)
    adam_bias_correction: bool = True
    save_every: int = 1000
    log_every: int = 10
    keep_last: int | None = None  # delete older checkpoints, keeping this many; None keeps all
    compile: bool = False  # torch.compile the model (dynamic shapes: packed rows vary in length)
    # sdpa: dense block-diagonal mask (any device); flex: FlexAttention skipping other samples' blocks
    # (GPU only, needs train.compile; no attention dropout)
    attention: str = "sdpa"


@dataclass
class DeepSpeedConfig:
    zero_stage: int = 2
    precision: str = "bf16"  # fp32 | bf16 | fp16
    offload_optimizer: bool = False  # ZeRO-Offload optimizer states to CPU (stage >= 1)
    offload_param: bool = False  # ZeRO-3 only: parameters to CPU
    # ZeRO-3 only: build the model under deepspeed.zero.Init, so no rank ever holds all of it (each builds
    # and loads only its slice of every weight) instead of every rank holding the whole fp32 model first.
    zero_init: bool = False
    timeout_s: int = 1800  # process-group timeout: a dead rank fails the run instead of hanging it
    initial_scale_power: int = 16  # fp16 dynamic loss scaling starts at 2**this
    loss_scale_window: int = 1000
    universal_checkpoint: bool = False  # load a checkpoint converted with deepspeed.checkpoint.ds_to_universal
    overlap_comm: bool = True
    reduce_bucket_size: int = 50_000_000
    allgather_bucket_size: int = 50_000_000


@dataclass
class WandbConfig:
    project: str = "mluke"
    # online | online_required | offline | disabled (WANDB_MODE in the environment wins). online falls
    # back to offline (OUT/wandb, for `wandb sync`) where it cannot work; online_required fails instead.
    mode: str = "offline"
    entity: str | None = None
    name: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class ExperimentConfig:
    output_dir: str = ""  # required
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)


REQUIRED = ("output_dir", "data.shards")
CHOICES: dict[str, tuple[Any, ...]] = {
    "train.stage": (1, 2),
    "train.attention": ("sdpa", "flex"),
    "deepspeed.zero_stage": (0, 1, 2, 3),
    "model.recompute": ("none", "selective", "full"),
    "deepspeed.precision": ("fp32", "bf16", "fp16"),
    "wandb.mode": ("online", "online_required", "offline", "disabled"),
}
POSITIVE = (
    "train.max_steps",
    "train.global_batch_size",
    "train.micro_batch_size",
    "train.save_every",
    "train.log_every",
    "model.entity_emb_size",
    "data.max_word_pieces",
    "deepspeed.timeout_s",
)


def _get(cfg: ExperimentConfig, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _validate(cfg: ExperimentConfig, where: str) -> None:
    for key in REQUIRED:
        if not _get(cfg, key):
            raise InputError(f"{where}: missing required key {key!r}")
    for key, choices in CHOICES.items():
        if _get(cfg, key) not in choices:
            raise InputError(f"{where}: {key} must be one of {', '.join(map(str, choices))}, got {_get(cfg, key)!r}")
    for key in POSITIVE:
        if _get(cfg, key) <= 0:
            raise InputError(f"{where}: {key} must be > 0, got {_get(cfg, key)!r}")
    t = cfg.train
    if t.global_batch_size % t.micro_batch_size:
        raise InputError(
            f"{where}: train.global_batch_size ({t.global_batch_size}) must be a multiple of "
            f"train.micro_batch_size ({t.micro_batch_size})"
        )
    if t.warmup_steps < 0 or t.warmup_steps > t.max_steps:
        raise InputError(f"{where}: train.warmup_steps must be in [0, train.max_steps], got {t.warmup_steps}")
    if t.stop_at_step is not None and not 0 < t.stop_at_step <= t.max_steps:
        raise InputError(f"{where}: train.stop_at_step must be in [1, train.max_steps], got {t.stop_at_step}")
    if t.grad_clip <= 0:
        raise InputError(f"{where}: train.grad_clip must be > 0 (clipping is always explicit), got {t.grad_clip}")
    if t.attention == "flex" and not t.compile:
        raise InputError(f"{where}: train.attention flex needs train.compile true (eager FlexAttention is a slow reference)")
    for key in ("model.hidden_dropout_prob", "model.attention_probs_dropout_prob"):
        if not 0 <= _get(cfg, key) < 1:
            raise InputError(f"{where}: {key} must be in [0, 1), got {_get(cfg, key)!r}")
    if t.compile and cfg.deepspeed.zero_stage == 3:
        # ZeRO-3 gathers a parameter when its module runs, or (eagerly only) when it is read; the model reads
        # its tied tables directly, so a compiled graph would trace their empty placeholders.
        raise InputError(f"{where}: train.compile does not work with deepspeed.zero_stage 3; use zero_stage 1 or 2")
    if cfg.deepspeed.zero_init and cfg.deepspeed.zero_stage != 3:
        raise InputError(f"{where}: deepspeed.zero_init needs deepspeed.zero_stage 3")
    if cfg.deepspeed.offload_param and cfg.deepspeed.zero_stage != 3:
        raise InputError(f"{where}: deepspeed.offload_param needs deepspeed.zero_stage 3")
    if cfg.model.gradient_checkpointing and cfg.model.recompute not in ("none", "full"):
        raise InputError(f"{where}: model.gradient_checkpointing means model.recompute full; set only model.recompute")
    if cfg.deepspeed.precision != "fp32" and cfg.deepspeed.zero_stage == 0:
        raise InputError(
            f"{where}: deepspeed.precision {cfg.deepspeed.precision} needs deepspeed.zero_stage >= 1 (DeepSpeed "
            "accumulates gradients in fp32 only under ZeRO; without it they would be summed in 16 bits)"
        )
    if cfg.deepspeed.offload_optimizer and cfg.deepspeed.zero_stage == 0:
        raise InputError(f"{where}: deepspeed.offload_optimizer needs deepspeed.zero_stage >= 1")
    d = cfg.data
    if not 0 < d.mlm_probability < 1 or not 0 < d.mep_probability < 1:
        raise InputError(f"{where}: data.mlm_probability and data.mep_probability must be in (0, 1)")
    if d.num_workers < 0:
        raise InputError(f"{where}: data.num_workers must be >= 0, got {d.num_workers}")
    if d.row_capacity is not None and d.row_capacity < 1:
        raise InputError(f"{where}: data.row_capacity must be >= 1 or null, got {d.row_capacity}")
    if d.mask_ratio < 0 or d.random_ratio < 0 or d.mask_ratio + d.random_ratio > 1:
        raise InputError(f"{where}: data.mask_ratio + data.random_ratio must be within [0, 1]")


def from_dict(data: dict[str, Any], where: str = "config", string_keys: set[str] | None = None) -> ExperimentConfig:
    """Build and validate a config from a plain dict (``string_keys``: values to convert from text)."""
    cfg = build_dataclass(ExperimentConfig, data, where, string_keys)
    _validate(cfg, where)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML config (or nothing) and apply dotted overrides; raise ``InputError`` on any problem."""
    cfg, where = load_dataclass(ExperimentConfig, path, overrides)
    _validate(cfg, where)
    return cfg


def to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)
