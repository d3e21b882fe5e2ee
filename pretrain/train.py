"""``python -m pretrain train --config configs/train/X.yaml [key.path=value ...] [--dry-run]``

Runs under the ``deepspeed`` launcher (single node or a hostfile), under torchrun, or as one plain process.
Everything that can be wrong with the config, the shards or the checkpoint to resume is checked in
``prepare`` BEFORE the process group starts, and reported as one line.

One optimiser step: the rank reads its slice of the step's global batch (a pure function of the seed and
the step), masks it and packs each micro-batch into nearly padding-free rows of at most
``data.row_capacity`` positions, all-reduces the number of masked words and entities of the whole step
(known on the host from the batches: a host-side collective, so the accelerator is never waited for inside
a step), then runs forward/backward per micro-batch with the loss

    world_size * (mlm_sum / N_mlm + mep_sum / N_mep)

(DeepSpeed averages gradients over ranks; accumulation is not rescaled) so the step's gradient is exactly
that of MLM_sum/N_mlm + MEP_sum/N_mep over the whole global batch, whatever the world size. Metrics stay
on the device and are read on logging steps only; ``train.compile`` compiles the model with torch.compile.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_prep.common.atomic import atomic_path, write_json
from data_prep.common.errors import InputError
from pretrain import checkpoint as ckpt
from pretrain import device as accel
from pretrain import init_from, zero3
from pretrain.batches import StepBatches, iterate_steps, make_collator, training_stream
from pretrain.collator import MaskingConfig
from pretrain.config import ExperimentConfig, dump_yaml, load_config, to_dict
from pretrain.data import (
    Manifest,
    PretrainingData,
    check_shards,
    entity_vocab_size,
    spm_size,
)
from pretrain.metrics import (
    MetricsLog,
    Window,
    memory_stats,
    peak_flops_per_device,
    resolve_wandb_mode,
    start_wandb,
    summarize,
    truncate_metrics,
)
from pretrain.model import (
    MLukeConfig,
    MLukeForMaskedLM,
    entity_parameter_names,
    model_flops_per_token,
)
from pretrain.optim import (
    build_optimizer,
    count_params,
    deepspeed_config,
    gradient_accumulation_steps,
    memory_estimate,
    scheduler_factory,
    set_fp32_masters,
    trainable_fp32,
)

# ------------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="YAML experiment config (configs/train/*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="override config values")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved config, the generated DeepSpeed config and a per-rank memory estimate; train nothing",
    )
    parser.add_argument("--world-size", type=int, default=None, help="ranks to plan for in --dry-run (default: WORLD_SIZE or 1)")


def run_cli(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        world = args.world_size or int(os.environ.get("WORLD_SIZE", "1"))
        print(json.dumps(dry_run(cfg, world), indent=2))
        return 0
    train(cfg)
    return 0


# ------------------------------------------------------------------------------------------- planning


@dataclass
class DistEnv:
    rank: int
    local_rank: int
    world_size: int

    @classmethod
    def from_environ(cls) -> DistEnv:
        """torchrun / the deepspeed launcher set RANK, LOCAL_RANK, WORLD_SIZE; srun and mpirun set their own
        variables, which are copied to the torch names here (MASTER_ADDR/PORT must then come from the job)."""
        env = os.environ
        launched_by_torch = "RANK" in env
        for torch_name, alternatives in (
            ("RANK", ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID")),
            ("LOCAL_RANK", ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID")),
            ("WORLD_SIZE", ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS")),
        ):
            if not launched_by_torch and torch_name not in env:
                for alt in alternatives:
                    if alt in env:
                        env[torch_name] = env[alt]
                        break
        world = int(env.get("WORLD_SIZE", "1"))
        if world > 1 and "MASTER_ADDR" not in env:
            raise InputError(f"environment: WORLD_SIZE={world} but no MASTER_ADDR; launch with deepspeed, torchrun, or export MASTER_ADDR/MASTER_PORT")
        return cls(int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0")), world)


@dataclass
class Plan:
    """Everything decided before the process group starts."""

    cfg: ExperimentConfig
    env: DistEnv
    manifest: Manifest
    data: PretrainingData
    masking: MaskingConfig
    model_config: MLukeConfig
    grad_accum: int
    ds_config: dict[str, Any]
    resume: tuple[str, ckpt.TrainerState] | None
    init_checkpoint: Path | None
    wandb_mode: str = "disabled"  # rank 0's, checked before the process group (metrics.resolve_wandb_mode)


def recompute_mode(m) -> str:
    """model.recompute, with the older model.gradient_checkpointing: true read as "full"."""
    return "full" if m.gradient_checkpointing else m.recompute


def model_config(cfg: ExperimentConfig, n_words: int, n_entities: int) -> MLukeConfig:
    m = cfg.model
    if m.init_from:  # an XLM-R or LUKE directory: its config.json gives the backbone
        return init_from.model_config(
            m.init_from, n_words, n_entities, m.entity_emb_size, recompute=recompute_mode(m)
        )
    return MLukeConfig(
        vocab_size=n_words,
        hidden_size=m.hidden_size,
        num_hidden_layers=m.num_hidden_layers,
        num_attention_heads=m.num_attention_heads,
        intermediate_size=m.intermediate_size,
        max_position_embeddings=m.max_position_embeddings,
        hidden_dropout_prob=m.hidden_dropout_prob,
        attention_probs_dropout_prob=m.attention_probs_dropout_prob,
        entity_vocab_size=n_entities,
        entity_emb_size=m.entity_emb_size,
        recompute=recompute_mode(m),
    )


def prepare(cfg: ExperimentConfig, env: DistEnv) -> Plan:
    """Validate config, shards, model files and the checkpoint to resume; raise one-line ``InputError``."""
    grad_accum = gradient_accumulation_steps(cfg, env.world_size)
    ds_config = deepspeed_config(cfg, env.world_size)
    if cfg.model.init_from and not Path(cfg.model.init_from).is_dir():
        raise InputError(f"{cfg.model.init_from}: model.init_from directory not found")
    manifest = check_shards(cfg.data.shards, cfg.data.languages, cfg.model.init_from, cfg.data.entity_vocab)
    if cfg.model.init_from:
        # config.json's kind, weights, a LUKE dir's entity names; and what the kind cannot be combined with
        if init_from.check_init_dir(cfg.model.init_from) == "luke" and cfg.deepspeed.zero_init:
            raise InputError(f"{cfg.model.init_from}: a LUKE init_from is not supported with deepspeed.zero_init "
                             "(use zero_init: false)")
    n_words = spm_size(manifest.spm_path) + 2  # fairseq ids 0..spm_size plus <mask>
    mc = model_config(cfg, n_words, entity_vocab_size(manifest.entity_vocab_path))
    # fairseq positions start at pad_id + 1, so a sequence of n tokens (with <s>, </s>) needs n + 2 rows.
    if manifest.limits.max_seq_length + mc.pad_token_id + 1 > mc.max_position_embeddings:
        raise InputError(
            f"{manifest.root}/manifest.json: max_seq_length {manifest.limits.max_seq_length} does not fit the "
            f"model's max_position_embeddings {mc.max_position_embeddings}"
        )
    data, masking = training_stream(cfg.data, manifest, n_words - 2)
    resume = ckpt.resume_state(
        cfg.output_dir, env.world_size, cfg.deepspeed.zero_stage, data.fingerprint(), cfg.deepspeed.universal_checkpoint
    )
    init_checkpoint = None
    if resume is None and cfg.train.init_checkpoint:
        c, tag = ckpt.resolve_init_checkpoint(cfg.train.init_checkpoint)
        init_checkpoint = c / tag
    if resume is not None and resume[1].stage != cfg.train.stage:
        raise InputError(
            f"{cfg.output_dir}: holds a stage-{resume[1].stage} run; start stage {cfg.train.stage} in a new output_dir "
            "with train.init_checkpoint pointing here"
        )
    wandb = resolve_wandb_mode(cfg.wandb, Path(cfg.output_dir)) if env.rank == 0 else "disabled"
    return Plan(cfg, env, manifest, data, masking, mc, grad_accum, ds_config, resume, init_checkpoint, wandb)


def dry_run(cfg: ExperimentConfig, world_size: int) -> dict[str, Any]:
    """Resolved config, DeepSpeed config and a memory estimate; works without shards or XLM-R files."""
    ds = deepspeed_config(cfg, world_size)
    notes: list[str] = []
    n_entities, n_words = 1_200_000, 250_002  # without shards: mLUKE-24's ~1.2M entities, XLM-R's words
    try:
        m = check_shards(cfg.data.shards, cfg.data.languages, cfg.model.init_from, cfg.data.entity_vocab)
        n_entities, n_words = entity_vocab_size(m.entity_vocab_path), spm_size(m.spm_path) + 2
    except InputError as e:
        notes.append(f"shards not checked ({e}); assuming {n_entities} entities, {n_words} word ids")
    if cfg.model.init_from and not (Path(cfg.model.init_from) / "config.json").is_file():
        notes.append(f"{cfg.model.init_from}/config.json not found; sizes from model.hidden_size etc.")
        mc = model_config(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init_from=None)), n_words, n_entities)
    else:
        mc = model_config(cfg, n_words, n_entities)
    with torch.device("meta"):
        model = MLukeForMaskedLM(mc)
    apply_stage(model, cfg.train.stage)
    total, trainable = count_params(model)
    d = cfg.deepspeed
    mem = memory_estimate(total, trainable, d.zero_stage, d.precision, world_size, d.offload_optimizer, d.offload_param)
    return {
        "config": to_dict(cfg),
        "deepspeed": ds,
        "model": mc.to_dict(),
        "memory": mem,
        "flops_per_token": model_flops_per_token(mc, 512, 128, cfg.data.mlm_probability, cfg.train.stage),
        "notes": notes,
    }


def apply_stage(model: MLukeForMaskedLM, stage: int) -> None:
    """Stage 1 freezes the word side: only entity parameters keep requires_grad (and reach the optimiser)."""
    entity = set(entity_parameter_names(model))
    for name, p in model.named_parameters():
        p.requires_grad = stage == 2 or name in entity


# ------------------------------------------------------------------------------------------- training


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_group():
    """A process group whose collectives run on host tensors (gloo): the per-step counts and stop flag are
    host values, and reducing them there never waits for the accelerator's queue. None: the default group
    is gloo already."""
    import torch.distributed as dist

    return None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")


def init_process_group(cfg: ExperimentConfig, env: DistEnv) -> torch.device:
    """Start the process group on DeepSpeed's accelerator (pretrain.device): its backend, this rank's device."""
    import deepspeed

    if "MASTER_ADDR" not in os.environ:  # a plain single process: be our own rendezvous
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    dev = accel.local_device(env.local_rank)
    deepspeed.init_distributed(
        dist_backend=accel.backend(),
        auto_mpi_discovery=False,
        timeout=timedelta(seconds=cfg.deepspeed.timeout_s),
        verbose=False,
    )
    import torch.distributed as dist

    dist.barrier()  # every rank has mapped the others' shared-memory buffers (CPU ranks): their names can go
    accel.release_shm_collective_names()
    return dev


def build_model(plan: Plan) -> MLukeForMaskedLM:
    """The model with its initial weights; under ``deepspeed.zero_init`` only its random init, partitioned
    over the ranks (``load_weights`` then runs on the engine's module, so the fp32 masters get the
    checkpoint values in the same pass)."""
    cfg = plan.cfg
    if cfg.deepspeed.zero_init:
        import deepspeed

        with deepspeed.zero.Init(config_dict_or_path=plan.ds_config):
            model = MLukeForMaskedLM(plan.model_config)
    else:
        model = MLukeForMaskedLM(plan.model_config)
    # Every rank draws the same initial weights, and the same with or without zero.Init (whose constructor
    # only saw placeholders, and drew other numbers while building them): the init runs again from the seed.
    torch.manual_seed(cfg.data.seed)
    zero3.initialize_weights(model, model._init_weights)
    if not cfg.deepspeed.zero_init:
        load_weights(model, plan)
    apply_stage(model, cfg.train.stage)
    return model


def load_weights(model: MLukeForMaskedLM, plan: Plan) -> None:
    """XLM-R (``model.init_from``), then what a checkpoint's run trained (``train.init_checkpoint``)."""
    if plan.cfg.model.init_from:  # the fp32 backbone, also under a stage-1 checkpoint (which holds it rounded)
        line = init_from.init_model(model, plan.cfg.model.init_from, plan.manifest.entity_vocab_path)
        if line and plan.env.rank == 0:
            print(line, file=sys.stderr, flush=True)
    if plan.init_checkpoint is not None:
        ckpt.load_init_checkpoint(model, plan.init_checkpoint)


