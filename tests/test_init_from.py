"""model.init_from with a Hugging Face LUKE/mLUKE directory: continued pretraining from a published checkpoint.

The checkpoint is a tiny real ``transformers.LukeForMaskedLM`` (entity-aware attention weights and pooler
included, as the published mluke-base has them; <ent>/<ent2> word rows appended) saved with
``save_pretrained``, with an ``entity_vocab.json`` as MLukeTokenizer writes it: names that overlap the
shards' vocabulary only partly, ids permuted against ours, two names sharing one id, [MASK2] the last id.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from export_fixtures import _train, shards, workspace
from tiny_models import TINY_ENTITY_EMB, save_tiny_luke

from data_prep.common.errors import InputError
from data_prep.entities.vocab_file import read_entity_vocab
from pretrain.data import check_shards, spm_size
from pretrain.export import export, load_exported
from pretrain.init_from import (
    check_init_dir,
    init_from_luke,
    init_model,
    match_entities,
    model_config,
    read_checkpoint_tensors,
)
from pretrain.model import MLukeForMaskedLM

N_OURS = 40  # export_fixtures' shards: [PAD] [UNK] [MASK] [MASK2], then "Entity 4" .. "Entity 39" (en)
N_CKPT = 30


def checkpoint_names() -> tuple[dict[str, int], dict[int, int]]:
    """(entity_vocab.json, our id -> the checkpoint id it must get).

    Ours 4..23 are in the checkpoint under permuted ids (some spelt with "_" or a lower-case first letter,
    which normalise to our titles), 8 and 9 share one checkpoint id, 24..39 are new; the checkpoint also
    has names we lack. Specials: [PAD] 0, [UNK] 1, [MASK] 2, [MASK2] last (as the published conversion)."""
    names = {"[PAD]": 0, "[UNK]": 1, "[MASK]": 2, "[MASK2]": N_CKPT - 1}
    expected = {0: 0, 1: 1, 2: 2, 3: N_CKPT - 1}
    free = [3 + (7 * k) % 26 for k in range(26)]  # a permutation of 3..28
    for i in range(4, 24):
        ckpt_id = free[i - 4] if i != 9 else expected[8]
        spelling = {5: "en:Entity_5", 6: "en:entity 6"}.get(i, f"en:Entity {i}")
        names[spelling] = ckpt_id
        expected[i] = ckpt_id
    names["fr:Entité 4"] = expected[4]  # another language's name of the same entity
    for k, ckpt_id in enumerate(sorted(set(free) - set(expected.values()))):
        names[f"de:Etwas {k}"] = ckpt_id  # not in our vocabulary
    assert sorted(set(names.values())) == list(range(N_CKPT)) and len(expected) == 24
    return names, expected


def save_tiny_mluke_dir(out: Path, shards_dir: Path, extra_word_rows: int = 2, **overrides) -> Path:
    """A LUKE directory for the fixture shards: weights, config.json, entity_vocab.json, their spm model."""
    n_words = spm_size(shards_dir / "sentencepiece.bpe.model") + 2
    save_tiny_luke(out, seed=5, vocab_size=n_words + extra_word_rows, entity_vocab_size=N_CKPT,
                   use_entity_aware_attention=True, **overrides)
    (out / "entity_vocab.json").write_text(json.dumps(checkpoint_names()[0], ensure_ascii=False), encoding="utf-8")
    shutil.copyfile(shards_dir / "sentencepiece.bpe.model", out / "sentencepiece.bpe.model")
    return out


@pytest.fixture(scope="module")
def luke_dir() -> Path:
    return save_tiny_mluke_dir(workspace() / "tiny_mluke", shards())


def fresh_model(path: Path, seed: int = 11) -> MLukeForMaskedLM:
    n_words = spm_size(shards() / "sentencepiece.bpe.model") + 2
    torch.manual_seed(seed)
    return MLukeForMaskedLM(model_config(path, n_words, N_OURS, TINY_ENTITY_EMB))


def test_match_entities_by_normalised_name_not_id():
    names, expected = checkpoint_names()
    vocab = read_entity_vocab(shards() / "entity_vocab.jsonl")
    assert match_entities(vocab, names, Path("entity_vocab.json")) == expected


def test_copied_rows_equal_the_checkpoints_by_name(luke_dir):
    model = fresh_model(luke_dir)
    fresh = {n: p.detach().clone() for n, p in model.named_parameters()}
    ckpt = read_checkpoint_tensors(luke_dir)
    n_words = model.config.vocab_size
    assert ckpt["luke.embeddings.word_embeddings.weight"].shape[0] == n_words + 2  # <ent>, <ent2> dropped
    vocab = read_entity_vocab(shards() / "entity_vocab.jsonl")
    done = init_from_luke(model, luke_dir, vocab)
    assert done.summary(luke_dir) == f"init_from: copied 24 of 40 entities (16 new) from {luke_dir}"

    params = dict(model.named_parameters())
    _, expected = checkpoint_names()
    ours, theirs = list(expected), list(expected.values())
    table, bias = params["luke.entity_embeddings.entity_embeddings.weight"], params["entity_predictions.bias"]
    assert torch.equal(table[ours], ckpt["luke.entity_embeddings.entity_embeddings.weight"][theirs])
    assert torch.equal(bias[ours], ckpt["entity_predictions.bias"][theirs])
    assert torch.equal(table[8], table[9])  # one checkpoint id, two names
    new = [i for i in range(N_OURS) if i not in expected]
    assert torch.equal(table[new], fresh["luke.entity_embeddings.entity_embeddings.weight"][new])
    assert torch.equal(bias[new], fresh["entity_predictions.bias"][new])

    assert torch.equal(params["luke.embeddings.word_embeddings.weight"], ckpt["luke.embeddings.word_embeddings.weight"][:n_words])
    assert torch.equal(params["lm_head.bias"], ckpt["lm_head.decoder.bias"][:n_words])
    rows = ("luke.embeddings.word_embeddings.weight", "lm_head.bias",
            "luke.entity_embeddings.entity_embeddings.weight", "entity_predictions.bias")
    for name, p in params.items():
        if name not in rows:
            assert torch.equal(p, ckpt[name]), name  # encoder, embeddings, both heads' transforms, entity side
    assert model.lm_head.decoder.weight is params["luke.embeddings.word_embeddings.weight"]


def test_words_only_logits_equal_luke_for_masked_lm(luke_dir):
    """Without entities the entity-aware queries are unused: the copied model computes transformers' logits."""
    from transformers import LukeForMaskedLM

    ref = LukeForMaskedLM.from_pretrained(luke_dir).eval()
    ref.lm_head.decoder.weight = ref.luke.embeddings.word_embeddings.weight  # mLUKE ties them; we read the table
    model = fresh_model(luke_dir).eval()
    init_from_luke(model, luke_dir, read_entity_vocab(shards() / "entity_vocab.jsonl"))
    ids = torch.tensor([[0, 17, 25, 9, 44, 2, 1, 1], [0, 5, 6, 7, 8, 30, 31, 2]])
    mask = ids.ne(1).long()
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask).logits[..., : model.config.vocab_size]
        got = model(input_ids=ids, attention_mask=mask, return_logits=True).mlm_logits
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=0)


