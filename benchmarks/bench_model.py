"""Training-step throughput of pretrain.model.MLukeForMaskedLM vs transformers.LukeForMaskedLM.

Both models get the same weights (ours copied into theirs), the same batch, the same thread count, and
the same step: forward, loss (MLM + MEP), backward, AdamW. Each model runs in its own subprocess so its
peak memory is its own. Prints tokens/s (word tokens; a full sequence is ``--seq`` tokens plus
``--entities`` entities) side by side, the ratio, and a model-FLOPs-utilisation estimate computed with
``pretrain.model.model_flops_per_token`` (the same numerator for both models: what mLUKE needs, not what
an implementation spends).

    # XLM-R-base shape, scaled down to run in a few minutes on a 2-core CPU
    python benchmarks/bench_model.py --layers 2 --batch 2 --entity-vocab 200000 --steps 3
    # full base shape on a GPU (mluke-base: 512 words, 128 entities, 250k words, 1.2M entities)
    python benchmarks/bench_model.py --device cuda --dtype bf16 --batch 16 --accum 2 --steps 10
    # large: --hidden 1024 --layers 24 --heads 16 --intermediate 4096

On a GPU each model's row also has the number of host-device synchronisations in one training step
(``torch.cuda.set_sync_debug_mode("warn")``; the timed steps read no loss until the end) and the attention
implementation that ran (from the profiled ops and kernels of one step). ``--json F`` writes the rows for
``benchmarks/gpu_check.sh``, rewritten after each model so that a later hang keeps the earlier row.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep.common.atomic import write_json  # noqa: E402
from pretrain.model import MLukeConfig, MLukeForMaskedLM, luke_inputs, model_flops_per_token  # noqa: E402

# Dense bf16 tensor-core peak of the GPUs we are lent (no sparsity), for --peak-tflops auto.
GPU_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument(
        "--dtype", default="fp32", choices=["fp32", "bf16"], help="bf16 = autocast, fp32 master weights"
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (CPU); default: all cores")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--intermediate", type=int, default=3072)
    p.add_argument("--vocab", type=int, default=250002)
    p.add_argument("--entity-vocab", type=int, default=1_200_000)
    p.add_argument("--entity-emb", type=int, default=256)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--entities", type=int, default=128)
    p.add_argument("--mention-len", type=int, default=30, help="padded mention length M")
    p.add_argument("--mask-prob", type=float, default=0.15)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument(
        "--accum",
        type=int,
        default=1,
        help="micro-batches per optimiser step (gradient accumulation, as pretraining runs: the AdamW "
        "update over the 250k x 768 word table costs the same whatever the batch)",
    )
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run each model this many times, alternating, and keep its fastest run (for shared machines)",
    )
    p.add_argument("--gradient-checkpointing", action="store_true", help="(ours only)")
    p.add_argument(
        "--peak-tflops",
        default="auto",
        help="peak FLOP/s (in TFLOP/s) for MFU; 'auto': the GPU's bf16 dense peak, or on a CPU the "
        "throughput of a 2048^3 fp32 matmul measured in each run just before its timed steps (a shared "
        "machine's load changes the achievable peak as much as the step time)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the figures of both models to FILE (JSON)")
    p.add_argument("--timeout", type=float, default=None, help="seconds allowed to each model's run")
    p.add_argument("--only", choices=["mluke", "hf"], help=argparse.SUPPRESS)  # internal: one subprocess
    return p.parse_args(argv)


def make_config(a: argparse.Namespace) -> MLukeConfig:
    return MLukeConfig(
        vocab_size=a.vocab,
        hidden_size=a.hidden,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        intermediate_size=a.intermediate,
        max_position_embeddings=max(514, a.seq + 2),
        entity_vocab_size=a.entity_vocab,
        entity_emb_size=a.entity_emb,
        gradient_checkpointing=a.gradient_checkpointing,
    )


def make_batch(a: argparse.Namespace, device: str) -> dict[str, torch.Tensor]:
    """Full-length sequences (packed pretraining data has little padding), ``--entities`` mentions of 1-4
    tokens each at random non-overlapping-ish places, 15% of words and entities masked."""
    g = torch.Generator().manual_seed(0)
    B, L, E, M = a.batch, a.seq, a.entities, a.mention_len
    input_ids = torch.randint(5, a.vocab, (B, L), generator=g)
    input_ids[:, 0], input_ids[:, -1] = 0, 2
    starts = torch.randint(1, L - 5, (B, E), generator=g)
    lengths = torch.randint(1, 5, (B, E), generator=g)
    offs = torch.arange(M)
    entity_position_ids = torch.where(offs < lengths[..., None], starts[..., None] + offs, torch.tensor(-1))
    entity_ids = torch.randint(4, a.entity_vocab, (B, E), generator=g)
    mlm_labels = torch.where(torch.rand(B, L, generator=g) < a.mask_prob, input_ids, torch.tensor(-100))
    mep_labels = torch.where(torch.rand(B, E, generator=g) < a.mask_prob, entity_ids, torch.tensor(-100))
    batch = dict(
        input_ids=input_ids,
        attention_mask=torch.ones(B, L, dtype=torch.long),
        entity_ids=entity_ids,
        entity_attention_mask=torch.ones(B, E, dtype=torch.long),
        entity_position_ids=entity_position_ids,
        mlm_labels=mlm_labels,
        mep_labels=mep_labels,
    )
    return {k: v.to(device) for k, v in batch.items()}


def build(a: argparse.Namespace, which: str) -> torch.nn.Module:
    torch.manual_seed(0)
    # On a GPU the tables (1.2M x 256 entities, 250k x H words) are initialised there: seconds, not a minute
    # of CPU time. Both sides still get the same weights: the HF model copies ours.
    with torch.device(a.device):
        ours = MLukeForMaskedLM(make_config(a))
    if which == "mluke":
        return ours
    from transformers import LukeForMaskedLM

    hf = LukeForMaskedLM(ours.config.to_luke_config())
    missing = hf.load_state_dict(ours.state_dict(), strict=False).missing_keys
    assert all(k.startswith("luke.pooler.") for k in missing), missing
    if a.gradient_checkpointing:
        hf.gradient_checkpointing_enable()
    return hf


def loss_of(model: torch.nn.Module, which: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    if which == "mluke":
        # Every row is one full-length sample, as the trainer's packed row of a one-sample micro-batch:
        # nothing to hide, so no attention mask (transformers' model gets its all-ones masks).
        out = model(**{k: v for k, v in batch.items() if not k.endswith("attention_mask")})
        return out.mlm_loss_sum / out.mlm_count.clamp(min=1) + out.mep_loss_sum / out.mep_count.clamp(min=1)
    out = model(**luke_inputs(batch))
    return out.loss  # mean MLM + mean MEP: the same objective


def run_one(a: argparse.Namespace) -> dict:
    """Time one model in this process; returns the figures as a dict."""
    if a.threads:
        torch.set_num_threads(a.threads)
    device = a.device
    model = build(a, a.only).to(device).train()
    batch = make_batch(a, device)
    # Fused AdamW on both sides and both devices (one kernel per parameter group, no per-tensor loop).
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=a.dtype == "bf16")

    # Same weights and batch: with dropout off both must start from the same loss (a sanity check that
    # the two sides compute the same objective).
    model.eval()
    with torch.no_grad(), autocast:
        eval_loss = loss_of(model, a.only, batch).item()
    model.train()

    def step() -> torch.Tensor:
        """One optimiser step; its loss stays on the device (reading it would be a host sync per step)."""
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=device)
        for _ in range(a.accum):
            with autocast:
                loss = loss_of(model, a.only, batch) / a.accum
            loss.backward()
            total += loss.detach()
        opt.step()
        return total

    def synchronize() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    losses = [step() for _ in range(a.warmup)]
    synchronize()
    peak, peak_src = peak_tflops(a)  # on a CPU: measured now, under the same load as the timed steps
    t0, c0 = time.perf_counter(), cpu_seconds()
    losses += [step() for _ in range(a.steps)]
    synchronize()
    seconds = (time.perf_counter() - t0) / a.steps
    cpu_per_step = (cpu_seconds() - c0) / a.steps
    if device == "cuda":
        peak_mem = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    # After the timed steps, so neither the counting nor the profiler slows them.
    syncs = count_host_syncs(step) if device == "cuda" else None
    attention, kernels = attention_kernel(step, device)
    return {
        "model": a.only,
        "seconds_per_step": seconds,
        "tokens_per_s": a.batch * a.accum * a.seq / seconds,
        "cpu_seconds_per_step": cpu_per_step,
        "peak_mem_gib": peak_mem,
        "peak_tflops": peak,
        "peak_source": peak_src,
        "eval_loss": eval_loss,
        "last_loss": losses[-1].item(),
        "params": sum(p.numel() for p in model.parameters()),
        "host_syncs_per_step": syncs,
        "attention": attention,
        "attention_kernels": kernels,
    }


def count_host_syncs(fn) -> int:
    """Synchronising CUDA calls (a device-to-host copy, ``.item()``, ``nonzero``...) made by ``fn``.

    With the sync debug mode at "warn" CUDA warns at every such call; warnings raised in autograd's
    threads are replayed in this one when backward returns, so the backward pass is counted too.
    """
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the default filter would show a repeated warning once
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return sum("synchronizing CUDA operation" in str(w.message) for w in caught)


# Operator names (as the profiler records them) of each attention implementation, most specific first.
ATTENTION_OPS = (
    ("flash", ("_flash_attention", "flash_attention")),
    ("cudnn", ("cudnn_attention",)),
    ("efficient", ("efficient_attention",)),
    ("flex", ("flex_attention",)),
    ("cpu-dropout", ("_DropoutAttentionCPU",)),  # pretrain.model's CPU training path
    ("math", ("_scaled_dot_product_attention_math",)),
)
ATTENTION_KERNEL = re.compile(r"flash|fmha|sdpa|attention|attn", re.IGNORECASE)


def classify_attention(op_names: list[str]) -> str:
    """The attention implementation that ``op_names`` (aten ops and device kernels of one step) show:
    one of ``ATTENTION_OPS``' names, or "eager" when no fused or SDPA attention op ran (matmul + softmax)."""
    for name, needles in ATTENTION_OPS:
        if any(needle in op for op in op_names for needle in needles):
            return name
    return "eager"


