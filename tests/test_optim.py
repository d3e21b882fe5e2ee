"""The optimiser handed to DeepSpeed: AdamW with and without bias correction, fused where the accelerator has it."""

from __future__ import annotations

import copy
import inspect
import os

import pytest
import torch
from torch import nn

from pretrain.config import load_config
from pretrain.optim import (
    AdamWNoBiasCorrection,
    build_optimizer,
    client_adamw,
    deepspeed_config,
    param_groups,
)

LR, BETAS, EPS, WD = 0.1, (0.9, 0.999), 1e-6, 0.01


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.LayerNorm(4), nn.Linear(4, 3))


def loss_of(model: nn.Module, k: int) -> torch.Tensor:
    x = torch.linspace(-1.0, 1.0, 10).view(2, 5) * (k + 1)
    return (model(x) ** 2).sum() + model(x).sum()


def config(bias_correction: bool, **extra):
    return load_config(None, [
        "output_dir=unused", "data.shards=unused", f"train.lr={LR}", f"train.adam_eps={EPS}",
        f"train.weight_decay={WD}", f"train.adam_bias_correction={str(bias_correction).lower()}",
        *[f"{k}={v}" for k, v in extra.items()],
    ])


def expected_after(model: nn.Module, steps: int, bias_correction: bool) -> dict[str, torch.Tensor]:
    """The AdamW formula written out per parameter, one tensor at a time (decay: not on 1-d parameters)."""
    ref = tiny_model()
    ref.load_state_dict(model.state_dict())
    m = {n: torch.zeros_like(p) for n, p in ref.named_parameters()}
    v = {n: torch.zeros_like(p) for n, p in ref.named_parameters()}
    b1, b2 = BETAS
    for t in range(1, steps + 1):
        ref.zero_grad()
        loss_of(ref, t - 1).backward()
        with torch.no_grad():
            for n, p in ref.named_parameters():
                g = p.grad
                m[n] = b1 * m[n] + (1 - b1) * g
                v[n] = b2 * v[n] + (1 - b2) * g * g
                mh, vh = (m[n] / (1 - b1**t), v[n] / (1 - b2**t)) if bias_correction else (m[n], v[n])
                wd = WD if p.ndim >= 2 else 0.0
                p.sub_(LR * (mh / (vh.sqrt() + EPS) + wd * p))
    return {n: p.detach().clone() for n, p in ref.named_parameters()}


def run_steps(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> dict[str, torch.Tensor]:
    for k in range(steps):
        opt.zero_grad()
        loss_of(model, k).backward()
        opt.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("bias_correction", [False, True])
def test_build_optimizer_steps_follow_the_formula(bias_correction):
    model = tiny_model()
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt, groups = build_optimizer(config(bias_correction), model)
    assert isinstance(opt, torch.optim.AdamW) is bias_correction  # the CPU test machine: foreach AdamW
    assert [g["weight_decay"] for g in groups] == [WD, 0.0]
    got = run_steps(model, opt, 3)
    want = expected_after(tiny_model(), 3, bias_correction)
    for n in got:
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-7)
        assert not torch.equal(got[n], start[n])
    # The two settings really differ (the uncorrected first steps are larger with b2 = 0.999).
    other = expected_after(tiny_model(), 3, not bias_correction)
    assert all((got[n] - other[n]).abs().max() > 1e-3 for n in got)


def test_bias_corrected_equals_torch_adamw_and_fused_path():
    """With bias correction: torch's AdamW; the fused kernel (chosen for CUDA) gives the same steps."""
    cfg = config(True)
    ref = tiny_model()
    want = run_steps(ref, torch.optim.AdamW(param_groups(ref, WD), lr=LR, betas=BETAS, eps=EPS), 3)
    for device_type, fused in (("cpu", None), ("cuda", True)):
        model = tiny_model()
        opt = client_adamw(param_groups(model, WD), cfg, device_type)
        assert opt.defaults["fused"] is fused and opt.defaults["foreach"] is (None if fused else True)
        got = run_steps(model, opt, 3)  # CPU tensors: torch runs its fused CPU kernel for the "cuda" choice
        for n in got:
            torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-7)
    assert isinstance(client_adamw(param_groups(tiny_model(), WD), config(False), "cuda"), AdamWNoBiasCorrection)


def test_state_keys_and_reload():
    """State is torch Adam's (step, exp_avg, exp_avg_sq): a reloaded optimiser continues identically."""
    a = tiny_model()
    opt_a = AdamWNoBiasCorrection(param_groups(a, WD), lr=LR, betas=BETAS, eps=EPS)
    run_steps(a, opt_a, 2)
    state = copy.deepcopy(opt_a.state_dict())  # as a checkpoint round trip: no tensors shared with opt_a
    assert set(state["state"][0]) == {"step", "exp_avg", "exp_avg_sq"} and float(state["state"][0]["step"]) == 2.0
    b = tiny_model(seed=1)
    b.load_state_dict(a.state_dict())
    opt_b = AdamWNoBiasCorrection(param_groups(b, WD), lr=LR, betas=BETAS, eps=EPS)
    opt_b.load_state_dict(state)
    got_a, got_b = run_steps(a, opt_a, 1), run_steps(b, opt_b, 1)
    assert all(torch.equal(got_a[n], got_b[n]) for n in got_a)


def test_offload_passes_bias_correction_to_deepspeed_cpu_adam():
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    cfg = config(False, **{"deepspeed.zero_stage": 2, "deepspeed.offload_optimizer": "true"})
    params = deepspeed_config(cfg, 1)["optimizer"]["params"]
    assert params["bias_correction"] is False
    assert build_optimizer(cfg, tiny_model())[0] is None  # DeepSpeed builds its CPU Adam from these params
    assert set(params) - {"lr", "betas"} <= set(inspect.signature(DeepSpeedCPUAdam.__init__).parameters)


@pytest.fixture
def single_rank_group():
    """This process as a one-rank gloo group (as the trainer runs without a launcher); env given back."""
    import deepspeed

    keys = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE")
    saved = {k: os.environ.get(k) for k in keys}
    from pretrain.train import _free_port

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False, verbose=False)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.mark.parametrize("zero_stage", [0, 1, 2, 3])
def test_no_bias_correction_under_zero(single_rank_group, zero_stage):
    """DeepSpeed steps the optimiser on its flat fp32 partitions: the weights still follow the formula."""
    import deepspeed

    model = tiny_model()
    want = expected_after(tiny_model(), 2, bias_correction=False)
    opt, _ = build_optimizer(config(False), model)
    ds = {
        "train_batch_size": 1, "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
        "gradient_clipping": 0.0, "zero_optimization": {"stage": zero_stage}, "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
    }
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=ds)
    for k in range(2):
        engine.backward(loss_of(engine, k))
        engine.step()
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), enabled=zero_stage == 3):
        got = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-7)
