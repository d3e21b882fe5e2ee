"""``model.init_from``: a run's starting weights from a local Hugging Face directory.

Two kinds of directory, told apart by ``config.json``'s ``model_type``:

* XLM-R (``xlm-roberta``, ``roberta``, ``xlm-roberta-xl``): word embeddings, encoder and MLM head are
  copied (``init_from_xlmr``); the entity side starts fresh. The mLUKE recipe's stage 1.
* LUKE / mLUKE (``luke``): what ``save_pretrained`` writes for ``LukeForMaskedLM`` (or ``LukeModel``),
  e.g. a local copy of ``studio-ousia/mluke-base`` or this project's ``python -m pretrain export`` output.
  Everything with a counterpart here is copied (``init_from_luke``) -- continued pretraining on a new
  domain or new languages. Entity rows are matched BY NAME (language + normalised title, and the special
  names), never by id: the run's entity vocabulary is the one its shards were built with, and its ids
  have nothing to do with the checkpoint's.

What a LUKE checkpoint has that this model does not, and is skipped: the ``<ent>``/``<ent2>`` word rows
appended after the backbone's vocabulary (the published mluke-base has 250002 + 2 word ids), the
entity-aware attention queries (``w2e_``/``e2w_``/``e2e_query``; mLUKE pretrains with plain
self-attention), the pooler, and the decoder weights, which here ARE the embedding tables.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from data_prep.common.errors import InputError
from data_prep.entities.vocab_file import SPECIAL_TOKENS, EntityVocab, read_entity_vocab
from data_prep.pages.titles import clean_title_text, ucfirst
from pretrain import zero3
from pretrain.model import ENTITY_PREFIXES, MLukeConfig, MLukeForMaskedLM

XLMR_TYPES = ("xlm-roberta", "roberta", "xlm-roberta-xl")
LUKE_TYPE = "luke"
ENTITY_VOCAB_JSON = "entity_vocab.json"  # MLukeTokenizer's flat {"lang:Title": id, "[MASK]": id, ...}
WORD_TABLE = "luke.embeddings.word_embeddings.weight"
ENTITY_TABLE = "luke.entity_embeddings.entity_embeddings.weight"
HEAD_PREFIXES = ("lm_head.", "entity_predictions.")
EXTRA_WORD_IDS = 2  # <ent>, <ent2>: appended by LUKE's conversion (and this project's export)


# ------------------------------------------------------------------------------------------ config


def read_hf_config(path: str | Path) -> tuple[str, dict]:
    """(kind "xlmr" or "luke", config.json as a dict) of a model.init_from directory."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise InputError(
            f"{config_file}: not found (model.init_from must be a Hugging Face XLM-R or LUKE/mLUKE directory)"
        )
    try:
        hf = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{config_file}: not valid JSON ({e})") from None
    model_type = hf.get("model_type") if isinstance(hf, dict) else None
    if model_type in XLMR_TYPES:
        return "xlmr", hf
    if model_type == LUKE_TYPE:
        return "luke", hf
    raise InputError(
        f"{config_file}: model_type {model_type!r} is neither an XLM-R backbone ('xlm-roberta', "
        "'xlm-roberta-xl') nor LUKE/mLUKE ('luke')"
    )