def test_luke_model_layout_without_heads(tmp_path):
    """A ``LukeModel`` save (no "luke." prefix, no heads): backbone and entities copied, heads stay fresh."""
    from transformers import LukeForMaskedLM

    full = save_tiny_mluke_dir(tmp_path / "full", shards())
    LukeForMaskedLM.from_pretrained(full).luke.save_pretrained(tmp_path / "base")
    for f in ("entity_vocab.json", "sentencepiece.bpe.model"):
        shutil.copyfile(full / f, tmp_path / "base" / f)
    a, b = fresh_model(full), fresh_model(full)
    heads = {n: p.detach().clone() for n, p in b.named_parameters() if n.startswith(("lm_head.", "entity_predictions."))}
    vocab = read_entity_vocab(shards() / "entity_vocab.jsonl")
    init_from_luke(a, full, vocab)
    done = init_from_luke(b, tmp_path / "base", vocab)
    assert done.summary("D").endswith("(16 new) from D; it has no MLM/entity heads: they start fresh")
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        if name in heads:
            assert torch.equal(q, heads[name]), name
        else:
            assert torch.equal(p, q), name


def test_bad_luke_directories(tmp_path, luke_dir):
    n_words = spm_size(shards() / "sentencepiece.bpe.model") + 2
    assert check_init_dir(luke_dir) == "luke"
    with pytest.raises(InputError, match=r"vocab_size .* is neither \d+ \(the shards' spm model\) nor"):
        model_config(luke_dir, n_words + 1, N_OURS, TINY_ENTITY_EMB)
    with pytest.raises(InputError, match="entity_emb_size 16 differs from model.entity_emb_size 256"):
        model_config(luke_dir, n_words, N_OURS, 256)
    bare = tmp_path / "bare"
    shutil.copytree(luke_dir, bare)
    (bare / "entity_vocab.json").unlink()
    with pytest.raises(InputError, match=r"entity_vocab.json: not found \(a LUKE init_from needs its entity names\)"):
        check_init_dir(bare)
    # A different word vocabulary than the shards': the sentencepiece model's sha256 is checked.
    (bare / "sentencepiece.bpe.model").write_bytes(b"another model")
    with pytest.raises(InputError, match="sha256 differs from the spm model the shards"):
        check_shards(shards(), init_from=bare)


