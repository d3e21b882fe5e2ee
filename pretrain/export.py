"""``python -m pretrain export --checkpoint OUT/checkpoints[/TAG] --out HF_DIR``: DeepSpeed -> Hugging Face.

Reads a DeepSpeed checkpoint of any ZeRO stage (partitioned fp32 master weights are consolidated with
DeepSpeed's own ``zero_to_fp32``), takes the model config from ``model_config.json`` (tag dir or OUT) when
the trainer recorded one, else rebuilds it as the trainer did from ``OUT/config.yaml`` and the shards'
manifest (spm and entity-vocab sizes, ``model.init_from``'s config.json), and writes a directory that loads with
``transformers.LukeForMaskedLM`` / ``LukeModel`` and ``MLukeTokenizer``:

- ``model.safetensors`` (sharded above 5 GB) with EVERY weight written, tied ones included
  (transformers 5 does not tie ``lm_head.decoder.weight`` to the word embeddings), ``config.json``.
- What the released mLUKE checkpoints have and pretraining does not (LUKE's own conversion recipe):
  * word tokens ``<ent>`` / ``<ent2>`` appended at ids V, V+1: their embedding rows and LM-head bias copied
    from the pieces ``@`` and ``#`` (``<unk>`` when the spm model has no such piece);
  * entity-aware attention (``use_entity_aware_attention=True``) with the w2e/e2w/e2e query weights
    copied from the query weights: with four equal query matrices the attention scores are exactly
    those of the plain joint self-attention pretraining used, so the outputs do not change (tested);
  * ``[MASK2]`` (already entity id 3, never seen in pretraining) gets the embedding and bias of ``[MASK]``;
  * the pooler LukeModel has but pretraining never trains: N(0, initializer_range) from a fixed seed,
    zero bias (written, so nothing is "newly initialised" at load time).
- Tokenizer files (``pretrain.hf_tokenizer``): sentencepiece.bpe.model, a fairseq-ordered tokenizer.json
  (the fix for MLukeTokenizer's id shift in transformers 5), entity_vocab.json ("lang:title" keys),
  tokenizer_config.json, special_tokens_map.json; plus ``mluke_config.json`` (this project's model
  config), ``export.json`` (provenance) and a README.md.

A pre-LayerNorm (XLM-R XL) backbone has no ``LukeForMaskedLM`` equivalent: the directory then gets this
project's state dict (``mluke_model.safetensors``, loadable with ``load_exported``), mluke_config.json and
the tokenizer files, and ``export`` raises ``UnsupportedForHF`` (exit 2) saying so.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from data_prep.atomic import atomic_path
from data_prep.errors import InputError
from data_prep.vocab_file import MASK2_ID, MASK_ID, read_entity_vocab
from pretrain import checkpoint as ckpt
from pretrain.hf_tokenizer import write_tokenizer_files
from pretrain.model import MLukeConfig, MLukeForMaskedLM

ENT_INIT_PIECES = ("@", "#")  # LUKE initialises <ent> from "@" and <ent2> from "#"
POOLER_SEED = 0
MLUKE_WEIGHTS = "mluke_model.safetensors"
MLUKE_CONFIG = "mluke_config.json"
RECORDED_CONFIG = "model_config.json"  # MLukeConfig.to_dict() in the tag dir or OUT, if the trainer writes one


class UnsupportedForHF(InputError):
    """The checkpoint was exported, but not as a transformers LukeForMaskedLM (pre-LN backbone)."""


@dataclass
class SourceCheckpoint:
    """A resolved DeepSpeed checkpoint and what was recorded with it."""

    ckpt_dir: Path  # OUT/checkpoints
    tag: str
    run_dir: Path  # OUT
    state: ckpt.TrainerState | None
    model_config: MLukeConfig
    spm_path: Path
    entity_vocab_path: Path
    limits: dict[str, int]
    spm_sha256: str
    entity_vocab_sha256: str

    @property
    def tag_dir(self) -> Path:
        return self.ckpt_dir / self.tag


def resolve_checkpoint(checkpoint: str | Path, shards: str | Path | None = None) -> SourceCheckpoint:
    """OUT, OUT/checkpoints (``latest``) or OUT/checkpoints/TAG -> the checkpoint and its model config.

    The model config is ``model_config.json`` (tag dir, then OUT) when the trainer recorded one, else
    rebuilt exactly as the trainer built it: ``OUT/config.yaml`` (the resolved experiment config) + the
    shards' spm size and entity-vocab size (+ ``model.init_from``'s config.json).
    ``shards`` overrides ``data.shards`` of config.yaml (e.g. when the shards moved since training).
    """
    from pretrain.config import load_config
    from pretrain.data import check_shards, entity_vocab_size, spm_size
    from pretrain.train import model_config

    p = Path(checkpoint)
    if not p.exists():
        raise InputError(f"{p}: checkpoint path not found")
    ckpt_dir, tag = ckpt.resolve_init_checkpoint(p)
    run_dir = ckpt_dir.parent
    cfg_file = run_dir / "config.yaml"
    if not cfg_file.is_file():
        raise InputError(f"{cfg_file}: not found (the training run's resolved config, written by `pretrain train`)")
    cfg = load_config(cfg_file)
    shards_dir = Path(shards) if shards is not None else Path(cfg.data.shards)
    try:
        manifest = check_shards(shards_dir)
    except InputError as e:
        raise InputError(f"{e} (shards of the run {run_dir}; pass --shards DIR if they moved)") from None
    recorded = [f for f in (ckpt_dir / tag / RECORDED_CONFIG, run_dir / RECORDED_CONFIG) if f.is_file()]
    if recorded:  # written by the trainer: needs neither model.init_from nor a re-derivation
        mc = MLukeConfig(**json.loads(recorded[0].read_text(encoding="utf-8")))
    else:
        n_words = spm_size(manifest.spm_path) + 2
        mc = model_config(cfg, n_words, entity_vocab_size(manifest.entity_vocab_path))
    return SourceCheckpoint(
        ckpt_dir=ckpt_dir,
        tag=tag,
        run_dir=run_dir,
        state=ckpt.read_state(ckpt_dir / tag),
        model_config=mc,
        spm_path=manifest.spm_path,
        entity_vocab_path=manifest.entity_vocab_path,
        limits=asdict(manifest.limits),
        spm_sha256=manifest.spm_sha256,
        entity_vocab_sha256=manifest.entity_vocab_sha256,
    )


def _expected_shapes(mc: MLukeConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = MLukeForMaskedLM(mc)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_weights(src: SourceCheckpoint) -> dict[str, torch.Tensor]:
    """Consolidated fp32 weights under this project's names, tied names filled in, shapes checked."""
    sd = {k: v.float() for k, v in ckpt.load_consolidated_weights(src.tag_dir).items()}
    expected = _expected_shapes(src.model_config)
    # Tied tensors may be stored once; give every name its tensor.
    tied = {
        "lm_head.decoder.weight": "luke.embeddings.word_embeddings.weight",
        "lm_head.decoder.bias": "lm_head.bias",
        "lm_head.bias": "lm_head.decoder.bias",
        "entity_predictions.decoder.weight": "luke.entity_embeddings.entity_embeddings.weight",
    }
    for name, source in tied.items():
        if name not in sd and source in sd:
            sd[name] = sd[source]
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = [k for k in expected if k in sd and tuple(sd[k].shape) != expected[k]]
    if missing or unexpected or wrong:
        raise InputError(
            f"{src.tag_dir}: weights do not fit the model config rebuilt from {src.run_dir}/config.yaml "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong[:3]})"
        )
    return sd


