"""Shards -> sample stream: language mixture, order as a pure function of (seed, epoch), rank slices, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from shard_fixtures import write_shards

from data_prep.common.errors import InputError
from pretrain.data import (
    MixtureOrder,
    PretrainingData,
    check_shards,
    global_batch_indices,
    language_probabilities,
    rank_slice,
    read_manifest,
)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("data") / "shards", {"en": 40, "fr": 12, "ja": 5})


def test_language_probabilities_by_hand():
    # 100^0.7 = 25.1189, 10^0.7 = 5.0119 -> 25.1189 / 30.1308 = 0.83366
    p = language_probabilities([100, 10], 0.7)
    assert p == pytest.approx([0.83366, 0.16634], abs=1e-5)
    assert language_probabilities([5, 0, 5], 0.7).tolist() == [0.5, 0.0, 0.5]


def test_mixture_frequencies_follow_probabilities():
    order = MixtureOrder([3000, 300, 30], alpha=0.7, seed=1)
    langs, _ = order.epoch(0)
    freq = np.bincount(langs, minlength=3) / len(langs)
    assert freq == pytest.approx(order.probs, abs=0.01)
    # the small language is up-sampled: it appears more often than its 30 rows, cycling permutations
    langs, rows = order.epoch(0)
    small = rows[langs == 2]
    assert len(small) > 30 and sorted(small[:30].tolist()) == list(range(30))
    big = rows[langs == 0]
    assert len(set(big.tolist())) == len(big)  # down-sampled: no row twice within an epoch


def test_order_is_pure_function_of_seed_and_epoch():
    a, b = MixtureOrder([50, 20], 0.7, seed=5), MixtureOrder([50, 20], 0.7, seed=5)
    for e in (3, 0, 1):  # any access order
        assert all(np.array_equal(x, y) for x, y in zip(a.epoch(e), b.epoch(e)))
    assert not np.array_equal(a.epoch(0)[1], a.epoch(1)[1])
    assert not np.array_equal(a.epoch(0)[1], MixtureOrder([50, 20], 0.7, seed=6).epoch(0)[1])
    # lookup across an epoch boundary agrees with the per-epoch tables
    idx = np.arange(60, 80)
    langs, rows = a.lookup(idx)
    e0, e1 = a.epoch(0), a.epoch(1)
    assert langs.tolist() == e0[0][60:70].tolist() + e1[0][0:10].tolist()
    assert rows.tolist() == e0[1][60:70].tolist() + e1[1][0:10].tolist()


def test_rank_slices_partition_the_global_batch():
    g = global_batch_indices(step=3, global_batch_size=12)
    assert g.tolist() == list(range(36, 48))
    for world in (1, 2, 3, 4, 6):
        parts = [rank_slice(g, r, world).tolist() for r in range(world)]
        assert sum(parts, []) == g.tolist()  # disjoint, in order, union = global batch
    with pytest.raises(ValueError):
        rank_slice(g, 0, 5)


def _global_batches(data: PretrainingData, steps: range, batch: int, world: int) -> list[list[tuple]]:
    out = []
    for s in steps:
        samples = sum((data.step_samples(s, batch, r, world) for r in range(world)), [])
        out.append([(x.index, x.lang, tuple(x.word_ids), tuple(x.entity_ids)) for x in samples])
    return out


def test_resume_gives_same_global_batches_for_any_world_size(shards):
    m = read_manifest(shards)
    full = _global_batches(PretrainingData(m, None, 0.7, seed=9), range(0, 12), 8, world=1)
    # "resume" at consumed_samples = 5 * 8 with fresh readers and other world sizes
    for world in (1, 2, 4):
        resumed = _global_batches(PretrainingData(m, None, 0.7, seed=9), range(5, 12), 8, world=world)
        assert resumed == full[5:]
    # 12 steps x 8 = 96 samples > one epoch of 57: the stream goes on into epoch 1
    assert full[-1][-1][0] == 95
    langs = {x[1] for b in full for x in b}
    assert langs == {"en", "fr", "ja"}
    assert PretrainingData(m, ["en"], 0.7, 9).languages == ("en",)


def test_samples_match_the_dataset_rows(shards):
    import datasets

    data = PretrainingData(read_manifest(shards), None, 0.7, seed=2)
    langs, rows = data.order.lookup(np.arange(10))
    got = data.get(range(10))
    for s, li, row in zip(got, langs, rows):
        ds = datasets.load_from_disk(str(shards / data.languages[li] / "train"))
        assert s.lang == data.languages[li] and s.word_ids == ds[int(row)]["word_ids"]
        assert s.entity_starts == ds[int(row)]["entity_starts"]


def test_fingerprint_changes_with_stream(shards):
    m = read_manifest(shards)
    a = PretrainingData(m, None, 0.7, 1).fingerprint()
    assert a == PretrainingData(m, None, 0.7, 1).fingerprint()
    assert a != PretrainingData(m, None, 0.7, 2).fingerprint()
    assert a != PretrainingData(m, ["en", "fr"], 0.7, 1).fingerprint()


def test_check_shards_errors(shards, tmp_path):
    bad = tmp_path / "s"
    shutil.copytree(shards, bad)
    with pytest.raises(InputError, match="language 'de' not in the shards"):
        check_shards(bad, ["de"])
    (bad / "entity_vocab.jsonl").write_text("{}\n")
    with pytest.raises(InputError, match=r"entity_vocab\.jsonl: sha256 differs from manifest\.json's entity vocab sha256"):
        check_shards(bad)
    other = tmp_path / "vocab.jsonl"
    other.write_text("x\n")
    with pytest.raises(InputError, match="sha256 differs from the entity vocab the shards"):
        check_shards(shards, entity_vocab=other)
    check_shards(shards, entity_vocab=shards / "entity_vocab.jsonl")
    manifest = json.loads((bad / "manifest.json").read_text())
    del manifest["fingerprint"]
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="missing dataset fingerprint"):
        read_manifest(bad)
    with pytest.raises(InputError, match="shards directory not found"):
        check_shards(tmp_path / "nothing")


def test_step_batches_prepared_by_workers_equal_inline(shards):
    import torch

    from pretrain.batches import StepBatches, iterate_steps
    from pretrain.collator import Collator, MaskingConfig, unit_table
    from pretrain.data import spm_size

    m = read_manifest(shards)
    collate = Collator(MaskingConfig(spm_size=spm_size(m.spm_path), max_mention_length=4, seed=9), unit_table(str(m.spm_path)))
    steps = StepBatches(PretrainingData(m, None, 0.7, seed=9), collate, 8, 2, rank=1, world_size=2, max_steps=6)
    inline = list(iterate_steps(steps, 2, 6, num_workers=0))
    ahead = list(iterate_steps(steps, 2, 6, num_workers=2))
    assert [b.step for b in inline] == [b.step for b in ahead] == [2, 3, 4, 5]
    for a, b in zip(inline, ahead):
        assert a.first_index == b.first_index == [a.step * 8 + 4, a.step * 8 + 6]  # rank 1's half, 2 micro-batches
        assert (a.n_mlm, a.n_mep) == (b.n_mlm, b.n_mep) and a.n_mlm > 0
        for x, y in zip(a.micro, b.micro):
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
