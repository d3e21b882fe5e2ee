"""The README's main job (launch/quickstart.sh) on the bundled sample, end to end, with short training runs."""

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_LANGS = {"en", "de", "ru", "ar", "ja", "zh", "th"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_quickstart_runs_the_whole_pipeline(tmp_path):
    run = tmp_path / "run"
    env = dict(
        os.environ,
        RUN_DIR=str(run),
        TRAIN_OVERRIDES="train.max_steps=12 train.warmup_steps=2 train.save_every=6 train.log_every=3",
        WANDB_MODE="offline",
        MASTER_PORT=str(_free_port()),
    )
    env.pop("DS_ACCELERATOR", None)  # the launch script decides CPU vs GPU itself
    r = subprocess.run(
        ["bash", "launch/quickstart.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200
    )
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])

    # data: every bundled language extracted and sharded, with one shared multilingual vocabulary
    manifest = json.loads((run / "data/shards/manifest.json").read_text())
    assert set(manifest["languages"]) == SAMPLE_LANGS
    for lang in SAMPLE_LANGS:
        stats = json.loads((run / "data/corpus" / lang / "stats.json").read_text())
        assert stats["articles"] >= 20 and stats["failed"] == 0
    tokyo = [json.loads(x) for x in (run / "data/entity_vocab.jsonl").read_text().splitlines()]
    tokyo = [e for e in tokyo if e["qid"] == "Q1490"]
    assert len(tokyo) == 1 and {lang for _, lang in tokyo[0]["entities"]} == SAMPLE_LANGS

    # training: both stages ran to the end on 2 ranks, logged, checkpointed, and wrote W&B offline runs
    for stage in ("stage1", "stage2"):
        metrics = [json.loads(x) for x in (run / stage / "metrics.jsonl").read_text().splitlines()]
        assert [m["step"] for m in metrics] == [3, 6, 9, 12]
        assert (run / stage / "checkpoints/latest").read_text().strip() == "step000012"
        assert list((run / stage / "wandb").glob("offline-run-*"))

    # export + evaluate + the transformers demo
    assert (run / "hf/model.safetensors").is_file() and (run / "hf/tokenizer.json").is_file()
    report = json.loads((run / "eval.json").read_text())
    assert {x["lang"] for x in report["languages"]} == SAMPLE_LANGS
    demo = [line for line in r.stdout.splitlines() if "masked entity ->" in line]
    assert len(demo) == 3 and all(len(line.split("->")[1].split(",")) == 5 for line in demo)
    assert "quickstart: done" in r.stdout