def check_init_dir(path: str | Path) -> str:
    """Check what can be checked cheaply before any process starts; returns the kind."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: model.init_from directory not found")
    kind, _ = read_hf_config(path)
    if not any((path / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")):
        raise InputError(f"{path}: no model.safetensors[.index.json] or pytorch_model.bin in this directory")
    if kind == "luke" and not (path / ENTITY_VOCAB_JSON).is_file():
        raise InputError(f"{path / ENTITY_VOCAB_JSON}: not found (a LUKE init_from needs its entity names)")
    return kind


def model_config(
    path: str | Path, n_words: int, n_entities: int, entity_emb_size: int, **overrides
) -> MLukeConfig:
    """The model for ``path``'s backbone, the shards' ``n_words`` word ids and ``n_entities`` entities.

    XLM-R: its vocabulary may be larger than the spm model's (XLM-R XL pads it to 250880), never smaller;
    the entity side is ``entity_emb_size`` wide. LUKE: its vocabulary must be the spm model's, optionally
    plus <ent>/<ent2> (dropped); the entity width is the checkpoint's and must equal ``entity_emb_size``.
    ``overrides`` set any other field (e.g. ``gradient_checkpointing=True``).
    """
    kind, hf = read_hf_config(path)
    config_file = Path(path) / "config.json"
    names = {f.name for f in fields(MLukeConfig)} - {"gradient_checkpointing", "recompute"}
    kwargs = {k: hf[k] for k in names if k in hf}
    vocab = int(hf.get("vocab_size", 0))
    if kind == "xlmr":
        if vocab < n_words:
            raise InputError(f"{config_file}: vocab_size {vocab} < {n_words} ids of the shards' spm model")
        kwargs.update(entity_emb_size=entity_emb_size, pre_layer_norm=hf["model_type"] == "xlm-roberta-xl")
    else:
        if vocab not in (n_words, n_words + EXTRA_WORD_IDS):
            raise InputError(
                f"{config_file}: vocab_size {vocab} is neither {n_words} (the shards' spm model) nor "
                f"{n_words + EXTRA_WORD_IDS} (with <ent>/<ent2>): not the word vocabulary of these shards"
            )
        if hf.get("entity_emb_size", entity_emb_size) != entity_emb_size:
            raise InputError(
                f"{config_file}: entity_emb_size {hf['entity_emb_size']} differs from model.entity_emb_size "
                f"{entity_emb_size}; set model.entity_emb_size={hf['entity_emb_size']}"
            )
        kwargs.update(vocab_size=n_words, pre_layer_norm=False)
    kwargs.update(entity_vocab_size=n_entities, **overrides)
    return MLukeConfig(**kwargs)


# ------------------------------------------------------------------------------------------ weights


def iter_checkpoint_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of a Hugging Face model directory, one at a time: safetensors (single or sharded,
    read lazily so an XL checkpoint never sits in memory twice), else pytorch_model.bin (memory-mapped)."""
    single, index = path / "model.safetensors", path / "model.safetensors.index.json"
    if single.is_file() or index.is_file():
        from safetensors import safe_open

        if single.is_file():
            files = [single]
        else:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = [path / f for f in sorted(set(weight_map.values()))]
        for f in files:
            with safe_open(str(f), framework="pt") as reader:
                for key in reader.keys():
                    yield key, reader.get_tensor(key)
        return
    binary = path / "pytorch_model.bin"
    if binary.is_file():
        yield from torch.load(binary, map_location="cpu", weights_only=True, mmap=True).items()
        return
    raise InputError(f"{path}: no model.safetensors[.index.json] or pytorch_model.bin in this directory")


