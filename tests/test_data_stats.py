"""``python -m pretrain data-stats``: JSON shape, probabilities from the manifest, bounds, padding counted by hand,
and ``data.alpha`` reaching the trainer's sample stream (config -> ``train.prepare`` -> ``PretrainingData``)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from shard_fixtures import write_shards

from pretrain.__main__ import main
from pretrain.config import load_config
from pretrain.data_stats import data_stats, first_indices

SIZES = {"en": 120, "fr": 8}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("stats") / "shards", SIZES, valid_size=2)


def write_config(path: Path, shards: Path, **data) -> Path:
    cfg = {
        "output_dir": str(path.parent / "out"),
        "data": {"shards": str(shards), **data},
        # data-stats reads no model: a model directory that does not exist must not matter
        "model": {"init_from": str(path.parent / "no-such-xlmr")},
        "train": {"micro_batch_size": 4, "global_batch_size": 32},
    }
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def manifest_probabilities(shards: Path, alpha: float) -> dict[str, float]:
    langs = json.loads((shards / "manifest.json").read_text())["languages"]
    w = {lang: langs[lang]["train"]["sequences"] ** alpha for lang in langs}
    return {lang: x / sum(w.values()) for lang, x in w.items()}


def test_json_shape_and_table(shards, tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", shards)
    out = tmp_path / "stats.json"
    assert main(["data-stats", "--config", str(cfg), "--json", str(out), "--samples", "7"]) == 0
    got = json.loads(out.read_text())
    assert set(got) == {"languages", "pad_fraction", "micro_batch_size", "whole_word_masking"}
    assert set(got["languages"]) == {"en", "fr"} and got["micro_batch_size"] == 4 and got["whole_word_masking"] is False
    for lang, s in got["languages"].items():
        assert set(s) == {"probability", "sequences", "samples", "words_per_sequence", "entities_per_sequence",
                          "masked_word_share", "masked_entity_share", "longest_masked_run", "pad_fraction"}
        assert set(s["masked_word_share"]) == set(s["masked_entity_share"]) == {"mean", "p5", "p95"}
        assert s["sequences"] == SIZES[lang] and s["samples"] == 7 and s["longest_masked_run"] == 1  # subword
        assert s["probability"] == pytest.approx(manifest_probabilities(shards, 0.7)[lang], rel=1e-12)
        assert 0 < s["masked_word_share"]["p5"] <= s["masked_word_share"]["mean"] <= s["masked_word_share"]["p95"] <= 0.5
        assert 0 < s["pad_fraction"] < 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["lang", "prob", "seqs"]
    assert [x.split()[0] for x in lines[1:3]] == ["en", "fr"] and lines[-1].startswith("data-stats: 2 languages, 14 sequences")


@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_alpha_reaches_the_trainers_stream(shards, tmp_path, alpha):
    from pretrain.train import DistEnv, prepare

    expected = manifest_probabilities(shards, alpha)
    cfg = load_config(write_config(tmp_path / "c.yaml", shards, alpha=alpha), ["model.init_from=null"])
    stats = data_stats(cfg, samples=5)
    assert {lang: s.probability for lang, s in stats.languages.items()} == pytest.approx(expected, rel=1e-12)

    plan = prepare(cfg, DistEnv(rank=0, local_rank=0, world_size=1))  # what `train` builds from the config
    counts = Counter(s.lang for step in range(125) for s in plan.data.step_samples(step, 32, 0, 1))
    n = sum(counts.values())
    assert n == 4000
    # 4000 draws: binomial sd <= 0.008; alpha 0.3 gives en 0.69, alpha 1.0 gives 0.94, uniform 0.5
    for lang, p in expected.items():
        assert counts[lang] / n == pytest.approx(p, abs=0.03)


def test_samples_are_the_first_of_each_language_in_the_stream(shards, tmp_path):
    from pretrain.batches import training_stream
    from pretrain.data import check_shards

    cfg = load_config(write_config(tmp_path / "c.yaml", shards, alpha=0.0))
    stream, _ = training_stream(cfg.data, check_shards(shards), 100)
    idx = first_indices(stream, 30)
    langs, _ = stream.order.lookup(np.arange(max(i[-1] for i in idx) + 1))
    for li, got in enumerate(idx):
        assert got.tolist() == np.flatnonzero(langs == li)[:30].tolist()  # across epochs (fr has 8 rows)
    assert [s.samples for s in data_stats(cfg, samples=30).languages.values()] == [30, 30]
    with pytest.raises(Exception, match="--samples: must be >= 1"):
        data_stats(cfg, samples=0)


def _packed_counts(group, capacity: int) -> tuple[int, int]:
    """(computed positions, pads) of one packed micro-batch, from the sample lengths alone."""
    from pretrain.collator import pack_rows

    words = [len(s.word_ids) + 2 for s in group]  # <s> ... </s>
    ents = [len(s.entity_ids) for s in group]
    rows = pack_rows([w + e for w, e in zip(words, ents)], capacity)
    width_w = max(sum(words[i] for i in r) for r in rows)
    width = -(-(width_w + max(sum(ents[i] for i in r) for r in rows)) // 8) * 8  # rounded up to 8 positions
    return len(rows) * width, len(rows) * width - sum(words) - sum(ents)


def test_pad_fraction_counted_by_hand(shards, tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml", shards))
    stats = data_stats(cfg, samples=9)  # 18 sequences -> 5 micro-batches of 4: the stream's first 20

    from pretrain.batches import training_stream
    from pretrain.data import check_shards

    manifest = check_shards(shards)
    capacity = manifest.limits.max_seq_length + 2 + manifest.limits.max_entity_length
    stream, _ = training_stream(cfg.data, manifest, 100)
    samples = stream.get(range(20))
    computed, pads = np.sum([_packed_counts(samples[k : k + 4], capacity) for k in range(0, 20, 4)], axis=0)
    assert stats.pad_fraction == pytest.approx(pads / computed, rel=1e-12)
    # per language: micro-batches of that language's first 9 sequences alone
    for lang, idx in zip(stream.languages, first_indices(stream, 9)):
        seqs = stream.get(idx)
        assert len(seqs) == 9 and {s.lang for s in seqs} == {lang}
        computed, pads = np.sum([_packed_counts(seqs[k : k + 4], capacity) for k in range(0, 9, 4)], axis=0)
        assert stats.languages[lang].pad_fraction == pytest.approx(pads / computed, rel=1e-12)


@pytest.mark.parametrize("whole_word", [False, True])
def test_masking_figures_on_the_sample(sample_shards, tmp_path, whole_word):
    cfg = load_config(write_config(tmp_path / "c.yaml", sample_shards, whole_word_masking=whole_word))
    stats = data_stats(cfg, samples=200)
    assert set(stats.languages) == {"ar", "de", "en", "ja", "ru", "th", "zh"}
    for lang, s in stats.languages.items():
        assert s.samples == 200
        assert 0.10 <= s.masked_word_share.p5 <= s.masked_word_share.p95 <= 0.20, lang
        assert s.longest_masked_run == 1 if not whole_word else 1 < s.longest_masked_run <= 8
    assert sum(s.probability for s in stats.languages.values()) == pytest.approx(1.0)


def test_bad_config_key_is_one_line_and_exit_2(shards, tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", shards)
    assert main(["data-stats", "--config", str(cfg), "data.no_such_key=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {cfg}: unknown key 'data.no_such_key'") and err.count("\n") == 1
    assert main(["data-stats", "--config", str(cfg), "--samples", "0"]) == 2
    assert capsys.readouterr().err == "error: --samples: must be >= 1, got 0\n"
    assert math.isfinite(data_stats(load_config(cfg), 3).pad_fraction)
