"""GPU readiness checked on CPU: the trainer follows DeepSpeed's accelerator (not torch.cuda), and the
generated DeepSpeed config makes a bf16 engine accumulate and reduce gradients in fp32.

One single-rank process group (gloo) in this process serves every test of the module.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import perturb_, tiny_mluke_config

from pretrain.config import from_dict
from pretrain.model import MLukeForMaskedLM
from pretrain.optim import build_optimizer, deepspeed_config
from pretrain.train import DistEnv, init_process_group


def _cfg(**deepspeed) -> object:
    return from_dict(
        {
            "output_dir": "unused",
            "data": {"shards": "unused"},
            "train": {"global_batch_size": 4, "micro_batch_size": 2, "max_steps": 10, "warmup_steps": 0},
            "deepspeed": {"timeout_s": 60, **deepspeed},
        }
    )


@pytest.fixture(scope="module")
def process_group():
    """init_process_group as the trainer calls it, while torch.cuda claims a GPU that must not be used.

    The group stays up afterwards, as after tests/export_fixtures.py's runs (DeepSpeed keeps references to
    it: a destroyed group breaks the next in-process run); the rendezvous variables are given back."""
    import torch.distributed as dist

    with pytest.MonkeyPatch.context() as env:
        env.setenv("DS_ACCELERATOR", "cpu")
        for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE"):
            env.setenv(name, "unset")  # recorded, so the context restores the caller's value (or absence)
            env.delenv(name)
        with pytest.MonkeyPatch.context() as mp:  # only while the group starts: DeepSpeed's torch.compile
            mp.setattr(torch.cuda, "is_available", lambda: True)  # trace rules must see the real functions
            mp.setattr(torch.cuda, "device_count", lambda: 8)

            def no_set_device(*args, **kwargs):
                raise AssertionError("torch.cuda.set_device called on a CPU-accelerator rank")

            mp.setattr(torch.cuda, "set_device", no_set_device)
            device = init_process_group(_cfg(), DistEnv(0, 3, 1))
        yield device, dist.get_backend()


def test_cpu_accelerator_gives_gloo_and_cpu_even_if_cuda_is_available(process_group):
    from pretrain import device as accel
    from pretrain.metrics import memory_stats, peak_flops_per_device

    device, backend = process_group
    assert device == torch.device("cpu")
    assert backend == "gloo"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.cuda, "is_available", lambda: True)

        def no_name(*args, **kwargs):
            raise AssertionError("torch.cuda.get_device_name called on a CPU-accelerator rank")

        mp.setattr(torch.cuda, "get_device_name", no_name)
        assert accel.pin_memory() is False
        assert peak_flops_per_device(None) is None  # no GPU name asked for: MFU is null on CPU ranks
        assert set(memory_stats()) == {"host_max_rss_gib"}
        ds = deepspeed_config(_cfg(zero_stage=3, offload_optimizer=True, offload_param=True), 1)
        assert ds["zero_optimization"]["offload_optimizer"]["pin_memory"] is False


def test_zero3_engine_leaves_torch_linear_alone(process_group):
    """ZeRO-3's memory-efficient linear (a process-wide replacement of F.linear that adds the bias in place)
    is off: selective recompute keeps matmul outputs and must get them unmodified."""
    import deepspeed

    original = torch.nn.functional.linear
    cfg = _cfg(zero_stage=3, precision="bf16")
    ds = deepspeed_config(cfg, 1)
    assert ds["zero_optimization"]["memory_efficient_linear"] is False
    model = MLukeForMaskedLM(tiny_mluke_config(recompute="selective"))
    optimizer, _ = build_optimizer(cfg, model)
    with deepspeed.zero.Init(config_dict_or_path=ds):
        MLukeForMaskedLM(tiny_mluke_config())
    deepspeed.initialize(model=model, optimizer=optimizer, config=ds)
    assert torch.nn.functional.linear is original


def test_generated_config_asks_for_fp32_accumulation_and_communication():
    assert "data_types" not in deepspeed_config(_cfg(precision="fp32"), 1)
    for precision in ("bf16", "fp16"):
        ds = deepspeed_config(_cfg(precision=precision), 1)
        assert ds["data_types"] == {"grad_accum_dtype": "fp32"}
        assert ds["communication_data_type"] == "fp32"


@pytest.mark.parametrize("zero_stage", [1, 2, 3])
def test_bf16_engine_accumulates_and_reduces_in_fp32(process_group, zero_stage):
    """The engine DeepSpeed builds from the generated config reports fp32 accumulation and communication,
    and its optimizer really holds fp32 gradient buffers after an accumulated step."""
    import deepspeed

    cfg = _cfg(zero_stage=zero_stage, precision="bf16")
    torch.manual_seed(0)
    model = perturb_(MLukeForMaskedLM(tiny_mluke_config()), 0)
    optimizer, _ = build_optimizer(cfg, model)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(cfg, 1))
    assert engine.get_data_types() == (torch.bfloat16, torch.float32)
    assert engine.communication_data_type == torch.float32
    assert engine.gradient_accumulation_steps() == 2
    opt = engine.optimizer
    if zero_stage == 1:
        assert type(opt).__name__ == "BF16_Optimizer"  # DeepSpeed's fp32-accumulating ZeRO-1
        buffers = [g for groups in opt.fp32_groups_gradients for g in groups]
    else:
        assert opt.gradient_accumulation_dtype == torch.float32
        buffers = None
    gen = torch.Generator().manual_seed(1)
    for _ in range(2):  # one optimiser step of two micro-batches
        ids = torch.randint(5, 100, (2, 8), generator=gen)
        labels = torch.where(torch.rand(2, 8, generator=gen) < 0.3, ids, -100)
        labels[:, 1] = ids[:, 1]
        out = engine(input_ids=ids, attention_mask=torch.ones_like(ids), mlm_labels=labels)
        engine.backward(out.mlm_loss_sum / out.mlm_count)
        if zero_stage == 1:
            assert buffers and all(b.dtype == torch.float32 for b in buffers)
        engine.step()
    assert engine.global_steps == 1
