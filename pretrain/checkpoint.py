"""Checkpoint layout and the checks that happen before any process group starts.

OUT/checkpoints/<tag>/ is DeepSpeed's format (tag ``step000150``) plus ``trainer_state.json``, a small copy
of the client state (step, consumed samples, world size, ZeRO stage, data fingerprint, W&B run id) that
can be read without DeepSpeed, so an incompatible resume fails with one clear line up front.
OUT/checkpoints/latest is DeepSpeed's pointer to the newest complete tag.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from data_prep.common.atomic import write_json
from data_prep.common.errors import InputError

STATE_FILE = "trainer_state.json"


def tag_for(step: int) -> str:
    return f"step{step:06d}"


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


@dataclass
class TrainerState:
    step: int  # optimiser steps completed
    consumed_samples: int
    world_size: int
    zero_stage: int
    data_fingerprint: str
    wandb_run_id: str | None
    stage: int  # training stage (1 entity-only, 2 all)


def latest_tag(ckpt_dir: str | Path) -> str | None:
    f = Path(ckpt_dir) / "latest"
    return f.read_text().strip() if f.is_file() else None


def read_state(tag_dir: Path) -> TrainerState | None:
    f = tag_dir / STATE_FILE
    if not f.is_file():
        return None
    try:
        return TrainerState(**json.loads(f.read_text()))
    except (json.JSONDecodeError, TypeError) as e:
        raise InputError(f"{f}: unreadable trainer state ({e})") from None


def write_state(tag_dir: Path, state: TrainerState) -> None:
    write_json(tag_dir / STATE_FILE, asdict(state))


def resume_state(
    output_dir: str | Path, world_size: int, zero_stage: int, fingerprint: str, universal: bool
) -> tuple[str, TrainerState] | None:
    """The (tag, state) a run in ``output_dir`` resumes from, or None for a fresh run; checks compatibility."""
    ckpt = checkpoints_dir(output_dir)
    tag = latest_tag(ckpt)
    if tag is None:
        return None
    tag_dir = ckpt / tag
    if not tag_dir.is_dir():
        raise InputError(f"{ckpt}/latest: points at {tag!r}, which does not exist")
    state = read_state(tag_dir)
    if state is None and tag.endswith("_universal"):  # ds_to_universal output: state stays with the source tag
        state = read_state(ckpt / tag.removesuffix("_universal"))
    if state is None:
        raise InputError(f"{tag_dir}: no {STATE_FILE} (not written by this trainer, or the save was interrupted)")
    if state.data_fingerprint != fingerprint:
        raise InputError(
            f"{tag_dir}: written for another data stream (fingerprint {state.data_fingerprint}, now {fingerprint}); "
            "use the same data.shards/languages/alpha/seed or a new output_dir"
        )
    if not universal and (state.world_size != world_size or state.zero_stage != zero_stage):
        raise InputError(
            f"{tag_dir}: saved by {state.world_size} ranks with ZeRO-{state.zero_stage}, this run has {world_size} "
            f"ranks with ZeRO-{zero_stage}; convert it once with `python -m deepspeed.checkpoint.ds_to_universal "
            f"--input_folder {tag_dir} --output_folder {tag_dir}_universal`, write `{tag}_universal` into "
            f"{ckpt}/latest, and rerun with deepspeed.universal_checkpoint=true"
        )
    return tag, state


def prune(ckpt_dir: Path, keep_last: int | None) -> None:
    """Delete all but the newest ``keep_last`` step tags (rank 0 only, after ``latest`` moved on)."""
    if not keep_last:
        return
    tags = sorted(p for p in ckpt_dir.glob("step*") if p.is_dir() and p.name[4:].isdigit())
    for p in tags[:-keep_last]:
        shutil.rmtree(p, ignore_errors=True)


def resolve_init_checkpoint(path: str | Path) -> tuple[Path, str]:
    """A stage-1 output dir, its checkpoints dir, or one tag dir -> (checkpoints dir, tag)."""
    p = Path(path)
    for ckpt in (p / "checkpoints", p):
        tag = latest_tag(ckpt)
        if tag is not None and (ckpt / tag).is_dir():
            return ckpt, tag
    if p.is_dir() and (p.parent / p.name).is_dir() and any(p.glob("*model_states.pt")):
        return p.parent, p.name
    raise InputError(f"{p}: not a training output dir, checkpoints dir or checkpoint tag (train.init_checkpoint)")


def load_consolidated_weights(path: str | Path) -> dict[str, Any]:
    """fp32 weights of a DeepSpeed checkpoint (any ZeRO stage), gathered from all ranks' files."""
    import torch

    ckpt, tag = resolve_init_checkpoint(path)
    tag_dir = ckpt / tag
    if _written_by_bf16_optimizer(tag_dir):  # ZeRO-1 + bf16 with fp32 gradient accumulation
        return _bf16_optimizer_weights(tag_dir)
    if any(tag_dir.glob("*optim_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        out = dict(get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag=tag))
        # zero_to_fp32 knows the parameters the optimiser holds, plus frozen ones DeepSpeed records only
        # for ZeRO >= 2: a stage-1 run (word side frozen) under ZeRO-1 has none recorded. ZeRO-1/2 keep
        # every parameter whole in the model-states file, so the frozen ones are taken from there
        # (ZeRO-3 leaves empty placeholders there, which are skipped; it records its frozen ones).
        files = sorted(tag_dir.glob("*model_states.pt"))
        if files:
            module = torch.load(files[0], map_location="cpu", weights_only=False).get("module") or {}
            for name, t in module.items():
                if name not in out and t.numel() > 0:
                    out[name] = t.float()
        return out
    files = sorted(tag_dir.glob("mp_rank_*_model_states.pt"))
    if not files:
        raise InputError(f"{tag_dir}: no DeepSpeed model states")
    sd = torch.load(files[0], map_location="cpu", weights_only=False)
    out = {k: v.float() for k, v in sd["module"].items()}
    out.update(_stage0_fp32_masters(sd, read_state(tag_dir)))
    return out


def _stage0_fp32_masters(sd: dict[str, Any], state: TrainerState | None) -> dict[str, Any]:
    """Without ZeRO, bf16/fp16 training keeps fp32 master weights in the optimizer state as lists of
    tensors in parameter-group order (no names). Rebuild the names the way the trainer built its groups
    (``pretrain.optim.param_groups``: trainable parameters, decayed first) and check each master rounds
    to the saved half-precision weight, so a wrong mapping cannot pass silently."""
    from pretrain.model import ENTITY_PREFIXES
    from pretrain.optim import no_decay

    opt = sd.get("optimizer")
    if not isinstance(opt, dict) or "fp32_groups" not in opt:
        return {}
    module, buffers = sd["module"], set(sd.get("buffer_names") or ())
    seen: set[tuple] = set()
    params = []
    for name, t in module.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if name in buffers or key in seen:
            continue  # tied weights are one parameter, saved under every name
        seen.add(key)
        if state is not None and state.stage == 1 and not name.startswith(ENTITY_PREFIXES):
            continue  # frozen in stage 1: not in the optimiser
        params.append((name, t))
    groups = [g for g in ([n for n, t in params if not no_decay(n, t)], [n for n, t in params if no_decay(n, t)]) if g]
    masters = opt["fp32_groups"]
    if [len(g) for g in groups] != [len(g) for g in masters]:
        raise InputError("checkpoint: fp32 master weights do not match the model's parameter groups")
    out: dict[str, Any] = {}
    for names, tensors in zip(groups, masters):
        for name, t in zip(names, tensors):
            if tuple(t.shape) != tuple(module[name].shape) or not (t.to(module[name].dtype) == module[name]).all():
                raise InputError(f"checkpoint: fp32 master of {name} does not match its saved weight")
            out[name] = t.float()
    _tie_masters(module, out)
    return out


def _tie_masters(module: dict[str, Any], masters: dict[str, Any]) -> None:
    """Tied names (one tensor saved under both) get the master of the parameter they share."""
    by_storage = {(module[n].untyped_storage().data_ptr(), tuple(m.shape)): m for n, m in masters.items()}
    for name, t in module.items():
        key = (t.untyped_storage().data_ptr(), tuple(t.shape))
        if name not in masters and key in by_storage:
            masters[name] = by_storage[key]


def _written_by_bf16_optimizer(tag_dir: Path) -> bool:
    """DeepSpeed's BF16_Optimizer names its files like ZeRO's bf16 ones (bf16_zero_pp_rank_*) but records
    no ZeRO stage, only per-name slice mappings."""
    import torch
    from deepspeed.checkpoint.constants import PARAM_SLICE_MAPPINGS, ZERO_STAGE

    files = sorted(tag_dir.glob("bf16_zero_pp_rank_*_optim_states.pt"))
    if not files:
        return False
    osd = torch.load(files[0], map_location="cpu", weights_only=False, mmap=True)["optimizer_state_dict"]
    return ZERO_STAGE not in osd and PARAM_SLICE_MAPPINGS in osd


def _bf16_optimizer_weights(tag_dir: Path) -> dict[str, Any]:
    """Weights of a checkpoint of DeepSpeed's BF16_Optimizer (what ZeRO-1 + bf16 + fp32 gradient
    accumulation runs), which zero_to_fp32 does not read: each rank's file holds its slice of the flat
    fp32 masters and, per parameter name, where that parameter's fragment lies in it; a parameter's
    fragments in rank order make the whole. Parameters outside the optimiser (stage 1's frozen word side)
    come from the model states, in the precision they were trained in."""
    import torch
    from deepspeed.checkpoint.constants import PARAM_SLICE_MAPPINGS, SINGLE_PARTITION_OF_FP32_GROUPS

    files = sorted(tag_dir.glob("bf16_zero_pp_rank_*_optim_states.pt"), key=lambda f: int(f.name.split("_")[4]))
    pieces: dict[str, list[Any]] = {}
    for f in files:
        osd = torch.load(f, map_location="cpu", weights_only=False, mmap=True)["optimizer_state_dict"]
        for flat, mapping in zip(osd[SINGLE_PARTITION_OF_FP32_GROUPS], osd[PARAM_SLICE_MAPPINGS]):
            for name, address in mapping.items():
                pieces.setdefault(name, []).append(flat.narrow(0, address.start, address.numel))
    model_files = sorted(tag_dir.glob("mp_rank_*_model_states.pt"))
    if not model_files:
        raise InputError(f"{tag_dir}: no DeepSpeed model states")
    module = torch.load(model_files[0], map_location="cpu", weights_only=False)["module"]
    masters = {}
    for name, parts in pieces.items():
        if name not in module or sum(p.numel() for p in parts) != module[name].numel():
            raise InputError(f"{tag_dir}: fp32 master of {name} does not match the saved model states")
        masters[name] = torch.cat(parts).view(module[name].shape).clone()
    _tie_masters(module, masters)
    return {**{k: v.float() for k, v in module.items()}, **masters}


def load_init_checkpoint(model, path: str | Path) -> None:
    """Start from another run's checkpoint (``train.init_checkpoint``), on top of the model's fp32 source.

    ``model`` already holds the weights the checkpoint's run started from (``model.init_from`` or the
    seeded random init). After a stage-1 run only the entity side changed, and only it is taken from
    the checkpoint (its fp32 master weights): a bf16 run keeps the frozen word side as bf16 module
    states only, and stage 2 must not start from that rounded backbone. The checkpoint's copy of each
    frozen weight must still equal the model's (exactly, or rounded to bf16/fp16), which catches a
    stage 2 pointed at another backbone than its stage 1. After a stage-2 run everything is taken.
    """
    import torch

    from pretrain import zero3
    from pretrain.model import ENTITY_PREFIXES

    weights = load_consolidated_weights(path)
    state = read_state(Path(path))
    trained_only = state is not None and state.stage == 1
    params = dict(model.named_parameters())  # tied weights once
    missing = [n for n in params if n not in weights]
    names = model.state_dict(keep_vars=True).keys()
    unexpected = [n for n in weights if n not in names]
    if missing or unexpected:
        raise InputError(f"{path}: weights do not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    for name, p in params.items():
        if not (trained_only and not name.startswith(ENTITY_PREFIXES)):
            zero3.copy_into(p, weights[name])  # (under zero.Init: this rank's slice)
            continue
        mine, saved = zero3.local_value(p, weights[name])
        if not any(torch.equal(mine.float().to(dt).float(), saved.float()) for dt in (torch.float32, torch.bfloat16, torch.float16)):
            raise InputError(
                f"{path}: frozen weight {name} of the stage-1 run differs from this run's model.init_from "
                "(stage 2 must start from the same backbone, and the same data.seed for a random one)"
            )


def load_into(model, state_dict: dict[str, Any], source: str) -> None:
    """Load weights; only parameters tied to another one (saved once) may be absent."""
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    by_ptr: dict[int, list[str]] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        by_ptr.setdefault(t.data_ptr(), []).append(name)
    tied = {n for names in by_ptr.values() if len(names) > 1 for n in names}
    really_missing = [k for k in missing if k not in tied]
    if really_missing or unexpected:
        raise InputError(
            f"{source}: weights do not fit the model (missing {really_missing[:5]}, unexpected {list(unexpected)[:5]})"
        )