def piece_id(spm_path: Path, piece: str) -> int:
    """Fairseq id of an spm piece (``<unk>`` = 3 when the model has no such piece)."""
    from data_prep.spm import UNK_ID, XlmrSentencePiece

    sp = XlmrSentencePiece.load(spm_path).sp
    i = sp.piece_to_id(piece)
    return UNK_ID if i == sp.unk_id() else i + 1


@torch.no_grad()
def to_luke_state_dict(
    sd: dict[str, torch.Tensor], mc: MLukeConfig, ent_init_ids: tuple[int, int]
) -> dict[str, torch.Tensor]:
    """This project's weights -> ``LukeForMaskedLM``'s, with the additions listed in the module doc."""
    out = {k: v.clone() for k, v in sd.items()}
    rows = list(ent_init_ids)
    word = sd["luke.embeddings.word_embeddings.weight"]
    word = torch.cat([word, word[rows]])
    out["luke.embeddings.word_embeddings.weight"] = word
    out["lm_head.decoder.weight"] = word.clone()
    bias = sd["lm_head.bias"]
    bias = torch.cat([bias, bias[rows]])
    out["lm_head.bias"], out["lm_head.decoder.bias"] = bias, bias.clone()

    ent = out["luke.entity_embeddings.entity_embeddings.weight"]
    ent[MASK2_ID] = ent[MASK_ID]
    out["entity_predictions.bias"][MASK2_ID] = out["entity_predictions.bias"][MASK_ID]
    out["entity_predictions.decoder.weight"] = ent.clone()

    for i in range(mc.num_hidden_layers):
        prefix = f"luke.encoder.layer.{i}.attention.self."
        for kind in ("w2e_", "e2w_", "e2e_"):
            for p in ("weight", "bias"):
                out[f"{prefix}{kind}query.{p}"] = sd[f"{prefix}query.{p}"].clone()

    gen = torch.Generator().manual_seed(POOLER_SEED)
    H = mc.hidden_size
    out["luke.pooler.dense.weight"] = torch.randn(H, H, generator=gen) * mc.initializer_range
    out["luke.pooler.dense.bias"] = torch.zeros(H)
    return out


