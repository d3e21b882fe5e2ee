"""Stage 2 after a bf16 stage 1 starts from the fp32 backbone, not from its bf16 module states.

A real bf16 stage-1 run (one CPU rank, ZeRO-1, tiny XLM-R as model.init_from), then the stage-2 model and
engine: the word side is bit-equal to the fp32 XLM-R weights (in the module before DeepSpeed and in the
engine's fp32 master weights after it), the entity side equal to stage 1's fp32 masters.
"""

from __future__ import annotations

import json
import shutil
from functools import cache, lru_cache
from pathlib import Path

import pytest
import torch
from export_fixtures import TINY_MODEL, _train, shards, workspace

from data_prep.common.errors import InputError
from pretrain.checkpoint import load_consolidated_weights
from pretrain.config import load_config
from pretrain.init_from import init_from_xlmr
from pretrain.model import ENTITY_PREFIXES, MLukeForMaskedLM
from pretrain.train import DistEnv, build_model, prepare


@cache
def tiny_xlmr(seed: int = 0) -> Path:
    from tiny_models import save_tiny_xlmr

    from pretrain.data import spm_size

    out = workspace() / f"tiny_xlmr_{seed}"
    save_tiny_xlmr(out, seed=seed, vocab_size=spm_size(shards() / "sentencepiece.bpe.model") + 2)
    shutil.copyfile(shards() / "sentencepiece.bpe.model", out / "sentencepiece.bpe.model")
    return out


@lru_cache(maxsize=1)
def stage1_bf16() -> Path:
    return _train("stage1_bf16_z1", ["train.stage=1", "deepspeed.zero_stage=1", "deepspeed.precision=bf16",
                                     f"model.init_from={tiny_xlmr()}", "train.lr=1e-2"])


def stage2_config(init_from: Path, zero_stage: int = 1):
    return load_config(None, [f"output_dir={workspace() / 'stage2_unused'}", f"data.shards={shards()}", *TINY_MODEL,
                              "train.global_batch_size=4", "train.micro_batch_size=2", "train.warmup_steps=0",
                              "train.stage=2", f"train.init_checkpoint={stage1_bf16()}", f"model.init_from={init_from}",
                              f"deepspeed.zero_stage={zero_stage}", "deepspeed.precision=bf16", "wandb.mode=disabled"])


def fp32_source(cfg, plan) -> dict[str, torch.Tensor]:
    model = MLukeForMaskedLM(plan.model_config)
    init_from_xlmr(model, cfg.model.init_from)
    return {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith(ENTITY_PREFIXES)}


def test_stage2_takes_word_side_from_fp32_source_and_entity_side_from_stage1_masters():
    cfg = stage2_config(tiny_xlmr())
    plan = prepare(cfg, DistEnv(0, 0, 1))
    stage1 = load_consolidated_weights(stage1_bf16())
    source = fp32_source(cfg, plan)
    model = build_model(plan)
    rounded = 0
    for name, p in model.named_parameters():
        if name.startswith(ENTITY_PREFIXES):
            assert torch.equal(p.detach(), stage1[name]), name  # stage 1's fp32 masters (they changed: trained)
        else:
            assert torch.equal(p.detach(), source[name]), name  # bit-equal to the fp32 XLM-R weight
            rounded += not torch.equal(stage1[name].float(), source[name])  # the checkpoint holds it in bf16
    assert rounded > 10, "the stage-1 checkpoint's word side should be bf16-rounded, or this test proves nothing"
    assert not torch.equal(stage1["luke.entity_embeddings.entity_embeddings.weight"],
                           MLukeForMaskedLM(plan.model_config).luke.entity_embeddings.entity_embeddings.weight)


@pytest.mark.parametrize("zero_stage", [1, 2, 3])
def test_bf16_engine_masters_start_from_the_fp32_weights(zero_stage, monkeypatch):
    """DeepSpeed casts the module to bf16 before it builds its fp32 masters; the trainer puts the fp32
    values back, so the first update starts from the unrounded XLM-R weights under every ZeRO stage."""
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param

    from pretrain.optim import build_optimizer, set_fp32_masters, trainable_fp32

    stage1 = load_consolidated_weights(stage1_bf16())  # (its run leaves the single-rank gloo group up)
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        monkeypatch.setenv(name, value)
    cfg = stage2_config(tiny_xlmr(), zero_stage)
    plan = prepare(cfg, DistEnv(0, 0, 1))
    source = fp32_source(cfg, plan)
    model = build_model(plan)
    optimizer, _ = build_optimizer(cfg, model)
    masters = trainable_fp32(model, "bf16")
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=plan.ds_config)
    set_fp32_masters(engine.module, masters)
    for name, p in engine.module.named_parameters():
        master = safe_get_full_fp32_param(p)
        want = stage1[name] if name.startswith(ENTITY_PREFIXES) else source[name]
        assert master.dtype == torch.float32 and torch.equal(master.cpu(), want), name


def test_stage2_with_another_backbone_than_stage1_is_refused():
    cfg = stage2_config(tiny_xlmr(seed=5))
    plan = prepare(cfg, DistEnv(0, 0, 1))
    with pytest.raises(InputError, match="differs from this run's model.init_from"):
        build_model(plan)


def test_stage1_run_was_bf16():
    assert json.loads((stage1_bf16() / "deepspeed_config.json").read_text())["bf16"]["enabled"]