def read_checkpoint_tensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a Hugging Face model directory as one dict."""
    return dict(iter_checkpoint_tensors(path))


def _copy(own: dict[str, torch.Tensor], name: str, value: torch.Tensor, path: Path, key: str) -> None:
    if name not in own:
        raise InputError(f"{path}: unexpected weight {key!r}")
    if zero3.full_shape(own[name]) != tuple(value.shape):
        raise InputError(
            f"{path}: weight {key!r} has shape {tuple(value.shape)}, the model expects {zero3.full_shape(own[name])}"
        )
    zero3.copy_into(own[name], value)  # (a model built under zero.Init: this rank's slice only)


@torch.no_grad()
def init_from_xlmr(
    model: MLukeForMaskedLM, path: str | Path, copy_entity_positions: bool = True
) -> list[str]:
    """Copy embeddings, encoder and MLM head from a local XLM-R (or XLM-R XL) ``*ForMaskedLM`` directory.

    Entity parameters keep their random init, except (``copy_entity_positions``) the entity position
    table: row i (token index i, ``<s>`` = 0) gets XLM-R's position embedding of that token
    (row i + pad_token_id + 1), so that at step 0 an entity's position embedding IS the mean of its
    mention tokens' word position embeddings. Returns the names of the parameters that were loaded.
    """
    path = Path(path)
    own = model.state_dict(keep_vars=True)
    loaded: set[str] = set()
    word_pos = None
    for key, value in iter_checkpoint_tensors(path):
        name = "luke." + key[len("roberta.") :] if key.startswith("roberta.") else key
        if name == "lm_head.decoder.bias":
            name = "lm_head.bias"
        if (
            name == "lm_head.decoder.weight"
            or name.startswith("luke.pooler.")
            or name.endswith("position_ids")
        ):
            continue  # tied to the word embeddings / unused by pretraining / buffers
        if name.startswith(ENTITY_PREFIXES):
            raise InputError(f"{path}: unexpected weight {key!r} for an XLM-R masked-LM checkpoint")
        _copy(own, name, value, path, key)
        loaded.add(name)
        if name == "luke.embeddings.position_embeddings.weight":
            word_pos = value
    expected = {n for n, _ in model.named_parameters() if not n.startswith(ENTITY_PREFIXES)}
    missing = sorted(expected - loaded)
    if missing:
        raise InputError(
            f"{path}: checkpoint lacks {len(missing)} weights the model needs, e.g. {missing[:3]}"
        )
    if copy_entity_positions:
        offset = model.config.pad_token_id + 1
        entity_pos = model.luke.entity_embeddings.position_embeddings.weight
        with zero3.gathered([entity_pos]):  # (under zero.Init: the whole small table, read on every rank)
            table = entity_pos.detach().float().clone()
        table[: word_pos.shape[0] - offset] = word_pos[offset:]
        zero3.copy_into(entity_pos, table)
    return sorted(loaded)


# ------------------------------------------------------------------------------------------ LUKE


def entity_key(title: str, lang: str | None) -> tuple[str | None, str]:
    """The name an entity is matched by: (lang, MediaWiki-normalised title), or (None, special name).

    Normalising both sides the same way (spaces for underscores, NFC, first letter upper-cased as
    Wikipedia does) makes ``en:Foo_bar`` and ``en:foo bar`` the entity ``Foo bar`` of ours."""
    if lang is None:
        return None, title
    return lang, ucfirst(clean_title_text(title), lang)


def read_luke_entity_names(path: Path) -> dict[str, int]:
    """MLukeTokenizer's ``entity_vocab.json``: name -> checkpoint entity id (several names may share one)."""
    try:
        flat = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(flat, dict) or not all(isinstance(v, int) and v >= 0 for v in flat.values()):
        raise InputError(f"{path}: not an entity vocabulary (a JSON object from names to entity ids)")
    return flat


def match_entities(vocab: EntityVocab, names: dict[str, int], where: Path) -> dict[int, int]:
    """Our entity id -> checkpoint entity id, for each of ours whose name the checkpoint has.

    An entity of ours with several names takes the checkpoint id of its first name (in our vocabulary's
    order) that the checkpoint has; names equal after normalisation go to the smallest checkpoint id.
    """
    ours: dict[tuple[str | None, str], tuple[int, int]] = {}
    for e in vocab.entries:
        for k, (title, lang) in enumerate(e.entities):
            ours.setdefault(entity_key(title, lang), (e.id, k))
    best: dict[int, tuple[int, int]] = {}  # our id -> (name rank, checkpoint id)
    for name, ckpt_id in names.items():
        if name in SPECIAL_TOKENS:
            key: tuple[str | None, str] = (None, name)
        else:
            lang, sep, title = name.partition(":")
            if not sep:
                raise InputError(f"{where}: key {name!r} is neither a special entity nor 'lang:title'")
            key = (lang, title)
            if key not in ours:  # the fast path: titles already normalised
                key = entity_key(title, lang)
        hit = ours.get(key)
        if hit is not None:
            our_id, rank = hit
            if our_id not in best or (rank, ckpt_id) < best[our_id]:
                best[our_id] = (rank, ckpt_id)
    return {our_id: ckpt_id for our_id, (_, ckpt_id) in sorted(best.items())}


@dataclass
class LukeInit:
    """What ``init_from_luke`` did."""

    loaded: list[str]  # parameter names copied (entity tables: the matched rows)
    copied_entities: int
    n_entities: int
    heads: bool  # False: the checkpoint had no MLM / entity-prediction heads (a LukeModel save)

    def summary(self, path: str | Path) -> str:
        line = (f"init_from: copied {self.copied_entities} of {self.n_entities} entities "
                f"({self.n_entities - self.copied_entities} new) from {path}")
        return line if self.heads else line + "; it has no MLM/entity heads: they start fresh"