def dropout_seed(seed: int, first_index: int) -> int:
    """Dropout of a micro-batch is seeded by its first global sample: same masks after resume / on any world size."""
    return int(np.random.SeedSequence([seed, first_index, 0xD0]).generate_state(1)[0])


class StopRequest:
    """SIGTERM / SIGUSR1 (schedulers' pre-emption warning) -> finish the step, checkpoint, exit 0.

    The flag travels with the step's all_reduce, so every rank stops at the same step even if only one
    was signalled.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.requested = False
        self.previous: dict[int, Any] = {}
        try:
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread (train() called from a library): no handlers
            pass

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def restore(self) -> None:
        """Give the signals back (train() may run inside a longer-lived process, e.g. tests)."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _log_line(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text + "\n")


def train(cfg: ExperimentConfig) -> dict[str, Any]:
    """Train until ``train.stop_at_step`` or ``train.max_steps``; returns the last logged record (rank 0)."""
    env = DistEnv.from_environ()
    plan = prepare(cfg, env)
    out = Path(cfg.output_dir)
    device = init_process_group(cfg, env)
    import deepspeed
    import torch.distributed as dist

    rank0 = env.rank == 0
    if rank0:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "config.yaml") as tmp:
            tmp.write_text(dump_yaml(cfg), encoding="utf-8")
        write_json(out / "deepspeed_config.json", plan.ds_config)  # what DeepSpeed was given, for reference

    model = build_model(plan)
    model.attention = cfg.train.attention
    optimizer, groups = build_optimizer(cfg, model)
    masters = {} if cfg.deepspeed.zero_init else trainable_fp32(model, cfg.deepspeed.precision)
    engine, _, _, scheduler = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        model_parameters=groups if optimizer is None else None,
        lr_scheduler=scheduler_factory(cfg),
        config=plan.ds_config,
    )
    if cfg.train.compile:
        # Through the engine (DeepSpeed's documented path), after its hooks exist; ZeRO-3 is refused by the
        # config (see config._validate). In place (state-dict names unchanged); shapes vary with the packed
        # row, so compile for dynamic ones.
        engine.compile(compile_kwargs={"dynamic": True})
    if cfg.deepspeed.zero_init and plan.resume is None:
        load_weights(engine.module, plan)  # each rank its own slices, fp32 masters included
    set_fp32_masters(engine.module, masters)
    del masters
    ckpt_dir = ckpt.checkpoints_dir(out)
    step, run_id = 0, secrets.token_hex(4)
    if plan.resume is not None:
        tag, state = plan.resume
        path, client = engine.load_checkpoint(str(ckpt_dir), tag=tag)
        if path is None:
            raise RuntimeError(f"{ckpt_dir / tag}: DeepSpeed could not load this checkpoint")
        step, run_id = int((client or {}).get("step", state.step)), state.wandb_run_id or run_id
        if rank0:
            truncate_metrics(out / "metrics.jsonl", step)

    t = cfg.train
    stop = t.stop_at_step or t.max_steps
    B, W = t.global_batch_size, env.world_size
    languages = tuple(plan.data.languages)
    collate = make_collator(cfg.data, plan.masking, plan.manifest, layout="packed", languages=languages)
    log = None
    if rank0:
        wandb_config = {**to_dict(cfg), "deepspeed_config": plan.ds_config, "model_config": plan.model_config.to_dict(),
                        "world_size": W, "gradient_accumulation_steps": plan.grad_accum,
                        "language_probabilities": plan.data.probabilities}
        log = MetricsLog(out / "metrics.jsonl", start_wandb(wandb_config, cfg.wandb, out, run_id, plan.wandb_mode))
    peak = peak_flops_per_device(None)
    window = Window(languages)
    counts_group = host_group()
    last: dict[str, Any] = {}
    saved_at = step if plan.resume is not None else -1
    mc = plan.model_config
    if rank0:
        _log_line(out / "train.log", f"{time.strftime('%Y-%m-%d %H:%M:%S')} start at step {step} of {t.max_steps} "
                  f"(stop at {stop}), world size {W}, grad accumulation {plan.grad_accum}, languages "
                  f"{plan.data.probabilities}")
    from tqdm import tqdm

    bar = tqdm(total=stop, initial=step, disable=not rank0, desc="train", unit="step", dynamic_ncols=True)
    preempt = StopRequest()
    engine.train()
    start_time = time.time()
    step_batches = StepBatches(plan.data, collate, B, t.micro_batch_size, env.rank, W, stop)
    t0 = time.time()
    for sb in iterate_steps(step_batches, step, stop, cfg.data.num_workers, pin_memory=accel.pin_memory()):
        assert sb.step == step
        lr = scheduler.get_last_lr()[0]
        counts = torch.tensor([sb.n_mlm, sb.n_mep, float(preempt.requested)], dtype=torch.float64)
        # masked positions of the whole optimiser step (all ranks); any stop request (every rank sees it)
        dist.all_reduce(counts, group=counts_group)
        n_mlm, n_mep = max(counts[0].item(), 1.0), max(counts[1].item(), 1.0)
        stopping = counts[2].item() > 0
        for first, cpu_batch, lengths in zip(sb.first_index, sb.micro, sb.lengths):
            torch.manual_seed(dropout_seed(cfg.data.seed, first))
            batch = {k: v.to(device, non_blocking=True) for k, v in cpu_batch.items()}
            o = engine(**batch)
            loss = W * (o.mlm_loss_sum / n_mlm + o.mep_loss_sum / n_mep)
            engine.backward(loss, scale_wrt_gas=False)
            engine.step()
            window.add_model(o, batch)
            flops = sum(model_flops_per_token(mc, a, e, cfg.data.mlm_probability, t.stage) * a for a, e in lengths)
            window.add(tokens=sum(a for a, _ in lengths), samples=len(lengths), flops=flops)
        window.add(positions=sb.positions, pad_positions=sb.pad_positions)
        step += 1
        window.add_grad_norm(engine.get_global_grad_norm())
        window.steps += 1
        window.seconds += time.time() - t0
        if step % t.log_every == 0 or step == stop:
            total = window.reduced(device)
            rec = {
                "step": step,
                "time": time.time(),
                **summarize(total, window.steps, window.seconds, W, peak, languages),
                "lr": lr,
                "grad_norm": total["grad_norm"],
                "consumed_samples": step * B,
                **memory_stats(),
            }
            if rank0:
                log.log(rec)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{lr:.2e}")
            last = rec
            window.reset()
        bar.update(1)
        if step % t.save_every == 0 or step == stop or stopping:
            save(engine, plan, ckpt_dir, step, run_id)
            saved_at = step
        if stopping:
            if rank0:
                msg = f"stop requested by signal: checkpointed at step {step}; rerun the same command to resume"
                _log_line(out / "train.log", msg)
                bar.write(msg, file=sys.stderr)
            break
        t0 = time.time()  # a step's time includes waiting for its batches (a data-bound run shows here)
    bar.close()
    preempt.restore()
    if saved_at != step:  # resumed at the end already: nothing new to save
        save(engine, plan, ckpt_dir, step, run_id)
    if rank0:
        summary = (f"trained to step {step}/{t.max_steps} in {time.time() - start_time:.1f}s; "
                   f"loss {last.get('loss', float('nan')):.4f}; checkpoints in {ckpt_dir}")
        _log_line(out / "train.log", summary)
        log.close()  # W&B prints its own lines when it finishes: the summary comes last
        print(summary, file=sys.stderr)
    dist.barrier()
    return last


