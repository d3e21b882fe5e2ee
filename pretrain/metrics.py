"""Training metrics: the step-window accumulator, MFU and memory figures, metrics.jsonl and W&B (rank 0)."""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path
from typing import Any

import torch

# Dense bf16/fp16 tensor-core peaks (no sparsity), FLOP/s per device, from the vendors' data sheets.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "V100": 125e12}

SUMS = ("mlm_loss_sum", "mlm_count", "mlm_correct", "mep_loss_sum", "mep_count", "mep_correct", "tokens", "samples", "flops")


def peak_flops_per_device(override_tflops: float | None = None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if not torch.cuda.is_available():
        return None  # no meaningful peak for a CPU here: MFU is reported as null
    name = torch.cuda.get_device_name()
    for key, value in PEAK_FLOPS.items():
        if key in name:
            return value
    return None


def training_flops(n_layers: int, hidden: int, body_params: int, head_params_per_target: int,
                   seq_lens: list[int], n_targets: int) -> float:
    """Model FLOPs of one forward+backward (the PaLM appendix accounting, 3x the forward).

    Per sequence of n tokens (words + entities): 6 * body_params * n for the dense layers plus
    12 * layers * hidden * n^2 for attention scores and values; the output heads run only on masked
    positions: 6 * head_params_per_target per target.
    """
    dense = 6.0 * body_params * sum(seq_lens)
    attn = 12.0 * n_layers * hidden * sum(n * n for n in seq_lens)
    return dense + attn + 6.0 * head_params_per_target * n_targets


def memory_stats() -> dict[str, float]:
    out: dict[str, float] = {}
    if torch.cuda.is_available():
        out["mem_allocated_gib"] = torch.cuda.max_memory_allocated() / 1024**3
        out["mem_reserved_gib"] = torch.cuda.max_memory_reserved() / 1024**3
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    out["host_max_rss_gib"] = rss / 1024**2 if sys.platform != "darwin" else rss / 1024**3
    return out


MODEL_SUMS = SUMS[:6]  # the model's outputs: accumulated on the device, no host sync per micro-batch


class Window:
    """Sums over the steps since the last log (per rank; all-reduced when logged)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.model_sums: torch.Tensor | None = None
        self.host = dict.fromkeys(SUMS[6:], 0.0)
        self.steps = 0
        self.grad_norm = 0.0
        self.seconds = 0.0

    def add_model(self, output) -> None:
        """Add a micro-batch's ``MLukeOutput`` sums (tensors; summed without leaving the device)."""
        v = torch.stack([getattr(output, k).detach().to(torch.float64) for k in MODEL_SUMS])
        self.model_sums = v if self.model_sums is None else self.model_sums + v

    def add(self, **values: float) -> None:
        for k, v in values.items():
            self.host[k] += float(v)

    def reduced(self, device: torch.device) -> dict[str, float]:
        """Sum every counter over all ranks (one all_reduce)."""
        import torch.distributed as dist

        model = self.model_sums if self.model_sums is not None else torch.zeros(len(MODEL_SUMS), dtype=torch.float64)
        t = torch.cat([model.to(device), torch.tensor([self.host[k] for k in SUMS[6:]], dtype=torch.float64, device=device)])
        if dist.is_initialized():
            dist.all_reduce(t)
        return dict(zip(SUMS, t.tolist()))


def summarize(total: dict[str, float], steps: int, seconds: float, world_size: int, peak: float | None) -> dict[str, Any]:
    """Window sums over all ranks -> the logged means (losses per objective as in training)."""
    mlm = total["mlm_loss_sum"] / max(total["mlm_count"], 1)
    mep = total["mep_loss_sum"] / max(total["mep_count"], 1)
    out = {
        "loss": mlm + mep,
        "mlm_loss": mlm,
        "mep_loss": mep,
        "mlm_acc": total["mlm_correct"] / max(total["mlm_count"], 1),
        "mep_acc": total["mep_correct"] / max(total["mep_count"], 1),
        "tokens_per_s": total["tokens"] / seconds if seconds > 0 else 0.0,
        "samples_per_s": total["samples"] / seconds if seconds > 0 else 0.0,
        "tflops_per_device": total["flops"] / seconds / world_size / 1e12 if seconds > 0 else 0.0,
    }
    out["mfu"] = (total["flops"] / seconds / world_size / peak) if peak and seconds > 0 else None
    return out


class MetricsLog:
    """OUT/metrics.jsonl (appended, flushed per line) and W&B, written by rank 0 only."""

    def __init__(self, path: Path, wandb_run=None):
        self.path = path
        self.run = wandb_run
        self.f = open(path, "a", encoding="utf-8") if path is not None else None

    def log(self, record: dict[str, Any]) -> None:
        if self.f is not None:
            self.f.write(json.dumps(record, sort_keys=True) + "\n")
            self.f.flush()
            os.fsync(self.f.fileno())
        if self.run is not None:
            self.run.log({k: v for k, v in record.items() if k != "step" and v is not None}, step=record["step"])

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
        if self.run is not None:
            self.run.finish()


def truncate_metrics(path: Path, after_step: int) -> None:
    """On resume drop lines logged after the checkpoint: those steps are trained (and logged) again."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= after_step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by the crash we are resuming from
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
    os.replace(tmp, path)


def wandb_mode(configured: str) -> str:
    """WANDB_MODE in the environment wins over the config (so tests and clusters can force it)."""
    mode = os.environ.get("WANDB_MODE") or configured
    return "disabled" if mode in ("disabled", "dryrun-disabled") else mode


def start_wandb(cfg_dict: dict[str, Any], wcfg, output_dir: Path, run_id: str):
    mode = wandb_mode(wcfg.mode)
    if mode == "disabled":
        return None
    import wandb

    return wandb.init(
        project=wcfg.project,
        entity=wcfg.entity,
        name=wcfg.name,
        group=wcfg.group,
        tags=wcfg.tags or None,
        config=cfg_dict,
        dir=str(output_dir),
        id=run_id,
        resume="allow",
        mode=mode,
    )
