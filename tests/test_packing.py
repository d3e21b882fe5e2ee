"""Packed (padding-free) batches: same losses as the padded layout, fixed-shape targets, compiled model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_models import TINY_ENTITY_VOCAB, perturb_, tiny_mluke_config

from pretrain.collator import (
    Collator,
    MaskingConfig,
    count_targets,
    pad_fraction,
    position_counts,
    target_capacity,
)
from pretrain.data import Sample
from pretrain.metrics import Window, summarize
from pretrain.model import MLukeForMaskedLM, segment_block_mask, segment_mask

SPM = 90  # fairseq ids 4..90 are pieces, 91 is <mask>; tiny_mluke_config has 100 word ids
CFG = MaskingConfig(spm_size=SPM, max_mention_length=3, seed=3, mlm_probability=0.3, mep_probability=0.4)


def samples() -> list[Sample]:
    """4 samples of 13, 7, 20 and 4 pieces with 3, 0, 4 and 1 entities, in two languages."""
    rng = np.random.default_rng(0)
    out = []
    for i, (n, k, lang) in enumerate([(13, 3, "en"), (7, 0, "fr"), (20, 4, "fr"), (4, 1, "en")]):
        starts = sorted(rng.choice(n - 1, size=k, replace=False).tolist())
        ends = [min(s + 1 + int(rng.integers(0, 3)), n) for s in starts]
        ents = rng.integers(4, TINY_ENTITY_VOCAB, size=k).tolist()
        out.append(Sample(100 + i, lang, rng.integers(4, SPM + 1, size=n).tolist(), ents, starts, ends))
    return out


def model(dropout: float = 0.0) -> MLukeForMaskedLM:
    torch.manual_seed(0)
    cfg = tiny_mluke_config(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return perturb_(MLukeForMaskedLM(cfg), 0).eval()


def test_packed_layout_is_one_row_with_per_sample_positions():
    b = Collator(CFG, None, layout="packed", languages=("en", "fr"))(samples())
    words = 15 + 9 + 22 + 6
    assert b["input_ids"].shape == (1, words) and (b["input_ids"].shape[1] + b["entity_ids"].shape[1]) % 8 == 0
    assert b["entity_ids"].shape[1] == 64 - words  # 8 real entities + 4 pads, pads last
    assert b["segment_ids"][0].tolist() == [0] * 15 + [1] * 9 + [2] * 22 + [3] * 6
    assert b["entity_segment_ids"][0].tolist() == [0] * 3 + [2] * 4 + [3] + [4] * 4  # pads: a segment of their own
    # fairseq positions restart per sample: <s> of every sample is pad_id + 1 = 2
    pos = b["position_ids"][0].tolist()
    assert pos[:15] == list(range(2, 17)) and pos[15:24] == list(range(2, 11)) and pos[46:] == list(range(2, 8))
    # entity positions index into the entity's own sample (<s> = 0), so never beyond its length
    s = samples()
    assert b["entity_position_ids"][0, 3, 0] == s[2].entity_starts[0] + 1
    assert (b["entity_position_ids"][0, 8:] == -1).all() and (b["entity_ids"][0, 8:] == 0).all()
    # 4 pads among 64 computed positions
    assert position_counts(b) == (64, 4) and pad_fraction(b) == 4 / 64


def test_fixed_size_targets_match_the_padded_labels():
    packed = Collator(CFG, None, layout="packed", languages=("en", "fr"))(samples())
    padded = Collator(CFG, None)(samples())
    assert count_targets(packed) == count_targets(padded)
    k = packed["mlm_positions"].shape[0]
    assert k == target_capacity(52, 0.3, 4, count_targets(packed)[0]) == 24
    positions, labels = packed["mlm_positions"].numpy(), packed["mlm_labels"].numpy()
    valid = labels != -100
    # the same (sample, token, label) triples in both layouts, with the sample's language id
    starts = np.array([0, 15, 24, 46])
    sample_of = np.searchsorted(starts, positions[valid], side="right") - 1
    got = list(zip(sample_of.tolist(), (positions[valid] - starts[sample_of]).tolist(), labels[valid].tolist()))
    dense = padded["mlm_labels"].numpy()
    rows, cols = np.nonzero(dense != -100)
    assert got == list(zip(rows.tolist(), cols.tolist(), dense[rows, cols].tolist()))
    assert packed["mlm_languages"].numpy()[valid].tolist() == [[0, 1, 1, 0][i] for i in sample_of]
    assert (positions[~valid] == 0).all() and (packed["mlm_languages"].numpy()[~valid] == 0).all()


def test_capacity_depends_on_the_row_size_only():
    assert [target_capacity(n, 0.15, 4, 0) for n in (8, 100, 512, 2048)] == [8, 24, 88, 312]
    assert target_capacity(100, 0.15, 4, 25) == 100  # more targets than slots: every position is a slot


def test_capacity_holds_the_masking_budget():
    """Many short samples (where round() and the at-least-one rule add most) never overflow the slots."""
    rng = np.random.default_rng(1)
    for seed in range(20):
        group = [Sample(1000 * seed + i, "en", rng.integers(4, SPM + 1, size=int(rng.integers(1, 12))).tolist(),
                        [5, 6], [0, 0], [1, 1]) for i in range(8)]
        b = Collator(CFG, None, layout="packed")(group)
        words, ents = count_targets(b)
        n_words, n_ents = b["input_ids"].shape[1], b["entity_ids"].shape[1]
        # the bound itself is used, never the every-position fallback
        assert b["mlm_positions"].shape[0] == min(-(-(math.ceil(0.3 * n_words) + 8) // 8) * 8, n_words) >= words
        assert b["mep_positions"].shape[0] == min(-(-(math.ceil(0.4 * n_ents) + 8) // 8) * 8, n_ents) >= ents


def test_packed_losses_equal_padded_losses():
    m = model()
    packed = Collator(CFG, None, layout="packed", languages=("en", "fr"))(samples())
    padded = Collator(CFG, None)(samples())
    with torch.no_grad():
        a, b = m(**padded), m(**packed)
    for k in ("mlm_loss_sum", "mep_loss_sum", "mlm_count", "mep_count", "mlm_correct", "mep_correct"):
        assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6), k
    assert a.mlm_count > 5 and a.mep_count > 2
    # hidden states of every real word are the same in both layouts
    for i, (start, n) in enumerate([(0, 15), (15, 9), (24, 22), (46, 6)]):
        assert torch.allclose(a.word_hidden_states[i, :n], b.word_hidden_states[0, start : start + n], atol=1e-5)


def test_pack_rows_fewest_balanced_rows():
    from pretrain.collator import pack_rows

    def rows(sizes, capacity):
        return [r.tolist() for r in pack_rows(sizes, capacity)]

    # 60 positions need 2 rows of 30: 26 -> A, 18 -> B, 9 -> B (27), 7 fits nowhere: 3 rows, balanced:
    # 26 -> A, 18 -> B, 9 -> C, 7 -> C
    assert rows([18, 9, 26, 7], 30) == [[0], [1, 3], [2]]
    assert rows([18, 9, 26, 7], None) == [[0, 1, 2, 3]]
    assert rows([18, 9, 26, 7], 60) == [[0, 1, 2, 3]]
    assert rows([40, 5], 30) == [[0], [1]]  # larger than a row: a row of its own
    # 8 samples of 90 in rows of 648: 2 rows of 4 (not 7 + 1, which would pad the second row to 630)
    assert rows([90] * 8, 648) == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert rows([], 30) == []


def test_rows_of_bounded_capacity_give_the_padded_losses():
    """With a capacity the micro-batch becomes several rows (attention never spans more than one
    capacity), and the losses, counts and hidden states are still those of the padded layout."""
    m = model()
    s = samples()  # positions per sample (words with <s> </s> + entities): 18, 9, 26, 7
    packed = Collator(CFG, None, layout="packed", languages=("en", "fr"), row_capacity=30)(s)
    padded = Collator(CFG, None)(s)
    # rows [0] (15 words, 3 entities), [1, 3] (9 + 6 words, 0 + 1 entities), [2] (22, 4): words padded to
    # 22, entity slots to 32 - 22 = 10 (positions rounded up to a multiple of 8)
    assert packed["input_ids"].shape == (3, 22) and packed["entity_ids"].shape == (3, 10)
    assert packed["segment_ids"][1].tolist() == [1] * 9 + [3] * 6 + [4] * 7  # 4: the pad segment
    assert packed["position_ids"][1].tolist() == list(range(2, 11)) + list(range(2, 8)) + [1] * 7
    assert packed["entity_segment_ids"][0].tolist() == [0] * 3 + [4] * 7
    assert packed["entity_segment_ids"][1].tolist() == [3] + [4] * 9
    assert position_counts(packed) == (96, 96 - 60)
    with torch.no_grad():
        a, b = m(**padded), m(**packed)
    for k in ("mlm_loss_sum", "mep_loss_sum", "mlm_count", "mep_count", "mlm_correct", "mep_correct"):
        assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6), k
    for i, (row, start, n) in enumerate([(0, 0, 15), (1, 0, 9), (2, 0, 22), (1, 9, 6)]):
        assert torch.allclose(a.word_hidden_states[i, :n], b.word_hidden_states[row, start : start + n], atol=1e-5)


def test_gradients_equal_padded_gradients():
    m = model()
    grads = []
    for layout in ("padded", "packed"):
        m.zero_grad(set_to_none=True)
        o = m(**Collator(CFG, None, layout=layout)(samples()))
        (o.mlm_loss_sum / o.mlm_count + o.mep_loss_sum / o.mep_count).backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-6), n


def test_per_language_sums_in_the_window():
    m = model()
    batch = Collator(CFG, None, layout="packed", languages=("en", "fr"))(samples())
    padded = Collator(CFG, None)(samples())
    w = Window(("en", "fr"))
    with torch.no_grad():
        w.add_model(m(**batch), batch)
        per_sample = [m(**{k: v[i : i + 1] for k, v in padded.items()}) for i in range(4)]
    total = w.reduced(torch.device("cpu"))
    for lang, rows in (("en", [0, 3]), ("fr", [1, 2])):
        for key in ("mlm_loss_sum", "mlm_count", "mlm_correct", "mep_loss_sum", "mep_count", "mep_correct"):
            want = sum(float(per_sample[i][key]) for i in rows)
            assert total[f"{key}/{lang}"] == pytest.approx(want, rel=1e-5, abs=1e-6), (key, lang)
    s = summarize(total, 1, 1.0, 1, None, ("en", "fr"))
    assert s["mlm_loss/en"] == pytest.approx(total["mlm_loss_sum/en"] / total["mlm_count/en"])
    assert total["mlm_count/en"] + total["mlm_count/fr"] == total["mlm_count"]


def test_forward_and_loss_compile_without_graph_breaks():
    m = model()
    batch = Collator(CFG, None, layout="packed", languages=("en", "fr"))(samples())
    keys = [k for k in batch if not k.endswith("_languages")]

    def loss(**b):
        o = m(**b)
        return o.mlm_loss_sum / o.mlm_count + o.mep_loss_sum / o.mep_count

    compiled = torch.compile(loss, fullgraph=True, dynamic=True)
    with torch.no_grad():
        want, got = loss(**{k: batch[k] for k in keys}), compiled(**{k: batch[k] for k in keys})
    assert torch.allclose(want, got, rtol=1e-5)


def test_flex_block_mask_equals_the_dense_segment_mask():
    seg = torch.tensor([[0] * 70 + [1] * 90 + [2] * 35 + [3] * 5])
    q, k, v = (torch.randn(1, 2, 200, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    from torch.nn.attention.flex_attention import flex_attention

    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=segment_mask(seg))
    with torch.no_grad():  # FlexAttention has no CPU backward: forward only here (the GPU trains with it)
        got = flex_attention(q, k, v, block_mask=segment_block_mask(seg))
    assert torch.allclose(want, got, atol=1e-5)


def test_compiled_flex_model_gives_the_sdpa_losses():
    """The GPU path (FlexAttention inside the compiled model), forward only: CPU FlexAttention has no backward."""
    m = model()
    batch = {k: v for k, v in Collator(CFG, None, layout="packed")(samples()).items() if not k.endswith("_languages")}
    with torch.no_grad():
        want = m(**batch)
        m.attention = "flex"
        got = torch.compile(m, fullgraph=True)(**batch)
    for k in ("mlm_loss_sum", "mep_loss_sum", "mlm_correct", "mep_correct"):
        assert torch.allclose(want[k], got[k], rtol=1e-5), k