def luke_config(mc: MLukeConfig):
    """``LukeConfig`` of the exported model: backbone sizes, +2 word ids for <ent>/<ent2>, entity-aware attention."""
    config = mc.to_luke_config()
    config.vocab_size = mc.vocab_size + 2
    config.use_entity_aware_attention = True
    config.architectures = ["LukeForMaskedLM"]
    return config


def _check_against_transformers(state: dict[str, torch.Tensor], config) -> None:
    """The exported names and shapes are exactly LukeForMaskedLM's (a meta-device model: no memory)."""
    from transformers import LukeForMaskedLM

    with torch.device("meta"):
        ref = LukeForMaskedLM(config)
    shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    missing = sorted(set(shapes) - set(state))
    unexpected = sorted(set(state) - set(shapes))
    wrong = [k for k in shapes if k in state and tuple(state[k].shape) != shapes[k]]
    if missing or unexpected or wrong:  # a transformers version with other names: fail loudly
        raise RuntimeError(
            f"export does not match this transformers' LukeForMaskedLM: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]}"
        )


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _save_weights(
    state: dict[str, torch.Tensor], directory: Path, dtype: str, filename: str | None = None, copy: bool = False
) -> None:
    """Write safetensors (sharded above 5 GB). ``copy``: the tensors are views into the flat buffer that
    zero_to_fp32 returns, which safetensors refuses to write as shared memory."""
    from huggingface_hub import save_torch_state_dict

    state = {k: v.to(DTYPES[dtype], copy=copy).contiguous() for k, v in sorted(state.items())}
    kwargs: dict[str, Any] = {"max_shard_size": "5GB", "metadata": {"format": "pt"}}
    if filename is not None:
        kwargs["filename_pattern"] = filename.replace(".safetensors", "{suffix}.safetensors")
    save_torch_state_dict(state, directory, **kwargs)


