"""Export of real DeepSpeed checkpoints (ZeRO 0/1/2/3, stage 1 and 2) to transformers: LukeForMaskedLM (full,
--lite, with or without entity-aware attention) and, for the pre-LN XL backbone, its trust_remote_code model."""

from __future__ import annotations

import io
import json
import logging
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch
from export_fixtures import run, shards, xl_run

from data_prep.common.errors import InputError
from data_prep.entities.vocab_file import MASK_ID, read_entity_vocab
from data_prep.shards.spm import XlmrSentencePiece
from pretrain import checkpoint as ckpt
from pretrain.collator import Collator, MaskingConfig, unit_table
from pretrain.data import Sample, load_split
from pretrain.export import HF_XL_DIR, XL_FILES, export, load_exported, load_weights, resolve_checkpoint
from pretrain.model import MLukeForMaskedLM

HEAD_PREFIXES = ("lm_head.", "entity_predictions.")
QUERY_COPIES = {f"luke.encoder.layer.{i}.attention.self.{kind}query.{p}"
                for i in range(2) for kind in ("w2e_", "e2w_", "e2e_") for p in ("weight", "bias")}


def trained_model(run_dir: Path) -> MLukeForMaskedLM:
    """The trained model: this project's class with the checkpoint's (consolidated) weights."""
    src = resolve_checkpoint(run_dir)
    model = MLukeForMaskedLM(src.model_config)
    ckpt.load_into(model, load_weights(src), str(src.tag_dir))
    model.tie_weights()
    return model.eval()


def validation_batches(lang: str) -> list[dict[str, torch.Tensor]]:
    """Masked validation batches of the fixture shards, through the trainer's collator (padding included)."""
    d = shards()
    spm = XlmrSentencePiece.load(d / "sentencepiece.bpe.model")
    collate = Collator(MaskingConfig(spm_size=spm.spm_size, max_mention_length=4, seed=3), unit_table(str(d / "sentencepiece.bpe.model")))
    ds = load_split(d, lang, "validation")
    cols = ("word_ids", "entity_ids", "entity_starts", "entity_ends")
    samples = [Sample(i, lang, *(ds[i][c] for c in cols)) for i in range(len(ds))]
    return [collate(samples[i : i + 3]) for i in range(0, len(samples), 3)]


class LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextmanager
def transformers_log():
    """Every message transformers logs (info level and up) inside the block."""
    import transformers

    handler = LogCapture()
    transformers.logging.add_handler(handler)
    old = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_info()
    try:
        yield handler.messages
    finally:
        transformers.logging.set_verbosity(old)
        transformers.logging.remove_handler(handler)


def load_hf(path: Path, xl: bool = False, **config_overrides):
    """The masked-LM and base models from ``path`` with their loading info and every log line transformers wrote:
    LukeForMaskedLM + LukeModel, or (``xl``) AutoModelForMaskedLM + AutoModel with trust_remote_code."""
    from transformers import AutoModel, AutoModelForMaskedLM, LukeForMaskedLM, LukeModel

    classes, kwargs = (LukeForMaskedLM, LukeModel), dict(config_overrides)
    if xl:
        classes, kwargs = (AutoModelForMaskedLM, AutoModel), {**kwargs, "trust_remote_code": True}
    with transformers_log() as messages:
        mlm, mlm_info = classes[0].from_pretrained(path, output_loading_info=True, **kwargs)
        base, base_info = classes[1].from_pretrained(path, output_loading_info=True, **kwargs)
    return mlm.eval(), mlm_info, base.eval(), base_info, "\n".join(messages)


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k not in ("mlm_labels", "mep_labels")}


