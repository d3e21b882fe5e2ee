"""The model's hand-written autograd functions against the PyTorch expressions they replace.

- ``tied_decoder_loss``: the heads' decoder and cross-entropy fused (the logits kept once);
- ``_DropoutAttentionCPU``: attention with dropout on a CPU, the mask drawn as 31-bit integers;
- ``Dropout``: hidden-state dropout with the same mask on a CPU.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pretrain.model import IGNORE_INDEX, Dropout, _DropoutAttentionCPU, tied_decoder_loss


def decoder_case(K: int = 7, H: int = 16, V: int = 50, bias: bool = True):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(K, H, generator=g, requires_grad=True)
    w = torch.randn(V, H, generator=g, requires_grad=True)
    b = torch.randn(V, generator=g, requires_grad=True) if bias else None
    labels = torch.randint(0, V, (K,), generator=g)
    labels[[1, 4]] = IGNORE_INDEX  # unused slots of the fixed-size masked-position tensor
    return x, w, b, labels


def reference_loss(x, w, b, labels):
    logits = F.linear(x, w, b).float()
    loss = F.cross_entropy(logits, labels, reduction="none")
    correct = (logits.argmax(-1) == labels) & labels.ne(IGNORE_INDEX)
    return loss, correct


@pytest.mark.parametrize("bias", [True, False])
def test_fused_decoder_loss_equals_linear_then_cross_entropy(bias):
    x, w, b, labels = decoder_case(bias=bias)
    # A weight on each row's loss, as the trainer's sum over rows and languages gives (and 0 for ignored).
    row_weights = torch.linspace(0.5, 2.0, x.shape[0])
    params = [t for t in (x, w, b) if t is not None]
    loss, correct = tied_decoder_loss(x, w, b, labels)
    grads = torch.autograd.grad((loss * row_weights).sum(), params)
    ref_loss, ref_correct = reference_loss(x, w, b, labels)
    ref_grads = torch.autograd.grad((ref_loss * row_weights).sum(), params)
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-6)
    assert loss[[1, 4]].tolist() == [0.0, 0.0]
    assert torch.equal(correct, ref_correct)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_fused_decoder_loss_counts_a_correct_prediction():
    x, w, b, labels = decoder_case()
    with torch.no_grad():
        predicted = F.linear(x, w, b).argmax(-1)
    labels = torch.where(labels.eq(IGNORE_INDEX), labels, predicted)
    labels[0] = (predicted[0] + 1) % w.shape[0]  # one wrong
    _, correct = tied_decoder_loss(x, w, b, labels)
    assert correct.tolist() == [False, False, True, True, False, True, True]


def test_fused_decoder_loss_skips_frozen_gradients():
    """Stage 1 freezes the word table: no [V, H] gradient is computed for it."""
    x, w, b, labels = decoder_case()
    w.requires_grad_(False)
    b.requires_grad_(False)
    loss, _ = tied_decoder_loss(x, w, b, labels)
    (gx,) = torch.autograd.grad(loss.sum(), [x])
    ref_loss, _ = reference_loss(x, w, b, labels)
    torch.testing.assert_close(gx, torch.autograd.grad(ref_loss.sum(), [x])[0], atol=1e-6, rtol=1e-5)


def test_fused_decoder_loss_under_bf16_autocast_matches_unfused():
    """Under autocast the logits come from a bf16 matmul (as F.linear's), the softmax runs in fp32, and the
    gradients return in each input's dtype."""
    x, w, b, labels = decoder_case(V=300)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = tied_decoder_loss(x, w, b, labels)
        ref_loss, _ = reference_loss(x, w, b, labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-6)  # the same bf16 logits, in fp32
    grads = torch.autograd.grad(loss.sum(), [x, w, b])
    ref_grads = torch.autograd.grad(ref_loss.sum(), [x, w, b])
    for got, want in zip(grads, ref_grads, strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, atol=2e-2, rtol=2e-2)


def attention_case(T: int = 24, heads: int = 3, d: int = 8):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(2, heads, T, d, generator=g, requires_grad=True) for _ in range(3)]


def segment_mask(T: int) -> torch.Tensor:
    segments = torch.tensor([[0] * (T // 2) + [1] * (T - T // 2), [0] * T])
    return segments[:, None, :, None] == segments[:, None, None, :]


@pytest.mark.parametrize("masked", [False, True])
def test_cpu_dropout_attention_is_attention_with_that_dropout_mask(masked):
    """The output and gradients equal softmax(qk^T/sqrt(d) | mask), with the weights the drawn integers
    drop zeroed and the rest scaled by 1/(1-p), @ v."""
    q, k, v = attention_case()
    p = 0.25
    mask = segment_mask(q.shape[2]) if masked else None
    torch.manual_seed(5)
    y = _DropoutAttentionCPU.apply(q, k, v, mask, p)
    gy = torch.randn_like(y)
    grads = torch.autograd.grad(y, (q, k, v), gy)

    torch.manual_seed(5)  # the same draws: uniform integers on [0, 2^31), dropped below p * 2^31
    draws = torch.empty(q.shape[0], q.shape[1], q.shape[2], k.shape[2], dtype=torch.int32).random_()
    drop = draws < round(p * 2**31)
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    ref = (scores.softmax(-1).masked_fill(drop, 0.0) / (1 - p)) @ v
    torch.testing.assert_close(y, ref, atol=1e-6, rtol=1e-5)
    for got, want in zip(grads, torch.autograd.grad(ref, (q, k, v), gy), strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    if masked:  # values of the first row's second segment never reach the queries of its first
        half = q.shape[2] // 2
        other = v.detach().clone()
        other[0, :, half:] += 1.0
        torch.manual_seed(5)
        y2 = _DropoutAttentionCPU.apply(q, k, other, mask, p)
        assert torch.equal(y2[0, :, :half], y[0, :, :half].detach())
        assert not torch.equal(y2[0, :, half:], y[0, :, half:].detach())


def test_cpu_dropout_attention_drops_p_of_the_weights():
    """With q = k = 0 every weight is 1/T: with v = identity the output IS the weight matrix, each entry
    1/(T (1 - p)) where kept and 0 where dropped."""
    T, p = 256, 0.1
    q = k = torch.zeros(1, 4, T, 8)
    v = torch.eye(T).expand(1, 4, T, T)
    torch.manual_seed(0)
    kept = (_DropoutAttentionCPU.apply(q, k, v, None, p) * T * (1 - p)).round()
    assert set(kept.unique().tolist()) == {0.0, 1.0}
    assert abs(1 - kept.mean().item() - p) < 0.003  # 262,144 draws: 5 standard deviations is 0.003


def test_cpu_dropout_zeroes_p_and_scales_the_rest():
    p = 0.1
    x = torch.randn(64, 48, 32, requires_grad=True)
    layer = Dropout(p).train()
    torch.manual_seed(3)
    y = layer(x)
    gy = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, [x], gy)
    torch.manual_seed(3)
    drop = torch.empty(x.shape, dtype=torch.int32).random_() < round(p * 2**31)
    assert torch.equal(y, x.detach().masked_fill(drop, 0.0) * (1 / (1 - p)))
    assert torch.equal(gx, gy.masked_fill(drop, 0.0) * (1 / (1 - p)))
    assert abs(drop.float().mean().item() - p) < 0.005  # 98,304 draws: 5 standard deviations is 0.005
    assert torch.equal(layer.eval()(x), x)