def _tensors(run_or_dir: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint_tensors(run_or_dir)


def test_one_step_with_negligible_lr_keeps_the_checkpoint(luke_dir, capfd):
    """Through the real trainer (init, one step at lr 1e-12, checkpoint) and export: shared entity rows and
    the word side come out as the checkpoint's."""
    run = _train("run_luke_init", [f"model.init_from={luke_dir}", "train.max_steps=1", "train.lr=1e-12",
                                   "deepspeed.zero_stage=1"])
    assert f"init_from: copied 24 of 40 entities (16 new) from {luke_dir}" in capfd.readouterr().err
    out = export(run, workspace() / "luke_init_export")
    got, ckpt = _tensors(out), _tensors(luke_dir)
    _, expected = checkpoint_names()
    ours = [i for i in expected if i != 3]  # the export writes [MASK2] (our id 3) as a copy of [MASK]
    theirs = [expected[i] for i in ours]
    close = dict(atol=1e-6, rtol=0)
    for name in ("luke.entity_embeddings.entity_embeddings.weight", "entity_predictions.bias"):
        torch.testing.assert_close(got[name][ours], ckpt[name][theirs], **close)
    n_words = spm_size(shards() / "sentencepiece.bpe.model") + 2
    for name in ("luke.embeddings.word_embeddings.weight", "lm_head.decoder.bias"):
        torch.testing.assert_close(got[name][:n_words], ckpt[name][:n_words], **close)
    for name in ckpt:
        if ".encoder." in name and "2e_query" not in name and "e2w_query" not in name:
            torch.testing.assert_close(got[name], ckpt[name], **close)


def test_own_export_round_trips_as_init_from(tmp_path):
    """``pretrain export`` output is a LUKE directory: as init_from it gives back every trained weight."""
    from export_fixtures import run

    exported = export(run(0), tmp_path / "export")
    vocab = read_entity_vocab(shards() / "entity_vocab.jsonl")
    model = fresh_model(exported)
    line = init_model(model, exported, shards() / "entity_vocab.jsonl")
    assert line == f"init_from: copied 40 of 40 entities (0 new) from {exported}"
    want = load_exported(exported).state_dict()
    got = model.state_dict()
    assert set(got) == set(want) and len(vocab) == N_OURS
    for name in want:
        assert torch.equal(got[name], want[name]), name


def test_luke_init_from_with_zero_init_is_refused_before_the_process_group(luke_dir, tmp_path):
    from pretrain.config import load_config
    from pretrain.train import DistEnv, prepare

    cfg = load_config(None, [f"output_dir={tmp_path / 'out'}", f"data.shards={shards()}", f"model.init_from={luke_dir}",
                             f"model.entity_emb_size={TINY_ENTITY_EMB}", "deepspeed.zero_stage=3",
                             "deepspeed.zero_init=true", "deepspeed.precision=fp32", "train.global_batch_size=4",
                             "train.micro_batch_size=2", "wandb.mode=disabled"])
    with pytest.raises(InputError, match="a LUKE init_from is not supported with deepspeed.zero_init"):
        prepare(cfg, DistEnv(0, 0, 1))
