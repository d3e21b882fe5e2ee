"""``deepspeed.zero_init``: a 2-rank ZeRO-3 bf16 start from a ~170 MB (fp32) XLM-R never holds the whole
model on a rank, and gives the same first loss as the ordinary start (every rank builds the whole fp32
model, DeepSpeed partitions it afterwards). Each start runs ``tests/zero_init_probe.py`` under torchrun.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from shard_fixtures import write_shards
from tiny_models import save_tiny_xlmr

from pretrain.data import spm_size
from pretrain.init_from import model_config
from pretrain.model import MLukeForMaskedLM

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin" / "torchrun").exists() else Path(sys.executable).parent
# Most of the weight in the layers, as in XLM-R XL (a tiny vocabulary would make one embedding table the
# whole model, and its transient full copy at load time the whole measurement).
BACKBONE = dict(vocab_size=8000, hidden_size=512, num_hidden_layers=12, num_attention_heads=8, intermediate_size=2048)

CONFIG = """\
output_dir: {out}
data: {{shards: {shards}, seed: 3, num_workers: 0}}
model: {{init_from: {xlmr}, entity_emb_size: 64}}
train: {{stage: 2, max_steps: 1, global_batch_size: 4, micro_batch_size: 2, warmup_steps: 0}}
deepspeed: {{zero_stage: 3, precision: bf16, timeout_s: 300}}
wandb: {{mode: disabled}}
"""

pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("zero_init")
    shards = write_shards(work / "shards", {"en": 16})
    xlmr = work / "xlmr"
    assert spm_size(shards / "sentencepiece.bpe.model") + 2 <= BACKBONE["vocab_size"]
    save_tiny_xlmr(xlmr, **BACKBONE)
    shutil.copyfile(shards / "sentencepiece.bpe.model", xlmr / "sentencepiece.bpe.model")
    config = work / "train.yaml"
    config.write_text(CONFIG.format(out=work / "out", shards=shards, xlmr=xlmr))
    mc = model_config(xlmr, spm_size(shards / "sentencepiece.bpe.model") + 2, 40, 64)
    with torch.device("meta"):
        n = sum(p.numel() for p in MLukeForMaskedLM(mc).parameters())
    return work, config, 4 * n


def start(work: Path, config: Path, zero_init: bool) -> list[dict]:
    out = work / f"probe_{zero_init}.json"
    cmd = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_port()),
           str(ROOT / "tests" / "zero_init_probe.py"), str(config), str(out), f"deepspeed.zero_init={str(zero_init).lower()}"]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false",
           "MALLOC_MMAP_THRESHOLD_": "131072"}  # large buffers mapped and unmapped: the RSS shows what is live
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-6000:]}"
    return json.loads(out.read_text())


def test_zero_init_start_holds_a_slice_per_rank_and_gives_the_same_first_loss(setup):
    work, config, model_bytes = setup
    assert model_bytes > 150e6  # "not too tiny": the figures below are not lost in the interpreter's own memory
    plain = start(work, config, zero_init=False)
    sliced = start(work, config, zero_init=True)
    for rank in range(2):
        # The ordinary start: every rank builds the whole fp32 model (and reads XLM-R into it).
        assert plain[rank]["build_peak"] > 0.9 * model_bytes, plain
        # zero.Init: a bf16 slice per rank plus one tensor in flight, while building and while loading.
        assert sliced[rank]["build_peak"] < 0.5 * model_bytes, sliced
        assert sliced[rank]["load_peak"] < 0.5 * model_bytes, sliced
        assert sliced[rank]["losses"] == plain[rank]["losses"], (sliced, plain)
