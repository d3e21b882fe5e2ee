"""``pretrain evaluate``: masked-LM metrics per language and the entity cloze probe."""

from __future__ import annotations

import csv
import io
import json
import math
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
from export_fixtures import run, shards
from tiny_models import perturb_, tiny_mluke_config

from data_prep.common.errors import InputError
from data_prep.entities.vocab_file import read_entity_vocab
from data_prep.shards.spm import XlmrSentencePiece
from pretrain.collator import Collator, MaskingConfig, unit_table
from pretrain.data import Sample, load_split
from pretrain.evaluate import (
    DEFAULT_PROMPTS,
    Prompt,
    Scorer,
    build_cloze,
    evaluate,
    evaluate_cloze,
    evaluate_language,
    read_prompts,
)
from pretrain.export import export
from pretrain.model import MLukeForMaskedLM

REPO = Path(__file__).resolve().parent.parent


def write_prompts(path: Path) -> Path:
    """Prompts over the fixture vocabulary (entities Q4..Q39, made-up words)."""
    rows = [
        {"lang": "en", "relation": "r1", "template": "kalo [X] mine [Y].", "subject": "Q5", "subject_text": "rusa", "object": "Q7", "object_text": "tovi"},
        {"lang": "en", "relation": "r2", "template": "[Y] mine [X]", "subject": "Q6", "subject_text": "kalo", "object": "Q9", "object_text": "rusa"},
        {"lang": "fr", "relation": "r1", "template": "[X]kalo [Y]", "subject": "Q99", "subject_text": "rusa", "object": "Q8", "object_text": "tovi"},
        {"lang": "fr", "relation": "r1", "template": "[X] kalo [Y]", "subject": "Q5", "subject_text": "rusa", "object": "Q98", "object_text": "tovi"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tiny_scorer(seed: int = 0) -> tuple[Scorer, MLukeForMaskedLM]:
    spm = XlmrSentencePiece.load(shards() / "sentencepiece.bpe.model")
    torch.manual_seed(seed)
    cfg = tiny_mluke_config(vocab_size=spm.vocab_size, entity_vocab_size=len(read_entity_vocab(shards() / "entity_vocab.jsonl")),
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = perturb_(MLukeForMaskedLM(cfg), seed).eval()
    return Scorer(model, cfg.vocab_size, hf=False, source="tiny"), model


def test_two_runs_print_the_same_and_the_export_scores_like_the_checkpoint(tmp_path):
    from pretrain.__main__ import main

    prompts = write_prompts(tmp_path / "prompts.jsonl")
    checkpoint = run(0, 2)  # trained before stdout is captured (DeepSpeed prints while building ops)
    outputs = []
    for i in range(2):
        stdout = io.StringIO()
        with redirect_stdout(stdout):
            code = main(["evaluate", "--checkpoint", str(checkpoint), "--shards", str(shards()),
                         "--prompts", str(prompts), "--json", str(tmp_path / f"r{i}.json")])
        assert code == 0
        outputs.append(stdout.getvalue().replace(f"r{i}.json", "r.json"))
    assert outputs[0] == outputs[1]
    assert (tmp_path / "r0.json").read_bytes() == (tmp_path / "r1.json").read_bytes()
    assert "mlm_loss" in outputs[0] and "top10" in outputs[0]
    ds = json.loads((tmp_path / "r0.json").read_text())
    assert [r["lang"] for r in ds["languages"]] == ["en", "fr"]
    assert all(r["sequences"] == 5 and r["mlm_count"] > 0 and r["mep_count"] > 0 for r in ds["languages"])
    by = {(c["lang"], c["mode"]): c for c in ds["cloze"]}
    assert by[("en", "mask")]["prompts"] == 2 and by[("fr", "surface")]["prompts"] == 1 and by[("fr", "surface")]["skipped"] == 1

    hf = export(run(0, 2), tmp_path / "hf")
    again = evaluate(hf, shards(), prompts=prompts).to_dict()
    for a, b in zip(ds["languages"], again["languages"]):
        assert a["mlm_count"] == b["mlm_count"] and a["mep_count"] == b["mep_count"]
        assert a["mlm_acc"] == b["mlm_acc"] and a["mep_acc"] == b["mep_acc"]
        assert math.isclose(a["mlm_loss"], b["mlm_loss"], rel_tol=1e-5) and math.isclose(a["mep_loss"], b["mep_loss"], rel_tol=1e-5)
    assert [p["rank"] for p in ds["predictions"]] == [p["rank"] for p in again["predictions"]]


def test_language_metrics_equal_a_hand_computation():
    """Batched, padded evaluation vs one sequence at a time with log-softmax written out by hand."""
    scorer, model = tiny_scorer()
    d = shards()
    spm = XlmrSentencePiece.load(d / "sentencepiece.bpe.model")
    collate = Collator(MaskingConfig(spm_size=spm.spm_size, max_mention_length=4, seed=5), unit_table(str(d / "sentencepiece.bpe.model")))
    got = evaluate_language(scorer, d, "en", collate, batch_size=3, max_sequences=5)

    ds = load_split(d, "en", "validation")
    cols = ("word_ids", "entity_ids", "entity_starts", "entity_ends")
    totals = {"wl": 0.0, "wn": 0, "wc": 0, "el": 0.0, "en": 0, "ec": 0}
    for i in range(5):
        batch = collate([Sample(i, "en", *(ds[i][c] for c in cols))])
        with torch.no_grad():
            o = model(**{k: v for k, v in batch.items() if not k.endswith("labels")}, return_logits=True)
        heads = [(o.mlm_logits[0], batch["mlm_labels"][0], 0, "w")]
        if o.mep_logits is not None:
            heads.append((o.mep_logits[0], batch["mep_labels"][0], 4, "e"))
        for logits, labels, first, kind in heads:
            for pos, label in enumerate(labels.tolist()):
                if label == -100:
                    continue
                row = logits[pos].tolist()[first:]  # candidates: every word id / the real entities (>= 4)
                top = max(row)
                log_z = top + math.log(sum(math.exp(x - top) for x in row))
                totals[kind + "l"] += log_z - row[label - first]
                totals[kind + "n"] += 1
                totals[kind + "c"] += int(row.index(top) == label - first)
    assert got.sequences == 5 and got.mlm_count == totals["wn"] > 0 and got.mep_count == totals["en"] > 0
    assert got.mlm_loss == pytest.approx(totals["wl"] / totals["wn"], rel=1e-5)
    assert got.mep_loss == pytest.approx(totals["el"] / totals["en"], rel=1e-5)
    assert got.mlm_acc == totals["wc"] / totals["wn"] and got.mep_acc == totals["ec"] / totals["en"]


def test_cloze_inputs_are_cut_and_encoded_like_the_shards():
    spm = XlmrSentencePiece.load(shards() / "sentencepiece.bpe.model")
    qids = {"Q5": 5, "Q7": 7}
    enc = lambda text, ws=True: spm.encode(text, word_start=ws).tolist()  # noqa: E731
    p = Prompt("en", "r", "kalo [X] mine [Y].", "Q5", "rusa", "Q7", "tovi")
    x = build_cloze(p, "mask", spm, qids)
    head = enc("kalo ") + enc("rusa")
    mid = head + enc(" mine ")
    n = len(enc("tovi"))
    assert x.word_ids == mid + [spm.mask_id] * n + enc(".", False)
    assert x.entity_ids == [5, 2] and x.target == 7
    assert x.spans == [(len(enc("kalo ")), len(head)), (len(mid), len(mid) + n)]
    surface = build_cloze(p, "surface", spm, qids)
    assert surface.word_ids == mid + enc("tovi") + enc(".", False) and surface.spans == x.spans
    # No space before a slot: the slot continues a word (no "▁"), as a mid-word link in the shards.
    q = Prompt("ja", "r", "[X]kalo[Y]", "Q404", "rusa", "Q7", "tovi")
    y = build_cloze(q, "surface", spm, qids)
    assert y.word_ids == enc("rusa") + enc("kalo", False) + enc("tovi", False)
    assert y.entity_ids == [2]  # unknown subject: words only
    assert build_cloze(Prompt("en", "r", "[X] [Y]", "Q5", "a", "Q404", "b"), "mask", spm, qids) is None


def test_cloze_top1_top10_follow_the_answer_rank(tmp_path):
    scorer, model = tiny_scorer(1)
    spm = XlmrSentencePiece.load(shards() / "sentencepiece.bpe.model")
    vocab = read_entity_vocab(shards() / "entity_vocab.jsonl")
    prompts = read_prompts(write_prompts(tmp_path / "p.jsonl"))
    en = [p for p in prompts if p.lang == "en"]
    bias = model.entity_predictions.bias
    with torch.no_grad():
        bias[3] += 1e6  # [MASK2] (like every special) is never a candidate
        bias[7] += 1500  # answer of the first prompt
        bias[9] += 1000  # answer of the second
        bias[10:15] += 2000
        bias[15:25] += 1200
    results, preds = evaluate_cloze(scorer, en, spm, vocab, ["en"], 4)
    assert [p["rank"] for p in preds] == [5, 16, 5, 16]  # 7: behind 10-14; 9: behind 10-14, 15-24 and 7
    assert [(r.mode, r.prompts, r.skipped, r.top1, r.top10) for r in results] == [("mask", 2, 0, 0.0, 0.5), ("surface", 2, 0, 0.0, 0.5)]
    with torch.no_grad():
        bias[10:25] = 0
    results, preds = evaluate_cloze(scorer, en, spm, vocab, ["en"], 4)
    assert [p["rank"] for p in preds] == [0, 1, 0, 1]
    assert preds[0]["top5"][:2] == ["en:Entity 7", "en:Entity 9"]
    assert [(r.top1, r.top10) for r in results] == [(0.5, 1.0), (0.5, 1.0)]


def test_the_bundled_prompt_file_covers_the_sample_languages():
    prompts = read_prompts(DEFAULT_PROMPTS)
    assert {p.lang for p in prompts} >= {"en", "de", "ru", "ar", "ja", "zh", "th"}
    with open(REPO / "data_prep" / "sample" / "entities.tsv", encoding="utf-8") as f:
        titles = {(r["qid"], r["lang"]) for r in csv.DictReader(f, delimiter="\t")}
    for p in prompts:  # the answer has a page in that language's sample wiki, so it can be in the vocabulary
        assert (p.object, p.lang) in titles, p
        assert p.subject in {q for q, _ in titles}, p


def test_bad_prompt_lines_are_reported_with_file_and_line(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"lang": "en"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"p\.jsonl:1: missing or empty relation"):
        read_prompts(f)
    f.write_text(json.dumps({"lang": "en", "relation": "r", "template": "no slots", "subject": "Q1", "subject_text": "a",
                             "object": "Q2", "object_text": "b"}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"p\.jsonl:1: template must hold"):
        read_prompts(f)
