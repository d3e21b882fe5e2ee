"""Optimiser side of training: parameter groups, the LR schedule, the generated DeepSpeed config and a
per-rank memory estimate for a ZeRO stage. Nothing here starts a process group.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from data_prep.common.errors import InputError
from pretrain import device, zero3
from pretrain.config import ExperimentConfig


def no_decay(name: str, param: nn.Parameter) -> bool:
    """Biases and LayerNorm weights (all 1-d tensors) take no weight decay."""
    return param.ndim < 2 or name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups over the trainable parameters only (frozen ones never reach the optimiser)."""
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if no_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def lr_lambda(warmup_steps: int, max_steps: int):
    """Linear warmup to the peak over ``warmup_steps``, then linear decay to 0 at ``max_steps``.

    ``step`` counts completed optimiser steps, so the first update (step 0) already uses a non-zero LR.
    """

    def f(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (max_steps - step) / max(1, max_steps - warmup_steps))

    return f


def gradient_accumulation_steps(cfg: ExperimentConfig, world_size: int) -> int:
    t = cfg.train
    per_step = t.micro_batch_size * world_size
    if t.global_batch_size % per_step:
        raise InputError(
            f"config: train.global_batch_size ({t.global_batch_size}) must equal train.micro_batch_size "
            f"({t.micro_batch_size}) x gradient accumulation x world size ({world_size}); "
            f"{t.global_batch_size} is not a multiple of {per_step}"
        )
    return t.global_batch_size // per_step


def deepspeed_config(cfg: ExperimentConfig, world_size: int) -> dict[str, Any]:
    """The DeepSpeed JSON config, generated from the experiment config (never written by hand)."""
    t, d = cfg.train, cfg.deepspeed
    gas = gradient_accumulation_steps(cfg, world_size)
    zero: dict[str, Any] = {
        "stage": d.zero_stage,
        "overlap_comm": d.overlap_comm and d.zero_stage >= 2,
        "contiguous_gradients": d.zero_stage >= 2,
        "reduce_bucket_size": d.reduce_bucket_size,
    }
    if d.zero_stage in (1, 2):
        zero["allgather_bucket_size"] = d.allgather_bucket_size
    if d.zero_stage == 3:
        # Otherwise ZeRO-3 replaces torch.nn.functional.linear for the whole process with its own autograd
        # function, which adds the bias IN PLACE to the matmul's output: selective recompute keeps that
        # output for the replay, which then adds the bias a second time (wrong gradients).
        zero["memory_efficient_linear"] = False
    if d.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": device.pin_memory()}
    if d.offload_param:
        zero["offload_param"] = {"device": "cpu", "pin_memory": device.pin_memory()}
    out: dict[str, Any] = {
        "train_batch_size": t.global_batch_size,
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": gas,
        "gradient_clipping": t.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": d.precision == "bf16"},
        "fp16": {
            "enabled": d.precision == "fp16",
            "loss_scale": 0,  # 0 = dynamic loss scaling
            "initial_scale_power": d.initial_scale_power,
            "loss_scale_window": d.loss_scale_window,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
        # We hand DeepSpeed our own AdamW (client_adamw) with our parameter groups (no decay on biases/LayerNorm).
        "zero_allow_untested_optimizer": True,
        "checkpoint": {"load_universal": d.universal_checkpoint},
        **precision_dtypes(d.precision),
        "steps_per_print": 1 << 30,  # the trainer logs; DeepSpeed's own step prints stay quiet
        "wall_clock_breakdown": False,
    }
    if d.offload_optimizer:
        # With offload, DeepSpeed's CPU Adam does the update; it gets the same groups via model_parameters.
        out["optimizer"] = {
            "type": "AdamW",
            "params": {
                "lr": t.lr,
                "betas": [t.adam_beta1, t.adam_beta2],
                "eps": t.adam_eps,
                "weight_decay": t.weight_decay,
                "bias_correction": t.adam_bias_correction,  # DeepSpeedCPUAdam takes it as a keyword
            },
        }
    return out


class AdamWNoBiasCorrection(torch.optim.Optimizer):
    """AdamW without bias correction, as DeepSpeed's Adam with ``bias_correction: false`` (the reference's).

    Per parameter: m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2, p -= lr (m / (sqrt(v) + eps) + wd p).
    torch's AdamW always divides m by 1 - b1^t and v by 1 - b2^t, which makes the first few thousand
    updates (with b2 = 0.999) up to ~6x smaller than these. Multi-tensor ``torch._foreach`` ops on any
    device; the state keys (``step``, ``exp_avg``, ``exp_avg_sq``) are torch Adam's, which DeepSpeed's
    ZeRO and universal checkpoints read. ZeRO hands it flat fp32 partitions like any other optimizer.
    """

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("AdamWNoBiasCorrection does not take sparse gradients")
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1  # not used by the update; kept for checkpoints (ZeRO-3 reads it)
            grads = [p.grad for p in params]
            exp_avg = [self.state[p]["exp_avg"] for p in params]
            exp_avg_sq = [self.state[p]["exp_avg_sq"] for p in params]
            beta1, beta2 = group["betas"]
            lr, wd = group["lr"], group["weight_decay"]
            torch._foreach_lerp_(exp_avg, grads, 1.0 - beta1)
            torch._foreach_mul_(exp_avg_sq, beta2)
            torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1.0 - beta2)
            if wd:
                torch._foreach_mul_(params, 1.0 - lr * wd)  # decoupled decay of the pre-update weights
            denom = torch._foreach_sqrt(exp_avg_sq)
            torch._foreach_add_(denom, group["eps"])
            torch._foreach_addcdiv_(params, exp_avg, denom, value=-lr)
        return loss