def save(engine, plan: Plan, ckpt_dir: Path, step: int, run_id: str) -> None:
    """DeepSpeed checkpoint + trainer_state.json, then ``latest`` (so ``latest`` only names complete tags)."""
    import torch.distributed as dist

    tag = ckpt.tag_for(step)
    state = ckpt.TrainerState(
        step=step,
        consumed_samples=step * plan.cfg.train.global_batch_size,
        world_size=plan.env.world_size,
        zero_stage=plan.cfg.deepspeed.zero_stage,
        data_fingerprint=plan.data.fingerprint(),
        wandb_run_id=run_id,
        stage=plan.cfg.train.stage,
    )
    from deepspeed.checkpoint.constants import (
        UNIVERSAL_CHECKPOINT_INFO,
        UNIVERSAL_CHECKPOINT_VERSION_KEY,
        UNIVERSAL_CHECKPOINT_VERSION_VALUE,
    )

    # The marker lets deepspeed.checkpoint.ds_to_universal convert the checkpoint for another world size.
    client = {**asdict(state), UNIVERSAL_CHECKPOINT_INFO: {UNIVERSAL_CHECKPOINT_VERSION_KEY: UNIVERSAL_CHECKPOINT_VERSION_VALUE}}
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client, save_latest=False)
    dist.barrier()
    if plan.env.rank == 0:
        ckpt.write_state(ckpt_dir / tag, state)
        with atomic_path(ckpt_dir / "latest") as tmp:
            tmp.write_text(tag, encoding="utf-8")
        ckpt.prune(ckpt_dir, plan.cfg.train.keep_last)
    dist.barrier()