def assert_same_logits(model: MLukeForMaskedLM, hf, batches, n_entities: int | None = None) -> None:
    """Word logits (+2 ids <ent>/<ent2>) and entity logits equal at real positions; [MASK2] (id 3) is
    re-initialised from [MASK] by the export. ``n_entities``: the export keeps only the first ones (lite)."""
    V = model.config.vocab_size
    for batch in batches:
        inputs = model_inputs(batch)
        with torch.no_grad():
            ref = model(**inputs, return_logits=True)
            out = hf(**inputs)
        word = batch["attention_mask"].bool()
        ents = batch["entity_attention_mask"].bool()
        assert out.logits.shape[-1] == V + 2  # <ent>, <ent2>
        torch.testing.assert_close(out.logits[..., :V][word], ref.mlm_logits[word], atol=1e-5, rtol=0)
        n = n_entities or ref.mep_logits.shape[-1]
        assert out.entity_logits.shape[-1] == n
        keep = [i for i in range(n) if i != 3]
        torch.testing.assert_close(out.entity_logits[ents][:, keep], ref.mep_logits[ents][:, keep], atol=1e-5, rtol=0)
        assert ents.any() and word.any()


def assert_export_additions(model: MLukeForMaskedLM, out: Path, lite: bool = False) -> dict[str, torch.Tensor]:
    """What the export adds, as LUKE's conversion does, read from the written file (every layout)."""
    from safetensors.torch import load_file

    sd = load_file(str(out / "model.safetensors"))
    V = model.config.vocab_size
    sp = XlmrSentencePiece.load(shards() / "sentencepiece.bpe.model").sp
    at, hash_ = (sp.piece_to_id(p) for p in ("@", "#"))
    at, hash_ = (3 if i == sp.unk_id() else i + 1 for i in (at, hash_))
    W = sd["luke.embeddings.word_embeddings.weight"]
    assert torch.equal(W[:V], model.luke.embeddings.word_embeddings.weight)
    assert torch.equal(W[V], W[at]) and torch.equal(W[V + 1], W[hash_])
    assert torch.equal(sd["lm_head.bias"][V:], sd["lm_head.bias"][[at, hash_]])
    E, ours = sd["luke.entity_embeddings.entity_embeddings.weight"], model.luke.entity_embeddings.entity_embeddings.weight
    assert E.shape[0] == (4 if lite else ours.shape[0])
    assert torch.equal(E[:3], ours[:3]) and torch.equal(E[4:], ours[4:E.shape[0]])
    assert torch.equal(E[3], E[2]) and torch.equal(sd["entity_predictions.bias"][3], sd["entity_predictions.bias"][2])
    return sd


@pytest.mark.parametrize("zero_stage,stage,entity_aware", [(0, 2, False), (0, 2, True), (1, 1, True), (3, 2, False)])
def test_export_loads_cleanly_and_computes_the_same_logits(tmp_path, zero_stage, stage, entity_aware):
    run_dir = run(zero_stage, stage)
    out = export(run_dir / "checkpoints", tmp_path / "hf", entity_aware_attention=entity_aware)  # `latest` -> step000002
    info = json.loads((out / "export.json").read_text())
    assert info["tag"] == "step000002" and info["trainer_state"]["stage"] == stage
    assert info["trainer_state"]["zero_stage"] == zero_stage
    assert info["architecture"] == "LukeForMaskedLM" and info["use_entity_aware_attention"] is entity_aware
    # false unless asked, as the published mLUKE configs
    assert json.loads((out / "config.json").read_text())["use_entity_aware_attention"] is entity_aware

    mlm, mlm_info, base, base_info, log = load_hf(out)
    # The query copies are written either way; without entity-aware attention transformers does not use them
    # (as it reports for studio-ousia/mluke-base). Nothing is missing or newly initialised in either mode.
    unused = set() if entity_aware else QUERY_COPIES
    assert mlm_info["missing_keys"] == set() and mlm_info["unexpected_keys"] == unused
    assert mlm_info["mismatched_keys"] == set() and not mlm_info["error_msgs"]
    assert base_info["missing_keys"] == set()
    heads = base_info["unexpected_keys"] - unused
    assert heads and all(k.startswith(HEAD_PREFIXES) for k in heads)
    assert "newly initialized" not in log and "not initialized" not in log

    cfg = mlm.config
    model = trained_model(run_dir)
    V = model.config.vocab_size
    assert cfg.use_entity_aware_attention is entity_aware and cfg.vocab_size == V + 2
    assert cfg.max_position_embeddings == 66 and cfg.type_vocab_size == 1 and cfg.layer_norm_eps == 1e-5

    batches = validation_batches("en") + validation_batches("fr")
    assert_same_logits(model, mlm, batches)
    # LukeModel gives the same encoder states as the masked-LM model's backbone.
    inputs = model_inputs(validation_batches("fr")[0])
    with torch.no_grad():
        torch.testing.assert_close(base(**inputs).entity_last_hidden_state, mlm.luke(**inputs).entity_last_hidden_state)
    if not entity_aware:  # flipping the flag later (config.json or from_pretrained) changes nothing in the outputs
        flipped, flipped_info, _, _, log = load_hf(out, use_entity_aware_attention=True)
        assert flipped.config.use_entity_aware_attention and flipped_info["unexpected_keys"] == set()
        assert flipped_info["missing_keys"] == set() and "newly initialized" not in log
        assert_same_logits(model, flipped, batches[:2])

    sd = assert_export_additions(model, out)
    W = mlm.luke.embeddings.word_embeddings.weight
    assert torch.equal(mlm.lm_head.decoder.weight, W)  # written explicitly, not tied by transformers 5
    for i in range(model.config.num_hidden_layers):
        prefix = f"luke.encoder.layer.{i}.attention.self."
        for kind in ("w2e_", "e2w_", "e2e_"):
            for p in ("weight", "bias"):
                assert torch.equal(sd[f"{prefix}{kind}query.{p}"], sd[f"{prefix}query.{p}"])