# torch has fused (single-kernel) AdamW for these device types; on the CPU the foreach path is kept.
FUSED_ADAMW_DEVICES = ("cuda", "xpu", "hpu", "mps")


def accelerator_device_type() -> str:
    """``cuda``, ``cpu``, ``xpu``, ...: DeepSpeed's accelerator (DS_ACCELERATOR), which also places the model."""
    return device.accelerator().device_name()


def client_adamw(groups: list[dict[str, Any]], cfg: ExperimentConfig, device_type: str) -> torch.optim.Optimizer:
    """The AdamW handed to DeepSpeed for parameters that will live on ``device_type``.

    DeepSpeed's ZeRO stages call its step() on flat fp32 partitions (or, at stage 0, on the parameters);
    every choice here works on both.
    """
    t = cfg.train
    kwargs = {"lr": t.lr, "betas": (t.adam_beta1, t.adam_beta2), "eps": t.adam_eps}
    if not t.adam_bias_correction:
        return AdamWNoBiasCorrection(groups, **kwargs)
    if device_type in FUSED_ADAMW_DEVICES:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    return torch.optim.AdamW(groups, foreach=True, **kwargs)


def precision_dtypes(precision: str) -> dict[str, Any]:
    """Gradients accumulated over micro-batches and reduced over ranks in fp32 under bf16/fp16.

    DeepSpeed's default is the model's dtype for both: a 2048-sample step summed over 16+ micro-batches
    and 64+ ranks in bf16 (8 mantissa bits) loses the small contributions. DeepSpeed 0.19.8 builds, for
    ``grad_accum_dtype`` fp32: ZeRO-1 -> its BF16_Optimizer (fp32 accumulation buffers), ZeRO-2/3 -> the
    ZeRO optimizer with fp32 gradient partitions; with ZeRO-0 it refuses the mix (config.py rejects
    ZeRO-0 with bf16/fp16 for that reason).
    """
    if precision == "fp32":
        return {}
    return {"data_types": {"grad_accum_dtype": "fp32"}, "communication_data_type": "fp32"}


