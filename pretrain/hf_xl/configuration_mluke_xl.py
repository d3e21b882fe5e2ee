"""Configuration of a pre-LayerNorm (XLM-R XL) mLUKE model, for ``trust_remote_code`` loading.

Self-contained: imports only transformers (copied next to exported weights by ``pretrain export``).
"""

from transformers import PreTrainedConfig


class MLukeXLConfig(PreTrainedConfig):
    """XLM-R XL backbone sizes plus mLUKE's entity side (a ``entity_emb_size``-d table projected up)."""

    model_type = "mluke-xl"

    vocab_size: int = 250882
    entity_vocab_size: int = 500000
    hidden_size: int = 2560
    entity_emb_size: int = 256
    num_hidden_layers: int = 36
    num_attention_heads: int = 32
    intermediate_size: int = 10240
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | None = 2
    # Both decoders share their embedding tables, as in pretraining.
    tie_word_embeddings: bool = True


__all__ = ["MLukeXLConfig"]