def _checkpoint_name(key: str) -> str | None:
    """Our parameter name for a LUKE checkpoint key, or None for what this model does not have."""
    name = key if key.startswith(("luke.", *HEAD_PREFIXES)) else "luke." + key  # LukeModel: no "luke." prefix
    if name == "lm_head.decoder.bias":
        return "lm_head.bias"
    if (
        name in ("lm_head.decoder.weight", "entity_predictions.decoder.weight")  # = the embedding tables
        or name.startswith("luke.pooler.")
        or name.endswith("position_ids")
        or any(q in name for q in (".w2e_query.", ".e2w_query.", ".e2e_query."))
    ):
        return None
    return name


@torch.no_grad()
def init_from_luke(model: MLukeForMaskedLM, path: str | Path, entity_vocab: EntityVocab) -> LukeInit:
    """Copy everything with a counterpart from a LUKE/mLUKE directory; entity rows matched by name.

    ``entity_vocab`` is the run's (the shards') vocabulary. Word rows beyond the model's vocabulary
    (<ent>/<ent2>) are dropped; entities of ours the checkpoint lacks keep the model's fresh init.
    """
    path = Path(path)
    names_file = path / ENTITY_VOCAB_JSON
    if not names_file.is_file():
        raise InputError(f"{names_file}: not found (a LUKE init_from needs its entity names)")
    if len(entity_vocab) != model.config.entity_vocab_size:
        raise ValueError(f"entity vocabulary of {len(entity_vocab)} for a model of {model.config.entity_vocab_size}")
    mapping = match_entities(entity_vocab, read_luke_entity_names(names_file), names_file)
    ours = torch.tensor(list(mapping), dtype=torch.long)
    theirs = torch.tensor(list(mapping.values()), dtype=torch.long)
    V = model.config.vocab_size
    own = model.state_dict(keep_vars=True)
    loaded: set[str] = set()
    for key, value in iter_checkpoint_tensors(path):
        name = _checkpoint_name(key)
        if name is None:
            continue
        if name in (WORD_TABLE, "lm_head.bias"):
            if value.shape[0] not in (V, V + EXTRA_WORD_IDS):
                raise InputError(f"{path}: weight {key!r} has {value.shape[0]} word rows, the model {V} (+2 for <ent>/<ent2>)")
            value = value[:V]
        elif name in (ENTITY_TABLE, "entity_predictions.bias"):
            if len(theirs) and int(theirs.max()) >= value.shape[0]:
                raise InputError(f"{names_file}: entity id {int(theirs.max())} beyond the {value.shape[0]} rows of {key!r}")
            if tuple(value.shape[1:]) != tuple(own[name].shape[1:]):
                raise InputError(f"{path}: weight {key!r} has shape {tuple(value.shape)}, the model expects rows of {tuple(own[name].shape[1:])}")
            own[name][ours] = value[theirs].to(own[name].dtype)
            loaded.add(name)
            continue
        _copy(own, name, value, path, key)
        loaded.add(name)
    expected = {n for n, _ in model.named_parameters()}
    missing = sorted(expected - loaded)
    heads_missing = [n for n in missing if n.startswith(HEAD_PREFIXES)]
    body_missing = [n for n in missing if not n.startswith(HEAD_PREFIXES)]
    head_names = [n for n in expected if n.startswith(HEAD_PREFIXES)]
    if body_missing or (heads_missing and len(heads_missing) != len(head_names)):
        raise InputError(f"{path}: checkpoint lacks {len(missing)} weights the model needs, e.g. {missing[:3]}")
    return LukeInit(sorted(loaded), len(mapping), len(entity_vocab), heads=not heads_missing)


def init_model(model: MLukeForMaskedLM, path: str | Path, entity_vocab_path: str | Path) -> str | None:
    """Initialise ``model`` from ``path`` (either kind); returns the line to report, if any."""
    kind, _ = read_hf_config(path)
    if kind == "xlmr":
        init_from_xlmr(model, path)
        return None
    if any(zero3.partitioned(p) for p in model.parameters()):
        raise InputError(f"{path}: a LUKE init_from is not supported with deepspeed.zero_init (use zero_init: false)")
    return init_from_luke(model, path, read_entity_vocab(entity_vocab_path)).summary(path)


__all__ = [
    "check_init_dir",
    "init_from_luke",
    "init_from_xlmr",
    "init_model",
    "iter_checkpoint_tensors",
    "match_entities",
    "model_config",
    "read_checkpoint_tensors",
    "read_hf_config",
]