def build_optimizer(cfg: ExperimentConfig, model: nn.Module) -> tuple[torch.optim.Optimizer | None, list[dict[str, Any]]]:
    """(client optimizer or None when DeepSpeed builds its CPU Adam, parameter groups)."""
    groups = param_groups(model, cfg.train.weight_decay)
    if cfg.deepspeed.offload_optimizer:
        return None, groups  # DeepSpeedCPUAdam, bias_correction from deepspeed_config's "optimizer"
    return client_adamw(groups, cfg, accelerator_device_type()), groups


def trainable_fp32(model: nn.Module, precision: str) -> dict[str, torch.Tensor]:
    """The fp32 values of the trainable parameters, kept across ``deepspeed.initialize`` in bf16/fp16.

    DeepSpeed casts the module to 16 bits before its optimiser copies the weights into fp32 masters, so
    the masters would start from the rounded weights (a rounded XLM-R backbone in stage 2). The tensors
    are kept by reference (the cast rebinds ``param.data``), so this costs no copy."""
    if precision == "fp32":
        return {}
    return {n: p.data for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def set_fp32_masters(module: nn.Module, values: dict[str, torch.Tensor]) -> None:
    """Put ``values`` (from ``trainable_fp32``) into the engine's fp32 master weights, any ZeRO stage."""
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_local_fp32_param

    for name, p in module.named_parameters():
        if name not in values:
            continue
        if zero3.partitioned(p):  # this rank's slice (DeepSpeed's full setter fails on a padded last slice)
            safe_set_local_fp32_param(p, zero3.local_slice(p, values[name]))
        else:
            safe_set_full_fp32_param(p, values[name])


def scheduler_factory(cfg: ExperimentConfig):
    """A callable DeepSpeed applies to the optimiser it ends up with; its state is in every checkpoint."""
    f = lr_lambda(cfg.train.warmup_steps, cfg.train.max_steps)
    return lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, f)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters), tied weights counted once."""
    seen: set[int] = set()
    total = trainable = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return total, trainable


def memory_estimate(
    n_params: int, n_trainable: int, zero_stage: int, precision: str, world_size: int, offload_optimizer: bool, offload_param: bool
) -> dict[str, Any]:
    """Bytes per rank of model states (no activations) for a ZeRO stage, as in the ZeRO paper's accounting.

    Weights are kept in the training precision (2 bytes for bf16/fp16, 4 for fp32); Adam keeps m and v in
    fp32 (8 bytes) plus, with mixed precision, an fp32 master copy (4 bytes). Gradients are accumulated
    in fp32 (``precision_dtypes``): 4 bytes, except that ZeRO-1 in bf16/fp16 (DeepSpeed's BF16_Optimizer)
    holds the 16-bit gradients next to its fp32 accumulation buffer (6 bytes). ZeRO-1 partitions
    optimizer states, ZeRO-2 also gradients, ZeRO-3 also weights, over the ranks.
    """
    w_bytes = 4 if precision == "fp32" else 2
    opt_bytes = 8 + (0 if precision == "fp32" else 4)
    params = n_params * w_bytes / (world_size if zero_stage >= 3 else 1)
    g_bytes = 4 if precision == "fp32" or zero_stage >= 2 else 6
    grads = n_trainable * g_bytes / (world_size if zero_stage >= 2 else 1)
    optim = n_trainable * opt_bytes / (world_size if zero_stage >= 1 else 1)
    gpu = (0 if offload_param else params) + grads + (0 if offload_optimizer else optim)
    cpu = (params if offload_param else 0) + (optim if offload_optimizer else 0)
    gib = 1024**3
    return {
        "world_size": world_size,
        "zero_stage": zero_stage,
        "precision": precision,
        "params": n_params,
        "trainable_params": n_trainable,
        "param_bytes_per_rank": int(params),
        "grad_bytes_per_rank": int(grads),
        "optimizer_bytes_per_rank": int(optim),
        "device_bytes_per_rank": int(gpu),
        "cpu_offload_bytes_per_rank": int(cpu),
        "device_gib_per_rank": round(gpu / gib, 3),
        "note": "model states only; activations come on top (activation checkpointing reduces them)",
    }