def test_lite_export_is_a_word_model_with_the_special_entities(tmp_path):
    """--lite, as studio-ousia/mluke-base-lite: entity_vocab_size 4 ([PAD] [UNK] [MASK] [MASK2]); loads cleanly in
    LukeForMaskedLM / LukeModel; word-only input gives our word logits; [MASK] entities give our logits for ids 0-2."""
    from transformers import MLukeTokenizer

    out = export(run(0, 2), tmp_path / "lite", lite=True)
    config = json.loads((out / "config.json").read_text())
    assert config["entity_vocab_size"] == 4 and config["use_entity_aware_attention"] is False
    assert json.loads((out / "entity_vocab.json").read_text()) == {"[PAD]": 0, "[UNK]": 1, "[MASK]": 2, "[MASK2]": 3}
    assert json.loads((out / "export.json").read_text())["lite"] is True

    mlm, mlm_info, base, base_info, log = load_hf(out)
    assert mlm_info["missing_keys"] == set() and mlm_info["unexpected_keys"] == QUERY_COPIES
    assert mlm_info["mismatched_keys"] == set() and base_info["missing_keys"] == set()
    assert "newly initialized" not in log and "not initialized" not in log
    model = trained_model(run(0, 2))
    assert_export_additions(model, out, lite=True)
    V = model.config.vocab_size
    batches = validation_batches("en") + validation_batches("fr")
    for batch in batches:  # word-only input
        word = batch["attention_mask"].bool()
        with torch.no_grad():
            ref = model(batch["input_ids"], batch["attention_mask"], return_logits=True)
            got = mlm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            h = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        assert got.entity_logits is None
        torch.testing.assert_close(got.logits[..., :V][word], ref.mlm_logits[word], atol=1e-5, rtol=0)
        torch.testing.assert_close(h[word], ref.word_hidden_states[word], atol=1e-5, rtol=0)
    # [MASK] entities over the mentions: the 4-entity model equals ours on those ids
    masked = []
    for b in batches:
        b = dict(b)
        b["entity_ids"] = torch.where(b["entity_attention_mask"].bool(), MASK_ID, 0)
        masked.append(b)
    assert_same_logits(model, mlm, masked, n_entities=4)

    # The tokenizer: the shard word ids; a 4-entry entity vocabulary ([UNK] for names, [MASK] without them)
    tok = MLukeTokenizer.from_pretrained(out)
    sp = XlmrSentencePiece.load(shards() / "sentencepiece.bpe.model")
    row = next(r for r in load_split(shards(), "en", "validation") if r["entity_ids"])
    ids = row["word_ids"]
    text = sp.decode(ids)
    spans = [(len(sp.decode(ids[:s])) + (1 if s else 0), len(sp.decode(ids[:e]))) for s, e in zip(row["entity_starts"], row["entity_ends"])]
    enc = tok(text, entity_spans=spans, entities=["en:anything"] * len(spans))
    assert enc["input_ids"] == [0, *ids, 2] and enc["entity_ids"] == [1] * len(spans)
    assert tok(text, entity_spans=spans)["entity_ids"] == [MASK_ID] * len(spans)

    from pretrain.evaluate import load_scorer

    with pytest.raises(InputError, match="--lite export"):  # nothing to score masked entities with
        load_scorer(out)
    back = load_exported(out)  # this project's model with the 4 special entities
    assert back.config.entity_vocab_size == 4
    for k, v in model.state_dict().items():
        if not k.startswith(("luke.entity_embeddings.entity_embeddings", "entity_predictions.decoder", "entity_predictions.bias")):
            assert torch.equal(v, back.state_dict()[k]), k


