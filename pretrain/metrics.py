"""Training metrics: the step-window accumulator, MFU and memory figures, metrics.jsonl and W&B (rank 0).

W&B never ends a run: where ``online`` cannot work (no API key, server unreachable) rank 0 logs offline
instead (``wandb sync`` later), and a W&B call that fails mid-run is reported once and W&B is left alone
while metrics.jsonl goes on. Only ``wandb.mode: online_required`` fails, before the process group.
"""

from __future__ import annotations

import configparser
import json
import netrc
import os
import resource
import socket
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch

from data_prep.common.errors import InputError
from pretrain import device

# Dense bf16/fp16 tensor-core peaks (no sparsity), FLOP/s per device, from the vendors' data sheets.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "V100": 125e12}

SUMS = ("mlm_loss_sum", "mlm_count", "mlm_correct", "mep_loss_sum", "mep_count", "mep_correct", "tokens", "samples",
        "flops", "positions", "pad_positions")


def peak_flops_per_device(override_tflops: float | None = None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    name = device.device_name()
    if name is None:
        return None  # no meaningful peak for a CPU here: MFU is reported as null
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
    out = device.peak_memory_gib()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    out["host_max_rss_gib"] = rss / 1024**2 if sys.platform != "darwin" else rss / 1024**3
    return out


MODEL_SUMS = SUMS[:6]  # the model's outputs: accumulated on the device, no host sync per micro-batch
HOST_SUMS = SUMS[6:]  # known on the host from the batches themselves


class Window:
    """Sums over the steps since the last log (per rank; all-reduced when logged).

    The model's sums, the per-language sums and the grad norms stay on the device (tensors added to
    tensors): nothing here waits for the accelerator until ``reduced`` on a logging step.
    """

    def __init__(self, languages: tuple[str, ...] = ()) -> None:
        self.languages = tuple(languages)
        self.reset()

    def reset(self) -> None:
        self.model_sums: torch.Tensor | None = None
        # [languages, 6]: mlm loss, count, correct, mep loss, count, correct per language
        self.language_sums: torch.Tensor | None = None
        self.host = dict.fromkeys(HOST_SUMS, 0.0)
        self.steps = 0
        self.grad_norm: torch.Tensor | float = 0.0
        self.seconds = 0.0

    def add_model(self, output, batch: dict[str, torch.Tensor] | None = None) -> None:
        """Add a micro-batch's ``MLukeOutput`` sums (tensors; summed without leaving the device) and, for
        a packed batch with per-target language ids, its per-language sums."""
        v = torch.stack([getattr(output, k).detach().to(torch.float64) for k in MODEL_SUMS])
        self.model_sums = v if self.model_sums is None else self.model_sums + v
        if not self.languages or batch is None or "mlm_languages" not in batch:
            return
        if self.language_sums is None:
            self.language_sums = torch.zeros(len(self.languages), 6, dtype=torch.float64, device=v.device)
        for col, targets, lang in ((0, output.mlm_targets, batch["mlm_languages"]),
                                   (3, output.mep_targets, batch["mep_languages"])):
            if targets is not None:
                self.language_sums[:, col : col + 3].index_add_(0, lang, targets.to(torch.float64))

    def add_grad_norm(self, norm) -> None:
        """A step's gradient norm as the engine reports it (a device tensor is added without reading it)."""
        if isinstance(norm, torch.Tensor):
            self.grad_norm = self.grad_norm + norm.detach().to(torch.float64)
        else:
            self.grad_norm = self.grad_norm + (float("nan") if norm is None else float(norm))

    def add(self, **values: float) -> None:
        for k, v in values.items():
            self.host[k] += float(v)

    def reduced(self, device: torch.device) -> dict[str, float]:
        """Sum every counter over all ranks (one all_reduce); also this rank's mean grad norm."""
        import torch.distributed as dist

        zeros = torch.zeros(len(MODEL_SUMS) + 6 * len(self.languages), dtype=torch.float64)
        model = self.model_sums if self.model_sums is not None else zeros[: len(MODEL_SUMS)]
        langs = self.language_sums if self.language_sums is not None else zeros[len(MODEL_SUMS) :]
        host = torch.tensor([self.host[k] for k in HOST_SUMS], dtype=torch.float64)
        t = torch.cat([model.to(device), host.to(device), langs.to(device).reshape(-1)])
        if dist.is_initialized():
            dist.all_reduce(t)
        values = t.tolist()
        out = dict(zip(SUMS, values))
        for i, lang in enumerate(self.languages):
            row = values[len(SUMS) + 6 * i : len(SUMS) + 6 * (i + 1)]
            out.update({f"{k}/{lang}": x for k, x in zip(MODEL_SUMS, row)})
        gn = self.grad_norm
        out["grad_norm"] = (gn.item() if isinstance(gn, torch.Tensor) else float(gn)) / max(self.steps, 1)
        return out


def summarize(total: dict[str, float], steps: int, seconds: float, world_size: int, peak: float | None,
              languages: tuple[str, ...] = ()) -> dict[str, Any]:
    """Window sums over all ranks -> the logged means (losses per objective as in training).

    Per language (``mlm_loss/en`` ...): each objective over that language's targets only; null where
    the window had none of them."""

    def ratio(num: str, den: str) -> float | None:
        return total[num] / total[den] if total.get(den) else None

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
    if total.get("positions"):
        out["pad_fraction"] = total["pad_positions"] / total["positions"]
    out["mfu"] = (total["flops"] / seconds / world_size / peak) if peak and seconds > 0 else None
    for lang in languages:
        for obj in ("mlm", "mep"):
            out[f"{obj}_loss/{lang}"] = ratio(f"{obj}_loss_sum/{lang}", f"{obj}_count/{lang}")
            out[f"{obj}_acc/{lang}"] = ratio(f"{obj}_correct/{lang}", f"{obj}_count/{lang}")
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
            try:
                self.run.log({k: v for k, v in record.items() if k != "step" and v is not None}, step=record["step"])
            except Exception as e:  # W&B is a side channel: training and metrics.jsonl go on without it
                _say(f"wandb: log failed at step {record['step']} ({_one_line(e)}); W&B is off for the rest of the run, {self.path} goes on")
                self.run = None

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
        if self.run is not None:
            try:
                self.run.finish()
            except Exception as e:
                _say(f"wandb: finish failed ({_one_line(e)})")


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


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _wandb_settings() -> dict[str, str]:
    """The ``[default]`` section of W&B's global settings file, then of ./wandb/settings (which wins)."""
    config_dir = os.environ.get("WANDB_CONFIG_DIR")
    files = [Path(config_dir).expanduser() / "settings" if config_dir else Path("~/.config/wandb/settings").expanduser(), Path("wandb/settings")]
    out: dict[str, str] = {}
    for f in files:
        parser = configparser.ConfigParser()
        try:
            parser.read(f)
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue  # W&B ignores a broken settings file too
        if parser.has_section("default"):
            out.update(parser["default"])
    return out


def wandb_base_url() -> str:
    """The server ``wandb.init`` would talk to: WANDB_BASE_URL, else the settings files, else W&B's default."""
    url = os.environ.get("WANDB_BASE_URL") or _wandb_settings().get("base_url")
    if url:
        return url
    try:
        from wandb.sdk.lib.urls import DEFAULT_BASE_URL

        return DEFAULT_BASE_URL
    except ImportError:  # older wandb
        return "https://api.wandb.ai"


def wandb_api_key_found(base_url: str) -> bool:
    """Whether W&B has credentials: WANDB_API_KEY (or an identity token file), a netrc entry for the
    server (``wandb login`` writes one), or ``api_key`` in a settings file."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE") or _wandb_settings().get("api_key"):
        return True
    host = urlsplit(base_url).hostname or ""
    hosts = {host}
    if host.endswith(("wandb.ai", "forge.coreweave.com")):  # W&B's cloud, under either name
        hosts.add("api.wandb.ai")
    try:
        rc = netrc.netrc(os.environ.get("NETRC") or Path("~/.netrc").expanduser())
    except (OSError, netrc.NetrcParseError):
        return False
    return any((auth := rc.authenticators(h)) and auth[2] for h in hosts)


def server_reachable(base_url: str, timeout: float = 3.0) -> bool:
    """A TCP connection to the server within ``timeout`` seconds, name lookup included (in a thread,
    as ``getaddrinfo`` has no timeout of its own)."""
    parts = urlsplit(base_url)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    ok = threading.Event()

    def connect() -> None:
        try:
            with socket.create_connection((parts.hostname, port), timeout=timeout):
                ok.set()
        except (OSError, ValueError):
            pass

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout)
    return ok.is_set()


def resolve_wandb_mode(wcfg, output_dir: Path, timeout: float = 3.0) -> str:
    """The mode rank 0 will use, decided before the process group starts: ``online`` only where it can
    work, else ``offline`` with one line saying why; ``online_required`` raises ``InputError`` instead."""
    mode = wandb_mode(wcfg.mode)
    if mode not in ("online", "online_required"):
        return mode
    url = wandb_base_url()
    problem = None
    if not wandb_api_key_found(url):
        problem = "no W&B API key (WANDB_API_KEY, ~/.netrc from `wandb login`)"
    elif not server_reachable(url, timeout):
        problem = f"W&B server {url} not reachable within {timeout:g}s"
    if problem is None:
        return "online"
    if mode == "online_required":
        raise InputError(f"wandb.mode online_required: {problem}")
    _say(f"wandb: {problem}; logging offline to {Path(output_dir) / 'wandb'} (upload later with `wandb sync`)")
    return "offline"


def start_wandb(cfg_dict: dict[str, Any], wcfg, output_dir: Path, run_id: str, mode: str | None = None):
    """The W&B run of rank 0 in ``mode`` (from :func:`resolve_wandb_mode`), or None: disabled, or
    ``wandb.init`` failed (said in one line; the run goes on with metrics.jsonl alone)."""
    mode = mode or wandb_mode(wcfg.mode).replace("online_required", "online")
    if mode == "disabled":
        return None
    try:
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
    except Exception as e:
        _say(f"wandb: init failed ({_one_line(e)}); training goes on without W&B, metrics in {Path(output_dir) / 'metrics.jsonl'}")
        return None
