"""The trainer end to end on CPU: real DeepSpeed (gloo) with 2 ranks under the deepspeed launcher, the
hostfile multi-node path and torchrun; ZeRO-2 and ZeRO-3; stage 1 then stage 2; interrupt and resume;
metrics.jsonl and W&B offline. Each launched run is a module fixture shared by several assertions.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from shard_fixtures import write_shards

from data_prep.common.errors import InputError
from pretrain.checkpoint import load_consolidated_weights
from pretrain.config import load_config
from pretrain.model import MLukeForMaskedLM, entity_parameter_names
from pretrain.train import DistEnv, build_model, prepare

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin" / "deepspeed").exists() else Path(sys.executable).parent
STEPS = 8

CONFIG = """\
output_dir: unused
data:
  shards: {shards}
  seed: 11
  row_capacity: 2048  # a micro-batch of 8 in one row (the default, one longest sample, gives several rows)
model:
  init_from: null
  entity_emb_size: 16
  hidden_size: 32
  num_hidden_layers: 2
  num_attention_heads: 2
  intermediate_size: 64
train:
  stage: 2
  max_steps: {steps}
  global_batch_size: 32
  micro_batch_size: 8
  lr: 1.0e-2
  warmup_steps: 1
  save_every: 4
  log_every: 1
deepspeed:
  zero_stage: 2
  precision: fp32
  timeout_s: 120
wandb:
  project: mluke-test
  mode: offline