def _readme(src: SourceCheckpoint, hf: bool, ent_ids: tuple[int, int]) -> str:
    mc = src.model_config
    step = src.state.step if src.state else "?"
    lines = [
        "# mLUKE checkpoint exported by `python -m pretrain export`",
        "",
        f"Source: `{src.tag_dir}` (step {step}, training stage {src.state.stage if src.state else '?'}).",
        f"Backbone: hidden {mc.hidden_size}, {mc.num_hidden_layers} layers, {mc.num_attention_heads} heads, "
        f"{mc.vocab_size} word ids (+2: `<ent>`={mc.vocab_size}, `<ent2>`={mc.vocab_size + 1}), "
        f"{mc.entity_vocab_size} entities ({mc.entity_emb_size}-d).",
        "",
    ]
    if hf:
        lines += [
            "```python",
            "from transformers import LukeForMaskedLM, MLukeTokenizer",
            "model = LukeForMaskedLM.from_pretrained(PATH)",
            "tokenizer = MLukeTokenizer.from_pretrained(PATH)",
            "```",
            "",
            "Entity-aware attention is switched on with its w2e/e2w/e2e query weights equal to the query",
            "weights, which computes exactly the plain self-attention the model was pretrained with.",
            f"`<ent>`/`<ent2>` were initialised from word ids {ent_ids[0]}/{ent_ids[1]} ('@'/'#'), `[MASK2]`",
            "from `[MASK]`, the pooler randomly (it is not pretrained).",
        ]
    else:
        lines += [
            "**Not a transformers model.** The backbone is pre-LayerNorm (XLM-R XL), which",
            "`transformers.LukeForMaskedLM` cannot represent. This directory holds this project's weights",
            f"(`{MLUKE_WEIGHTS}`, names as XLMRobertaXLForMaskedLM with `roberta.` -> `luke.`) and config",
            f"(`{MLUKE_CONFIG}`); load them with `pretrain.export.load_exported(PATH)`. The tokenizer files",
            "load with `MLukeTokenizer.from_pretrained(PATH)`.",
        ]
    lines += [
        "",
        "Tokenizer notes (transformers 5.23): ids follow XLM-R (`<s>`0 `<pad>`1 `</s>`2 `<unk>`3, `<mask>` = last",
        "backbone id). MLukeTokenizer applies no NFKC normalisation and does not collapse repeated spaces:",
        "normalise text with `unicodedata.normalize('NFKC', text)` and single spaces for ids identical to",
        "pretraining. In calls without `entity_spans` a character missing from the vocabulary gets id 0",
        "instead of `<unk>` (3); with `entity_spans`, write `<mask>` without a space before it.",
        "`tokenizer.json` is a complete XLM-R tokenizer with none of these caveats.",
        "",
    ]
    return "\n".join(lines)


