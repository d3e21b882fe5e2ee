"""``python -m pretrain export --checkpoint OUT/checkpoints[/TAG] --out HF_DIR [--lite] [--entity-aware-attention]``.

Reads a DeepSpeed checkpoint of any ZeRO stage (partitioned fp32 master weights are consolidated with
DeepSpeed's own ``zero_to_fp32``), takes the model config from ``model_config.json`` (tag dir or OUT) when
the trainer recorded one, else rebuilds it as the trainer did from ``OUT/config.yaml`` and the shards'
manifest (spm and entity-vocab sizes, ``model.init_from``'s config.json), and writes a Hugging Face
directory whose tokenizer loads with ``MLukeTokenizer.from_pretrained`` and whose model is:

- post-LN backbone (XLM-R base/large): ``transformers.LukeForMaskedLM`` / ``LukeModel``;
- pre-LN backbone (XLM-R XL), which LUKE's classes cannot represent: ``MLukeXLForMaskedLM`` / ``MLukeXLModel``
  from ``pretrain/hf_xl`` (the two files are copied into the directory and named in config.json's
  ``auto_map``), loaded with ``AutoModelForMaskedLM`` / ``AutoModel.from_pretrained(DIR, trust_remote_code=True)``.
  Its weight names are this project's; the tied decoders are not written (transformers re-ties them).

``model.safetensors`` (sharded above 5 GB) and ``config.json``; for LukeForMaskedLM EVERY weight is written,
tied ones included (transformers 5 does not tie ``lm_head.decoder.weight`` to the word embeddings).
Added, as LUKE's own conversion does, what the released mLUKE checkpoints have and pretraining does not:

- word tokens ``<ent>`` / ``<ent2>`` at ids V, V+1: embedding rows and LM-head bias copied from the
  pieces ``@`` and ``#`` (``<unk>`` when the spm model has no such piece);
- ``[MASK2]`` (entity id 3, never seen in pretraining) gets the embedding and bias of ``[MASK]``;
- LukeForMaskedLM only: the w2e/e2w/e2e query weights of entity-aware attention, copied from the query.
  ``use_entity_aware_attention`` is false as in the published mLUKE configs (pretraining used plain
  attention), so ``from_pretrained`` lists the copies as unused, as it does for studio-ousia/mluke-base;
  with it true (``--entity-aware-attention``, or flipped in config.json later) four equal query matrices
  give exactly the plain attention scores, so the outputs are the same (tested). And the pooler
  LukeModel has and pretraining never trains: N(0, initializer_range) from a fixed seed, zero bias
  (written, so nothing is "newly initialised").

``--lite`` (as studio-ousia/mluke-base-lite, made by LUKE's conversion with ``--remove-entity-embeddings``):
of the entity side only the four special entities stay (``[PAD]`` ``[UNK]`` ``[MASK]`` ``[MASK2]``, ids 0-3):
``entity_vocab_size`` 4, entity table and entity-head bias cut to those rows, a four-entry entity_vocab.json.
It is a word model (plus ``[MASK]`` entities for entity-span tasks) at the size of the XLM-R backbone.

Tokenizer files (``pretrain.hf_tokenizer``): sentencepiece.bpe.model, a fairseq-ordered tokenizer.json
(the fix for MLukeTokenizer's id shift in transformers 5), entity_vocab.json ("lang:title" keys),
tokenizer_config.json, special_tokens_map.json; plus ``mluke_config.json`` (this project's config of the
exported weights, for ``load_exported``), ``export.json`` (provenance) and a README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from data_prep.common.atomic import atomic_path
from data_prep.common.errors import InputError
from data_prep.entities.vocab_file import (
    MASK2_ID,
    MASK_ID,
    SPECIAL_TOKENS,
    EntityVocab,
    read_entity_vocab,
    special_entries,
)
from pretrain import checkpoint as ckpt
from pretrain.hf_tokenizer import write_tokenizer_files
from pretrain.model import MLukeConfig, MLukeForMaskedLM

ENT_INIT_PIECES = ("@", "#")  # LUKE initialises <ent> from "@" and <ent2> from "#"
POOLER_SEED = 0
MLUKE_CONFIG = "mluke_config.json"
RECORDED_CONFIG = "model_config.json"  # MLukeConfig.to_dict() in the tag dir or OUT, if the trainer writes one
LITE_ENTITIES = len(SPECIAL_TOKENS)  # a --lite export keeps entity ids 0-3: [PAD] [UNK] [MASK] [MASK2]
ENTITY_TABLE = "luke.entity_embeddings.entity_embeddings.weight"
HF_XL_DIR = Path(__file__).parent / "hf_xl"
XL_FILES = ("configuration_mluke_xl.py", "modeling_mluke_xl.py")
XL_AUTO_MAP = {
    "AutoConfig": "configuration_mluke_xl.MLukeXLConfig",
    "AutoModel": "modeling_mluke_xl.MLukeXLModel",
    "AutoModelForMaskedLM": "modeling_mluke_xl.MLukeXLForMaskedLM",
}
# Tied to an embedding table or to lm_head.bias: the XL model's _tied_weights_keys, not written for it.
XL_TIED = ("lm_head.decoder.weight", "lm_head.decoder.bias", "entity_predictions.decoder.weight")


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
    from data_prep.shards.spm import UNK_ID, XlmrSentencePiece

    sp = XlmrSentencePiece.load(spm_path).sp
    i = sp.piece_to_id(piece)
    return UNK_ID if i == sp.unk_id() else i + 1


@torch.no_grad()
def to_hf_state_dict(
    sd: dict[str, torch.Tensor], ent_init_ids: tuple[int, int], lite: bool = False
) -> dict[str, torch.Tensor]:
    """What both layouts add (module doc): <ent>/<ent2> rows, [MASK2] from [MASK]; ``lite`` keeps entities 0-3."""
    out = {k: v.clone() for k, v in sd.items()}
    rows = list(ent_init_ids)
    word = sd["luke.embeddings.word_embeddings.weight"]
    word = torch.cat([word, word[rows]])
    out["luke.embeddings.word_embeddings.weight"] = word
    out["lm_head.decoder.weight"] = word.clone()
    bias = sd["lm_head.bias"]
    bias = torch.cat([bias, bias[rows]])
    out["lm_head.bias"], out["lm_head.decoder.bias"] = bias, bias.clone()

    ent, ent_bias = out[ENTITY_TABLE], out["entity_predictions.bias"]
    ent[MASK2_ID] = ent[MASK_ID]
    ent_bias[MASK2_ID] = ent_bias[MASK_ID]
    if lite:
        out[ENTITY_TABLE], out["entity_predictions.bias"] = ent[:LITE_ENTITIES].clone(), ent_bias[:LITE_ENTITIES].clone()
    out["entity_predictions.decoder.weight"] = out[ENTITY_TABLE].clone()
    return out


@torch.no_grad()
def to_luke_state_dict(
    sd: dict[str, torch.Tensor], mc: MLukeConfig, ent_init_ids: tuple[int, int], lite: bool = False
) -> dict[str, torch.Tensor]:
    """This project's weights -> ``LukeForMaskedLM``'s, with the additions listed in the module doc."""
    out = to_hf_state_dict(sd, ent_init_ids, lite)
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


def exported_mluke_config(mc: MLukeConfig, lite: bool) -> MLukeConfig:
    """This project's config of the exported weights (before the +2 word ids): a lite one has 4 entities."""
    return dataclasses.replace(mc, entity_vocab_size=LITE_ENTITIES) if lite else mc


