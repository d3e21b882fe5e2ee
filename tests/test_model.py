"""pretrain/model.py against the real transformers classes (tiny random weights, CPU, fp32, eval)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from tiny_models import (
    TINY_ENTITY_EMB,
    TINY_ENTITY_VOCAB,
    perturb_,
    save_tiny_xlmr,
    save_tiny_xlmr_xl,
    tiny_mluke_config,
)
from transformers import LukeForMaskedLM, XLMRobertaForMaskedLM, XLMRobertaXLForMaskedLM

from data_prep.common.errors import InputError
from pretrain.init_from import init_from_xlmr, model_config
from pretrain.model import (
    MLukeForMaskedLM,
    entity_parameter_names,
    luke_inputs,
    model_flops_per_token,
)

ATOL = 1e-5
POOLER = ["luke.pooler.dense.weight", "luke.pooler.dense.bias"]


def make_batch(with_labels: bool = True) -> dict[str, torch.Tensor]:
    """3 sequences of lengths 12, 9 and 6 (padded with 1), 4 entity slots of which 4, 3 and 2 are real,
    mentions of 1 to 3 tokens (token indices count <s> as 0), a few masked words and entities."""
    gen = torch.Generator().manual_seed(0)
    B, L, E, M = 3, 12, 4, 3
    input_ids = torch.randint(5, 100, (B, L), generator=gen)
    attention_mask = torch.zeros(B, L, dtype=torch.long)
    for b, n in enumerate([12, 9, 6]):
        input_ids[b, 0], input_ids[b, n - 1] = 0, 2
        input_ids[b, n:] = 1
        attention_mask[b, :n] = 1
    entity_attention_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]])
    entity_ids = torch.randint(4, TINY_ENTITY_VOCAB, (B, E), generator=gen) * entity_attention_mask
    mentions = {
        (0, 0): [1, 2, 3], (0, 1): [5], (0, 2): [7, 8], (0, 3): [10],
        (1, 0): [2, 3], (1, 1): [4], (1, 2): [5, 6, 7],
        (2, 0): [1], (2, 1): [3, 4],
    }  # fmt: skip
    entity_position_ids = torch.full((B, E, M), -1)
    for (b, e), toks in mentions.items():
        entity_position_ids[b, e, : len(toks)] = torch.tensor(toks)
    batch = dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        entity_ids=entity_ids,
        entity_attention_mask=entity_attention_mask,
        entity_position_ids=entity_position_ids,
    )
    if with_labels:
        mlm_labels = torch.full((B, L), -100)
        for b, i, t in [(0, 2, 7), (0, 9, 3), (1, 5, 9), (1, 1, 42), (2, 1, 11)]:
            mlm_labels[b, i] = t
        mep_labels = torch.full((B, E), -100)
        for b, e, t in [(0, 1, 4), (0, 3, 17), (1, 2, 8), (2, 0, 3)]:
            mep_labels[b, e] = t
        batch.update(mlm_labels=mlm_labels, mep_labels=mep_labels)
    return batch


def tiny_mluke(seed: int = 1, **overrides) -> MLukeForMaskedLM:
    torch.manual_seed(seed)
    return perturb_(MLukeForMaskedLM(tiny_mluke_config(**overrides)), seed)


# ---------------------------------------------------------------------------------------------------
# 1. Same weights, same outputs as transformers' LukeForMaskedLM


def test_same_weights_give_luke_for_masked_lm_logits_and_losses():
    mine = tiny_mluke().eval()
    hf = LukeForMaskedLM(mine.config.to_luke_config()).eval()
    # Names are LukeForMaskedLM's: our state dict loads with only the (unused) pooler missing ...
    result = hf.load_state_dict(mine.state_dict(), strict=False)
    assert sorted(result.missing_keys) == sorted(POOLER) and result.unexpected_keys == []
    # ... and theirs, minus the pooler, loads strictly into ours.
    back = MLukeForMaskedLM(tiny_mluke_config())
    back.load_state_dict({k: v for k, v in hf.state_dict().items() if k not in POOLER}, strict=True)
    for k, v in mine.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k

    batch = make_batch()
    with torch.no_grad():
        out = mine(**batch, return_logits=True)
        ref = hf(**luke_inputs(batch))
    assert out.mlm_logits.shape == ref.logits.shape == (3, 12, 100)
    assert out.mep_logits.shape == ref.entity_logits.shape == (3, 4, TINY_ENTITY_VOCAB)
    real = batch["attention_mask"].bool()  # logits at pads are meaningless in both
    torch.testing.assert_close(out.mlm_logits[real], ref.logits[real], atol=ATOL, rtol=0)
    real_e = batch["entity_attention_mask"].bool()
    torch.testing.assert_close(out.mep_logits[real_e], ref.entity_logits[real_e], atol=ATOL, rtol=0)
    assert out.mlm_count.item() == 5 and out.mep_count.item() == 4
    torch.testing.assert_close(out.mlm_loss_sum / out.mlm_count, ref.mlm_loss, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.mep_loss_sum / out.mep_count, ref.mep_loss, atol=ATOL, rtol=0)
    # accuracy counts agree with the reference logits' argmax
    sel = batch["mlm_labels"] != -100
    assert out.mlm_correct.item() == (ref.logits[sel].argmax(-1) == batch["mlm_labels"][sel]).sum().item()
    sel = batch["mep_labels"] != -100
    assert (
        out.mep_correct.item() == (ref.entity_logits[sel].argmax(-1) == batch["mep_labels"][sel]).sum().item()
    )


@pytest.mark.parametrize("objectives", ["mlm+mep", "mep_only"])
def test_same_weights_give_luke_for_masked_lm_gradients(objectives):
    """Backward through both models: every gradient agrees (the embedding tables' sparse lookup
    gradients included; with no MLM labels the word table's gradient comes from the lookup alone)."""
    mine = tiny_mluke().eval()
    hf = LukeForMaskedLM(mine.config.to_luke_config()).eval()
    hf.load_state_dict(mine.state_dict(), strict=False)
    batch = make_batch()
    if objectives == "mep_only":
        batch["mlm_labels"] = None
    out = mine(**batch)
    loss = out.mep_loss_sum / out.mep_count
    if batch["mlm_labels"] is not None:
        loss = loss + out.mlm_loss_sum / out.mlm_count
    loss.backward()
    ref = hf(**luke_inputs(batch))
    torch.testing.assert_close(loss, ref.loss, atol=ATOL, rtol=0)
    ref.loss.backward()
    hf_grads = {n: p.grad for n, p in hf.named_parameters()}
    # transformers 5 does not tie lm_head.decoder.weight to the word table; here they are one tensor.
    word = "luke.embeddings.word_embeddings.weight"
    hf_decoder = hf_grads["lm_head.decoder.weight"]
    if hf_decoder is not None:
        hf_grads[word] = hf_grads[word] + hf_decoder
    for n, p in mine.named_parameters():
        if objectives == "mep_only" and n.startswith("lm_head."):
            assert p.grad is None, n
            continue
        assert p.grad is not None and not p.grad.is_sparse, n
        torch.testing.assert_close(p.grad, hf_grads[n], atol=1e-6, rtol=1e-4, msg=n)


def test_entity_position_embedding_is_mean_of_mention_positions():
    """Checked by hand against the position table, independently of transformers."""
    model = tiny_mluke().eval()
    ent = model.luke.entity_embeddings
    ids = torch.tensor([[5, 6, 7]])
    pos_ids = torch.tensor([[[1, 2, 3], [4, -1, -1], [-1, -1, -1]]])
    table = ent.position_embeddings.weight
    expected_pos = torch.stack([table[[1, 2, 3]].mean(0), table[4], torch.zeros_like(table[0])])
    x = (
        ent.entity_embedding_dense(ent.entity_embeddings(ids))
        + expected_pos
        + ent.token_type_embeddings.weight[0]
    )
    expected = F.layer_norm(x, (32,), ent.LayerNorm.weight, ent.LayerNorm.bias, eps=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(ent(ids, pos_ids)[0], expected, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------------
# 2./3. Initialised from XLM-R (post-LN) and XLM-R XL (pre-LN): no entities -> XLM-R's word logits


def _no_entity_variants(batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """The same words with: no entity inputs; E = 0; entities present but all masked out."""
    words = {k: batch[k] for k in ("input_ids", "attention_mask")}
    B = batch["input_ids"].shape[0]
    empty = dict(
        entity_ids=torch.zeros(B, 0, dtype=torch.long),
        entity_attention_mask=torch.zeros(B, 0, dtype=torch.long),
        entity_position_ids=torch.zeros(B, 0, 3, dtype=torch.long),
    )
    masked_out = {k: batch[k] for k in ("entity_ids", "entity_position_ids")}
    masked_out["entity_attention_mask"] = torch.zeros_like(batch["entity_attention_mask"])
    return [words, {**words, **empty}, {**words, **masked_out}]


@pytest.mark.parametrize("layout", ["post_ln", "pre_ln"])
def test_init_from_xlmr_gives_xlmr_word_logits_without_entities(tmp_path, layout):
    if layout == "post_ln":
        path, hf_cls = save_tiny_xlmr(tmp_path / "xlmr"), XLMRobertaForMaskedLM
    else:
        path, hf_cls = save_tiny_xlmr_xl(tmp_path / "xlmr_xl"), XLMRobertaXLForMaskedLM
    ref_model = hf_cls.from_pretrained(path).eval()
    cfg = model_config(path, n_words=100, n_entities=TINY_ENTITY_VOCAB, entity_emb_size=TINY_ENTITY_EMB)
    assert cfg.pre_layer_norm == (layout == "pre_ln")
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == (32, 2, 100)
    torch.manual_seed(3)
    model = MLukeForMaskedLM(cfg)
    entity_before = {
        n: p.detach().clone() for n, p in model.named_parameters() if n in entity_parameter_names(model)
    }
    loaded = init_from_xlmr(model, path)
    model.eval()
    assert set(loaded) == {n for n, _ in model.named_parameters()} - set(entity_before)

    # Entity parameters keep their init, except the position table, which takes XLM-R's (shifted by 2).
    word_pos = model.luke.embeddings.position_embeddings.weight
    entity_pos = model.luke.entity_embeddings.position_embeddings.weight
    torch.testing.assert_close(entity_pos[:64], word_pos[2:66], atol=0, rtol=0)
    for n, p in model.named_parameters():
        if n in entity_before and n != "luke.entity_embeddings.position_embeddings.weight":
            assert torch.equal(p, entity_before[n]), n

    batch = make_batch(with_labels=False)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        expected = ref_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        for inputs in _no_entity_variants(batch):
            got = model(**inputs, return_logits=True).mlm_logits
            torch.testing.assert_close(got[real], expected[real], atol=ATOL, rtol=0)
        # With real entities the words attend to them: the logits must move.
        with_entities = model(**batch, return_logits=True).mlm_logits
    assert (with_entities[real] - expected[real]).abs().max() > 1e-3


def test_init_from_rejects_bad_directories(tmp_path):
    with pytest.raises(InputError, match="config.json: not found"):
        model_config(tmp_path, 100, 10, 16)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(InputError, match="model_type 'bert' is neither an XLM-R backbone"):
        model_config(tmp_path, 100, 10, 16)

    path = save_tiny_xlmr(tmp_path / "xlmr")
    too_deep = MLukeForMaskedLM(tiny_mluke_config(num_hidden_layers=3))
    with pytest.raises(InputError, match="checkpoint lacks 16 weights"):
        init_from_xlmr(too_deep, path)
    too_wide = MLukeForMaskedLM(tiny_mluke_config(intermediate_size=48))
    with pytest.raises(InputError, match="has shape"):
        init_from_xlmr(too_wide, path)
    (path / "model.safetensors").unlink()
    with pytest.raises(InputError, match="no model.safetensors"):
        init_from_xlmr(too_wide, path)


# ---------------------------------------------------------------------------------------------------
# 4. Heads only on masked positions; what gets gradients; stage-1 parameters


def test_masked_only_heads_equal_full_logits_cross_entropy():
    model = tiny_mluke().eval()
    batch = make_batch()
    out = model(**batch, return_logits=True)
    mlm = F.cross_entropy(out.mlm_logits.flatten(0, 1), batch["mlm_labels"].flatten(), reduction="sum")
    mep = F.cross_entropy(out.mep_logits.flatten(0, 1), batch["mep_labels"].flatten(), reduction="sum")
    torch.testing.assert_close(out.mlm_loss_sum, mlm, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.mep_loss_sum, mep, atol=1e-5, rtol=0)
    # The heads see exactly the masked rows (5 words, 4 entities), never the whole sequence ...
    seen: list[tuple[str, tuple[int, ...]]] = []
    for name, module in (("lm_head", model.lm_head.dense), ("entity_predictions", model.entity_predictions.transform)):
        module.register_forward_hook(lambda m, args, o, name=name: seen.append((name, args[0].shape)))
    model(**batch)
    assert seen == [("lm_head", (5, 32)), ("entity_predictions", (4, 32))]
    # ... and nothing without labels: zero sums and counts.
    seen.clear()
    none = model(**make_batch(with_labels=False))
    assert seen == []
    assert [
        none.mlm_loss_sum.item(),
        none.mlm_count.item(),
        none.mep_loss_sum.item(),
        none.mep_count.item(),
    ] == [0] * 4


def test_gradients_flow_only_where_expected():
    model = tiny_mluke().eval()
    batch = make_batch()
    batch["mep_labels"] = None
    model(**batch).mlm_loss_sum.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    # MLM only: the entity prediction head is never evaluated ...
    for n in ["entity_predictions.bias", "entity_predictions.transform.dense.weight"]:
        assert grads[n] is None, n
    assert grads["lm_head.dense.weight"].abs().sum() > 0
    # ... the entity table gets gradient (the words attend to the entities) only in the rows of real
    # entity slots: padded slots are masked out of attention.
    table_grad = grads["luke.entity_embeddings.entity_embeddings.weight"]
    used = batch["entity_ids"][batch["entity_attention_mask"].bool()].unique()
    assert torch.all(table_grad[used].abs().sum(-1) > 0)
    unused = torch.ones(TINY_ENTITY_VOCAB, dtype=torch.bool)
    unused[used] = False
    assert torch.all(table_grad[unused] == 0)  # includes row 0, the padding entity
    # Word-embedding rows of tokens that appear nowhere get gradient only through the tied decoder,
    # and only via the softmax over masked positions: non-zero everywhere (dense softmax) is expected.
    assert grads["luke.embeddings.word_embeddings.weight"][50].abs().sum() > 0


def test_stage1_parameters_are_exactly_the_entity_side():
    model = tiny_mluke()
    expected = [
        "luke.entity_embeddings.entity_embeddings.weight",
        "luke.entity_embeddings.entity_embedding_dense.weight",
        "luke.entity_embeddings.position_embeddings.weight",
        "luke.entity_embeddings.token_type_embeddings.weight",
        "luke.entity_embeddings.LayerNorm.weight",
        "luke.entity_embeddings.LayerNorm.bias",
        "entity_predictions.bias",
        "entity_predictions.transform.dense.weight",
        "entity_predictions.transform.dense.bias",
        "entity_predictions.transform.LayerNorm.weight",
        "entity_predictions.transform.LayerNorm.bias",
    ]
    assert entity_parameter_names(model) == expected
    params = model.stage1_trainable_parameters()
    by_id = {id(p): n for n, p in model.named_parameters()}
    assert [by_id[id(p)] for p in params] == expected
    # Freezing everything else (what the trainer does in stage 1) leaves the word side without grads.
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    out = model(**make_batch())
    (out.mlm_loss_sum + out.mep_loss_sum).backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == (n in expected), n


def test_tied_weights_are_one_tensor():
    model = tiny_mluke()
    assert model.lm_head.decoder.weight is model.luke.embeddings.word_embeddings.weight
    assert model.lm_head.bias is model.lm_head.decoder.bias
    assert model.entity_predictions.decoder.weight is model.luke.entity_embeddings.entity_embeddings.weight
    names = [n for n, _ in model.named_parameters()]
    assert "lm_head.decoder.weight" not in names and "entity_predictions.decoder.weight" not in names
    assert {"lm_head.decoder.weight", "lm_head.decoder.bias", "entity_predictions.decoder.weight"} <= set(
        model.state_dict()
    )


# ---------------------------------------------------------------------------------------------------
# 5. Activation checkpointing changes memory, not numbers


@pytest.mark.parametrize("pre_layer_norm", [False, True])
@pytest.mark.parametrize("mode", ["gradient_checkpointing", "full", "selective"])
def test_gradient_checkpointing_gives_identical_loss_and_grads(pre_layer_norm, mode):
    results = []
    for recompute in (False, True):
        overrides = {"gradient_checkpointing": True} if mode == "gradient_checkpointing" and recompute else {}
        if recompute and mode != "gradient_checkpointing":
            overrides = {"recompute": mode}
        model = tiny_mluke(pre_layer_norm=pre_layer_norm, **overrides).train()
        torch.manual_seed(7)  # same dropout masks in both runs (checkpoint replays the RNG state)
        out = model(**make_batch())
        loss = out.mlm_loss_sum / out.mlm_count + out.mep_loss_sum / out.mep_count
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.equal(loss_a, loss_b)
    for n in grads_a:
        torch.testing.assert_close(grads_a[n], grads_b[n], atol=1e-7, rtol=0, msg=n)


def _ops_run_in_backward(model, batch) -> dict[str, int]:
    """How often each ATen op runs during ``backward`` (the replay of a checkpointed layer shows up here)."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops[str(func.overloadpacket.__name__)] += 1
            return func(*args, **(kwargs or {}))

    out = model(**batch)
    with Count() as count:
        (out.mlm_loss_sum + out.mep_loss_sum).backward()
    return count.ops


def test_selective_recompute_replays_the_cheap_ops_not_the_matmuls():
    """Selective recompute runs GELU, LayerNorm and the attention core again in backward (their
    activations were not kept) but no weight matmul beyond what backward itself needs; full recompute
    replays the matmuls too."""
    batch = make_batch()
    ops = {mode: _ops_run_in_backward(tiny_mluke(recompute=mode).train(), batch) for mode in ("none", "selective", "full")}
    layers = tiny_mluke_config().num_hidden_layers
    matmuls = ("mm", "addmm")
    assert ops["none"]["gelu"] == 0 and ops["selective"]["gelu"] == ops["full"]["gelu"] == layers
    assert ops["selective"]["native_layer_norm"] == ops["full"]["native_layer_norm"] == 2 * layers
    assert ops["none"]["native_layer_norm"] == 0
    # the attention core (the CPU dropout path here): softmax and the two score/value bmm's per layer, replayed
    assert ops["none"]["_softmax"] == 0 and ops["selective"]["_softmax"] == ops["full"]["_softmax"] == layers
    assert ops["selective"]["bmm"] == ops["full"]["bmm"] == ops["none"]["bmm"] + 2 * layers
    # the weight matmuls: backward's own gradient matmuls only, except under full recompute (6 per layer)
    assert sum(ops["selective"][k] for k in matmuls) == sum(ops["none"][k] for k in matmuls)
    assert sum(ops["full"][k] for k in matmuls) == sum(ops["none"][k] for k in matmuls) + 6 * layers


# ---------------------------------------------------------------------------------------------------
# FLOPs estimate


def test_model_flops_per_token_counts_encoder_as_six_n():
    """With no entities and no masking, training FLOPs/token = 6 x (encoder matmul weights) + attention."""
    cfg = tiny_mluke_config()
    model = MLukeForMaskedLM(cfg)
    n_matmul = sum(
        p.numel() for n, p in model.luke.encoder.named_parameters() if n.endswith("weight") and p.dim() == 2
    )
    seq = 10
    attention = 2 * 3 * 2 * 2 * seq * 32  # layers x (fwd+bwd) x (QK^T, AV) x 2 flops/MAC x T x H per token
    assert model_flops_per_token(cfg, seq, 0, mask_prob=0.0) == 6 * n_matmul + attention
    # Masking adds the two heads' matmuls on the masked fraction only.
    extra = model_flops_per_token(cfg, seq, 0, mask_prob=0.5) - model_flops_per_token(
        cfg, seq, 0, mask_prob=0.0
    )
    assert extra == pytest.approx(6 * (32 * 32 + 32 * 100) * 0.5)


@pytest.mark.parametrize("stage", [1, 2])
def test_model_flops_per_token_counts_weight_gradients_only_for_trained_matmuls(stage):
    """Every matmul weight costs 2 (forward) + 2 (input gradient) FLOPs per position it is applied at,
    plus 2 (weight gradient) only when it trains in this stage (requires_grad as the trainer sets it)."""
    from pretrain.train import apply_stage

    cfg = tiny_mluke_config()
    model = MLukeForMaskedLM(cfg)
    apply_stage(model, stage)
    seq, ents, mask = 10, 4, 0.5
    T = seq + ents
    params = dict(model.named_parameters())
    positions = {  # matmul weight -> positions it is applied at per sequence
        **{n: T for n, p in model.luke.encoder.named_parameters(prefix="luke.encoder") if p.dim() == 2},
        "luke.entity_embeddings.entity_embedding_dense.weight": ents,
        "lm_head.dense.weight": mask * seq,
        "luke.embeddings.word_embeddings.weight": mask * seq,  # the tied MLM decoder
        "entity_predictions.transform.dense.weight": mask * ents,
        "luke.entity_embeddings.entity_embeddings.weight": mask * ents,  # the tied entity decoder
    }
    matmuls = sum((4 + 2 * params[n].requires_grad) * params[n].numel() * k for n, k in positions.items())
    attention = 12 * cfg.num_hidden_layers * cfg.hidden_size * T * T
    assert model_flops_per_token(cfg, seq, ents, mask, stage) == pytest.approx((matmuls + attention) / seq, rel=1e-12)
    n_enc = sum(params[n].numel() for n in positions if n.startswith("luke.encoder"))
    # Stage 1 saves exactly the encoder's and the MLM head's weight gradients (2 FLOPs per weight use).
    saved = 2 * (n_enc * T + (32 * 32 + 32 * 100) * mask * seq) / seq
    assert model_flops_per_token(cfg, seq, ents, mask, 2) - model_flops_per_token(cfg, seq, ents, mask, 1) == pytest.approx(saved)


def test_output_is_a_dataclass_and_a_dict_in_sync():
    """ZeRO-3 replaces output tensors through the dict interface; attributes must see the new ones."""
    out = tiny_mluke().eval()(**make_batch())
    assert isinstance(out, dict) and out["mlm_count"] is out.mlm_count
    replaced = out.mlm_loss_sum * 1.0
    out["mlm_loss_sum"] = replaced
    assert out.mlm_loss_sum is replaced
    out.mep_loss_sum = replaced
    assert out["mep_loss_sum"] is replaced
    with pytest.raises(KeyError):
        out["loss"] = replaced


def test_init_from_sharded_checkpoint_equals_single_file(tmp_path):
    single = save_tiny_xlmr(tmp_path / "single")
    model = XLMRobertaForMaskedLM.from_pretrained(single)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    a, b = (MLukeForMaskedLM(tiny_mluke_config()) for _ in range(2))
    init_from_xlmr(a, single)
    init_from_xlmr(b, tmp_path / "sharded")
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        if name not in entity_parameter_names(a):
            assert torch.equal(p, q), name


@pytest.mark.parametrize("mode", ["autocast", "bf16_weights"])
def test_bf16_runs_and_stays_close_to_fp32(mode):
    """bf16 as DeepSpeed runs it (weights cast) and as autocast runs it: the losses stay near fp32's."""
    model = tiny_mluke().eval()
    batch = make_batch()
    with torch.no_grad():
        ref = model(**batch)
        if mode == "autocast":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(**batch)
        else:
            out = model.to(torch.bfloat16)(**batch)
    assert out.mlm_loss_sum.dtype == torch.float32  # cross-entropy is taken in fp32
    torch.testing.assert_close(
        out.mlm_loss_sum / out.mlm_count, ref.mlm_loss_sum / ref.mlm_count, atol=0.05, rtol=0
    )
    torch.testing.assert_close(
        out.mep_loss_sum / out.mep_count, ref.mep_loss_sum / ref.mep_count, atol=0.05, rtol=0
    )