def export(checkpoint: Path, out: Path, shards: Path | None = None, dtype: str = "fp32") -> Path:
    """Export a DeepSpeed checkpoint (OUT, OUT/checkpoints or OUT/checkpoints/TAG) to ``out``; returns ``out``."""
    if dtype not in DTYPES:
        raise InputError(f"--dtype {dtype!r}: must be one of {', '.join(DTYPES)}")
    src = resolve_checkpoint(checkpoint, shards)
    mc = src.model_config
    sd = load_weights(src)
    vocab = read_entity_vocab(src.entity_vocab_path)
    ent_ids = tuple(piece_id(src.spm_path, p) for p in ENT_INIT_PIECES)
    from data_prep.spm import XlmrSentencePiece

    n_ids = XlmrSentencePiece.load(src.spm_path).vocab_size
    if n_ids != mc.vocab_size:  # <ent>/<ent2> must get the same ids in the tokenizer and the embeddings
        raise InputError(
            f"{src.spm_path}: gives {n_ids} word ids (pieces + <s> <pad> </s> <unk> shift + <mask>), the model "
            f"has {mc.vocab_size} word embeddings; export needs a backbone whose vocabulary is exactly the spm's"
        )
    hf = not mc.pre_layer_norm
    info = {
        "source": str(src.tag_dir.resolve()),
        "tag": src.tag,
        "trainer_state": asdict(src.state) if src.state else None,
        "hf_loadable": hf,
        "word_vocab_size": mc.vocab_size,
        "ent_token_ids": [mc.vocab_size, mc.vocab_size + 1],
        "ent_token_init_ids": list(ent_ids),
        "spm_sha256": src.spm_sha256,
        "entity_vocab_sha256": src.entity_vocab_sha256,
        "dtype": dtype,
    }
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        if hf:
            state = to_luke_state_dict(sd, mc, ent_ids)  # every tensor a fresh copy
            del sd  # frees the consolidated flat buffer before writing
            config = luke_config(mc)
            config.dtype = str(DTYPES[dtype]).removeprefix("torch.")  # from_pretrained loads in this dtype
            _check_against_transformers(state, config)
            config.save_pretrained(tmp)
            _save_weights(state, tmp, dtype)
        else:
            # No tied duplicates needed: load_exported re-ties them.
            state = {k: v for k, v in sd.items() if k not in ("lm_head.decoder.weight", "lm_head.decoder.bias",
                                                             "entity_predictions.decoder.weight")}
            _save_weights(state, tmp, dtype, MLUKE_WEIGHTS, copy=True)
        (tmp / MLUKE_CONFIG).write_text(json.dumps(mc.to_dict(), indent=2) + "\n", encoding="utf-8")
        write_tokenizer_files(tmp, src.spm_path, vocab, **src.limits)
        (tmp / "export.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(_readme(src, hf, ent_ids), encoding="utf-8")
    if not hf:
        raise UnsupportedForHF(
            f"{out}: the backbone is pre-LayerNorm (XLM-R XL), which transformers' LukeForMaskedLM cannot "
            f"represent; wrote this project's weights ({MLUKE_WEIGHTS}, {MLUKE_CONFIG}; load with "
            "pretrain.export.load_exported) and the MLukeTokenizer files instead"
        )
    return out


def load_exported(path: str | Path) -> MLukeForMaskedLM:
    """This project's model from an export directory (``mluke_model.safetensors`` or an HF LukeForMaskedLM one).

    For an HF export the <ent>/<ent2> rows, the pooler and the entity-aware query copies are dropped: they
    are not part of the pretraining model (the copies must still equal the query weights).
    """
    from safetensors.torch import load_file

    path = Path(path)
    cfg_file = path / MLUKE_CONFIG
    if not cfg_file.is_file():
        raise InputError(f"{cfg_file}: not found (not a `pretrain export` directory)")
    mc = MLukeConfig(**json.loads(cfg_file.read_text(encoding="utf-8")))
    model = MLukeForMaskedLM(mc)
    if (path / MLUKE_WEIGHTS).is_file():
        sd = load_file(str(path / MLUKE_WEIGHTS))
    else:
        from pretrain.init_from import read_checkpoint_tensors

        sd = read_checkpoint_tensors(path)
        V = mc.vocab_size
        for k in ("luke.embeddings.word_embeddings.weight", "lm_head.decoder.weight", "lm_head.bias", "lm_head.decoder.bias"):
            sd[k] = sd[k][:V]
        for k in [k for k in sd if "2e_query" in k or "2w_query" in k or k.startswith("luke.pooler.")]:
            if "_query" in k:
                q = sd[k.replace("w2e_", "").replace("e2w_", "").replace("e2e_", "")]
                if not torch.equal(sd[k], q):
                    raise InputError(f"{path}: {k} differs from the query weights (fine-tuned entity-aware attention)")
            del sd[k]
    ckpt.load_into(model, {k: v.float() for k, v in sd.items()}, str(path))
    model.tie_weights()
    return model


# ------------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path,
                        help="training output dir, its checkpoints dir (uses `latest`) or one checkpoint tag dir")
    parser.add_argument("--out", required=True, type=Path, help="directory to write (replaced atomically)")
    parser.add_argument("--shards", type=Path, default=None,
                        help="shards directory of the run (default: data.shards of OUT/config.yaml)")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="dtype of the written weights")


def run_cli(args: argparse.Namespace) -> int:
    out = export(args.checkpoint, args.out, shards=args.shards, dtype=args.dtype)
    info = json.loads((out / "export.json").read_text(encoding="utf-8"))
    state = info["trainer_state"] or {}
    print(f"export: {info['source']} (step {state.get('step', '?')}, stage {state.get('stage', '?')}) -> {out} "
          "(LukeForMaskedLM + MLukeTokenizer)")
    return 0