"""

pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(how: str, config: Path, out: Path, *overrides: str, wandb: str = "disabled") -> subprocess.CompletedProcess:
    """Run ``pretrain train`` under a launcher; fail the test with its output if it fails."""
    port = str(_port())
    args = ["--module", "pretrain", "train", "--config", str(config), f"output_dir={out}", *overrides]
    if how == "deepspeed":
        cmd = [str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", port, *args]
    elif how == "hostfile":
        hostfile = out.parent / f"{out.name}.hostfile"
        hostfile.write_text("localhost slots=2\n")
        cmd = [str(BIN / "deepspeed"), "--hostfile", str(hostfile), "--no_ssh", "--node_rank", "0",
               "--master_addr", "127.0.0.1", "--master_port", port, *args]
    elif how == "torchrun":
        cmd = [str(BIN / "torchrun"), "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", port,
               "-m", "pretrain", "train", "--config", str(config), f"output_dir={out}", *overrides]
    else:
        raise ValueError(how)
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "WANDB_MODE": wandb, "OMP_NUM_THREADS": "1",
           "WANDB_SILENT": "true", "TOKENIZERS_PARALLELISM": "false"}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, f"{' '.join(cmd)}\n--- stdout\n{r.stdout[-6000:]}\n--- stderr\n{r.stderr[-6000:]}"
    # DeepSpeed's CPU collective leaves a /dev/shm segment per rank unless the trainer unlinks it (66 MB each)
    assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_{os.getuid()}_*_{port}_*"))
    return r


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train")


@pytest.fixture(scope="module")
def config(work) -> Path:
    shards = write_shards(work / "shards", {"en": 48, "fr": 16})
    p = work / "train.yaml"
    p.write_text(CONFIG.format(shards=shards, steps=STEPS))
    return p


@pytest.fixture(scope="module")
def stage1(work, config) -> Path:
    """Stage 1 (entity side only) with ZeRO-3 in bf16, through the hostfile multi-node code path."""
    out = work / "stage1"
    launch("hostfile", config, out, "train.stage=1", "train.max_steps=4", "deepspeed.zero_stage=3", "deepspeed.precision=bf16",
           "data.num_workers=0")
    return out


@pytest.fixture(scope="module")
def run_a(work, config, stage1) -> Path:
    """Stage 2 from the stage-1 weights, ZeRO-2, 2 ranks, the whole run in one go, W&B offline, batches
    prepared by a DataLoader worker (the default data.num_workers=1)."""
    out = work / "a"
    launch("deepspeed", config, out, f"train.init_checkpoint={stage1}", wandb="offline")
    return out


@pytest.fixture(scope="module")
def run_b(work, config, stage1) -> Path:
    """The same run stopped at step 4 (schedule unchanged) and resumed by re-running the same command.
    A copy of the stopped run is kept in b4/ for the 1-rank resume. Batches are built in the training
    loop here (data.num_workers=0) and in a worker process in run A: the two must not differ."""
    out = work / "b"
    launch("deepspeed", config, out, f"train.init_checkpoint={stage1}", "train.stop_at_step=4", "data.num_workers=0",
           wandb="offline")
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4]
    shutil.copytree(out, work / "b4", ignore=shutil.ignore_patterns("wandb"))
    launch("deepspeed", config, out, f"train.init_checkpoint={stage1}", "data.num_workers=0", wandb="offline")
    return out


NO_DROPOUT = ("model.hidden_dropout_prob=0.0", "model.attention_probs_dropout_prob=0.0", "train.stop_at_step=3",
              "data.num_workers=0")


@pytest.fixture(scope="module")
def eager_and_compiled(work, config, stage1) -> tuple[Path, Path]:
    """3 steps without dropout (compiled code draws other dropout masks), eager and with train.compile."""
    eager, compiled = work / "eager", work / "compiled"
    launch("deepspeed", config, eager, f"train.init_checkpoint={stage1}", *NO_DROPOUT)
    launch("deepspeed", config, compiled, f"train.init_checkpoint={stage1}", *NO_DROPOUT, "train.compile=true")
    return eager, compiled


# ------------------------------------------------------------------------------------------- stage 1


def test_stage1_trains_only_entity_parameters(stage1, config, work):
    cfg = load_config(config, [f"output_dir={work / 'fresh'}", "train.stage=1"])
    plan = prepare(cfg, DistEnv(0, 0, 2))
    initial = build_model(plan).state_dict()  # what the run started from
    final = load_consolidated_weights(stage1)
    entity = set(entity_parameter_names(MLukeForMaskedLM(plan.model_config)))
    # bf16 training keeps frozen parameters in bf16 only: unchanged means equal to their bf16 rounding
    changed = {k for k in final if not torch.equal(final[k].float(), initial[k].to(final[k].dtype).float())}
    word = {k for k in final if k not in entity and not k.endswith(".decoder.weight")}
    assert word and not (changed & word), f"word-side parameters changed in stage 1: {sorted(changed & word)[:5]}"
    assert "luke.entity_embeddings.entity_embeddings.weight" in changed
    assert "entity_predictions.transform.dense.weight" in changed
    m = metrics(stage1)
    assert [r["step"] for r in m] == [1, 2, 3, 4]
    assert m[-1]["mep_loss"] < m[0]["mep_loss"]  # the entity objective learns under ZeRO-3


def test_stage2_starts_from_stage1_weights(stage1, config, work):
    cfg = load_config(config, [f"output_dir={work / 'fresh'}", f"train.init_checkpoint={stage1}"])
    plan = prepare(cfg, DistEnv(0, 0, 2))
    model = build_model(plan)
    weights = load_consolidated_weights(stage1)
    fresh = load_config(config, [f"output_dir={work / 'fresh'}"])
    initial = dict(build_model(prepare(fresh, DistEnv(0, 0, 2))).named_parameters())  # the fp32 init stage 1 started from
    entity = set(entity_parameter_names(model))
    for name, p in model.named_parameters():
        assert p.requires_grad  # stage 2 trains everything
        # the trained entity side from stage 1's fp32 masters; the frozen word side from its fp32 source,
        # not from the bf16 copy the stage-1 checkpoint holds
        assert torch.equal(p.detach(), weights[name].float() if name in entity else initial[name].detach()), name


# ------------------------------------------------------------------------------------------- stage 2


def test_loss_goes_down_and_metrics_logged(run_a):
    m = metrics(run_a)
    assert [r["step"] for r in m] == list(range(1, STEPS + 1))
    keys = {"step", "time", "loss", "mlm_loss", "mep_loss", "mlm_acc", "mep_acc", "lr", "grad_norm",
            "tokens_per_s", "samples_per_s", "consumed_samples"}
    assert keys <= set(m[0])
    assert [r["consumed_samples"] for r in m] == [32 * s for s in range(1, STEPS + 1)]
    for r in m:
        assert r["loss"] == pytest.approx(r["mlm_loss"] + r["mep_loss"])
        assert 0 <= r["mlm_acc"] <= 1 and r["grad_norm"] > 0 and r["tokens_per_s"] > 0
    assert m[0]["lr"] == pytest.approx(1e-2)  # warmup of 1 step, then linear decay
    assert m[4]["lr"] == pytest.approx(1e-2 * (STEPS - 4) / (STEPS - 1))
    first, last = sum(r["loss"] for r in m[:2]) / 2, sum(r["loss"] for r in m[-2:]) / 2
    assert last < first - 0.2, [r["loss"] for r in m]


def test_pad_fraction_and_per_language_metrics_logged(run_a):
    m = metrics(run_a)
    for r in m:
        assert 0 <= r["pad_fraction"] <= 0.05  # one packed row per micro-batch: only the rounding to 8 positions pads
        for obj in ("mlm", "mep"):
            per_lang = [r[f"{obj}_loss/{lang}"] for lang in ("en", "fr") if r[f"{obj}_loss/{lang}"] is not None]
            assert per_lang and min(per_lang) - 1e-6 <= r[f"{obj}_loss"] <= max(per_lang) + 1e-6  # a weighted mean
            assert all(0 <= r[f"{obj}_acc/{lang}"] <= 1 for lang in ("en", "fr") if r[f"{obj}_acc/{lang}"] is not None)
    assert any(r["mlm_loss/fr"] is not None for r in m) and any(r["mlm_loss/en"] is not None for r in m)


def test_compiled_run_gives_the_eager_losses(eager_and_compiled):
    eager, compiled = (metrics(p) for p in eager_and_compiled)
    assert [r["step"] for r in compiled] == [r["step"] for r in eager] == [1, 2, 3]
    for a, b in zip(eager, compiled):
        for k in ("loss", "mlm_loss", "mep_loss"):
            assert b[k] == pytest.approx(a[k], rel=1e-4), (k, a["step"])
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)


def test_checkpoints_and_client_state(run_a):
    ck = run_a / "checkpoints"
    assert (ck / "latest").read_text() == f"step{STEPS:06d}"
    assert sorted(p.name for p in ck.glob("step*")) == ["step000004", f"step{STEPS:06d}"]
    state = json.loads((ck / f"step{STEPS:06d}" / "trainer_state.json").read_text())
    assert state["step"] == STEPS and state["consumed_samples"] == 32 * STEPS and state["world_size"] == 2
    client = torch.load(ck / f"step{STEPS:06d}" / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    assert client["step"] == STEPS and client["wandb_run_id"] == state["wandb_run_id"]
    assert client["data_fingerprint"] == state["data_fingerprint"]
    assert (run_a / "config.yaml").is_file() and "zero_stage: 2" in (run_a / "config.yaml").read_text()
    ds = json.loads((run_a / "deepspeed_config.json").read_text())
    assert ds["train_batch_size"] == 32 and ds["gradient_accumulation_steps"] == 2 and ds["gradient_clipping"] == 1.0


def test_interrupted_and_resumed_run_gives_same_losses(run_a, run_b):
    a, b = metrics(run_a), metrics(run_b)
    assert [r["step"] for r in b] == list(range(1, STEPS + 1))
    for ra, rb in zip(a, b):
        for k in ("loss", "mlm_loss", "mep_loss", "lr", "grad_norm"):
            assert rb[k] == pytest.approx(ra[k], rel=1e-6, abs=1e-7), (ra["step"], k)
    # the resumed half logged into the same W&B run
    ids = {r["run_id"] for r in wandb_runs(run_b)}
    assert len(ids) == 1 and len(wandb_runs(run_b)) == 2


def test_resume_on_one_rank_from_universal_checkpoint(run_a, run_b, config, work):
    """The 2-rank run stopped at step 4, converted to a universal checkpoint, resumed by ONE process under
    torchrun with 4 micro-batches per step: the same losses as 2 ranks x 2 micro-batches, because the loss
    is normalised by the masked positions of the whole step and the batches are a function of the step."""
    out = work / "b4"
    ck = out / "checkpoints"
    with pytest.raises(InputError, match="ds_to_universal"):
        prepare(load_config(config, [f"output_dir={out}"]), DistEnv(0, 0, 1))
    subprocess.run([str(BIN / "python"), "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder",
                    str(ck / "step000004"), "--output_folder", str(ck / "step000004_universal")],
                   check=True, capture_output=True, cwd=ROOT, timeout=300)
    (ck / "latest").write_text("step000004_universal")
    launch("torchrun", config, out, "deepspeed.universal_checkpoint=true", "data.num_workers=0")
    a, d = metrics(run_a), metrics(out)
    assert [r["step"] for r in d] == list(range(1, STEPS + 1))
    for ra, rd in zip(a[4:], d[4:]):
        for k in ("loss", "mlm_loss", "mep_loss", "grad_norm"):
            assert rd[k] == pytest.approx(ra[k], rel=1e-4), (ra["step"], k)
    state = json.loads((ck / f"step{STEPS:06d}" / "trainer_state.json").read_text())
    assert state["world_size"] == 1 and state["step"] == STEPS


def test_resume_on_other_world_size_fails_clearly(run_a, config):
    cfg = load_config(config, [f"output_dir={run_a}"])
    with pytest.raises(InputError) as e:
        prepare(cfg, DistEnv(0, 0, 1))
    msg = str(e.value)
    assert "saved by 2 ranks with ZeRO-2, this run has 1 ranks" in msg and "deepspeed.checkpoint.ds_to_universal" in msg
    with pytest.raises(InputError, match="written for another data stream"):
        prepare(load_config(config, [f"output_dir={run_a}", "data.seed=12"]), DistEnv(0, 0, 2))


def test_sigterm_checkpoints_and_stops_every_rank(config, work):
    """A scheduler's SIGTERM to one rank: that step finishes on both ranks, a checkpoint is written, exit 0."""
    import signal
    import time

    out = work / "preempted"
    port = str(_port())
    cmd = [str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", port, "--module", "pretrain", "train",
           "--config", str(config), f"output_dir={out}", "train.max_steps=100000", "train.save_every=100000",
           "data.num_workers=0"]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        while not ((out / "metrics.jsonl").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) >= 3):
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else "timeout"
            time.sleep(0.5)
        rank1 = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p).count(f"output_dir={out}")
                 and "--local_rank=1" in _cmdline(p)]
        assert len(rank1) == 1
        os.kill(rank1[0], signal.SIGTERM)
        log, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log[-4000:]
    step = len((out / "metrics.jsonl").read_text().splitlines())
    assert (out / "checkpoints" / "latest").read_text() == f"step{step:06d}"
    assert "stop requested by signal: checkpointed at step" in (out / "train.log").read_text()
    tag, state = prepare(load_config(config, [f"output_dir={out}", "train.max_steps=100000"]), DistEnv(0, 0, 2)).resume
    assert tag == f"step{step:06d}" and state.step == step and state.consumed_samples == 32 * step


