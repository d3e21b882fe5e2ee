"""The mLUKE model: XLM-RoBERTa words + entity embeddings in one encoder, MLM and masked-entity heads.

One readable file in the nanoGPT spirit. It knows nothing of DeepSpeed or data parallelism: the trainer
wraps it from outside. What it is, in short:

- Word embeddings are XLM-R's (word + position + token type, LayerNorm for the post-LN backbones).
  Position ids follow fairseq/XLM-R: token i of a sequence that starts with ``<s>`` gets position
  ``i + pad_token_id + 1``; padding gets ``pad_token_id``.
- Entity embeddings: ``nn.Embedding(V_e, entity_emb_size)`` projected to the hidden size by a bias-free
  linear layer; plus the MEAN of the (entity-side) position embeddings of the mention's tokens, plus an
  entity token-type embedding, then LayerNorm. ``entity_position_ids`` are token indices into
  ``input_ids`` (``<s>`` is index 0) padded with -1, exactly what transformers' ``LukeEntityEmbeddings``
  consumes.
- Words and entities are concatenated into ONE sequence and go through plain transformer layers with
  ``torch.nn.functional.scaled_dot_product_attention`` (no entity-aware query matrices: mLUKE does not
  use them). Two batch layouts: padded (one sample per row; a key-padding mask built from
  ``attention_mask`` and ``entity_attention_mask`` hides pads) and packed (several samples per row;
  segment ids keep attention within a sample, as a dense mask or a FlexAttention block mask).
- Heads: an MLM head tied to the word embeddings and an entity-prediction head tied to the entity
  embeddings (decoding in the ``entity_emb_size`` space, as transformers does). During training they
  run ONLY on masked positions, gathered with fixed-size index tensors (no host sync): at XLM-R-base
  shape the 250k-word decoder over every position costs more than the whole encoder, and the 15% that
  carry a label are all the loss needs. Each table's lookup and decoder gradients meet in one backward
  call and are summed in place (see ``_TiedLookup``).

Parameter names are those of ``transformers.LukeForMaskedLM`` (``luke.embeddings.*``,
``luke.entity_embeddings.*``, ``luke.encoder.layer.N.*``, ``lm_head.*``, ``entity_predictions.*``) so
that exporting is a copy of the state dict. Two differences an exporter must know:
  * transformers' ``LukeModel`` has a pooler (``luke.pooler.dense.*``) that pretraining never uses; it
    is not part of this model (an unused parameter only costs memory and upsets ZeRO).
  * here ``lm_head.decoder.weight`` IS ``luke.embeddings.word_embeddings.weight`` (one tensor; the
    state dict lists it under both names). transformers 5 keeps the two separate (its LukeForMaskedLM
    does not tie them), so an export must write both keys, which ``state_dict()`` already does.

Pre-LN (XLM-R XL) backbone, ``pre_layer_norm=True``: ``LukeForMaskedLM`` cannot represent it, so its
names follow ``XLMRobertaXLForMaskedLM`` with ``roberta.`` replaced by ``luke.``:
  ``luke.embeddings.{word,position,token_type}_embeddings`` (no embedding LayerNorm),
  ``luke.encoder.layer.N.attention.self_attn_layer_norm`` (LN before attention),
  ``luke.encoder.layer.N.attention.self.{query,key,value}``, ``luke.encoder.layer.N.attention.output.dense``,
  ``luke.encoder.layer.N.LayerNorm`` (LN before the feed-forward block),
  ``luke.encoder.layer.N.{intermediate,output}.dense`` and ``luke.encoder.LayerNorm`` (final LN).
The entity embeddings keep their LayerNorm in both layouts: their table starts random and the LN puts
it on the same scale as the words from step 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    create_selective_checkpoint_contexts,
    noop_context_fn,
)

IGNORE_INDEX = -100  # label value of positions that are not masked (PyTorch's cross-entropy default)

# What the encoder layers get to hide keys: None (every key visible), a boolean SDPA mask broadcastable to
# [B, heads, T, T] (True = may attend), or a FlexAttention BlockMask.
AttentionMask = torch.Tensor | BlockMask | None


# ----------------------------------------------------------------------------------------------------
# Config


@dataclass
class MLukeConfig:
    """Architecture of an mLUKE model. Defaults are XLM-R base with mLUKE's entity side."""

    vocab_size: int = 250002
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    entity_vocab_size: int = 500000
    entity_emb_size: int = 256
    pre_layer_norm: bool = False  # True for the XLM-R XL backbone
    # Activation recomputation in backward: "none", "selective" (each layer's matmul outputs are kept,
    # everything between them -- attention core, GELU, LayerNorm, dropout -- recomputed) or "full" (only
    # each layer's input kept; the whole layer runs again). gradient_checkpointing=True is the older
    # spelling of "full".
    recompute: str = "none"
    gradient_checkpointing: bool = False
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not one of {sorted(_ACTIVATIONS)}")
        if self.recompute not in RECOMPUTE:
            raise ValueError(f"recompute {self.recompute!r} is not one of {RECOMPUTE}")

    @property
    def recompute_mode(self) -> str:
        return "full" if self.gradient_checkpointing else self.recompute

    def to_dict(self) -> dict:
        return asdict(self)

    def to_luke_config(self):
        """The ``transformers.LukeConfig`` of the same architecture (for export to LukeForMaskedLM)."""
        from transformers import LukeConfig

        if self.pre_layer_norm:
            raise ValueError(
                "a pre-LayerNorm (XLM-R XL) backbone cannot be expressed as transformers' LukeForMaskedLM"
            )
        return LukeConfig(
            vocab_size=self.vocab_size,
            entity_vocab_size=self.entity_vocab_size,
            hidden_size=self.hidden_size,
            entity_emb_size=self.entity_emb_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            hidden_act=self.hidden_act,
            hidden_dropout_prob=self.hidden_dropout_prob,
            attention_probs_dropout_prob=self.attention_probs_dropout_prob,
            max_position_embeddings=self.max_position_embeddings,
            type_vocab_size=self.type_vocab_size,
            initializer_range=self.initializer_range,
            layer_norm_eps=self.layer_norm_eps,
            use_entity_aware_attention=False,  # mLUKE pretrains with plain self-attention
            pad_token_id=self.pad_token_id,
            bos_token_id=self.bos_token_id,
            eos_token_id=self.eos_token_id,
        )


