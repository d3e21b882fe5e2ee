"""A pre-LayerNorm (XLM-R XL) mLUKE for transformers, loaded with ``trust_remote_code=True``.

Self-contained: imports only torch and transformers (``pretrain export`` copies this file next to the
weights; users load it without the pretraining project). What it computes is exactly the pretraining
model's forward pass with a pre-LN backbone:

- word embeddings: word + fairseq/XLM-R position (``<s>`` at pad_token_id + 1, pads at pad_token_id) +
  token type; no LayerNorm (XLM-R XL normalises inside each layer);
- entity embeddings: a ``entity_emb_size``-d table projected to the hidden size by a bias-free linear
  layer, plus the MEAN of the position embeddings of the mention's tokens (``entity_position_ids``:
  token indices into ``input_ids``, padded with -1), plus a type embedding, then LayerNorm;
- words and entities form ONE sequence through pre-LN layers (plain self-attention over all non-pad
  keys; no entity-aware query matrices), then a final LayerNorm;
- heads: masked-word (dense -> gelu -> LayerNorm -> decoder tied to the word embeddings) and
  masked-entity (dense -> act -> LayerNorm -> decoder tied to the entity table, + bias).

Parameter names are the pretraining model's (``luke.embeddings.*``, ``luke.entity_embeddings.*``,
``luke.encoder.layer.N.attention.self_attn_layer_norm`` ..., ``luke.encoder.LayerNorm``, ``lm_head.*``,
``entity_predictions.*``), so an export is a copy of its state dict.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_mluke_xl import MLukeXLConfig


@dataclass
class MLukeXLModelOutput(ModelOutput):
    """``last_hidden_state`` [B, L, H] (words), ``entity_last_hidden_state`` [B, E, H] (None without entities);
    with ``output_hidden_states``, the embeddings' and every layer's output (the final LayerNorm not
    applied), split into words and entities."""

    last_hidden_state: torch.FloatTensor | None = None
    entity_last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    entity_hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class MLukeXLMaskedLMOutput(ModelOutput):
    """Word logits [B, L, V], entity logits [B, E, V_e]; ``loss`` = mlm_loss + mep_loss when labels are given."""

    loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    mep_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    entity_logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    entity_hidden_states: tuple[torch.FloatTensor, ...] | None = None


class MLukeXLEmbeddings(nn.Module):
    def __init__(self, config: MLukeXLConfig):
        super().__init__()
        self.pad_token_id = config.pad_token_id
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(
            config.max_position_embeddings, config.hidden_size, padding_idx=config.pad_token_id
        )
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        # fairseq positions: the k-th non-pad token gets pad_token_id + k (k from 1), pads get pad_token_id.
        not_pad = input_ids.ne(self.pad_token_id).long()
        position_ids = torch.cumsum(not_pad, dim=1) * not_pad + self.pad_token_id
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        return self.dropout(x + self.token_type_embeddings(token_type_ids))


class MLukeXLEntityEmbeddings(nn.Module):
    def __init__(self, config: MLukeXLConfig):
        super().__init__()
        self.entity_embeddings = nn.Embedding(config.entity_vocab_size, config.entity_emb_size, padding_idx=0)
        self.entity_embedding_dense = (
            nn.Linear(config.entity_emb_size, config.hidden_size, bias=False)
            if config.entity_emb_size != config.hidden_size
            else None
        )
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        entity_ids: torch.Tensor,
        entity_position_ids: torch.Tensor,
        entity_token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.entity_embeddings(entity_ids)
        if self.entity_embedding_dense is not None:
            x = self.entity_embedding_dense(x)
        # Mean over the mention's valid (!= -1) positions; an entity without any gets a zero vector.
        valid = entity_position_ids.ne(-1).unsqueeze(-1).to(x.dtype)
        pos = (self.position_embeddings(entity_position_ids.clamp(min=0)) * valid).sum(dim=-2)
        pos = pos / valid.sum(dim=-2).clamp(min=1e-7)
        if entity_token_type_ids is None:
            entity_token_type_ids = torch.zeros_like(entity_ids)
        x = x + pos + self.token_type_embeddings(entity_token_type_ids)
        return self.dropout(self.LayerNorm(x))


class MLukeXLSelfAttention(nn.Module):
    def __init__(self, config: MLukeXLConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.dropout_p = config.attention_probs_dropout_prob
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        B, T, H = x.shape
        q, k, v = (
            proj(x).view(B, T, self.num_heads, H // self.num_heads).transpose(1, 2)
            for proj in (self.query, self.key, self.value)
        )
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask, dropout_p=self.dropout_p if self.training else 0.0
        )
        return y.transpose(1, 2).reshape(B, T, H)


class MLukeXLSelfOutput(nn.Module):
    def __init__(self, config: MLukeXLConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(x))


class MLukeXLAttention(nn.Module):
    def __init__(self, config: MLukeXLConfig):
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self = MLukeXLSelfAttention(config)
        self.output = MLukeXLSelfOutput(config)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        return x + self.output(self.self(self.self_attn_layer_norm(x), key_mask))


class MLukeXLIntermediate(nn.Module):
    def __init__(self, config: MLukeXLConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class MLukeXLOutput(nn.Module):
    def __init__(self, config: MLukeXLConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(x))


class MLukeXLLayer(GradientCheckpointingLayer):
    """Pre-LN: x + attention(LN(x)), then x + feed-forward(LN(x))."""

    def __init__(self, config: MLukeXLConfig):
        super().__init__()
        self.attention = MLukeXLAttention(config)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.intermediate = MLukeXLIntermediate(config)
        self.output = MLukeXLOutput(config)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, key_mask)
        return x + self.output(self.intermediate(self.LayerNorm(x)))


class MLukeXLEncoder(nn.Module):
    def __init__(self, config: MLukeXLConfig):
        super().__init__()
        self.layer = nn.ModuleList(MLukeXLLayer(config) for _ in range(config.num_hidden_layers))
        # Pre-LN leaves the residual stream un-normalised: one more LayerNorm at the end.
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, output_hidden_states: bool = False):
        states = [x] if output_hidden_states else None
        for layer in self.layer:
            x = layer(x, key_mask)
            if states is not None:
                states.append(x)
        return self.LayerNorm(x), states


class MLukeXLLMHead(nn.Module):
    def __init__(self, config: MLukeXLConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))  # tied to decoder.bias

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(F.gelu(self.dense(h))))


class MLukeXLEntityPredictionHeadTransform(nn.Module):
    def __init__(self, config: MLukeXLConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.entity_emb_size)
        self.act = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.entity_emb_size, eps=config.layer_norm_eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(h)))


class MLukeXLEntityPredictionHead(nn.Module):
    def __init__(self, config: MLukeXLConfig):
        super().__init__()
        self.transform = MLukeXLEntityPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.entity_emb_size, config.entity_vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.entity_vocab_size))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(h)) + self.bias


class MLukeXLPreTrainedModel(PreTrainedModel):
    config_class = MLukeXLConfig
    base_model_prefix = "luke"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MLukeXLLayer", "MLukeXLEntityEmbeddings"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # The default covers Linear, Embedding (pad rows zeroed) and LayerNorm; `init` functions skip the
        # parameters loaded from a checkpoint.
        super()._init_weights(module)
        if isinstance(module, (MLukeXLLMHead, MLukeXLEntityPredictionHead)):
            init.zeros_(module.bias)


class MLukeXLModel(MLukeXLPreTrainedModel):
    """Word and entity hidden states (no pooler: pretraining has none)."""

    def __init__(self, config: MLukeXLConfig):
        super().__init__(config)
        self.embeddings = MLukeXLEmbeddings(config)
        self.entity_embeddings = MLukeXLEntityEmbeddings(config)
        self.encoder = MLukeXLEncoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        entity_ids: torch.LongTensor | None = None,
        entity_attention_mask: torch.Tensor | None = None,
        entity_token_type_ids: torch.LongTensor | None = None,
        entity_position_ids: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MLukeXLModelOutput | tuple:
        """input_ids [B, L] (``<s> ... </s>``, pads = pad_token_id), attention_mask [B, L] (1 = real token);
        entity_ids [B, E] (pad 0), entity_attention_mask [B, E], entity_position_ids [B, E, M] (token indices
        into input_ids, ``<s>`` = 0, padded with -1). The entity inputs may be left out."""
        output_hidden_states = bool(output_hidden_states if output_hidden_states is not None
                                    else self.config.output_hidden_states)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        L = input_ids.shape[1]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        key_mask = attention_mask.bool()
        has_entities = entity_ids is not None and entity_ids.shape[1] > 0
        if has_entities:
            if entity_position_ids is None:
                raise ValueError("entity_ids need entity_position_ids")
            if entity_attention_mask is None:
                entity_attention_mask = torch.ones_like(entity_ids)
            x = torch.cat([x, self.entity_embeddings(entity_ids, entity_position_ids, entity_token_type_ids)], dim=1)
            key_mask = torch.cat([key_mask, entity_attention_mask.bool()], dim=1)
        # [B, 1, 1, T]: every query attends to every non-pad word and entity.
        h, states = self.encoder(x, key_mask[:, None, None, :], output_hidden_states)
        out = MLukeXLModelOutput(
            last_hidden_state=h[:, :L],
            entity_last_hidden_state=h[:, L:] if has_entities else None,
            hidden_states=tuple(s[:, :L] for s in states) if states else None,
            entity_hidden_states=tuple(s[:, L:] for s in states) if states and has_entities else None,
        )
        return out if return_dict else out.to_tuple()


class MLukeXLForMaskedLM(MLukeXLPreTrainedModel):
    _tied_weights_keys = {
        "lm_head.decoder.weight": "luke.embeddings.word_embeddings.weight",
        "lm_head.decoder.bias": "lm_head.bias",
        "entity_predictions.decoder.weight": "luke.entity_embeddings.entity_embeddings.weight",
    }

    def __init__(self, config: MLukeXLConfig):
        super().__init__(config)
        self.luke = MLukeXLModel(config)
        self.lm_head = MLukeXLLMHead(config)
        self.entity_predictions = MLukeXLEntityPredictionHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head.decoder = new_embeddings
        self.lm_head.bias = new_embeddings.bias

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        entity_ids: torch.LongTensor | None = None,
        entity_attention_mask: torch.Tensor | None = None,
        entity_token_type_ids: torch.LongTensor | None = None,
        entity_position_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        entity_labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> MLukeXLMaskedLMOutput | tuple:
        """As ``MLukeXLModel``; ``labels`` [B, L] / ``entity_labels`` [B, E]: target ids, -100 where not scored."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.luke(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            entity_ids=entity_ids,
            entity_attention_mask=entity_attention_mask,
            entity_token_type_ids=entity_token_type_ids,
            entity_position_ids=entity_position_ids,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.lm_head(outputs.last_hidden_state)
        entity_logits = None
        if outputs.entity_last_hidden_state is not None:
            entity_logits = self.entity_predictions(outputs.entity_last_hidden_state)
        mlm_loss = mep_loss = loss = None
        if labels is not None:
            mlm_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1).to(logits.device))
            loss = mlm_loss
        if entity_labels is not None and entity_logits is not None:
            mep_loss = F.cross_entropy(
                entity_logits.reshape(-1, entity_logits.shape[-1]).float(),
                entity_labels.reshape(-1).to(entity_logits.device),
            )
            loss = mep_loss if loss is None else loss + mep_loss
        out = MLukeXLMaskedLMOutput(
            loss=loss,
            mlm_loss=mlm_loss,
            mep_loss=mep_loss,
            logits=logits,
            entity_logits=entity_logits,
            hidden_states=outputs.hidden_states,
            entity_hidden_states=outputs.entity_hidden_states,
        )
        return out if return_dict else out.to_tuple()


__all__ = ["MLukeXLForMaskedLM", "MLukeXLModel", "MLukeXLPreTrainedModel"]