def test_an_xl_export_loads_with_trust_remote_code_and_computes_the_same_logits(tmp_path):
    """The pre-LN backbone: config.json + auto_map + the modeling files of pretrain/hf_xl, loaded by transformers
    from the directory alone (the copied files, not this package), cleanly, with our word and entity logits."""
    from transformers import MLukeTokenizer

    from pretrain.evaluate import load_scorer

    run_dir = xl_run()
    out = export(run_dir, tmp_path / "xl")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "mluke-xl" and config["architectures"] == ["MLukeXLForMaskedLM"]
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForMaskedLM"}
    for name in XL_FILES:
        assert (out / name).read_bytes() == (HF_XL_DIR / name).read_bytes()
    assert json.loads((out / "export.json").read_text())["architecture"] == "MLukeXLForMaskedLM"
    assert "trust_remote_code=True" in (out / "README.md").read_text()

    mlm, mlm_info, base, base_info, log = load_hf(out, xl=True)
    assert type(mlm).__module__.startswith("transformers_modules.")  # the directory's copy
    assert type(mlm).__name__ == "MLukeXLForMaskedLM" and type(base).__name__ == "MLukeXLModel"
    with torch.no_grad(), transformers_log() as messages:  # a forward pass logs nothing (e.g. deprecations)
        mlm(**model_inputs(validation_batches("en")[0]), return_dict=None)
    assert messages == []
    assert mlm_info["missing_keys"] == set() and mlm_info["unexpected_keys"] == set()
    assert mlm_info["mismatched_keys"] == set() and not mlm_info["error_msgs"]
    assert base_info["missing_keys"] == set()
    assert base_info["unexpected_keys"] and all(k.startswith(HEAD_PREFIXES) for k in base_info["unexpected_keys"])
    assert "newly initialized" not in log and "not initialized" not in log and "deprecated" not in log
    # the decoders were not written: transformers tied them to the tables on load
    assert mlm.lm_head.decoder.weight is mlm.luke.embeddings.word_embeddings.weight
    assert mlm.lm_head.decoder.bias is mlm.lm_head.bias
    assert mlm.entity_predictions.decoder.weight is mlm.luke.entity_embeddings.entity_embeddings.weight

    model = trained_model(run_dir)
    assert model.config.pre_layer_norm and mlm.config.vocab_size == model.config.vocab_size + 2
    batches = validation_batches("en") + validation_batches("fr")
    assert_same_logits(model, mlm, batches)
    assert_export_additions(model, out)
    inputs = model_inputs(batches[0])
    with torch.no_grad():
        a, b = base(**inputs), mlm.luke(**inputs)
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, atol=0, rtol=0)
    torch.testing.assert_close(a.entity_last_hidden_state, b.entity_last_hidden_state, atol=0, rtol=0)

    assert MLukeTokenizer.from_pretrained(out)("kalo")["input_ids"][0] == 0
    assert_round_trip(model, load_exported(out))
    scorer, _ = load_scorer(out)  # evaluate reads it as this project's model, no remote code
    assert not scorer.hf and isinstance(scorer.model, MLukeForMaskedLM)

    with pytest.raises(InputError, match="entity-aware"):
        export(run_dir, tmp_path / "xl2", entity_aware_attention=True)
    assert not (tmp_path / "xl2").exists()

    # --lite works for XL too: 4 special entities, clean load, the same word logits
    lite = export(run_dir, tmp_path / "xl_lite", lite=True)
    mlm, mlm_info, _, _, log = load_hf(lite, xl=True)
    assert mlm.config.entity_vocab_size == 4 and mlm_info["missing_keys"] == mlm_info["unexpected_keys"] == set()
    assert "newly initialized" not in log
    batch = batches[0]
    with torch.no_grad():
        ref = model(batch["input_ids"], batch["attention_mask"], return_logits=True)
        got = mlm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    word = batch["attention_mask"].bool()
    torch.testing.assert_close(got.logits[..., : model.config.vocab_size][word], ref.mlm_logits[word], atol=1e-5, rtol=0)


