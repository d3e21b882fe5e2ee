"""The trainer on one CUDA GPU (marker ``gpu``; conftest skips these where CUDA is absent).

benchmarks/gpu_check.sh runs this file on a GPU node. One rank: stage 1 with ZeRO-3 in bf16 with
activation checkpointing under the ``deepspeed`` launcher (``--num_gpus 1``, NCCL); stage 2 with ZeRO-1
in bf16 from it, once in one go and once stopped at step 4 and resumed (same losses); fp16 with dynamic
loss scaling for 3 steps; ``DS_ACCELERATOR=cpu`` on the GPU machine, which must train on the CPU with
gloo and never touch CUDA; and, last (the slowest: it compiles), ``train.compile`` with FlexAttention
against the eager SDPA run. Tiny model and shards (tests/shard_fixtures.py), so every run is a few
seconds after start-up.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from shard_fixtures import write_shards

from pretrain.checkpoint import load_consolidated_weights
from pretrain.config import load_config
from pretrain.model import MLukeForMaskedLM, entity_parameter_names
from pretrain.train import DistEnv, build_model, prepare

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parents[1]
STEPS = 6
STOP = 4
CONFIG = """\
output_dir: unused
data: {{shards: {shards}, seed: 5, num_workers: 0}}
model: {{entity_emb_size: 16, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 128,
         hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}}
train: {{stage: 2, max_steps: {steps}, global_batch_size: 16, micro_batch_size: 8, lr: 1.0e-2, warmup_steps: 1,
         save_every: {stop}, log_every: 1}}
deepspeed: {{zero_stage: 1, precision: bf16, timeout_s: 120}}
wandb: {{mode: disabled}}
"""
# No dropout: the compiled FlexAttention run (no attention dropout, its own dropout RNG) is compared with the
# eager SDPA one step by step.
# Rendezvous and scheduler variables of the caller (a SLURM allocation, say) would make a single process
# look like one rank of a bigger job: each run starts without them.
FOREIGN = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "DS_ACCELERATOR")
FOREIGN_PREFIXES = ("SLURM_", "OMPI_", "PMI_")
# Runs `python -m pretrain ARGS`, then reports what the process used: the process group's backend (while
# it is still up), whether CUDA was ever initialised in it, and DeepSpeed's accelerator.
PROBE = """\
import json, sys
import torch, torch.distributed as dist
from deepspeed.accelerator import get_accelerator
from pretrain.__main__ import main
rc = main(sys.argv[1:])
print("PROBE " + json.dumps({"rc": rc, "backend": dist.get_backend() if dist.is_initialized() else None,
                             "cuda_initialized": torch.cuda.is_initialized(),
                             "accelerator": get_accelerator().device_name()}))
sys.exit(rc)
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(config: Path, out: Path, *overrides: str, launcher: bool = False, probe: bool = False,
          accelerator: str = "cuda") -> subprocess.CompletedProcess:
    """``pretrain train`` as one rank: under the deepspeed launcher, or as a plain process."""
    args = ["train", "--config", str(config), f"output_dir={out}", *overrides]
    if launcher:
        cmd = [sys.executable, "-u", "-m", "deepspeed.launcher.runner", "--num_gpus", "1", "--master_port",
               str(_port()), "--module", "pretrain", *args]
    elif probe:
        cmd = [sys.executable, "-c", PROBE, *args]
    else:
        cmd = [sys.executable, "-m", "pretrain", *args]
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN and not k.startswith(FOREIGN_PREFIXES)}
    env.update(DS_ACCELERATOR=accelerator, WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    # Its own session, so that a run past its time goes with all its processes (launcher, ranks, workers).
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=150)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            pytest.fail(f"{' '.join(cmd)}: no exit after 150 s\n{stderr[-5000:]}")
    r = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    assert r.returncode == 0, f"{' '.join(cmd)}\n--- stdout\n{r.stdout[-5000:]}\n--- stderr\n{r.stderr[-5000:]}"
    return r


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gpu")


@pytest.fixture(scope="module")
def config(work) -> Path:
    shards = write_shards(work / "shards", {"en": 48, "fr": 16})
    path = work / "train.yaml"
    path.write_text(CONFIG.format(shards=shards, steps=STEPS, stop=STOP))
    return path


@pytest.fixture(scope="module")
def stage1(work, config) -> Path:
    out = work / "stage1"
    train(config, out, "train.stage=1", f"train.max_steps={STOP}", "deepspeed.zero_stage=3",
          "model.gradient_checkpointing=true", launcher=True)
    return out


@pytest.fixture(scope="module")
def run_a(work, config, stage1) -> Path:
    """Stage 2, ZeRO-1 bf16, from the stage-1 weights, in one go."""
    out = work / "a"
    train(config, out, f"train.init_checkpoint={stage1}")
    return out


@pytest.fixture(scope="module")
def run_b(work, config, stage1) -> Path:
    """The same run stopped at step 4 (schedule unchanged), then resumed by the same command."""
    out = work / "b"
    train(config, out, f"train.init_checkpoint={stage1}", f"train.stop_at_step={STOP}")
    assert [r["step"] for r in metrics(out)] == list(range(1, STOP + 1))
    train(config, out, f"train.init_checkpoint={stage1}")
    return out


