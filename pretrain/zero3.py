"""Reading and writing weights of a model built under ``deepspeed.zero.Init`` (ZeRO-3, ``deepspeed.zero_init``).

Under zero.Init no rank ever holds the whole model: each parameter is an empty placeholder and the rank
owns one slice of it (``param.ds_tensor``, in the training precision). Loading a checkpoint therefore
writes each rank's own slice of every tensor, read one tensor at a time; once the engine exists, the
same slice (in fp32) also goes into the optimiser's master weights, so they start from the unrounded
values. For an ordinary parameter every helper here does the plain thing, so callers need one code path.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn


def partitioned(param: torch.Tensor) -> bool:
    return hasattr(param, "ds_id")


def full_shape(param: torch.Tensor) -> tuple[int, ...]:
    return tuple(param.ds_shape) if partitioned(param) else tuple(param.shape)


def local_slice(param: nn.Parameter, full: torch.Tensor) -> torch.Tensor:
    """This rank's slice of ``full`` as ZeRO-3 partitions ``param``: the flattened tensor cut into equal
    slices, one per rank in rank order, the last one padded with zeros. (DeepSpeed's own full-tensor
    setter of the fp32 masters cuts without that padding and fails on the last rank's slice.)"""
    import torch.distributed as dist

    size = param.ds_tensor.numel()
    start = dist.get_rank(group=param.ds_process_group) * size
    flat = full.reshape(-1)[start : start + size]
    if flat.numel() < size:
        flat = torch.cat([flat, flat.new_zeros(size - flat.numel())])
    return flat


def local_value(param: nn.Parameter, full: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(what this rank holds of ``param``, the matching part of ``full``), for comparisons."""
    if not partitioned(param):
        return param.detach(), full
    import torch.distributed as dist

    size = param.ds_tensor.numel()
    valid = max(0, min(size, full.numel() - dist.get_rank(group=param.ds_process_group) * size))  # padding aside
    return param.ds_tensor.detach()[:valid], local_slice(param, full)[:valid]


@torch.no_grad()
def copy_into(param: nn.Parameter, value: torch.Tensor) -> None:
    """Write the full tensor ``value`` into ``param``: its own slice under ZeRO-3 (and, once the engine
    exists and the parameter trains, the fp32 master of that slice), else the whole tensor."""
    if not partitioned(param):
        param.copy_(value)
        return
    part = local_slice(param, value.to(param.ds_tensor.device))
    param.ds_tensor.copy_(part)
    if param.requires_grad and getattr(param, "_z3_optimizer", None) is not None:
        from deepspeed.utils import safe_set_local_fp32_param

        safe_set_local_fp32_param(param, part.float())


def gathered(params: list[nn.Parameter], modifier_rank: int | None = None):
    """The full tensors of ZeRO-3 ``params`` inside the block (re-partitioned from ``modifier_rank``'s
    copy on exit when it is given); nothing to do for ordinary parameters."""
    if not any(partitioned(p) for p in params):
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank)


def initialize_weights(model: nn.Module, init_fn) -> None:
    """Run ``init_fn`` on every module in ``nn.Module.apply``'s order (children first), each module's own
    parameters gathered and taken from rank 0: under zero.Init the constructor's ``self.apply(init)``
    only saw empty placeholders. Every rank draws the same values (same seed, same order)."""

    def visit(module: nn.Module) -> None:
        for child in module.children():
            visit(child)
        with gathered(list(module.parameters(recurse=False)), modifier_rank=0):
            init_fn(module)

    visit(model)