def test_xl_modeling_file_matches_the_model_with_padding_and_labels():
    """pretrain/hf_xl imported as a module: same losses and hidden states as ours on a random pre-LN model,
    padded words and entities included (no DeepSpeed involved)."""
    from tiny_models import tiny_mluke_config

    from pretrain.export import XL_TIED, xl_config
    from pretrain.hf_xl.modeling_mluke_xl import MLukeXLForMaskedLM

    torch.manual_seed(0)
    mc = tiny_mluke_config(pre_layer_norm=True, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ours = MLukeForMaskedLM(mc).eval()
    with torch.no_grad():
        for p in ours.parameters():  # LayerNorms and biases away from their init values
            p.add_(torch.randn_like(p) * 0.05)
    config = xl_config(mc)
    config.vocab_size = mc.vocab_size
    hf = MLukeXLForMaskedLM(config).eval()
    result = hf.load_state_dict({k: v for k, v in ours.state_dict().items() if k not in XL_TIED}, strict=False)
    assert set(result.missing_keys) == set(XL_TIED) and not result.unexpected_keys
    hf.tie_weights()
    B, L, E = 2, 9, 3
    input_ids = torch.randint(5, mc.vocab_size - 1, (B, L))
    input_ids[:, 0], input_ids[1, 6:] = 0, mc.pad_token_id
    attention_mask = input_ids.ne(mc.pad_token_id).long()
    entity_ids = torch.tensor([[5, 6, 0], [7, 0, 0]])
    entity_position_ids = torch.full((B, E, 4), -1)
    entity_position_ids[0, 0, :2], entity_position_ids[0, 1, :1], entity_position_ids[1, 0, :3] = torch.tensor([1, 2]), 4, torch.tensor([2, 3, 4])
    entity_attention_mask = entity_ids.ne(0).long()
    labels = torch.full((B, L), -100)
    labels[0, 3], labels[1, 2] = 10, 11
    entity_labels = torch.tensor([[9, -100, -100], [8, -100, -100]])
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, entity_ids=entity_ids,
                  entity_attention_mask=entity_attention_mask, entity_position_ids=entity_position_ids)
    with torch.no_grad():
        ref = ours(**inputs, mlm_labels=labels, mep_labels=entity_labels, return_logits=True)
        got = hf(**inputs, labels=labels, entity_labels=entity_labels, output_hidden_states=True)
    torch.testing.assert_close(got.mlm_loss, ref.mlm_loss_sum / ref.mlm_count, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.mep_loss, ref.mep_loss_sum / ref.mep_count, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.loss, got.mlm_loss + got.mep_loss)
    word, ents = attention_mask.bool(), entity_attention_mask.bool()
    torch.testing.assert_close(got.logits[word], ref.mlm_logits[word], atol=1e-5, rtol=0)
    torch.testing.assert_close(got.entity_logits[ents], ref.mep_logits[ents], atol=1e-5, rtol=0)
    assert len(got.hidden_states) == len(got.entity_hidden_states) == mc.num_hidden_layers + 1
    # no entities at all: the word side alone
    with torch.no_grad():
        ref = ours(input_ids, attention_mask, return_logits=True)
        got = hf(input_ids=input_ids, attention_mask=attention_mask)
    assert got.entity_logits is None
    torch.testing.assert_close(got.logits[word], ref.mlm_logits[word], atol=1e-5, rtol=0)


