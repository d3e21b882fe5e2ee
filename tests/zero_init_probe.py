"""One rank of a ZeRO-3 start, run under torchrun by tests/test_zero_init.py (not a test module itself).

    torchrun --nproc_per_node 2 tests/zero_init_probe.py CONFIG OUT.json key=value ...

Builds the model and engine exactly as ``pretrain.train.train`` does, measuring this rank's peak anonymous host
memory above what it held before each phase, then the
loss of the first micro-batch of step 0. Rank 0 writes the figures of every rank to OUT.json.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from pathlib import Path

import torch


def _anon_rss() -> int:
    """Bytes of anonymous resident memory (RssAnon): what this process allocated, not the pages of files
    it maps (safetensors reads map the checkpoint; those pages are the page cache's, shared and reclaimable)."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"RssAnon:\s+(\d+) kB", text).group(1)) * 1024


def _peak_above_start(fn):
    """(fn's result, peak anonymous RSS while fn runs minus that before it), sampled every millisecond.
    The tests run this with MALLOC_MMAP_THRESHOLD_ fixed, so freed large buffers leave the RSS at once."""
    before = _anon_rss()
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _anon_rss())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        result = fn()
    finally:
        done.set()
        thread.join()
    return result, max(peak[0], _anon_rss()) - before


def main() -> None:
    import deepspeed
    import torch.distributed as dist

    from pretrain.batches import StepBatches, make_collator
    from pretrain.config import load_config
    from pretrain.optim import build_optimizer, set_fp32_masters, trainable_fp32
    from pretrain.train import DistEnv, build_model, init_process_group, load_weights, prepare

    config, out, *overrides = sys.argv[1:]
    cfg = load_config(config, overrides)
    env = DistEnv.from_environ()
    plan = prepare(cfg, env)
    init_process_group(cfg, env)
    model, build = _peak_above_start(lambda: build_model(plan))
    optimizer, _ = build_optimizer(cfg, model)
    masters = {} if cfg.deepspeed.zero_init else trainable_fp32(model, cfg.deepspeed.precision)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=plan.ds_config)
    load = 0
    if cfg.deepspeed.zero_init:
        _, load = _peak_above_start(lambda: load_weights(engine.module, plan))
    set_fp32_masters(engine.module, masters)
    t = cfg.train
    collate = make_collator(cfg.data, plan.masking, plan.manifest, layout="packed", languages=tuple(plan.data.languages))
    step = StepBatches(plan.data, collate, t.global_batch_size, t.micro_batch_size, env.rank, env.world_size, 1)[0]
    engine.eval()  # no dropout: the loss is a function of the weights and the batch alone
    with torch.no_grad():
        o = engine(**step.micro[0])
    losses = [float(o.mlm_loss_sum), float(o.mep_loss_sum)]
    figures = [None] * env.world_size
    dist.all_gather_object(figures, {"build_peak": build, "load_peak": load, "losses": losses})
    if env.rank == 0:
        Path(out).write_text(json.dumps(figures))
    dist.barrier()


if __name__ == "__main__":
    main()