def luke_config(mc: MLukeConfig, entity_aware_attention: bool = False):
    """``LukeConfig`` of the exported model: backbone sizes, +2 word ids for <ent>/<ent2>."""
    config = mc.to_luke_config()
    config.vocab_size = mc.vocab_size + 2
    config.use_entity_aware_attention = entity_aware_attention
    config.architectures = ["LukeForMaskedLM"]
    return config


def xl_config(mc: MLukeConfig):
    """``MLukeXLConfig`` (pretrain/hf_xl) of the exported pre-LN model, +2 word ids, with ``auto_map``."""
    from pretrain.hf_xl.configuration_mluke_xl import MLukeXLConfig

    shared = {f.name for f in dataclasses.fields(MLukeConfig)} & set(MLukeXLConfig.__annotations__)
    config = MLukeXLConfig(**{k: getattr(mc, k) for k in sorted(shared)})
    config.vocab_size = mc.vocab_size + 2
    config.architectures = ["MLukeXLForMaskedLM"]
    config.auto_map = dict(XL_AUTO_MAP)
    return config


def _check_names(state: dict[str, torch.Tensor], model_cls, config, tied: tuple[str, ...] = ()) -> None:
    """The exported names and shapes are exactly ``model_cls``'s, less ``tied`` (a meta-device model: no memory)."""
    with torch.device("meta"):
        ref = model_cls(config)
    shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items() if k not in tied}
    missing = sorted(set(shapes) - set(state))
    unexpected = sorted(set(state) - set(shapes))
    wrong = [k for k in shapes if k in state and tuple(state[k].shape) != shapes[k]]
    if missing or unexpected or wrong:  # a transformers version with other names: fail loudly
        raise RuntimeError(
            f"export does not match {model_cls.__name__}: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]}"
        )


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _save_weights(state: dict[str, torch.Tensor], directory: Path, dtype: str) -> None:
    """Write model.safetensors (sharded above 5 GB)."""
    from huggingface_hub import save_torch_state_dict

    state = {k: v.to(DTYPES[dtype]).contiguous() for k, v in sorted(state.items())}
    save_torch_state_dict(state, directory, max_shard_size="5GB", metadata={"format": "pt"})


