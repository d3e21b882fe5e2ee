"""Tiny training runs (real DeepSpeed via ``pretrain.train``, one CPU process, gloo) shared by the export
and evaluate tests. Built once per pytest process and cached: the runs cost a few seconds each.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from functools import cache, lru_cache
from pathlib import Path

TINY_MODEL = [
    "model.hidden_size=32",
    "model.num_hidden_layers=2",
    "model.num_attention_heads=4",
    "model.intermediate_size=64",
    "model.entity_emb_size=16",
    "model.max_position_embeddings=66",
]


@lru_cache(maxsize=1)
def workspace() -> Path:
    root = Path(tempfile.mkdtemp(prefix="mluke-export-tests-"))
    atexit.register(shutil.rmtree, root, True)
    return root


@lru_cache(maxsize=1)
def shards() -> Path:
    from shard_fixtures import write_shards

    return write_shards(workspace() / "shards", {"en": 24, "fr": 12}, valid_size=5)


def _train(name: str, overrides: list[str]) -> Path:
    from pretrain.config import load_config
    from pretrain.train import train

    out = workspace() / name
    cfg = load_config(
        None,
        [
            f"output_dir={out}",
            f"data.shards={shards()}",
            *TINY_MODEL,
            "train.max_steps=2",
            "train.global_batch_size=4",
            "train.micro_batch_size=2",
            "train.warmup_steps=0",
            "train.lr=1e-3",
            "train.save_every=1",
            "train.log_every=1",
            "deepspeed.precision=fp32",
            "deepspeed.timeout_s=120",
            "wandb.mode=disabled",
            *overrides,
        ],
    )
    # train() makes this process its own single-rank rendezvous through these variables; give them back so
    # that later tests' launchers do not inherit them (the gloo group itself stays up for the next run).
    keys = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE")
    saved = {k: os.environ.get(k) for k in keys}
    try:
        train(cfg)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return out


@cache
def run(zero_stage: int, stage: int = 2) -> Path:
    """OUT dir of a 2-step run with the given ZeRO stage and training stage (same seed and data for all)."""
    return _train(f"run_z{zero_stage}_s{stage}", [f"deepspeed.zero_stage={zero_stage}", f"train.stage={stage}"])


@lru_cache(maxsize=1)
def xl_run() -> Path:
    """A run whose backbone is a tiny pre-LayerNorm XLM-R XL (``model.init_from``)."""
    import json

    from tiny_models import save_tiny_xlmr_xl

    from pretrain.data import spm_size

    xl = workspace() / "tiny_xlmr_xl"
    n_words = spm_size(shards() / "sentencepiece.bpe.model") + 2
    save_tiny_xlmr_xl(xl, vocab_size=n_words)
    shutil.copyfile(shards() / "sentencepiece.bpe.model", xl / "sentencepiece.bpe.model")
    assert json.loads((xl / "config.json").read_text())["model_type"] == "xlm-roberta-xl"
    return _train("run_xl", ["deepspeed.zero_stage=2", f"model.init_from={xl}"])
