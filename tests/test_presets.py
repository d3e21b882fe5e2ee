"""Every training preset under configs/train/ loads through pretrain.config and plans with ``--dry-run``.

The mLUKE presets carry the published hyperparameters (mLUKE arXiv 2110.08151 / LUKE arXiv 2010.01057:
batch 2048, AdamW eps 1e-6, weight decay 0.01, warmup 2500, stage-1 lr 5e-4, stage-2 lr 1e-4 base /
5e-5 large, entity embeddings of 256, 15% masking) and the XLM-R dimensions of their size; the DeepSpeed
config generated from them has the batch arithmetic and ZeRO stage a cluster run needs. The XLM-R
directories they name do not exist here: the dry run must plan without weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pretrain.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PRESET_DIR = ROOT / "configs" / "train"
PRESETS = sorted(PRESET_DIR.glob("*.yaml"))

# XLM-R dimensions (hidden, layers, heads, intermediate) from the released configs of base / large / XL.
XLMR = {"base": (768, 12, 12, 3072), "large": (1024, 24, 16, 4096), "xl": (2560, 36, 32, 10240)}
STAGE2_LR = {"base": 1e-4, "large": 5e-5, "xl": 5e-5}  # XL: not published, large's value (see the YAML)
ZERO = {"base": 1, "large": 1, "xl": 3}
MLUKE = {f"mluke_{size}_stage{stage}.yaml": (size, stage) for size in XLMR for stage in (1, 2)}
CONTINUE = "mluke_base_continue.yaml"  # continued pretraining from the published mluke-base
# Ranks to plan each preset for (a cluster for the mLUKE presets; debug.yaml is the 2-rank CPU run).
WORLD = {"debug.yaml": 2, CONTINUE: 32} | {
    name: (32 if size == "base" else 64 if size == "large" else 128) for name, (size, _) in MLUKE.items()
}


def test_all_mluke_presets_exist():
    assert sorted([*MLUKE, CONTINUE]) == sorted(p.name for p in PRESETS if p.name.startswith("mluke_"))


@pytest.fixture(scope="module")
def dry_runs() -> dict[str, dict]:
    """``python -m pretrain train --config X --dry-run --world-size W`` for every preset.

    One interpreter runs the CLI's main() for all presets (torch is imported once: 7 separate processes
    cost ~25 s of CPU); test_dry_run_module_entry runs one preset through ``python -m pretrain`` itself.
    """
    script = """
import contextlib, io, json, sys
from pretrain.__main__ import main
out = {}
for key, path, world in json.loads(sys.argv[1]):
    buf, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        rc = main(["train", "--config", path, "--dry-run", "--world-size", str(world)])
    out[key] = {"rc": rc, "stdout": buf.getvalue(), "stderr": err.getvalue()}