def _readme(src: SourceCheckpoint, xl: bool, ent_ids: tuple[int, int], lite: bool, entity_aware: bool) -> str:
    mc = src.model_config
    step = src.state.step if src.state else "?"
    n_ent = f"{LITE_ENTITIES} special entities (--lite)" if lite else f"{mc.entity_vocab_size} entities"
    lines = [
        "# mLUKE checkpoint exported by `python -m pretrain export`",
        "",
        f"Source: `{src.tag_dir}` (step {step}, training stage {src.state.stage if src.state else '?'}).",
        f"Backbone: hidden {mc.hidden_size}, {mc.num_hidden_layers} layers, {mc.num_attention_heads} heads, "
        f"{'pre' if xl else 'post'}-LayerNorm, {mc.vocab_size} word ids (+2: `<ent>`={mc.vocab_size}, "
        f"`<ent2>`={mc.vocab_size + 1}), {n_ent} ({mc.entity_emb_size}-d).",
        "",
        "```python",
    ]
    if xl:
        lines += [
            "from transformers import AutoModelForMaskedLM, MLukeTokenizer",
            "model = AutoModelForMaskedLM.from_pretrained(PATH, trust_remote_code=True)  # or AutoModel",
        ]
    else:
        lines += [
            "from transformers import LukeForMaskedLM, MLukeTokenizer",
            "model = LukeForMaskedLM.from_pretrained(PATH)  # or LukeModel",
        ]
    lines += ["tokenizer = MLukeTokenizer.from_pretrained(PATH)", "```", ""]
    if xl:
        lines += [
            "The backbone is pre-LayerNorm (XLM-R XL), which transformers' LUKE classes cannot represent: the model",
            "is `MLukeXLForMaskedLM` / `MLukeXLModel` of `modeling_mluke_xl.py` in this directory (plain",
            "self-attention over the joint word + entity sequence, as pretrained; no pooler).",
        ]
    else:
        lines += [
            f"`use_entity_aware_attention` is {str(entity_aware).lower()}. The w2e/e2w/e2e query weights are the query",
            "weights, so switching it on computes exactly the plain self-attention the model was pretrained with;",
            "while it is off, transformers reports them as unused weights (as for studio-ousia/mluke-base).",
            "The pooler is random (it is not pretrained).",
        ]
    lines.append(
        f"`<ent>`/`<ent2>` were initialised from word ids {ent_ids[0]}/{ent_ids[1]} ('@'/'#'), `[MASK2]` from `[MASK]`."
    )
    if lite:
        lines.append("Lite: the entity table keeps only `[PAD]` `[UNK]` `[MASK]` `[MASK2]` (ids 0-3).")
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


