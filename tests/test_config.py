"""Experiment config: YAML + dotted overrides, strict typing, one-line errors, generated DeepSpeed config."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
from shard_fixtures import write_shards

from data_prep.common.errors import InputError
from pretrain.config import load_config
from pretrain.optim import deepspeed_config, lr_lambda, memory_estimate, param_groups
from pretrain.train import DistEnv, add_arguments, prepare, run_cli

ROOT = Path(__file__).resolve().parents[1]
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable

BASE = """\
output_dir: {out}
data:
  shards: {shards}
  seed: 3
model:
  init_from: null
  entity_emb_size: 16
  hidden_size: 32
  num_hidden_layers: 1
  num_attention_heads: 2
  intermediate_size: 64
train:
  max_steps: 10
  global_batch_size: 8
  micro_batch_size: 2
  lr: 1e-3
  warmup_steps: 2
deepspeed:
  zero_stage: 2
  precision: fp32
wandb:
  mode: disabled
"""


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("cfg") / "shards")


def write_cfg(tmp_path: Path, shards: Path, extra: str = "", name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(BASE.format(out=tmp_path / "out", shards=shards) + extra, encoding="utf-8")
    return p


def test_yaml_and_typed_overrides(tmp_path, shards):
    cfg = load_config(
        write_cfg(tmp_path, shards),
        ["train.lr=2e-4", "train.max_steps=20", "deepspeed.offload_optimizer=true", "wandb.tags=a,b", "data.languages=[en]",
         "train.stop_at_step=null", "model.init_from=null"],
    )
    assert cfg.data.seed == 3 and cfg.model.hidden_size == 32
    assert cfg.train.lr == 2e-4 and isinstance(cfg.train.lr, float)  # "2e-4" would be a str to YAML 1.1
    assert cfg.train.max_steps == 20 and cfg.deepspeed.offload_optimizer is True
    assert cfg.wandb.tags == ["a", "b"] and cfg.data.languages == ["en"]
    assert cfg.train.stop_at_step is None and cfg.model.init_from is None
    assert load_config(write_cfg(tmp_path, shards)).train.lr == 1e-3  # YAML's "1e-3" string -> float


@pytest.mark.parametrize(
    "extra, overrides, message",
    [
        ("", ["train.lrr=1"], "unknown key 'train.lrr'"),
        ("bogus: 1\n", [], "unknown key 'bogus'"),
        ("", ["train.max_steps=ten"], "train.max_steps must be int, got 'ten'"),
        ("", ["train.stage=3"], "train.stage must be one of 1, 2"),
        ("", ["deepspeed.precision=fp8"], "deepspeed.precision must be one of fp32, bf16, fp16"),
        ("", ["train.micro_batch_size=3"], "must be a multiple of train.micro_batch_size (3)"),
        ("", ["output_dir="], "missing required key 'output_dir'"),
        ("", ["train.grad_clip=0"], "train.grad_clip must be > 0"),
        ("", ["train.compile=true", "deepspeed.zero_stage=3"], "train.compile does not work with deepspeed.zero_stage 3"),
        ("", ["model.attention_probs_dropout_prob=1.0"], "model.attention_probs_dropout_prob must be in [0, 1), got 1.0"),
        ("", ["trainlr"], "is not of the form key.path=value"),
    ],
)
def test_bad_config_one_line(tmp_path, shards, extra, overrides, message):
    with pytest.raises(InputError) as e:
        load_config(write_cfg(tmp_path, shards, extra), overrides)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_yaml_wrong_type_names_file(tmp_path, shards):
    p = write_cfg(tmp_path, shards).read_text().replace("max_steps: 10", "max_steps: [1]")
    (tmp_path / "w.yaml").write_text(p)
    with pytest.raises(InputError, match=r"w\.yaml: train\.max_steps must be int, got \[1\]"):
        load_config(tmp_path / "w.yaml")


def test_world_size_must_divide_batch(tmp_path, shards):
    cfg = load_config(write_cfg(tmp_path, shards))
    with pytest.raises(InputError, match=r"global_batch_size \(8\) must equal train.micro_batch_size \(2\) x gradient accumulation x world size \(3\)"):
        prepare(cfg, DistEnv(0, 0, 3))
    assert prepare(cfg, DistEnv(0, 0, 2)).grad_accum == 2


def test_generated_deepspeed_config(tmp_path, shards):
    cfg = load_config(write_cfg(tmp_path, shards), ["deepspeed.zero_stage=3", "deepspeed.precision=fp16", "train.grad_clip=0.5"])
    ds = deepspeed_config(cfg, world_size=2)
    assert ds["train_batch_size"] == 8 == ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * 2
    assert ds["gradient_clipping"] == 0.5
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["fp16"]["enabled"] and ds["fp16"]["loss_scale"] == 0 and not ds["bf16"]["enabled"]
    assert "optimizer" not in ds  # our own AdamW with parameter groups
    off = deepspeed_config(load_config(write_cfg(tmp_path, shards), ["deepspeed.offload_optimizer=true"]), 1)
    assert off["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert off["optimizer"]["params"]["eps"] == 1e-6


def test_param_groups_no_decay_on_bias_and_layernorm():
    model = torch.nn.Sequential()
    model.add_module("dense", torch.nn.Linear(4, 4))
    model.add_module("LayerNorm", torch.nn.LayerNorm(4))
    groups = param_groups(model, 0.01)
    decay = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0
    assert decay == {id(model.dense.weight)}
    assert {id(p) for p in groups[1]["params"]} == {id(model.dense.bias), id(model.LayerNorm.weight), id(model.LayerNorm.bias)}


def test_lr_schedule_linear_warmup_then_decay():
    f = lr_lambda(warmup_steps=4, max_steps=12)
    assert [f(s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert f(8) == 0.5 and f(12) == 0.0
    assert lr_lambda(0, 10)(0) == 1.0


def test_memory_estimate_by_hand():
    # 1000 params, all trainable, bf16, 4 ranks. ZeRO-2: weights 2 B each (replicated), grads accumulated
    # in fp32 4 B / 4, Adam m+v+fp32 master 12 B / 4.
    m = memory_estimate(1000, 1000, 2, "bf16", 4, False, False)
    assert (m["param_bytes_per_rank"], m["grad_bytes_per_rank"], m["optimizer_bytes_per_rank"]) == (2000, 1000, 3000)
    # ZeRO-1 in bf16: every rank holds the bf16 gradients and the fp32 accumulation buffer, 2 + 4 B.
    m1 = memory_estimate(1000, 1000, 1, "bf16", 4, False, False)
    assert (m1["param_bytes_per_rank"], m1["grad_bytes_per_rank"], m1["optimizer_bytes_per_rank"]) == (2000, 6000, 3000)
    m3 = memory_estimate(1000, 400, 3, "fp32", 4, True, False)
    assert (m3["param_bytes_per_rank"], m3["grad_bytes_per_rank"], m3["optimizer_bytes_per_rank"]) == (1000, 400, 800)
    assert m3["device_bytes_per_rank"] == 1400 and m3["cpu_offload_bytes_per_rank"] == 800


def test_dry_run_prints_config_deepspeed_and_memory(tmp_path, shards):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--config", str(write_cfg(tmp_path, shards)), "--dry-run", "--world-size", "2", "train.stage=1"])
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert run_cli(args) == 0
    report = json.loads(buf.getvalue())
    assert report["config"]["train"]["stage"] == 1
    assert report["deepspeed"]["gradient_accumulation_steps"] == 2
    mem = report["memory"]
    assert mem["world_size"] == 2 and 0 < mem["trainable_params"] < mem["params"]  # stage 1: entity side only
    assert report["notes"] == []  # shards found and checked
    assert not (tmp_path / "out").exists()  # nothing written


def _cli(config: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "DS_ACCELERATOR": "cpu"}
    return subprocess.run([PY, "-m", "pretrain", "train", "--config", str(config), *overrides],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    lines = [x for x in r.stderr.splitlines() if x.strip() and "[WARNING]" not in x and "real_accelerator" not in x]
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_cli_errors_exit_2_with_one_line(tmp_path, shards):
    cfg = write_cfg(tmp_path, shards)
    assert "unknown key 'train.lrr'" in _one_error_line(_cli(cfg, "train.lrr=1"))
    missing = _one_error_line(_cli(cfg, f"data.shards={tmp_path / 'nope'}"))
    assert f"{tmp_path / 'nope'}: shards directory not found" in missing
    # A different spm model in model.init_from than the one the shards were tokenised with.
    xlmr = tmp_path / "xlmr"
    xlmr.mkdir()
    (xlmr / "sentencepiece.bpe.model").write_bytes(b"not the same model")
    (xlmr / "config.json").write_text("{}")
    bad = _one_error_line(_cli(cfg, f"model.init_from={xlmr}"))
    assert f"{xlmr / 'sentencepiece.bpe.model'}: sha256 differs from the spm model the shards" in bad
    assert not (tmp_path / "out").exists()  # failed before anything started
