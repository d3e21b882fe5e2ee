"""Tiny random Hugging Face checkpoints for tests (nothing can be downloaded here).

Each ``save_tiny_*`` builds a real transformers model with a tiny config, perturbs every parameter away
from its init (so LayerNorm weights are not all ones and biases not all zeros, and a test that mixes
up two of them fails), saves it with ``save_pretrained`` into ``out_dir`` and returns ``out_dir``.
Same seed, same weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

TINY = dict(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=66,  # 64 tokens + XLM-R's padding offset of 2
    type_vocab_size=1,
    layer_norm_eps=1e-5,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
)
TINY_ENTITY_VOCAB = 50
TINY_ENTITY_EMB = 16  # != hidden_size, so the entity projection exists


@torch.no_grad()
def perturb_(model: torch.nn.Module, seed: int, scale: float = 0.1) -> torch.nn.Module:
    """Add N(0, scale) noise to every parameter (tied parameters once), deterministically."""
    gen = torch.Generator().manual_seed(seed)
    for _, p in model.named_parameters():
        p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model



def _save(model_cls, config, out_dir: str | Path, seed: int) -> Path:
    """Build ``model_cls(config)`` from ``seed``, perturb its weights, ``save_pretrained`` it to ``out_dir``."""
    torch.manual_seed(seed)
    perturb_(model_cls(config), seed).save_pretrained(out_dir)
    return Path(out_dir)

def tiny_xlmr_config(**overrides):
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(**{**TINY, **overrides})


def save_tiny_xlmr(out_dir: str | Path, seed: int = 0, **overrides) -> Path:
    """A tiny ``XLMRobertaForMaskedLM`` (post-LN) saved with save_pretrained."""
    from transformers import XLMRobertaForMaskedLM

    return _save(XLMRobertaForMaskedLM, tiny_xlmr_config(**overrides), out_dir, seed)


def save_tiny_xlmr_xl(out_dir: str | Path, seed: int = 0, **overrides) -> Path:
    """A tiny ``XLMRobertaXLForMaskedLM`` (pre-LN, the XLM-R XL layout) saved with save_pretrained."""
    from transformers import XLMRobertaXLConfig, XLMRobertaXLForMaskedLM

    return _save(XLMRobertaXLForMaskedLM, XLMRobertaXLConfig(**{**TINY, **overrides}), out_dir, seed)


def tiny_luke_config(**overrides):
    """A tiny ``LukeConfig`` as mLUKE uses it (no entity-aware attention, 16-d entity table)."""
    from transformers import LukeConfig

    kwargs = {
        **TINY,
        "entity_vocab_size": TINY_ENTITY_VOCAB,
        "entity_emb_size": TINY_ENTITY_EMB,
        "use_entity_aware_attention": False,
    }
    return LukeConfig(**{**kwargs, **overrides})


def save_tiny_luke(out_dir: str | Path, seed: int = 0, **overrides) -> Path:
    """A tiny ``LukeForMaskedLM`` saved with save_pretrained."""
    from transformers import LukeForMaskedLM

    return _save(LukeForMaskedLM, tiny_luke_config(**overrides), out_dir, seed)


def tiny_mluke_config(**overrides):
    """The ``pretrain.model.MLukeConfig`` matching ``tiny_luke_config``."""
    from pretrain.model import MLukeConfig

    kwargs = {
        **TINY,
        "entity_vocab_size": TINY_ENTITY_VOCAB,
        "entity_emb_size": TINY_ENTITY_EMB,
    }
    return MLukeConfig(**{**kwargs, **overrides})
