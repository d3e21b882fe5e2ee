"""This rank's device, collective backend, pinning and memory figures, all from DeepSpeed's accelerator.

DeepSpeed decides where the model lives from ITS accelerator (``DS_ACCELERATOR``, else what it detects),
so the trainer must ask the same object, never ``torch.cuda``: with ``DS_ACCELERATOR=cpu`` on a GPU
machine (tests, launch/common.sh on CPU nodes) torch.cuda still reports a GPU, and a trainer that
followed it would pick NCCL and CUDA tensors while DeepSpeed keeps the model on the CPU.
"""

from __future__ import annotations

import contextlib
import os

import torch


def accelerator():
    from deepspeed.accelerator import get_accelerator

    return get_accelerator()


def on_cpu() -> bool:
    return accelerator().device_name() == "cpu"


def backend() -> str:
    """The process-group backend DeepSpeed's accelerator uses (nccl, gloo, ccl, hccl, ...)."""
    return accelerator().communication_backend_name()


def local_device(local_rank: int) -> torch.device:
    """This rank's device, made current. The index is ``local_rank`` modulo the visible devices: a bare
    ``srun`` that gives each task its own CUDA_VISIBLE_DEVICES leaves one visible device per rank
    (index 0 for every local rank), a launcher that shows all of them leaves one per local rank."""
    acc = accelerator()
    if acc.device_name() == "cpu":
        return torch.device("cpu")
    n = acc.device_count()
    if n < 1:
        raise RuntimeError(f"DeepSpeed's {acc.device_name()} accelerator sees no device (DS_ACCELERATOR=cpu for CPU ranks)")
    index = local_rank % n
    acc.set_device(index)
    return torch.device(acc.device_name(index))


def pin_memory() -> bool:
    """Page-locked host buffers only help (and only exist) when batches are copied to a device."""
    return not on_cpu()


def device_name() -> str | None:
    """The current device's marketing name (e.g. "NVIDIA H100 80GB HBM3"), None on CPU ranks."""
    acc = accelerator()
    if acc.device_name() == "cpu":
        return None
    module = torch.get_device_module(acc.device_name())
    return module.get_device_name() if hasattr(module, "get_device_name") else None


def peak_memory_gib() -> dict[str, float]:
    """Peak device memory allocated / reserved by this rank's allocator; nothing on CPU ranks (there the
    host RSS is the figure, reported separately)."""
    acc = accelerator()
    if acc.device_name() == "cpu":
        return {}
    gib = 1024**3
    return {"mem_allocated_gib": acc.max_memory_allocated() / gib, "mem_reserved_gib": acc.max_memory_reserved() / gib}


def release_shm_collective_names() -> None:
    """Unlink this rank's name of DeepSpeed's shared-memory collective buffer (CPU ranks).

    On CPU DeepSpeed's ``init_distributed`` creates one ``/dev/shm`` segment per rank (about 66 MB),
    named from the uid, MASTER_ADDR, MASTER_PORT and the rank, which every other rank maps; DeepSpeed
    never unlinks it, so each run left its segments in /dev/shm (memory) for good. Once all ranks have
    mapped each other's segments (the caller's barrier after ``init_distributed``) the names can go: the
    mappings stay valid, and the memory is freed when the last rank exits, even after a crash.
    """
    import torch.distributed as dist

    if not on_cpu() or not dist.is_initialized():
        return
    name = (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}_"
            f"{os.environ.get('MASTER_PORT', '')}_{dist.get_rank()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join("/dev/shm", name))