def _cmdline(p: Path) -> str:
    try:
        return (p / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------- W&B


def _wandb_records(path: Path):
    """Records of a W&B transaction log (.wandb): LevelDB-style log blocks holding protobuf Records."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 2):
            buf = chunk
        elif kind in (3, 4):
            buf += chunk
        if kind in (1, 4):
            r = pb.Record()
            r.ParseFromString(buf)
            yield r


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def wandb_runs(out: Path) -> list[dict]:
    runs = []
    for f in sorted(out.glob("wandb/offline-run-*/run-*.wandb")):
        run: dict = {"history": [], "config": {}}
        for r in _wandb_records(f):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                run["run_id"], run["project"] = r.run.run_id, r.run.project
                run["config"] = {_key(i): json.loads(i.value_json) for i in r.run.config.update}
            elif kind == "history":
                run["history"].append({_key(i): json.loads(i.value_json) for i in r.history.item})
        runs.append(run)
    return runs


def test_wandb_offline_run_has_the_metrics(run_a):
    (run,) = wandb_runs(run_a)
    assert run["project"] == "mluke-test"
    assert run["config"]["train"]["max_steps"] == STEPS and run["config"]["deepspeed"]["zero_stage"] == 2
    assert run["config"]["deepspeed_config"]["train_batch_size"] == 32 and run["config"]["world_size"] == 2
    assert run["config"]["model_config"]["hidden_size"] == 32
    m = metrics(run_a)
    assert [h["_step"] for h in run["history"]] == [r["step"] for r in m]
    for h, r in zip(run["history"], m):
        for k in ("loss", "mlm_acc", "mep_loss", "lr", "grad_norm", "consumed_samples"):
            assert h[k] == pytest.approx(r[k])
        assert "host_max_rss_gib" in h and "tflops_per_device" in h
    state = json.loads((run_a / "checkpoints" / f"step{STEPS:06d}" / "trainer_state.json").read_text())
    assert run["run_id"] == state["wandb_run_id"]


def test_wandb_disabled_writes_nothing(stage1):
    assert not (stage1 / "wandb").exists() and (stage1 / "metrics.jsonl").is_file()


# ------------------------------------------------------------------------------------------- helpers


def test_metrics_truncated_to_the_checkpoint_on_resume(tmp_path):
    from pretrain.metrics import truncate_metrics

    f = tmp_path / "metrics.jsonl"
    f.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4, "lo')  # crashed mid-line after step 3
    truncate_metrics(f, after_step=2)
    assert f.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_summary_normalises_each_objective_by_its_own_count():
    from pretrain.metrics import summarize

    total = {"mlm_loss_sum": 30.0, "mlm_count": 10.0, "mlm_correct": 4.0, "mep_loss_sum": 6.0, "mep_count": 2.0,
             "mep_correct": 1.0, "tokens": 1000.0, "samples": 8.0, "flops": 4e12}
    s = summarize(total, steps=2, seconds=2.0, world_size=2, peak=1e12)
    assert (s["mlm_loss"], s["mep_loss"], s["loss"]) == (3.0, 3.0, 6.0)  # not (30 + 6) / 12
    assert (s["mlm_acc"], s["mep_acc"]) == (0.4, 0.5)
    assert (s["tokens_per_s"], s["samples_per_s"], s["mfu"]) == (500.0, 4.0, 1.0)


def test_prune_keeps_the_newest_tags(tmp_path):
    from pretrain.checkpoint import prune

    for s in (5, 10, 15, 20):
        (tmp_path / f"step{s:06d}").mkdir()
    (tmp_path / "step000010_universal").mkdir()
    prune(tmp_path, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step000010_universal", "step000015", "step000020"]


def test_init_checkpoint_accepts_run_dir_checkpoints_dir_or_tag(tmp_path):
    from pretrain.checkpoint import resolve_init_checkpoint

    ck = tmp_path / "run" / "checkpoints"
    (ck / "step000004").mkdir(parents=True)
    (ck / "step000004" / "mp_rank_00_model_states.pt").write_bytes(b"")
    (ck / "step000008").mkdir()
    (ck / "latest").write_text("step000008")
    assert resolve_init_checkpoint(tmp_path / "run") == (ck, "step000008")
    assert resolve_init_checkpoint(ck) == (ck, "step000008")
    assert resolve_init_checkpoint(ck / "step000004") == (ck, "step000004")
    with pytest.raises(InputError, match="not a training output dir"):
        resolve_init_checkpoint(tmp_path / "nothing")