print(json.dumps(out))
"""
    jobs = [(p.name, str(p), WORLD.get(p.name, 1)) for p in PRESETS]
    # and one world size that cannot split the 2048 batch (24 x 32 does not divide it)
    jobs.append(("bad-world", str(PRESET_DIR / "mluke_base_stage1.yaml"), 24))
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(jobs)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_preset_loads_and_plans(path: Path, dry_runs):
    cfg = load_config(path)  # strict: unknown keys, wrong types, bad batch arithmetic raise
    res = dry_runs[path.name]
    assert res["rc"] == 0, res["stderr"]
    plan = json.loads(res["stdout"])
    world = WORLD.get(path.name, 1)
    ds, mem = plan["deepspeed"], plan["memory"]
    t = cfg.train
    assert ds["train_batch_size"] == t.global_batch_size
    assert ds["train_micro_batch_size_per_gpu"] == t.micro_batch_size
    assert ds["gradient_accumulation_steps"] * t.micro_batch_size * world == t.global_batch_size
    assert ds["zero_optimization"]["stage"] == cfg.deepspeed.zero_stage
    assert ds["gradient_clipping"] == t.grad_clip
    # The memory estimate is printed for the planned world size, with numbers that add up.
    assert mem["world_size"] == world and mem["zero_stage"] == cfg.deepspeed.zero_stage
    parts = mem["param_bytes_per_rank"] + mem["grad_bytes_per_rank"] + mem["optimizer_bytes_per_rank"]
    assert mem["device_bytes_per_rank"] == pytest.approx(parts, abs=3)  # each part was truncated to int
    assert mem["device_gib_per_rank"] > 0
    assert plan["config"] == yaml.safe_load(yaml.safe_dump(plan["config"]))  # resolved config printed


@pytest.mark.parametrize("name", sorted(MLUKE))
def test_mluke_preset_has_published_hyperparameters(name: str, dry_runs):
    size, stage = MLUKE[name]
    cfg = load_config(PRESET_DIR / name)
    t, d, m, data = cfg.train, cfg.deepspeed, cfg.model, cfg.data
    assert (t.global_batch_size, t.warmup_steps, t.weight_decay, t.adam_eps) == (2048, 2500, 0.01, 1e-6)
    assert (t.adam_beta1, t.adam_beta2) == (0.9, 0.999)
    assert t.adam_bias_correction is False  # as the reference's DeepSpeed Adam
    assert t.stage == stage
    assert t.lr == (5e-4 if stage == 1 else STAGE2_LR[size])
    assert (data.mlm_probability, data.mep_probability, data.alpha) == (0.15, 0.15, 0.7)
    assert (data.mask_ratio, data.random_ratio) == (0.8, 0.1)
    assert data.whole_word_masking is False  # each piece a unit, as the reference trained mLUKE
    assert m.entity_emb_size == 256
    assert (m.hidden_size, m.num_hidden_layers, m.num_attention_heads, m.intermediate_size) == XLMR[size]
    assert m.max_position_embeddings == 514  # 512 words + <s>/</s> offset of fairseq positions
    assert m.init_from and Path(m.init_from).name == {"base": "xlm-roberta-base", "large": "xlm-roberta-large", "xl": "xlm-roberta-xl"}[size]
    assert d.precision == "bf16" and d.zero_stage == ZERO[size]
    assert not m.gradient_checkpointing and m.recompute == ("selective" if size == "xl" else "none")
    assert d.zero_init == (size == "xl")
    assert cfg.wandb.mode in ("online", "offline")
    if stage == 1:
        assert t.init_checkpoint is None
    else:  # stage 2 starts from the stage-1 run of the same size, in its own output_dir
        stage1 = load_config(PRESET_DIR / f"mluke_{size}_stage1.yaml")
        assert t.init_checkpoint == stage1.output_dir and cfg.output_dir != stage1.output_dir

    plan = json.loads(dry_runs[name]["stdout"])
    world = WORLD[name]
    assert plan["deepspeed"]["bf16"]["enabled"] and not plan["deepspeed"]["fp16"]["enabled"]
    # bf16 weights, but gradients accumulated over micro-batches and reduced over ranks in fp32
    assert plan["deepspeed"]["data_types"] == {"grad_accum_dtype": "fp32"}
    assert plan["deepspeed"]["communication_data_type"] == "fp32"
    assert plan["deepspeed"]["gradient_accumulation_steps"] == 2048 // (t.micro_batch_size * world)
    assert plan["model"]["hidden_size"] == XLMR[size][0] and plan["model"]["recompute"] == ("selective" if size == "xl" else "none")
    mem = plan["memory"]
    if stage == 1:  # only the entity side trains (1.2M x 256 entity table: about half of base, 8% of XL)
        assert 0.05 * mem["params"] < mem["trainable_params"] < 0.55 * mem["params"]
    else:
        assert mem["trainable_params"] == mem["params"]
    bf16 = 2
    if d.zero_stage == 3:  # weights partitioned over the ranks
        assert mem["param_bytes_per_rank"] == int(mem["params"] * bf16 / world)
    else:
        assert mem["param_bytes_per_rank"] == mem["params"] * bf16
    # Model states per GPU leave room for activations on an 80 GB GPU at the planned world size.
    assert mem["device_gib_per_rank"] < 20


def test_continue_preset_starts_from_mluke_base(dry_runs):
    """Stage 2 from the published mluke-base with the recipe's optimiser; the plan works without its files."""
    cfg = load_config(PRESET_DIR / CONTINUE)
    stage2 = load_config(PRESET_DIR / "mluke_base_stage2.yaml")
    t, m = cfg.train, cfg.model
    assert Path(m.init_from).name == "mluke-base" and t.init_checkpoint is None and t.stage == 2
    recipe = ("global_batch_size", "lr", "warmup_steps", "weight_decay", "adam_beta1", "adam_beta2", "adam_eps",
              "adam_bias_correction")
    assert [getattr(t, k) for k in recipe] == [getattr(stage2.train, k) for k in recipe]
    assert cfg.data.shards != stage2.data.shards and cfg.output_dir != stage2.output_dir
    assert (m.entity_emb_size, m.hidden_size, m.num_hidden_layers) == (256, 768, 12)
    plan = json.loads(dry_runs[CONTINUE]["stdout"])
    assert any("mluke-base/config.json not found" in n for n in plan["notes"])
    assert plan["memory"]["trainable_params"] == plan["memory"]["params"]


def test_mluke_data_recipe_matches_the_presets():
    """The presets train on shards of 512 words, 128 entities, 30 mention tokens (configs/data/mluke24.yaml)."""
    recipe = yaml.safe_load((ROOT / "configs" / "data" / "mluke24.yaml").read_text(encoding="utf-8"))
    s = recipe["shards"]
    assert (s["max_seq_length"], s["max_entity_length"], s["max_mention_length"]) == (512, 128, 30)
    assert len(recipe["languages"]) == 24
    shards = Path(recipe["out_dir"]) / "shards"
    for name in MLUKE:
        assert Path(load_config(PRESET_DIR / name).data.shards) == shards


def test_dry_run_module_entry():
    """The real entry point, as a user runs it: XL stage 2 planned for 128 ranks with ZeRO-3."""
    proc = subprocess.run(
        [sys.executable, "-m", "pretrain", "train", "--config", "configs/train/mluke_xl_stage2.yaml", "--dry-run",
         "--world-size", "128", "train.micro_batch_size=4"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = json.loads(proc.stdout)
    ds = plan["deepspeed"]
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (2048, 4, 4)
    assert ds["zero_optimization"]["stage"] == 3
    assert plan["memory"]["world_size"] == 128 and plan["memory"]["device_gib_per_rank"] > 0
    # No weights here: the plan says it used the preset's dimensions instead of config.json.
    assert any("config.json not found" in n for n in plan["notes"])


def test_bad_world_size_is_one_clear_line(dry_runs):
    """A world size that does not divide the 2048 batch fails before anything starts, naming the numbers."""
    res = dry_runs["bad-world"]
    assert res["rc"] == 2 and res["stdout"] == ""
    err = res["stderr"].strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "2048" in err[0] and "(24)" in err[0]