def test_stage1_zero3_bf16_checkpointing_on_the_gpu(stage1, config, work):
    ds = json.loads((stage1 / "deepspeed_config.json").read_text())
    assert ds["zero_optimization"]["stage"] == 3 and ds["bf16"]["enabled"] and not ds["fp16"]["enabled"]
    assert "gradient_checkpointing: true" in (stage1 / "config.yaml").read_text()
    m = metrics(stage1)
    assert [r["step"] for r in m] == list(range(1, STOP + 1))
    assert all(r["mem_allocated_gib"] > 0 and math.isfinite(r["mep_loss"]) for r in m)  # on the GPU
    # Only the entity side trained: the word side equals the initial weights (rounded to bf16 as saved).
    cfg = load_config(config, [f"output_dir={work / 'fresh'}", "train.stage=1"])
    plan = prepare(cfg, DistEnv(0, 0, 1))
    initial = build_model(plan).state_dict()  # what the run started from
    final = load_consolidated_weights(stage1)
    entity = set(entity_parameter_names(MLukeForMaskedLM(plan.model_config)))
    changed = {k for k in final if not torch.equal(final[k].float(), initial[k].to(final[k].dtype).float())}
    word = {k for k in final if k not in entity and not k.endswith(".decoder.weight")}
    assert word and not (changed & word), sorted(changed & word)[:5]
    assert "luke.entity_embeddings.entity_embeddings.weight" in changed


def test_stage2_zero1_stopped_and_resumed_gives_the_same_losses(run_a, run_b):
    ds = json.loads((run_a / "deepspeed_config.json").read_text())
    assert ds["zero_optimization"]["stage"] == 1 and ds["bf16"]["enabled"]
    a, b = metrics(run_a), metrics(run_b)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, STEPS + 1))
    # Equal up to the order of floating-point atomics (embedding-gradient and attention backward kernels
    # are not bitwise deterministic on a GPU); a resume that lost optimizer or data state is far off.
    for ra, rb in zip(a, b):
        for k in ("loss", "mlm_loss", "mep_loss", "lr", "grad_norm"):
            assert rb[k] == pytest.approx(ra[k], rel=1e-3, abs=1e-4), (ra["step"], k)
    assert all(math.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in a)  # (learning: test_train.py, 8 steps)
    assert (run_b / "checkpoints" / "latest").read_text() == f"step{STEPS:06d}"


def test_fp16_three_steps(config, work):
    out = work / "fp16"
    train(config, out, "train.max_steps=3", "deepspeed.precision=fp16", "deepspeed.zero_stage=2")
    ds = json.loads((out / "deepspeed_config.json").read_text())
    assert ds["fp16"]["enabled"] and not ds["bf16"]["enabled"]
    m = metrics(out)
    assert [r["step"] for r in m] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and r["mem_allocated_gib"] > 0 for r in m)
    # Dynamic loss scaling may skip a first step on overflow, never all of them.
    assert any(math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0 for r in m)
    assert (out / "checkpoints" / "latest").read_text() == "step000003"


def test_ds_accelerator_cpu_on_a_gpu_machine_trains_on_the_cpu(config, work):
    """DS_ACCELERATOR=cpu wins over the CUDA device that is present: gloo, CPU tensors, CUDA never initialised.
    (DeepSpeed's CPU backend compiles its shared-memory collective on first use: the image needs g++.)"""
    out = work / "cpu"
    r = train(config, out, "train.max_steps=2", "deepspeed.precision=fp32", "deepspeed.zero_stage=2", probe=True,
              accelerator="cpu")
    assert torch.cuda.is_available()
    [line] = [ln for ln in r.stdout.splitlines() if ln.startswith("PROBE ")]
    probe = json.loads(line[len("PROBE "):])
    assert probe["rc"] == 0 and probe["accelerator"] == "cpu"
    assert probe["cuda_initialized"] is False, "the CPU run initialised CUDA"
    assert probe["backend"] in ("gloo", None)  # None: the trainer closed its process group itself
    m = metrics(out)
    assert [r["step"] for r in m] == [1, 2] and all(math.isfinite(r["loss"]) for r in m)


def test_compiled_flex_attention_follows_the_eager_sdpa_run(config, work, stage1, run_a):
    """train.compile + train.attention=flex (GPU only) from the same stage-1 weights on the same batches:
    the first steps' losses equal those of the eager SDPA run (no dropout in either) to bf16 precision."""
    out = work / "flex"
    train(config, out, f"train.init_checkpoint={stage1}", "train.compile=true", "train.attention=flex",
          "train.stop_at_step=2")
    flex, eager = metrics(out), metrics(run_a)[:2]
    assert [r["step"] for r in flex] == [1, 2]
    for rf, r_eager in zip(flex, eager):
        for k in ("loss", "mlm_loss", "mep_loss"):
            assert rf[k] == pytest.approx(r_eager[k], rel=5e-3), (r_eager["step"], k)
