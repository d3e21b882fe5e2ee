"""Tiny training shards in the DESIGN.md step-4 format, written by the tests themselves.

A small unigram sentencepiece model is trained on made-up text; sequences are sentences of made-up words
encoded with it (fairseq ids: spm piece i -> i + 1), and entity mentions are exact token spans of whole
words. Everything is a pure function of the arguments, so two calls give identical shards.
"""

from __future__ import annotations

import hashlib
import io
import json
import zlib
from pathlib import Path

import numpy as np

from data_prep.shards.shard_writer import shard_features

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "zu", "be", "do", "fa", "gi", "ho", "ju", "pe"]
SPM_FILE = "sentencepiece.bpe.model"
VOCAB_FILE = "entity_vocab.jsonl"


def _words(lang: str, n: int = 60) -> list[str]:
    rng = np.random.default_rng([sum(map(ord, lang)), 7])
    return ["".join(rng.choice(SYLLABLES, size=rng.integers(1, 4))) for _ in range(n)]


def _sentences(lang: str, count: int, seed: int) -> list[list[str]]:
    words = _words(lang)
    rng = np.random.default_rng([seed, sum(map(ord, lang)), 11])
    return [list(rng.choice(words, size=rng.integers(4, 14))) for _ in range(count)]


def train_spm(out: Path, vocab_size: int = 120) -> Path:
    """Train a small unigram spm model (the XLM-R kind) on the fixture languages' words."""
    import sentencepiece as spm

    text = [" ".join(s) for lang in ("en", "fr", "ja") for s in _sentences(lang, 300, 0)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        minloglevel=2,
        num_threads=1,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(model.getvalue())
    return out


def write_entity_vocab(out: Path, n_entities: int) -> Path:
    lines = [{"id": i, "qid": None, "entities": [[name, None]], "count": 0} for i, name in enumerate(["[PAD]", "[UNK]", "[MASK]", "[MASK2]"])]
    for i in range(4, n_entities):
        lines.append({"id": i, "qid": f"Q{i}", "entities": [[f"Entity {i}", "en"]], "count": 1000 - i})
    out.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rows(sentences: list[list[str]], sp, n_entities: int, rng: np.random.Generator, first_page: int, lim: dict):
    rows = {"word_ids": [], "entity_ids": [], "entity_starts": [], "entity_ends": [], "page_id": []}
    for k, words in enumerate(sentences):
        ids: list[int] = []
        spans = []
        for w in words:
            pieces = [p + 1 for p in sp.encode(w, out_type=int)]  # fairseq: piece i -> i+1
            spans.append((len(ids), len(ids) + len(pieces), w))
            ids.extend(pieces)
        ids = ids[: lim["max_seq_length"] - 2]
        spans = [s for s in spans if s[1] <= len(ids) and s[1] - s[0] <= lim["max_mention_length"]]
        n_ent = int(rng.integers(0, min(len(spans), lim["max_entity_length"]) + 1)) if k % 7 else 0  # some without entities
        chosen = sorted(rng.choice(len(spans), size=n_ent, replace=False).tolist()) if n_ent else []
        rows["word_ids"].append(ids)
        # the entity is a function of the mention's word, so the masked-entity objective is learnable
        rows["entity_ids"].append([4 + zlib.crc32(spans[c][2].encode()) % (n_entities - 4) for c in chosen])
        rows["entity_starts"].append([spans[c][0] for c in chosen])
        rows["entity_ends"].append([spans[c][1] for c in chosen])
        rows["page_id"].append(first_page + k // 3)
    return rows


def write_shards(
    out: str | Path,
    sizes: dict[str, int] | None = None,
    *,
    seed: int = 0,
    spm_model: Path | None = None,
    n_entities: int = 40,
    max_seq_length: int = 64,
    max_entity_length: int = 8,
    max_mention_length: int = 4,
    valid_size: int = 6,
) -> Path:
    """Write DIR/{lang}/{train,validation}, manifest.json and copies of the spm model and entity vocab."""
    import datasets
    import pyarrow as pa
    import sentencepiece as spm

    datasets.disable_progress_bars()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = sizes or {"en": 48, "fr": 16}
    spm_path = out / SPM_FILE
    if spm_model is None:
        train_spm(spm_path)
    else:
        spm_path.write_bytes(Path(spm_model).read_bytes())
    vocab_path = write_entity_vocab(out / VOCAB_FILE, n_entities)
    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    lim = {"max_seq_length": max_seq_length, "max_entity_length": max_entity_length, "max_mention_length": max_mention_length}
    features = shard_features()
    languages = {}
    for li, (lang, n) in enumerate(sorted(sizes.items())):
        rng = np.random.default_rng([seed, li])
        sents = _sentences(lang, n + valid_size, seed + 1)
        languages[lang] = {}
        for split, part, first in (("train", sents[:n], 1000 * li), ("validation", sents[n:], 1000 * li + 900)):
            rows = _rows(part, sp, n_entities, rng, first, lim)
            ds = datasets.Dataset(pa.Table.from_pydict(rows, schema=features.arrow_schema))
            ds = ds.cast(features)
            ds.save_to_disk(str(out / lang / split))
            languages[lang][split] = {
                "sequences": len(rows["word_ids"]),
                "tokens": sum(map(len, rows["word_ids"])),
                "entities": sum(map(len, rows["entity_ids"])),
            }
    manifest = {
        "languages": languages,
        "limits": lim,
        "spm": {"file": SPM_FILE, "sha256": _sha(spm_path)},
        "entity_vocab": {"file": VOCAB_FILE, "sha256": _sha(vocab_path), "size": n_entities},
        "fingerprint": hashlib.sha256(json.dumps([languages, seed, _sha(spm_path)]).encode()).hexdigest()[:16],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def sample_shards(out: str | Path) -> Path:
    """The bundled sample's shards (7 languages, its own 3000-piece spm model), as the quickstart builds
    them with ``python -m data_prep run --config configs/data/sample.yaml``; about a second."""
    from data_prep.pipeline import load_pipeline_config, run_pipeline

    root = Path(__file__).resolve().parents[1]
    cfg = load_pipeline_config(root / "configs" / "data" / "sample.yaml", [f"out_dir={out}", "workers=1"])
    run_pipeline(cfg)
    return Path(out) / "shards"