def test_consolidated_zero_weights_match_the_unpartitioned_run():
    """ZeRO-2/3 shard the fp32 weights; consolidated, they equal the ZeRO-0 run's module weights
    (read straight from DeepSpeed's model-states file, not through zero_to_fp32)."""
    z0 = run(0, 2) / "checkpoints" / "step000002" / "mp_rank_00_model_states.pt"
    ref = torch.load(z0, map_location="cpu", weights_only=False)["module"]
    for zero_stage in (3,):
        got = load_weights(resolve_checkpoint(run(zero_stage, 2)))
        assert set(got) == set(ref)
        for k in ref:
            torch.testing.assert_close(got[k], ref[k].float(), atol=1e-5, rtol=0, msg=k)
        # and the tags differ: step 2 is not step 1 (the export reads the tag it is given)
        step1 = load_weights(resolve_checkpoint(run(zero_stage, 2) / "checkpoints" / "step000001"))
        assert not torch.equal(step1["luke.encoder.layer.0.attention.self.query.weight"], got["luke.encoder.layer.0.attention.self.query.weight"])


def test_tokenizer_gives_the_shard_ids_with_entity_spans(tmp_path):
    """MLukeTokenizer.from_pretrained(HF_DIR) on shard rows turned back into text: same word ids, spans, entities."""
    from transformers import MLukeTokenizer

    out = export(run(0, 2), tmp_path / "hf")
    tok = MLukeTokenizer.from_pretrained(out)
    sp = XlmrSentencePiece.load(shards() / "sentencepiece.bpe.model")
    vocab = read_entity_vocab(shards() / "entity_vocab.jsonl")
    assert [tok.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == [0, 1, 2, 3, sp.mask_id]
    assert tok.convert_tokens_to_ids(["<ent>", "<ent2>"]) == [sp.vocab_size, sp.vocab_size + 1]
    checked = 0
    for lang in ("en", "fr"):
        ds = load_split(shards(), lang, "validation")
        for row in ds:
            if not row["entity_ids"]:
                continue
            ids = row["word_ids"]
            text = sp.decode(ids)  # fixture words: every word starts with "▁", no <unk>
            spans = [
                (len(sp.decode(ids[:s])) + (1 if s else 0), len(sp.decode(ids[:e])))
                for s, e in zip(row["entity_starts"], row["entity_ends"])
            ]
            names = [f"{t_lang}:{title}" for e in row["entity_ids"] for title, t_lang in vocab.entries[e].entities]
            enc = tok(text, entity_spans=spans, entities=names)
            assert enc["input_ids"] == [0, *ids, 2]
            assert enc["entity_ids"] == row["entity_ids"]
            for pos, s, e in zip(enc["entity_position_ids"], row["entity_starts"], row["entity_ends"]):
                assert [p for p in pos if p != -1] == list(range(s + 1, e + 1))
            assert tok(text)["input_ids"] == [0, *ids, 2]
            checked += 1
    assert checked >= 3


def assert_round_trip(model: MLukeForMaskedLM, loaded: MLukeForMaskedLM) -> None:
    a, b = model.state_dict(), loaded.state_dict()
    assert set(a) == set(b)
    for k, v in a.items():
        if k in ("luke.entity_embeddings.entity_embeddings.weight", "entity_predictions.decoder.weight", "entity_predictions.bias"):
            rows = [i for i in range(v.shape[0]) if i != 3]  # [MASK2] re-initialised from [MASK]
            assert torch.equal(v[rows], b[k][rows]) and torch.equal(b[k][3], v[2]), k
        else:
            assert torch.equal(v, b[k]), k


def test_load_exported_round_trips_an_hf_export(tmp_path):
    out = export(run(0, 2), tmp_path / "hf")
    assert_round_trip(trained_model(run(0, 2)), load_exported(out))


def test_cli_exports_a_tag_and_reports_bad_input(tmp_path):
    from pretrain.__main__ import main

    tag = run(0, 2) / "checkpoints" / "step000001"
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        assert main(["export", "--checkpoint", str(tag), "--out", str(tmp_path / "hf1")]) == 0
    assert "step 1" in stdout.getvalue() and json.loads((tmp_path / "hf1" / "export.json").read_text())["tag"] == "step000001"
    stderr = io.StringIO()
    with redirect_stderr(stderr):
        assert main(["export", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert stderr.getvalue().startswith("error: ") and "nope" in stderr.getvalue() and len(stderr.getvalue().splitlines()) == 1
    assert not (tmp_path / "x").exists()

    stdout = io.StringIO()
    with redirect_stdout(stdout):
        assert main(["export", "--checkpoint", str(tag), "--out", str(tmp_path / "hf2"), "--lite", "--entity-aware-attention"]) == 0
    assert "LukeForMaskedLM, lite" in stdout.getvalue()
    config = json.loads((tmp_path / "hf2" / "config.json").read_text())
    assert config["use_entity_aware_attention"] is True and config["entity_vocab_size"] == 4
    xl = xl_run()
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout):
        assert main(["export", "--checkpoint", str(xl), "--out", str(tmp_path / "xl")]) == 0
    assert "MLukeXLForMaskedLM, trust_remote_code" in stdout.getvalue()
    with redirect_stderr(stderr):
        assert main(["export", "--checkpoint", str(xl), "--out", str(tmp_path / "xl2"), "--entity-aware-attention"]) == 2
    assert "--entity-aware-attention" in stderr.getvalue() and not (tmp_path / "xl2").exists()


# ------------------------------------------------------------------------------------------ tokenizer files

MULTILINGUAL = [  # (lang, sentence, links as (anchor text, linked title)); written for this test
    ("en", "Tokyo is the capital of Japan", [("Tokyo", "Tokyo"), ("Japan", "Japan")]),
    ("en", "The river Rhine flows through Germany and the Netherlands", [("Rhine", "Rhine"), ("Germany", "Germany")]),
    ("de", "Die Hauptstadt von Deutschland ist Berlin", [("Deutschland", "Deutschland"), ("Berlin", "Berlin")]),
    ("ru", "Москва — столица России", [("Москва", "Москва"), ("России", "Россия")]),
    ("ja", "東京は日本の首都です。", []),
    ("zh", "北京是中国的首都。", []),
    ("th", "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย", []),
    ("ar", "القاهرة هي عاصمة مصر", [("مصر", "مصر")]),
]
ENTITIES = [  # qid, [(title, lang)]
    ("Q1490", [("Tokyo", "en")]),
    ("Q17", [("Japan", "en")]),
    ("Q584", [("Rhine", "en")]),
    ("Q183", [("Germany", "en"), ("Deutschland", "de")]),
    ("Q64", [("Berlin", "de")]),
    ("Q649", [("Москва", "ru")]),
    ("Q159", [("Россия", "ru")]),
    ("Q79", [("مصر", "ar")]),
]


def multilingual_tokenizer(tmp_path: Path):
    """A unigram spm trained here on the sentences above, the entity vocab, and the exported tokenizer files."""
    import sentencepiece

    from data_prep.entities.vocab_file import EntityEntry, EntityVocab, special_entries
    from pretrain.hf_tokenizer import write_tokenizer_files

    corpus = [s for _, s, _ in MULTILINGUAL] + ["the and of is river city capital flows through", "Netherlands Japan Tokyo"]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus * 5), model_writer=model, vocab_size=200, hard_vocab_limit=False,
        model_type="unigram", character_coverage=1.0, minloglevel=2, num_threads=1,
    )
    spm_path = tmp_path / "sentencepiece.bpe.model"
    spm_path.write_bytes(model.getvalue())
    entries = special_entries() + [EntityEntry(4 + i, q, tuple(names), 10 - i) for i, (q, names) in enumerate(ENTITIES)]
    vocab = EntityVocab(entries)
    out = tmp_path / "tok"
    out.mkdir()
    write_tokenizer_files(out, spm_path, vocab, 64, 8, 10)
    return out, XlmrSentencePiece.load(spm_path), vocab