def attention_kernel(fn, device: str) -> tuple[str, list[str]]:
    """Profile ``fn`` (one step): the attention implementation and up to 3 attention kernel names."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
    events = prof.key_averages()
    names = [e.key for e in events]
    kernels = sorted({e.key for e in events if e.device_type.name == "CUDA" and ATTENTION_KERNEL.search(e.key)})
    return classify_attention(names), [k[:80] for k in kernels[:3]]


def cpu_seconds() -> float:
    """CPU time (user + system) of this process: on a machine shared with other jobs, the work a step
    costs, where wall time also counts the waiting."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measured_cpu_peak_tflops(threads: int | None) -> float:
    if threads:
        torch.set_num_threads(threads)
    x, y = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(2):
        x @ y
    t0, n = time.perf_counter(), 5
    for _ in range(n):
        x @ y
    return 2 * 2048**3 * n / (time.perf_counter() - t0) / 1e12


def peak_tflops(a: argparse.Namespace) -> tuple[float, str]:
    if a.peak_tflops != "auto":
        return float(a.peak_tflops), "given"
    if a.device == "cuda":
        name = torch.cuda.get_device_name()
        for key, value in GPU_PEAK_TFLOPS.items():
            if key in name:
                return value, f"{name} bf16 dense peak"
        raise SystemExit(f"error: no known peak for {name!r}; pass --peak-tflops")
    return measured_cpu_peak_tflops(a.threads), "measured fp32 2048^3 matmul on this CPU"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    if a.only:
        print("RESULT " + json.dumps(run_one(a)), flush=True)
        return 0
    cfg = make_config(a)
    threads = a.threads or torch.get_num_threads()
    device_name = torch.cuda.get_device_name() if a.device == "cuda" else f"CPU, {threads} threads"
    print(
        f"shape: hidden {a.hidden}, layers {a.layers}, heads {a.heads}, seq {a.seq}, entities {a.entities}, "
        f"mention len {a.mention_len}, vocab {a.vocab}, entity vocab {a.entity_vocab}, batch {a.batch} x "
        f"{a.accum} accumulated, "
        f"{a.dtype} on {device_name}; {a.warmup} warm-up + {a.steps} timed steps"
    )
    flops_tok = model_flops_per_token(cfg, a.seq, a.entities, a.mask_prob)
    results: dict[str, dict] = {}
    errors: dict[str, str] = {}
    for _ in range(a.repeats):
        for which in ("mluke", "hf"):
            if which in errors:
                continue
            r = run_subprocess(a, argv, which)
            if "error" in r:
                errors[which] = r["error"]
                print(f"error: the {which} run failed: {r['error']}", file=sys.stderr)
            elif which not in results or r["seconds_per_step"] < results[which]["seconds_per_step"]:
                results[which] = {**r, "mfu": r["tokens_per_s"] * flops_tok / (r["peak_tflops"] * 1e12)}
            if a.json:  # after each model: a later hang or crash keeps what was measured
                write_json(a.json, json_report(a, device_name, flops_tok, results, errors))
    if not results:
        return 1
    any_result = next(iter(results.values()))
    print(f"model FLOPs per word token (fwd+bwd): {flops_tok / 1e9:.2f} GFLOP; MFU against {any_result['peak_source']}")
    print(
        f"{'model':<30}{'s/step':>9}{'tokens/s':>11}{'peak TFLOP/s':>14}{'MFU':>8}{'peak mem GiB':>14}"
        f"{'eval loss':>11}"
    )
    for which, r in results.items():
        print(
            f"{LABELS[which]:<30}{r['seconds_per_step']:>9.3f}{r['tokens_per_s']:>11.1f}{r['peak_tflops']:>14.3f}"
            f"{r['mfu']:>8.1%}{r['peak_mem_gib']:>14.2f}{r['eval_loss']:>11.5f}"
        )
    for which, r in results.items():
        syncs = "n/a on a CPU" if r["host_syncs_per_step"] is None else r["host_syncs_per_step"]
        kernels = f" ({', '.join(r['attention_kernels'])})" if r["attention_kernels"] else ""
        print(f"{LABELS[which]}: attention {r['attention']}{kernels}; host syncs per step: {syncs}")
    if len(results) == 2:
        ratio = results["mluke"]["tokens_per_s"] / results["hf"]["tokens_per_s"]
        print(f"throughput ratio ours / LukeForMaskedLM: {ratio:.2f}x")
        if a.device == "cpu":
            cpu = {k: r["cpu_seconds_per_step"] for k, r in results.items()}
            print(
                f"CPU seconds per step (user+sys, all threads): ours {cpu['mluke']:.1f}, LukeForMaskedLM "
                f"{cpu['hf']:.1f}: ratio {cpu['hf'] / cpu['mluke']:.2f}x"
            )
    return 1 if errors else 0


