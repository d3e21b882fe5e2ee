import subprocess
import sys
from pathlib import Path

import pytest

from data_prep.common.errors import InputError
from data_prep.pipeline import SAMPLE_DIR, find_dump, load_pipeline_config, resolve_path, run_pipeline

ROOT = Path(__file__).resolve().parent.parent


def test_sample_config_points_at_the_bundled_dumps():
    cfg = load_pipeline_config(ROOT / "configs/data/sample.yaml")
    assert resolve_path(cfg.dumps_dir) == SAMPLE_DIR / "dumps"
    for lang in cfg.languages:
        dump, index = find_dump(resolve_path(cfg.dumps_dir), lang, cfg.dump_date)
        assert dump.name == f"{lang}wiki-20261101-pages-articles-multistream.xml.bz2"
        assert index is not None and index.name.endswith("-multistream-index.txt.bz2")


def test_24_language_recipe_loads():
    cfg = load_pipeline_config(ROOT / "configs/data/mluke24.yaml", ["workers=8"])
    assert len(cfg.languages) == 24 and cfg.workers == 8
    assert (cfg.shards.max_seq_length, cfg.shards.max_entity_length, cfg.shards.max_mention_length) == (512, 128, 30)
    assert cfg.entity_vocab.min_languages == 3
    # the reference pipeline's settings (configs/data/mluke24.yaml comments)
    assert (cfg.entity_vocab.per_language_top, cfg.entity_vocab.vocab_size) == (1_000_000, 1_200_000)
    assert cfg.shards.min_sentence_tokens == 5


def test_run_passes_per_language_top_and_min_sentence_tokens_to_the_stages(tmp_path):
    """The config keys reach the stages: a top of 1 per language, and the configured sentence minimum."""
    import json

    cfg = load_pipeline_config(
        ROOT / "configs/data/sample.yaml",
        [f"out_dir={tmp_path}", "languages=[en,de]", "entity_vocab.per_language_top=1", "shards.min_sentence_tokens=7"],
    )
    run_pipeline(cfg)
    vocab = [json.loads(x) for x in (tmp_path / "entity_vocab.jsonl").read_text(encoding="utf-8").splitlines()]
    # en's most linked target is Earth (7 links), de's Deutschland (5): each counts in its language only
    assert [(e["qid"], e["count"]) for e in vocab[4:]] == [("Q2", 7), ("Q183", 5)]
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["limits"]["min_sentence_tokens"] == 7
    assert all(manifest["languages"][lang]["dropped"]["sentences_short"] > 0 for lang in ("en", "de"))


def test_plain_dump_is_used_when_there_is_no_multistream(tmp_path):
    (tmp_path / "xxwiki-1-pages-articles.xml.bz2").write_bytes(b"")
    assert find_dump(tmp_path, "xx", "1") == (tmp_path / "xxwiki-1-pages-articles.xml.bz2", None)
    with pytest.raises(InputError, match="no dump for 'yy'"):
        find_dump(tmp_path, "yy", "1")


def test_later_steps_need_every_language_extracted(tmp_path):
    cfg = load_pipeline_config(ROOT / "configs/data/sample.yaml", [f"out_dir={tmp_path}"])
    with pytest.raises(InputError, match="vocab: needs every language extracted first"):
        run_pipeline(cfg, steps=("vocab",))


def test_bad_config_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("languages: [en]\ndumps_dir: x\nout_dir: y\nshards: {max_seq_len: 5}\n")
    r = subprocess.run([sys.executable, "-m", "data_prep", "run", "--config", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: {bad}: unknown key 'shards.max_seq_len' (known in shards.: max_seq_length, max_entity_length, "
        "max_mention_length, valid_fraction, keep_no_entity, min_sentence_tokens)"
    ]