def test_tokenizer_json_is_exactly_xlmr_fairseq_ids(tmp_path):
    """tokenizer.json (also read by XLM-R tokenizers) = spm + fairseq ids, NFKC, spaces and <unk> included."""
    from tokenizers import Tokenizer

    out, sp, _ = multilingual_tokenizer(tmp_path)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    texts = [s for _, s, _ in MULTILINGUAL] + ["ＴＯＫＹＯ  is   the ｃａｐｉｔａｌ", "snow ☃ man ☃☃"]
    for text in texts:
        assert tok.encode(text).ids == [0, *sp.encode(text).tolist(), 2], text
    assert 3 in tok.encode("snow ☃ man").ids
    # <mask> takes the space before it, as XLM-R's tokenizer does
    want = [0, *sp.encode("Tokyo").tolist(), sp.mask_id, *sp.encode("Japan").tolist(), 2]
    assert tok.encode("Tokyo <mask> Japan").ids == want
    assert tok.token_to_id("<mask>") == sp.mask_id and tok.token_to_id("<ent>") == sp.vocab_size


def test_mluke_tokenizer_matches_the_shard_builder(tmp_path):
    """Pages with links through `data_prep shards` (build_shards) vs MLukeTokenizer with entity spans."""
    from corpus_fixtures import write_corpus
    from transformers import MLukeTokenizer

    from data_prep.entities.vocab_file import write_entity_vocab
    from data_prep.shards.build import build_shards

    out, sp, vocab = multilingual_tokenizer(tmp_path)
    write_entity_vocab(tmp_path / "vocab.jsonl", vocab.entries)
    pages: dict[str, list[dict]] = {}
    expected: dict[int, tuple[str, str, list[tuple[int, int]], list[str]]] = {}
    for k, (lang, text, links) in enumerate(MULTILINGUAL):
        spans = [(text.index(a), text.index(a) + len(a)) for a, _ in links]
        paragraph = {"text": text, "links": [{"start": s, "end": e, "title": t} for (s, e), (_, t) in zip(spans, links)]}
        pages.setdefault(lang, []).append({"page_id": 100 + k, "title": f"Page {k}", "paragraphs": [paragraph]})
        expected[100 + k] = (lang, text, spans, [t for _, t in links])
    corpora = [write_corpus(tmp_path / "corpus" / lang, lang, p) for lang, p in pages.items()]
    build_shards(corpora, tmp_path / "vocab.jsonl", tmp_path / "sentencepiece.bpe.model", tmp_path / "shards",
                 max_seq_length=64, max_entity_length=8, max_mention_length=10, valid_fraction=0.0,
                 keep_no_entity=True, progress=False)

    tok = MLukeTokenizer.from_pretrained(out)
    seen = 0
    for lang in pages:
        for row in load_split(tmp_path / "shards", lang, "train"):
            lang_, text, spans, titles = expected[row["page_id"]]
            names = [f"{lang}:{t}" for t in titles]
            enc = tok(text, entity_spans=spans, entities=names) if spans else tok(text)
            assert enc["input_ids"] == [0, *row["word_ids"], 2], text
            if spans:
                assert enc["entity_ids"] == row["entity_ids"] == [vocab.lookup(lang, t) for t in titles]
                for pos, s, e in zip(enc["entity_position_ids"], row["entity_starts"], row["entity_ends"]):
                    assert [p for p in pos if p != -1] == list(range(s + 1, e + 1))
            seen += 1
    assert seen == len(MULTILINGUAL)


def test_a_recorded_model_config_wins_over_the_rebuilt_one(tmp_path):
    import dataclasses
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(run(0, 2), run_dir)
    mc = resolve_checkpoint(run_dir).model_config
    assert mc.num_attention_heads == 4  # from config.yaml
    (run_dir / "model_config.json").write_text(json.dumps(dataclasses.replace(mc, num_attention_heads=2).to_dict()))
    out = export(run_dir, tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["num_attention_heads"] == 2