LABELS = {"mluke": "pretrain.model (ours)", "hf": "transformers LukeForMaskedLM"}


def run_subprocess(a: argparse.Namespace, argv: list[str], which: str) -> dict:
    """One model's run in its own process (its own peak memory); its RESULT dict, or {"error": why}."""
    try:
        proc = subprocess.run(
            [sys.executable, __file__, *argv, "--only", which],
            capture_output=True,
            text=True,
            check=False,
            timeout=a.timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {a.timeout:g} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {last[:200]}"}
    return json.loads(lines[-1][len("RESULT ") :])


def json_report(a: argparse.Namespace, device_name: str, flops_tok: float, results: dict, errors: dict) -> dict:
    shape = {k: getattr(a, k) for k in ("hidden", "layers", "heads", "intermediate", "vocab", "entity_vocab",
                                        "entity_emb", "seq", "entities", "mention_len", "batch", "accum")}
    return {
        "device": device_name,
        "dtype": a.dtype,
        "shape": shape,
        "steps": a.steps,
        "flops_per_token": flops_tok,
        "models": {**{k: {"label": LABELS[k], **r} for k, r in results.items()},
                   **{k: {"label": LABELS[k], "error": e} for k, e in errors.items()}},
    }


if __name__ == "__main__":
    sys.exit(main())