RECOMPUTE = ("none", "selective", "full")

_ACTIVATIONS = {
    "gelu": F.gelu,  # exact (erf) GELU, as BERT/XLM-R and transformers' "gelu"
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


# ----------------------------------------------------------------------------------------------------
# Tied tables: the lookup and the decoder of each vocabulary share one weight
#
# Each table gets two gradients per micro-batch: a dense [V, H] one from the decoder and a scatter of the
# few looked-up rows. Left to autograd, the two are summed out of place (nn.Linear's weight gradient is a
# transposed view; a sparse lookup gradient is added to a copy): a copy of the whole table (768 MB for
# XLM-R's words) per micro-batch. Instead the lookup also returns the table itself (an alias) for the
# decoder to use, so ONE backward call receives both gradients and scatters the rows into the decoder's
# contiguous gradient in place. No sparse tensor, no data-dependent size, no host sync.


class _TiedDecoder(torch.autograd.Function):
    """``x @ weight.T (+ bias)`` whose weight gradient is a fresh contiguous [V, H] tensor."""

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, weight = ctx.saved_tensors
        g2 = g.reshape(-1, g.shape[-1])
        # Under autocast the logits (and g) may be bf16 while x and the weight are not: compute in g's dtype
        # as autocast's linear would, return each gradient in its input's dtype.
        gx = (g @ weight.to(g.dtype)).to(x.dtype) if ctx.needs_input_grad[0] else None
        gw = g2.t().mm(x.reshape(-1, x.shape[-1]).to(g.dtype)).to(weight.dtype) if ctx.needs_input_grad[1] else None
        gb = g2.sum(0).to(weight.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


class _TiedLookup(torch.autograd.Function):
    """``(weight[ids], weight)``: the rows, and the table as the decoder's input (see above).

    Rows of ``padding_idx`` get no gradient, as with nn.Embedding, by a multiply (no boolean indexing).
    """

    @staticmethod
    def forward(weight: torch.Tensor, ids: torch.Tensor, padding_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        return F.embedding(ids, weight), weight.view_as(weight)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        weight, ids, padding_idx = inputs
        ctx.save_for_backward(ids)
        ctx.padding_idx, ctx.shape, ctx.dtype = padding_idx, weight.shape, weight.dtype

    @staticmethod
    def backward(ctx, g_rows: torch.Tensor | None, g_table: torch.Tensor | None):
        (ids,) = ctx.saved_tensors
        if g_table is None:  # the decoder did not run
            g_table = torch.zeros(ctx.shape, dtype=ctx.dtype, device=ids.device)
        elif not g_table.is_contiguous():
            g_table = g_table.contiguous()
        if g_rows is not None:
            flat = ids.reshape(-1)
            rows = g_rows.reshape(-1, g_rows.shape[-1]) * flat.ne(ctx.padding_idx)[:, None].to(g_rows.dtype)
            g_table = g_table.index_add_(0, flat, rows.to(g_table.dtype))
        return g_table, None, None


class _TiedDecoderLoss(torch.autograd.Function):
    """Cross-entropy of the logits ``x @ weight.T (+ bias)`` against ``labels``, the logits kept once.

    Returns (per-row loss [K] in fp32, 0 where the label is -100; per-row correct prediction [K], bool).
    The unfused path (linear, log-softmax, NLL) makes four [K, V] tensors, the logits, their log-softmax,
    the NLL gradient (a zero-filled [K, V]) and the log-softmax gradient, up to three of them at once. At
    micro-batch 32 of
    mluke-base that is about 2,500 masked words x 250k words, 2.5 GB each in fp32. Here the fp32 logits
    become the softmax in place and are kept for backward, where the logits' gradient is computed in
    place as (softmax - one-hot) x the row's incoming gradient. Autocast applies to the forward matmul as
    it would to F.linear, and backward's two matmuls run in that dtype too.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor):
        logits = F.linear(x, weight, bias)  # bf16 under a bf16 autocast, as the unfused head's
        ctx.matmul_dtype = logits.dtype
        probs = logits.float()  # the same tensor when already fp32; a softmax over 250k needs fp32
        del logits
        valid = labels.ne(IGNORE_INDEX)
        target = labels.clamp(min=0)
        target_logit = probs.gather(1, target[:, None]).squeeze(1)
        top, predicted = probs.max(dim=-1)  # the first maximum, as argmax
        probs.sub_(top[:, None]).exp_()
        total = probs.sum(dim=-1)
        probs.div_(total[:, None])
        loss = (total.log() + top - target_logit) * valid
        correct = (predicted == labels) & valid
        ctx.save_for_backward(x, weight, probs, target, valid)
        ctx.has_bias = bias is not None
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx, g_loss: torch.Tensor, _g_correct: torch.Tensor | None):
        x, weight, probs, target, valid = ctx.saved_tensors
        # In place: the softmax is not needed again (a second backward through this graph fails loudly on
        # the saved tensor's version, as it should).
        g = probs.scatter_add_(1, target[:, None], probs.new_full((probs.shape[0], 1), -1.0))
        g = g.mul_((g_loss * valid)[:, None]).to(ctx.matmul_dtype)
        gx = (g @ weight.to(g.dtype)).to(x.dtype) if ctx.needs_input_grad[0] else None
        gw = g.t().mm(x.to(g.dtype)).to(weight.dtype) if ctx.needs_input_grad[1] else None
        gb = g.sum(0).to(weight.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


def tied_decoder_loss(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-row cross-entropy [K], per-row correct [K]) of the decoder ``weight``/``bias`` on ``x`` [K, H]."""
    return _TiedDecoderLoss.apply(x, weight, bias, labels)


def tied_lookup(table: nn.Embedding, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows of ``ids``, the table to decode with): the decoder must use the second for the gradients to meet."""
    return _TiedLookup.apply(table.weight, ids, -1 if table.padding_idx is None else table.padding_idx)


def tied_decoder(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return _TiedDecoder.apply(x, weight, bias)


# ----------------------------------------------------------------------------------------------------
# Dropout on a CPU


def _cpu_drop_mask(shape: torch.Size, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(True where dropped with probability p, to 2^-31; the int32 draws, whose memory a caller may reuse).

    The draws come from the default CPU generator: seeded, and replayed by activation recomputation. PyTorch's
    CPU Bernoulli draws one float at a time from a serial generator; 31-bit integers are cheaper to draw."""
    draws = torch.empty(shape, dtype=torch.int32).random_()  # uniform on [0, 2^31)
    return draws.lt(round(p * 2**31)), draws


class _DropoutCPU(torch.autograd.Function):
    """Dropout of a CPU fp32 tensor with the integer mask of ``_cpu_drop_mask`` (only the mask is kept)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        drop, _ = _cpu_drop_mask(x.shape, p)
        ctx.save_for_backward(drop)
        ctx.inv_keep = 1.0 / (1.0 - p)
        return x.masked_fill(drop, 0.0).mul_(ctx.inv_keep)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (drop,) = ctx.saved_tensors
        return g.masked_fill(drop, 0.0).mul_(ctx.inv_keep), None


def _cpu_dropout(training: bool, p: float, x: torch.Tensor) -> bool:
    """Whether dropout of ``x`` takes the CPU path (training, a real p, fp32 on a CPU) rather than PyTorch's."""
    return training and 0 < p < 1 and x.device.type == "cpu" and x.dtype == torch.float32


class Dropout(nn.Dropout):
    """nn.Dropout; on a CPU, in fp32 training, with the cheaper mask of ``_cpu_drop_mask``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _cpu_dropout(self.training, self.p, x):
            return _DropoutCPU.apply(x, self.p)
        return super().forward(x)


# ----------------------------------------------------------------------------------------------------
# Embeddings


def xlmr_position_ids(input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """fairseq/XLM-R position ids: the k-th non-pad token gets pad_token_id + k (k from 1), pads get pad."""
    not_pad = input_ids.ne(pad_token_id).long()
    return torch.cumsum(not_pad, dim=1) * not_pad + pad_token_id


class WordEmbeddings(nn.Module):
    """``luke.embeddings``: XLM-R word + position + token-type embeddings (LayerNorm only for post-LN)."""

    def __init__(self, cfg: MLukeConfig):
        super().__init__()
        self.pad_token_id = cfg.pad_token_id
        # Looked up with tied_lookup (its gradient is summed with the decoder's, see above).
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(
            cfg.max_position_embeddings, cfg.hidden_size, padding_idx=cfg.pad_token_id
        )
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        # XLM-R XL normalises inside each pre-LN layer instead, so its embeddings have no LayerNorm.
        self.LayerNorm = None if cfg.pre_layer_norm else nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings [B, L, H], the word table for the tied decoder: see tied_lookup)."""
        if position_ids is None:  # one sequence per row, padded at the end
            position_ids = xlmr_position_ids(input_ids, self.pad_token_id)
        words, table = tied_lookup(self.word_embeddings, input_ids)
        # One type id: its embedding is a single row, added by broadcasting (no lookup, no gradient scatter).
        x = words + self.position_embeddings(position_ids) + self.token_type_embeddings.weight[0]
        if self.LayerNorm is not None:
            x = self.LayerNorm(x)
        return self.dropout(x), table


class EntityEmbeddings(nn.Module):
    """``luke.entity_embeddings``: entity table (+ projection) + mean mention position + type, LayerNorm."""

    def __init__(self, cfg: MLukeConfig):
        super().__init__()
        self.entity_embeddings = nn.Embedding(cfg.entity_vocab_size, cfg.entity_emb_size, padding_idx=0)
        # mLUKE keeps the (huge) entity table small (256-d) and projects it up to the hidden size.
        self.entity_embedding_dense = (
            nn.Linear(cfg.entity_emb_size, cfg.hidden_size, bias=False)
            if cfg.entity_emb_size != cfg.hidden_size
            else None
        )
        # An EmbeddingBag (mode "sum" with per-sample weights 1/mention_length) computes the mean of the
        # mention's position embeddings without materialising a [B, E, M, H] tensor (M = 30 at full
        # size: 30x the activation memory of the entity sequence). Its parameter is also called
        # ``weight``, so the state-dict key matches transformers' nn.Embedding.
        self.position_embeddings = nn.EmbeddingBag(cfg.max_position_embeddings, cfg.hidden_size, mode="sum")
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.hidden_dropout_prob)

    def forward(self, entity_ids: torch.Tensor, entity_position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings [B, E, H], the entity table for the tied decoder: see tied_lookup)."""
        B, E, M = entity_position_ids.shape
        x, table = tied_lookup(self.entity_embeddings, entity_ids)
        if self.entity_embedding_dense is not None:
            x = self.entity_embedding_dense(x)
        # Same semantics as transformers' LukeEntityEmbeddings: -1 entries are ignored, the sum of the
        # remaining position embeddings is divided by their count clamped at 1e-7 (an entity with no
        # valid position gets a zero position embedding).
        valid = entity_position_ids.ne(-1)
        dtype = self.position_embeddings.weight.dtype  # not x.dtype: under autocast x may be bf16
        count = valid.sum(dim=-1, keepdim=True).to(dtype).clamp(min=1e-7)
        weights = valid.to(dtype) / count
        pos = self.position_embeddings(
            entity_position_ids.clamp(min=0).reshape(B * E, M), per_sample_weights=weights.reshape(B * E, M)
        ).view(B, E, -1)
        x = x + pos + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x)), table


# ----------------------------------------------------------------------------------------------------
# Transformer layer (post-LN as BERT/XLM-R base/large, or pre-LN as XLM-R XL)


class _DropoutAttentionCPU(torch.autograd.Function):
    """softmax(q k^T / sqrt(d) | mask) with dropout, @ v: the CPU training path.

    On a GPU, SDPA's fused kernels drop attention weights inside the kernel. On a CPU, SDPA with dropout
    falls back to its math path: its Bernoulli mask comes from a serial generator and takes longer than
    the attention matmuls, and each step of it (scores, softmax, mask, dropped weights, their gradients)
    makes a fresh [B, heads, T, T] tensor; a fresh tensor costs page faults, on a VM as much as the
    arithmetic. At XLM-R-base shape that path was a fifth of a CPU training step. Same semantics here:
    each weight is dropped with probability p (to 2^-31) and the kept ones are scaled by 1 / (1 - p), the
    mask drawn from the default CPU generator (seeded, replayed by activation recomputation) as 31-bit
    integers. Softmax and its gradient run in place, the dropped weights reuse the integers' memory, and
    the 1 / sqrt(d) and 1 / (1 - p) scales are applied to [T, d] tensors: per layer three [T, T] tensors
    and a boolean mask.
    """

    @staticmethod
    def forward(ctx, q, k, v, mask: torch.Tensor | None, p: float):
        scale = q.shape[-1] ** -0.5
        probs = torch.matmul(q * scale, k.transpose(-1, -2))
        if mask is not None:  # True = may attend; no row is fully masked (a position sees its own segment)
            probs.masked_fill_(~mask, float("-inf"))
        torch.ops.aten._softmax.out(probs, -1, False, out=probs)
        drop, draws = _cpu_drop_mask(probs.shape, p)
        dropped = torch.where(drop, probs.new_zeros(()), probs, out=draws.view(probs.dtype))
        ctx.save_for_backward(q, k, v, probs, drop, dropped)
        ctx.scale, ctx.inv_keep = scale, 1.0 / (1.0 - p)
        return torch.matmul(dropped, v).mul_(ctx.inv_keep)

    @staticmethod
    def backward(ctx, gy):
        q, k, v, probs, drop, dropped = ctx.saved_tensors
        gv = torch.matmul(dropped.transpose(-1, -2), gy).mul_(ctx.inv_keep)
        g = torch.matmul(gy, v.transpose(-1, -2)).masked_fill_(drop, 0.0)  # d(dropped) -> d(probs) / inv_keep
        torch.ops.aten._softmax_backward_data.out(g, probs, -1, probs.dtype, grad_input=g)  # -> d(scores)
        s = ctx.scale * ctx.inv_keep
        gq = torch.matmul(g, k).mul_(s)
        gk = torch.matmul(g.transpose(-1, -2), q).mul_(s)
        return gq, gk, gv, None, None


class SelfAttention(nn.Module):
    """``attention.self``: q/k/v projections and SDPA over the joint word+entity sequence."""

    def __init__(self, cfg: MLukeConfig):
        super().__init__()
        self.n_head = cfg.num_attention_heads
        self.dropout_p = cfg.attention_probs_dropout_prob
        # Separate q/k/v (not one fused matrix) because those are the checkpoint's parameter names.
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
        B, T, H = x.shape
        q, k, v = (
            proj(x).view(B, T, self.n_head, H // self.n_head).transpose(1, 2)
            for proj in (self.query, self.key, self.value)
        )
        if isinstance(mask, BlockMask):
            # FlexAttention has no attention dropout; the flex path is for dropout-free runs (or accepts
            # that difference), see MLukeForMaskedLM.attention.
            # contiguous: inductor's CPU lowering of flex_attention rejects the transposed projection views
            y = flex_attention(q.contiguous(), k.contiguous(), v.contiguous(), block_mask=mask)
        elif _cpu_dropout(self.training, self.dropout_p, q):
            y = _DropoutAttentionCPU.apply(q, k, v, mask, self.dropout_p)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0
            )
        return y.transpose(1, 2).reshape(B, T, H)


class AttentionOutput(nn.Module):
    """``attention.output``: projection back to the residual stream (+ LayerNorm when post-LN)."""

    def __init__(self, cfg: MLukeConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = None if cfg.pre_layer_norm else nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.hidden_dropout_prob)


class Attention(nn.Module):
    def __init__(self, cfg: MLukeConfig):
        super().__init__()
        self.self = SelfAttention(cfg)
        self.output = AttentionOutput(cfg)
        # pre-LN only: normalise the input of the attention block (XLM-R XL's name for it).
        self.self_attn_layer_norm = (
            nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) if cfg.pre_layer_norm else None
        )


class Intermediate(nn.Module):
    def __init__(self, cfg: MLukeConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)


class Output(nn.Module):
    def __init__(self, cfg: MLukeConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.LayerNorm = None if cfg.pre_layer_norm else nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.hidden_dropout_prob)


class Layer(nn.Module):
    """One transformer layer; the submodule tree only exists to give parameters their checkpoint names."""

    def __init__(self, cfg: MLukeConfig):
        super().__init__()
        self.pre_ln = cfg.pre_layer_norm
        self.act = _ACTIVATIONS[cfg.hidden_act]
        self.attention = Attention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = Output(cfg)
        # pre-LN only: normalise the input of the feed-forward block (XLM-R XL's name for it).
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) if cfg.pre_layer_norm else None

    def forward(self, x: torch.Tensor, key_mask: AttentionMask) -> torch.Tensor:
        att, ao, inter, out = self.attention, self.attention.output, self.intermediate, self.output
        if self.pre_ln:
            x = x + ao.dropout(ao.dense(att.self(att.self_attn_layer_norm(x), key_mask)))
            return x + out.dropout(out.dense(self.act(inter.dense(self.LayerNorm(x)))))
        x = ao.LayerNorm(x + ao.dropout(ao.dense(att.self(x, key_mask))))
        return out.LayerNorm(x + out.dropout(out.dense(self.act(inter.dense(x)))))


class Encoder(nn.Module):
    def __init__(self, cfg: MLukeConfig):
        super().__init__()
        self.cfg = cfg
        self.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))
        # pre-LN leaves the residual stream un-normalised, so XLM-R XL ends with one more LayerNorm.
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) if cfg.pre_layer_norm else None

    def forward(self, x: torch.Tensor, key_mask: AttentionMask) -> torch.Tensor:
        mode = self.cfg.recompute_mode
        for layer in self.layer:
            if mode != "none" and torch.is_grad_enabled():
                # The layer runs again during backward (dropout masks are replayed: checkpoint restores the
                # RNG state). "full" keeps only the layer's input; "selective" also keeps what its matmuls
                # computed, so the replay only redoes the cheap elementwise and attention-core work.
                context = _keep_matmul_outputs if mode == "selective" else noop_context_fn
                x = checkpoint(layer, x, key_mask, use_reentrant=False, context_fn=context)
            else:
                x = layer(x, key_mask)
        return self.LayerNorm(x) if self.LayerNorm is not None else x


# The weight matmuls (q/k/v, attention output, feed-forward in and out): 4/5 of a layer's FLOPs.
_MATMULS = (torch.ops.aten.mm.default, torch.ops.aten.addmm.default)


def _keep_matmul_policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    """Selective recompute: a matmul's output is saved in forward and reused by the replay; everything
    else (attention scores/softmax/values inside SDPA, GELU, LayerNorm, dropout, residual adds) is
    recomputed. Those ops are cheap but their saved inputs and outputs are most of a layer's activation
    memory (the GELU's 4 x hidden output alone is as large as the feed-forward input matmul's output)."""
    return CheckpointPolicy.MUST_SAVE if op in _MATMULS else CheckpointPolicy.PREFER_RECOMPUTE


def _keep_matmul_outputs():
    return create_selective_checkpoint_contexts(_keep_matmul_policy)


class LukeBackbone(nn.Module):
    """``luke``: the embeddings and the encoder (no pooler: pretraining does not use one)."""

    def __init__(self, cfg: MLukeConfig):
        super().__init__()
        self.embeddings = WordEmbeddings(cfg)
        self.entity_embeddings = EntityEmbeddings(cfg)
        self.encoder = Encoder(cfg)


# ----------------------------------------------------------------------------------------------------
# Heads


class LMHead(nn.Module):
    """``lm_head``: dense -> gelu -> LayerNorm -> decoder (tied to the word embeddings) + bias."""

    def __init__(self, cfg: MLukeConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size)
        self.bias = self.decoder.bias  # one tensor under both names, as in transformers

    def features(self, h: torch.Tensor) -> torch.Tensor:
        """What the decoder reads: dense -> gelu -> LayerNorm."""
        return self.layer_norm(F.gelu(self.dense(h)))

    def decoder_weights(self, table: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the decoder; ``table``: the word table as returned by the lookup (default: the
        decoder's own weight)."""
        return (self.decoder.weight if table is None else table), self.decoder.bias

    def forward(self, h: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """Logits."""
        return tied_decoder(self.features(h), *self.decoder_weights(table))


class EntityPredictionHeadTransform(nn.Module):
    def __init__(self, cfg: MLukeConfig):
        super().__init__()
        self.act = _ACTIVATIONS[cfg.hidden_act]
        self.dense = nn.Linear(cfg.hidden_size, cfg.entity_emb_size)
        self.LayerNorm = nn.LayerNorm(cfg.entity_emb_size, eps=cfg.layer_norm_eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(h)))


class EntityPredictionHead(nn.Module):
    """``entity_predictions``: transform to entity_emb_size, decoder tied to the entity table, + bias."""

    def __init__(self, cfg: MLukeConfig):
        super().__init__()
        self.transform = EntityPredictionHeadTransform(cfg)
        self.decoder = nn.Linear(cfg.entity_emb_size, cfg.entity_vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(cfg.entity_vocab_size))

    def features(self, h: torch.Tensor) -> torch.Tensor:
        return self.transform(h)

    def decoder_weights(self, table: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the decoder; ``table``: the entity table as returned by the lookup (default:
        the decoder's own weight)."""
        return (self.decoder.weight if table is None else table), self.bias

    def forward(self, h: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """Logits."""
        return tied_decoder(self.features(h), *self.decoder_weights(table))


# ----------------------------------------------------------------------------------------------------
# The model


@dataclass(eq=False)
class MLukeOutput(dict):
    """Per-objective SUMS over the masked positions of this micro-batch.

    The trainer adds them up over all micro-batches and ranks of an optimiser step and divides the loss
    sums by the counts, so each objective is normalised by its number of masked positions in the whole
    step. All six are 0-dim float32 tensors (counts and correct predictions too, so they can be stacked
    and all-reduced with the sums in one call); the loss sums carry the graph.

    Also a dict of the same fields (like transformers' ModelOutput), kept in sync both ways: ZeRO-3
    finds the tensors of a module's output only in tuples, lists and dicts, and swaps in hooked ones
    in place (``out[key] = ...``); attribute access must then return the hooked tensor.
    """

    mlm_loss_sum: torch.Tensor
    mlm_count: torch.Tensor
    mlm_correct: torch.Tensor
    mep_loss_sum: torch.Tensor
    mep_count: torch.Tensor
    mep_correct: torch.Tensor
    mlm_logits: torch.Tensor | None = None  # [B, L, V], only with return_logits=True
    mep_logits: torch.Tensor | None = None  # [B, E, V_e], only with return_logits=True
    word_hidden_states: torch.Tensor | None = None  # [B, L, H] final encoder states
    entity_hidden_states: torch.Tensor | None = None  # [B, E, H] or None without entities
    mlm_targets: torch.Tensor | None = None  # [K, 3] per masked-word slot: loss, counted (0/1), correct
    mep_targets: torch.Tensor | None = None  # [K_e, 3] the same per masked-entity slot

    def __setattr__(self, name: str, value) -> None:
        object.__setattr__(self, name, value)
        dict.__setitem__(self, name, value)

    def __setitem__(self, key: str, value) -> None:
        if key not in self.__dataclass_fields__:
            raise KeyError(f"MLukeOutput has no field {key!r}")
        self.__setattr__(key, value)


def _masked_objective(
    head: nn.Module, hidden: torch.Tensor, positions: torch.Tensor | None, labels: torch.Tensor | None,
    table: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(loss sum, count, correct, per-target [K, 3]) of ``head`` on the masked positions.

    ``positions`` [K]: flat indices into ``hidden.flatten(0, 1)`` with ``labels`` [K] (-100 in unused
    slots): a fixed-size gather, no host sync. Without positions, ``labels`` has the shape of ``hidden``'s
    leading dims and the positions are found with ``nonzero`` (a host sync: evaluation and parity only).
    The per-target rows (loss, counted, correct; detached) let the trainer sum by language.
    """
    if labels is None:
        zero = hidden.new_zeros((), dtype=torch.float32)
        return zero, zero, zero, None
    if positions is None:
        flat = labels.reshape(-1)
        positions = flat.ne(IGNORE_INDEX).nonzero().squeeze(1)
        labels = flat[positions]
    # Cross-entropy in fp32 even under bf16 (a 250k-way softmax loses too much in 8 mantissa bits), fused
    # with the decoder so that the [K, V] logits exist once.
    features = head.features(hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions))
    loss, correct = tied_decoder_loss(features, *head.decoder_weights(table), labels)  # 0 where label is -100
    valid = labels.ne(IGNORE_INDEX)
    per_target = torch.stack([loss.detach(), valid.float(), correct.float()], dim=1)
    return loss.sum(), valid.sum().float(), correct.sum().float(), per_target


def segment_mask(segments: torch.Tensor) -> torch.Tensor:
    """Boolean SDPA mask [B, 1, T, T] of a packed row: a position attends to those of its own segment."""
    return segments[:, None, :, None] == segments[:, None, None, :]


def segment_block_mask(segments: torch.Tensor) -> BlockMask:
    """The same block-diagonal mask as a FlexAttention BlockMask (blocks of other segments are skipped)."""
    B, T = segments.shape

    def same_segment(b, h, q, kv):
        return segments[b, q] == segments[b, kv]

    return create_block_mask(same_segment, B, None, T, T, device=segments.device)


def _normal_(weight: torch.Tensor, std: float) -> None:
    """N(0, std) drawn in fp32 whatever the weight's dtype: a bf16 model built under zero.Init gets the
    fp32 model's values, rounded (the same random numbers, in the same order)."""
    if weight.dtype == torch.float32:
        weight.normal_(0.0, std)
    else:
        weight.copy_(torch.empty(weight.shape, dtype=torch.float32, device=weight.device).normal_(0.0, std))


class MLukeForMaskedLM(nn.Module):
    def __init__(self, cfg: MLukeConfig):
        super().__init__()
        self.config = cfg
        self.luke = LukeBackbone(cfg)
        self.lm_head = LMHead(cfg)
        self.entity_predictions = EntityPredictionHead(cfg)
        self.apply(self._init_weights)
        self.tie_weights()
        # "sdpa": a dense boolean mask (any device; the CPU path). "flex": FlexAttention with a block mask
        # that skips other samples' blocks; GPU only (no backward on CPU), compiled (torch.compile).
        self.attention = "sdpa"

    def tie_weights(self) -> None:
        """Make the decoders share their embedding tables (also after loading or moving the model)."""
        self.lm_head.decoder.weight = self.luke.embeddings.word_embeddings.weight
        self.entity_predictions.decoder.weight = self.luke.entity_embeddings.entity_embeddings.weight

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """transformers' BERT-style init: N(0, initializer_range), zero biases and pad rows, LN = identity."""
        std = self.config.initializer_range
        if module is self.lm_head.decoder or module is self.entity_predictions.decoder:
            # Tied to an embedding table (initialised there); only the bias is the decoder's own.
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Linear):
            _normal_(module.weight, std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            _normal_(module.weight, std)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()
        elif isinstance(module, EntityPredictionHead):
            module.bias.zero_()

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        self.config.gradient_checkpointing = enabled

    def stage1_trainable_parameters(self) -> list[nn.Parameter]:
        """The entity-side parameters that stage 1 trains (the word side stays frozen)."""
        names = set(entity_parameter_names(self))
        return [p for n, p in self.named_parameters() if n in names]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        entity_ids: torch.Tensor | None = None,
        entity_attention_mask: torch.Tensor | None = None,
        entity_position_ids: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        mep_labels: torch.Tensor | None = None,
        return_logits: bool = False,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        entity_segment_ids: torch.Tensor | None = None,
        mlm_positions: torch.Tensor | None = None,
        mep_positions: torch.Tensor | None = None,
        mlm_languages: torch.Tensor | None = None,
        mep_languages: torch.Tensor | None = None,
    ) -> MLukeOutput:
        """Run the model on a padded or a packed batch (pretrain.collator makes both).

        Padded: input_ids [B, L] ``<s> ... </s>`` padded with pad_token_id, attention_mask [B, L] (1 = real
        token); entity_ids [B, E] (pad 0), entity_attention_mask [B, E], entity_position_ids [B, E, M]:
        token indices into the row (``<s>`` = 0) padded with -1. E may be 0 or the entity inputs None.
        mlm_labels [B, L] / mep_labels [B, E]: target ids at masked positions, -100 elsewhere.

        Packed (several samples per row, no host sync): also position_ids [B, L] (fairseq positions,
        restarting per sample), segment_ids [B, L] and entity_segment_ids [B, E] (which sample of the row
        a position belongs to; pads form a segment of their own), and the masked positions as fixed-size
        index tensors: mlm_positions [K] (flat indices into B x L) with mlm_labels [K], mep_positions
        [K_e] (into B x E) with mep_labels [K_e], -100 in unused slots. entity_position_ids index into
        the entity's own sample (``<s>`` = 0). The masks are then unused: attention stays within a
        segment. mlm_languages / mep_languages are the trainer's (per-target language ids), ignored here.
        """
        L = input_ids.shape[1]
        has_entities = entity_ids is not None and entity_ids.shape[1] > 0
        x, word_table = self.luke.embeddings(input_ids, position_ids)
        entity_table = None
        if has_entities:
            e, entity_table = self.luke.entity_embeddings(entity_ids, entity_position_ids)
            x = torch.cat([x, e], dim=1)
            if entity_attention_mask is None:
                entity_attention_mask = torch.ones_like(entity_ids)
        h = self.luke.encoder(x, self._attention_mask(attention_mask, entity_attention_mask, segment_ids,
                                                      entity_segment_ids, has_entities))
        word_h = h[:, :L]
        entity_h = h[:, L:] if has_entities else None

        mlm = _masked_objective(self.lm_head, word_h, mlm_positions, mlm_labels, word_table)
        if has_entities:
            mep = _masked_objective(self.entity_predictions, entity_h, mep_positions, mep_labels, entity_table)
        else:
            mep = _masked_objective(self.entity_predictions, word_h, None, None)
        out = MLukeOutput(*mlm[:3], *mep[:3], word_hidden_states=word_h, entity_hidden_states=entity_h,
                          mlm_targets=mlm[3], mep_targets=mep[3])
        if return_logits:
            out.mlm_logits = self.lm_head(word_h, word_table)
            if has_entities:
                out.mep_logits = self.entity_predictions(entity_h, entity_table)
        return out

    def _attention_mask(self, attention_mask, entity_attention_mask, segment_ids, entity_segment_ids,
                        has_entities: bool) -> AttentionMask:
        if segment_ids is not None:  # packed: stay within the sample
            seg = torch.cat([segment_ids, entity_segment_ids], dim=1) if has_entities else segment_ids
            return segment_block_mask(seg) if self.attention == "flex" else segment_mask(seg)
        if attention_mask is None:
            return None
        key_mask = attention_mask.bool()
        if has_entities:
            key_mask = torch.cat([key_mask, entity_attention_mask.bool()], dim=1)
        # [B, 1, 1, T]: every query may look at every non-pad key. Query rows of pads are computed and
        # ignored; no row is fully masked because <s> is always present.
        return key_mask[:, None, None, :]


# ----------------------------------------------------------------------------------------------------
# Parameter groups, FLOPs (initialisation from a checkpoint: pretrain/init_from.py)


ENTITY_PREFIXES = ("luke.entity_embeddings.", "entity_predictions.")


def entity_parameter_names(model: nn.Module) -> list[str]:
    """Names (as ``named_parameters`` reports them) of the entity-side parameters: stage 1 trains these.

    Entity table, its projection, entity position/type embeddings and LayerNorm, and the entity
    prediction head (whose decoder is the entity table itself).
    """
    return [n for n, _ in model.named_parameters() if n.startswith(ENTITY_PREFIXES)]


def luke_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
    """This model's batch as keyword arguments of ``transformers.LukeForMaskedLM`` (parity tests, benchmarks)."""
    names = ("input_ids", "attention_mask", "entity_ids", "entity_attention_mask", "entity_position_ids")
    return {**{k: batch[k] for k in names}, "labels": batch["mlm_labels"], "entity_labels": batch["mep_labels"]}


def model_flops_per_token(
    cfg: MLukeConfig, seq_len: int, n_entities: int, mask_prob: float = 0.15, stage: int = 2
) -> float:
    """Training FLOPs (forward + backward) per WORD token of a full sequence: the MFU numerator.

    Counts what the model needs, not what an implementation spends. A matmul with P weights costs, per
    position, 2P forward, 2P for its input's gradient and 2P for its weights' gradient; the last only
    when those weights train. Stage 2 trains everything: 6P. Stage 1 trains only the entity side, yet
    the gradient still flows back through every encoder layer and the MLM head (the MLM loss reaches the
    entity embeddings through attention), so the frozen word side costs 4P and only the entity
    projection and entity head 6P. Attention scores and values have no weights: 12 x layers x hidden
    x T^2 (4 forward, 8 backward) in both stages. The encoder runs over seq_len + n_entities positions,
    the heads over the masked fraction only; embedding lookups are free. Divide by the number of word
    tokens processed (pads aside).
    """
    H, inter, T = cfg.hidden_size, cfg.intermediate_size, seq_len + n_entities
    word_side = 6 if stage == 2 else 4  # FLOPs per weight and position of the (stage-1 frozen) word side
    layer_params = 4 * H * H + 2 * H * inter
    enc = word_side * cfg.num_hidden_layers * layer_params * T + 12 * cfg.num_hidden_layers * H * T * T
    proj = 6 * cfg.entity_emb_size * H * n_entities if cfg.entity_emb_size != H else 0
    mlm = word_side * (H * H + H * cfg.vocab_size) * mask_prob * seq_len
    mep = 6 * (H * cfg.entity_emb_size + cfg.entity_emb_size * cfg.entity_vocab_size) * mask_prob * n_entities
    return float(enc + proj + mlm + mep) / seq_len


__all__ = [
    "luke_inputs",
    "IGNORE_INDEX",
    "MLukeConfig",
    "MLukeForMaskedLM",
    "MLukeOutput",
    "entity_parameter_names",
    "model_flops_per_token",
    "xlmr_position_ids",
]