def export(
    checkpoint: Path,
    out: Path,
    shards: Path | None = None,
    dtype: str = "fp32",
    lite: bool = False,
    entity_aware_attention: bool = False,
) -> Path:
    """Export a DeepSpeed checkpoint (OUT, OUT/checkpoints or OUT/checkpoints/TAG) to ``out``; returns ``out``."""
    if dtype not in DTYPES:
        raise InputError(f"--dtype {dtype!r}: must be one of {', '.join(DTYPES)}")
    src = resolve_checkpoint(checkpoint, shards)
    mc = src.model_config
    xl = mc.pre_layer_norm
    if xl and entity_aware_attention:
        raise InputError(
            f"{src.tag_dir}: --entity-aware-attention: the pre-LayerNorm (XL) export has plain self-attention only"
        )
    sd = load_weights(src)
    vocab = EntityVocab(special_entries()) if lite else read_entity_vocab(src.entity_vocab_path)
    ent_ids = tuple(piece_id(src.spm_path, p) for p in ENT_INIT_PIECES)
    from data_prep.shards.spm import XlmrSentencePiece

    n_ids = XlmrSentencePiece.load(src.spm_path).vocab_size
    if n_ids != mc.vocab_size:  # <ent>/<ent2> must get the same ids in the tokenizer and the embeddings
        raise InputError(
            f"{src.spm_path}: gives {n_ids} word ids (pieces + <s> <pad> </s> <unk> shift + <mask>), the model "
            f"has {mc.vocab_size} word embeddings; export needs a backbone whose vocabulary is exactly the spm's"
        )
    emc = exported_mluke_config(mc, lite)
    if xl:
        from pretrain.hf_xl.modeling_mluke_xl import MLukeXLForMaskedLM

        state = {k: v for k, v in to_hf_state_dict(sd, ent_ids, lite).items() if k not in XL_TIED}
        config, model_cls, tied = xl_config(emc), MLukeXLForMaskedLM, XL_TIED
    else:
        from transformers import LukeForMaskedLM

        state = to_luke_state_dict(sd, mc, ent_ids, lite)
        config, model_cls, tied = luke_config(emc, entity_aware_attention), LukeForMaskedLM, ()
    del sd  # every exported tensor is a copy: frees the consolidated flat buffer before writing
    # Checked against the entity-aware variant: it has every name the export writes (the query copies too).
    _check_names(state, model_cls, luke_config(emc, True) if not xl else config, tied)
    config.dtype = str(DTYPES[dtype]).removeprefix("torch.")  # from_pretrained loads in this dtype
    info = {
        "source": str(src.tag_dir.resolve()),
        "tag": src.tag,
        "trainer_state": asdict(src.state) if src.state else None,
        "architecture": config.architectures[0],
        "lite": lite,
        "use_entity_aware_attention": bool(entity_aware_attention),
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
        config.save_pretrained(tmp)
        _save_weights(state, tmp, dtype)
        if xl:
            for name in XL_FILES:
                shutil.copyfile(HF_XL_DIR / name, tmp / name)
        (tmp / MLUKE_CONFIG).write_text(json.dumps(emc.to_dict(), indent=2) + "\n", encoding="utf-8")
        write_tokenizer_files(tmp, src.spm_path, vocab, **src.limits)
        (tmp / "export.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(_readme(src, xl, ent_ids, lite, entity_aware_attention), encoding="utf-8")
    return out


def load_exported(path: str | Path) -> MLukeForMaskedLM:
    """This project's model from an export directory (its ``mluke_config.json`` says which).

    The <ent>/<ent2> rows, the pooler and the entity-aware query copies are dropped: they are not part of
    the pretraining model (the copies must still equal the query weights). Tied weights not written (XL)
    are re-tied. A ``--lite`` export gives a model with the 4 special entities.
    """
    from pretrain.init_from import read_checkpoint_tensors

    path = Path(path)
    cfg_file = path / MLUKE_CONFIG
    if not cfg_file.is_file():
        raise InputError(f"{cfg_file}: not found (not a `pretrain export` directory)")
    mc = MLukeConfig(**json.loads(cfg_file.read_text(encoding="utf-8")))
    model = MLukeForMaskedLM(mc)
    sd = read_checkpoint_tensors(path)
    V = mc.vocab_size
    for k in ("luke.embeddings.word_embeddings.weight", "lm_head.decoder.weight", "lm_head.bias", "lm_head.decoder.bias"):
        if k in sd:  # the XL export does not write the tied decoder
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
    parser.add_argument("--lite", action="store_true",
                        help="keep only the 4 special entities of the entity side (as studio-ousia/mluke-base-lite)")
    parser.add_argument("--entity-aware-attention", action="store_true",
                        help="write use_entity_aware_attention=true (same outputs; default false as published mLUKE)")


def run_cli(args: argparse.Namespace) -> int:
    out = export(args.checkpoint, args.out, shards=args.shards, dtype=args.dtype, lite=args.lite,
                 entity_aware_attention=args.entity_aware_attention)
    info = json.loads((out / "export.json").read_text(encoding="utf-8"))
    state = info["trainer_state"] or {}
    remote = ", trust_remote_code" if info["architecture"] != "LukeForMaskedLM" else ""
    print(f"export: {info['source']} (step {state.get('step', '?')}, stage {state.get('stage', '?')}) -> {out} "
          f"({info['architecture']}{remote}{', lite' if info['lite'] else ''} + MLukeTokenizer)")
    return 0
