"""``python -m pretrain evaluate --checkpoint CKPT --shards DIR [--languages ...] [--prompts FILE] [--json OUT]``

Two measurements of a DeepSpeed checkpoint (OUT, OUT/checkpoints[/TAG]) or an exported directory:

1. Masked-word and masked-entity loss and accuracy per language on the shards' validation split. Every
   sequence is masked by the trainer's own collator (``pretrain.collator``) seeded by (seed, row index),
   so two runs, or a DeepSpeed checkpoint and its export, see the same masked positions and print the
   same numbers. Loss = mean cross-entropy over the masked positions of the language, accuracy = share
   of them whose arg-max is the original id. Candidates are the V word ids of the backbone (not the
   ``<ent>``/``<ent2>`` markers an export adds) and the real entities (ids >= 4: ``[PAD]``, ``[UNK]``,
   ``[MASK]``, ``[MASK2]`` are never targets), so a checkpoint and its export score identically.

2. An entity cloze probe in the style of mLAMA: each prompt (JSONL, ``configs/eval/cloze_prompts.jsonl``)
   is a template with a subject slot ``[X]`` and an object slot ``[Y]``, e.g. "The capital of [X] is
   [Y]." with X = Japan (Q17) and Y = Tokyo (Q1490). The subject is written out and carries its entity
   (when in the vocabulary), as an entity-linked sentence in pretraining would. The object is a
   ``[MASK]`` entity whose mention span covers the slot's tokens, in two modes:
     * ``mask``:    the slot holds as many ``<mask>`` words as the answer's name has pieces in that
                    language (mLAMA's convention of giving the length): word and entity both hidden;
     * ``surface``: the slot holds the answer's name and only the entity is masked (entity linking).
   The answer's rank among all real entities gives top-1 / top-10 accuracy per language and mode.
   Text is cut at the slots and each part encoded on its own, with the word-start marker only where a
   word starts, exactly as the shards are built (``data_prep.shards.build``). Prompts whose answer is not in
   the entity vocabulary are skipped and counted.

Results are printed as a table and written as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from data_prep.common.atomic import write_json
from data_prep.common.errors import InputError
from data_prep.entities.vocab_file import EntityVocab, read_entity_vocab
from data_prep.shards.spm import XlmrSentencePiece
from pretrain import device as accel
from pretrain.collator import ENTITY_MASK_ID, IGNORE, Collator, MaskingConfig, unit_table
from pretrain.data import Sample, check_shards, load_split

FIRST_REAL_ENTITY = 4  # ids 0-3 are [PAD] [UNK] [MASK] [MASK2]
CLOZE_MODES = ("mask", "surface")
DEFAULT_PROMPTS = Path(__file__).resolve().parent.parent / "configs" / "eval" / "cloze_prompts.jsonl"


# ------------------------------------------------------------------------------------------- models


class Scorer:
    """One interface over this project's MLukeForMaskedLM and transformers' LukeForMaskedLM."""

    def __init__(self, model: torch.nn.Module, word_vocab_size: int, hf: bool, source: str, device: str = "cpu"):
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.V = word_vocab_size
        self.hf = hf
        self.source = source

    @torch.no_grad()
    def hidden(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        keys = ("input_ids", "attention_mask", "entity_ids", "entity_attention_mask", "entity_position_ids")
        inputs = {k: batch[k].to(self.device) for k in keys}
        if self.hf:
            o = self.model.luke(**inputs)
            return o.last_hidden_state, o.entity_last_hidden_state
        o = self.model(**inputs)
        return o.word_hidden_states, o.entity_hidden_states

    @torch.no_grad()
    def word_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(h).float()[:, : self.V]

    @torch.no_grad()
    def entity_logits(self, h: torch.Tensor) -> torch.Tensor:
        logits = self.model.entity_predictions(h).float()
        logits[:, :FIRST_REAL_ENTITY] = -math.inf  # specials are never targets
        return logits


def load_scorer(
    checkpoint: str | Path, shards: str | Path | None = None, device: str = "cpu"
) -> tuple[Scorer, dict[str, Any]]:
    """A DeepSpeed checkpoint (any form ``pretrain export`` accepts) or an export directory -> Scorer.

    Also returns what is known about the run (its data config, for the masking probabilities, and the
    sha256 of the spm model / entity vocab the model was trained with).
    """
    from pretrain import checkpoint as ckpt
    from pretrain.export import MLUKE_CONFIG, load_exported, load_weights, resolve_checkpoint
    from pretrain.model import MLukeForMaskedLM

    p = Path(checkpoint)
    if not p.exists():
        raise InputError(f"{p}: checkpoint not found")
    info: dict[str, Any] = {}
    if (p / "export.json").is_file():
        info = json.loads((p / "export.json").read_text(encoding="utf-8"))
    if info.get("lite"):
        raise InputError(f"{p}: a --lite export keeps no entity embeddings to evaluate; evaluate its checkpoint")
    if (p / "config.json").is_file() and json.loads((p / "config.json").read_text(encoding="utf-8")).get("model_type") == "luke":
        from transformers import LukeForMaskedLM

        model = LukeForMaskedLM.from_pretrained(p)
        V = info.get("word_vocab_size") or model.config.vocab_size
        return Scorer(model, V, hf=True, source=str(p), device=device), info
    if (p / MLUKE_CONFIG).is_file():  # an XL export: this project's model, no remote code needed
        model = load_exported(p)
        return Scorer(model, model.config.vocab_size, hf=False, source=str(p), device=device), info
    src = resolve_checkpoint(p, shards)
    model = MLukeForMaskedLM(src.model_config)
    ckpt.load_into(model, load_weights(src), str(src.tag_dir))
    model.tie_weights()
    from pretrain.config import load_config

    cfg = load_config(src.run_dir / "config.yaml")
    info = {"spm_sha256": src.spm_sha256, "entity_vocab_sha256": src.entity_vocab_sha256, "data": asdict(cfg.data)}
    return Scorer(model, src.model_config.vocab_size, hf=False, source=str(src.tag_dir), device=device), info


# ------------------------------------------------------------------------------------------- results


@dataclass
class LanguageResult:
    lang: str
    sequences: int
    mlm_count: int
    mlm_loss: float | None
    mlm_acc: float | None
    mep_count: int
    mep_loss: float | None
    mep_acc: float | None


@dataclass
class ClozeResult:
    lang: str
    mode: str
    prompts: int  # evaluated
    skipped: int  # answer not in the entity vocabulary
    top1: float | None
    top10: float | None


@dataclass
class Report:
    checkpoint: str
    shards: str
    seed: int
    languages: list[LanguageResult] = field(default_factory=list)
    cloze: list[ClozeResult] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)  # per prompt and mode: rank, top-5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def examples(self, per_language: int) -> str:
        """The first ``per_language`` mask-mode cloze predictions of each language, one line each."""
        lines, shown = [], {}
        for p in self.predictions:
            if p["mode"] == "mask" and shown.get(p["lang"], 0) < per_language:
                shown[p["lang"]] = shown.get(p["lang"], 0) + 1
                lines.append(f"{p['lang']}: {p['prompt']} -> {', '.join(p['top5'][:3])} (answer rank {p['rank'] + 1})")
        return "\n".join(lines)

    def table(self) -> str:
        def f(x: float | None, nd: int = 4) -> str:
            return "-" if x is None else f"{x:.{nd}f}"

        lines = [f"{'lang':<6}{'seqs':>7}{'words':>8}{'mlm_loss':>10}{'mlm_acc':>9}{'ents':>7}{'mep_loss':>10}{'mep_acc':>9}"]
        for r in self.languages:
            lines.append(
                f"{r.lang:<6}{r.sequences:>7}{r.mlm_count:>8}{f(r.mlm_loss):>10}{f(r.mlm_acc):>9}"
                f"{r.mep_count:>7}{f(r.mep_loss):>10}{f(r.mep_acc):>9}"
            )
        if self.cloze:
            lines += ["", f"{'cloze':<6}{'mode':>8}{'prompts':>9}{'skipped':>9}{'top1':>8}{'top10':>8}"]
            for c in self.cloze:
                lines.append(f"{c.lang:<6}{c.mode:>8}{c.prompts:>9}{c.skipped:>9}{f(c.top1, 3):>8}{f(c.top10, 3):>8}")
        return "\n".join(lines)


def _ratio(a: float, n: int) -> float | None:
    return a / n if n else None


# ------------------------------------------------------------------------------------------- masked LM


@torch.no_grad()
def masked_sums(scorer: Scorer, batch: dict[str, torch.Tensor]) -> tuple[float, int, int, float, int, int]:
    """(word loss sum, word count, word correct, entity loss sum, entity count, entity correct) of a batch."""
    word_h, ent_h = scorer.hidden(batch)
    out: list[float | int] = []
    for h, labels, head in ((word_h, batch["mlm_labels"], scorer.word_logits), (ent_h, batch["mep_labels"], scorer.entity_logits)):
        labels = labels.to(scorer.device)
        sel = labels.ne(IGNORE)
        if h is None or not bool(sel.any()):
            out += [0.0, 0, 0]
            continue
        logits = head(h[sel])
        targets = labels[sel]
        out += [
            float(F.cross_entropy(logits.double(), targets, reduction="sum")),
            int(sel.sum()),
            int((logits.argmax(dim=-1) == targets).sum()),
        ]
    return tuple(out)  # type: ignore[return-value]


def evaluate_language(
    scorer: Scorer, shards: Path, lang: str, collator: Collator, batch_size: int, max_sequences: int | None
) -> LanguageResult:
    ds = load_split(shards, lang, "validation")
    n = len(ds) if max_sequences is None else min(len(ds), max_sequences)
    cols = ("word_ids", "entity_ids", "entity_starts", "entity_ends")
    sums = np.zeros(6, dtype=np.float64)
    for start in range(0, n, batch_size):
        rows = ds[start : min(n, start + batch_size)]
        samples = [Sample(start + k, lang, *(rows[c][k] for c in cols)) for k in range(len(rows["word_ids"]))]
        sums += np.array(masked_sums(scorer, collator(samples)), dtype=np.float64)
    wl, wn, wc, el, en, ec = sums.tolist()
    wn, en = int(wn), int(en)
    return LanguageResult(lang, n, wn, _ratio(wl, wn), _ratio(wc, wn), en, _ratio(el, en), _ratio(ec, en))


# ------------------------------------------------------------------------------------------- cloze


@dataclass
class Prompt:
    lang: str
    relation: str
    template: str
    subject: str  # QID
    subject_text: str
    object: str  # QID (the answer)
    object_text: str


PROMPT_KEYS = ("lang", "relation", "template", "subject", "subject_text", "object", "object_text")


def read_prompts(path: str | Path) -> list[Prompt]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: prompt file not found")
    prompts = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise InputError(f"{path}:{lineno}: not JSON ({e})") from None
        missing = [k for k in PROMPT_KEYS if not isinstance(obj.get(k), str) or not obj.get(k)]
        if missing:
            raise InputError(f"{path}:{lineno}: missing or empty {', '.join(missing)}")
        if obj["template"].count("[X]") != 1 or obj["template"].count("[Y]") != 1:
            raise InputError(f"{path}:{lineno}: template must hold [X] and [Y] once each")
        prompts.append(Prompt(**{k: obj[k] for k in PROMPT_KEYS}))
    return prompts


@dataclass
class ClozeInput:
    word_ids: list[int]  # without <s> / </s>
    entity_ids: list[int]
    spans: list[tuple[int, int]]  # token spans into word_ids, end exclusive
    target: int  # entity id of the answer


def build_cloze(prompt: Prompt, mode: str, tok: XlmrSentencePiece, qid_to_id: dict[str, int]) -> ClozeInput | None:
    """The model input of one prompt, or None when the answer is not in the entity vocabulary.

    The entity list is the subject (if in the vocabulary) and then the [MASK] entity of the answer slot.
    """
    target = qid_to_id.get(prompt.object)
    if target is None:
        return None
    text = prompt.template
    ids: list[int] = []
    entities: list[int] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in re.finditer(r"\[X\]|\[Y\]", text):
        if m.start() > pos:
            ids += tok.encode(text[pos : m.start()], word_start=_word_start(text, pos)).tolist()
        ws = _word_start(text, m.start())
        if m.group() == "[X]":
            piece = tok.encode(prompt.subject_text, word_start=ws).tolist()
            subject = qid_to_id.get(prompt.subject)
            if subject is not None:
                entities.append(subject)
                spans.append((len(ids), len(ids) + len(piece)))
        else:
            piece = tok.encode(prompt.object_text, word_start=ws).tolist()
            if mode == "mask":
                piece = [tok.mask_id] * len(piece)
            entities.append(ENTITY_MASK_ID)
            spans.append((len(ids), len(ids) + len(piece)))
        ids += piece
        pos = m.end()
    if pos < len(text):
        ids += tok.encode(text[pos:], word_start=_word_start(text, pos)).tolist()
    return ClozeInput(ids, entities, spans, target)


def _word_start(text: str, a: int) -> bool:
    """As data_prep.shards.build: a piece starts a word at the text start, after whitespace, or with whitespace."""
    return a == 0 or text[a - 1].isspace() or text[a].isspace()


def cloze_batch(inputs: Sequence[ClozeInput], max_mention_length: int, pad_id: int = 1) -> dict[str, torch.Tensor]:
    B = len(inputs)
    T = max(len(x.word_ids) for x in inputs) + 2
    E = max(len(x.entity_ids) for x in inputs)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    attention = torch.zeros((B, T), dtype=torch.long)
    ent = torch.zeros((B, E), dtype=torch.long)
    ent_att = torch.zeros((B, E), dtype=torch.long)
    ent_pos = torch.full((B, E, max_mention_length), -1, dtype=torch.long)
    for i, x in enumerate(inputs):
        seq = [0, *x.word_ids, 2]
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention[i, : len(seq)] = 1
        ent[i, : len(x.entity_ids)] = torch.tensor(x.entity_ids)
        ent_att[i, : len(x.entity_ids)] = 1
        for j, (s, e) in enumerate(x.spans):
            span = torch.arange(s + 1, e + 1)[:max_mention_length]  # +1: <s>
            ent_pos[i, j, : len(span)] = span
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "entity_ids": ent,
        "entity_attention_mask": ent_att,
        "entity_position_ids": ent_pos,
    }


@torch.no_grad()
def answer_ranks(scorer: Scorer, inputs: Sequence[ClozeInput], max_mention_length: int) -> tuple[list[int], list[list[int]]]:
    """0-based rank of each answer among the real entities (number of entities scored strictly higher),
    and the top-5 entity ids; the answer slot is the last entity of each input."""
    batch = cloze_batch(inputs, max_mention_length)
    _, ent_h = scorer.hidden(batch)
    last = batch["entity_attention_mask"].sum(dim=1).to(scorer.device) - 1
    logits = scorer.entity_logits(ent_h[torch.arange(len(inputs), device=scorer.device), last])
    target = torch.tensor([x.target for x in inputs], device=scorer.device)
    t_logit = logits.gather(1, target[:, None])
    ranks = (logits > t_logit).sum(dim=1).tolist()
    top = torch.topk(logits, k=min(5, logits.shape[1] - FIRST_REAL_ENTITY), dim=1).indices.tolist()
    return ranks, top


def evaluate_cloze(
    scorer: Scorer,
    prompts: Sequence[Prompt],
    tok: XlmrSentencePiece,
    vocab: EntityVocab,
    languages: Sequence[str] | None,
    max_mention_length: int,
    batch_size: int = 32,
) -> tuple[list[ClozeResult], list[dict[str, Any]]]:
    qid_to_id = {e.qid: e.id for e in vocab.entries if e.qid}
    names = {e.id: next((f"{lang}:{t}" for t, lang in e.entities if lang), e.entities[0][0]) for e in vocab.entries}
    langs = sorted({p.lang for p in prompts if languages is None or p.lang in languages})
    results: list[ClozeResult] = []
    predictions: list[dict[str, Any]] = []
    for lang in langs:
        chosen = [p for p in prompts if p.lang == lang]
        for mode in CLOZE_MODES:
            built = [(p, build_cloze(p, mode, tok, qid_to_id)) for p in chosen]
            kept = [(p, x) for p, x in built if x is not None]
            ranks: list[int] = []
            for s in range(0, len(kept), batch_size):
                part = kept[s : s + batch_size]
                r, top = answer_ranks(scorer, [x for _, x in part], max_mention_length)
                ranks += r
                for (p, x), rank, t in zip(part, r, top):
                    predictions.append({
                        "lang": lang, "mode": mode, "relation": p.relation, "subject": p.subject, "answer": p.object,
                        "prompt": p.template.replace("[X]", p.subject_text).replace("[Y]", "[" + p.object_text + "]"),
                        "answer_id": x.target, "rank": rank, "top5": [names.get(i, str(i)) for i in t],
                    })
            n = len(ranks)
            results.append(ClozeResult(
                lang, mode, n, len(built) - n,
                _ratio(sum(r < 1 for r in ranks), n), _ratio(sum(r < 10 for r in ranks), n),
            ))
    return results, predictions


# ------------------------------------------------------------------------------------------- driver


def evaluate(
    checkpoint: str | Path,
    shards: str | Path,
    languages: Sequence[str] | None = None,
    prompts: str | Path | None = DEFAULT_PROMPTS,
    seed: int = 0,
    batch_size: int = 16,
    max_sequences: int | None = None,
    device: str | None = None,
) -> Report:
    """Masked-LM metrics per language on ``shards``' validation split, and the cloze probe (``prompts``)."""
    torch.manual_seed(0)  # nothing is random in eval mode; this only pins anything a model might draw
    manifest = check_shards(shards, languages)
    device = device or str(accel.local_device(0))  # DeepSpeed's accelerator, as training (DS_ACCELERATOR=cpu: cpu)
    scorer, info = load_scorer(checkpoint, shards, device)
    for key, path in (("spm_sha256", manifest.spm_path), ("entity_vocab_sha256", manifest.entity_vocab_path)):
        want = {"spm_sha256": manifest.spm_sha256, "entity_vocab_sha256": manifest.entity_vocab_sha256}[key]
        if info.get(key) and info[key] != want:
            raise InputError(f"{path}: differs from the file the model in {checkpoint} was trained with ({key})")
    data = info.get("data") or {}
    tok = XlmrSentencePiece.load(manifest.spm_path)
    masking = MaskingConfig(
        spm_size=tok.spm_size,
        max_mention_length=manifest.limits.max_mention_length,
        mlm_probability=data.get("mlm_probability", 0.15),
        mep_probability=data.get("mep_probability", 0.15),
        mask_ratio=data.get("mask_ratio", 0.8),
        random_ratio=data.get("random_ratio", 0.1),
        seed=seed,
        max_word_pieces=data.get("max_word_pieces", 8),
    )
    whole_word = data.get("whole_word_masking", False)
    collator = Collator(masking, unit_table(str(manifest.spm_path)) if whole_word else None)
    report = Report(str(scorer.source), str(manifest.root), seed)
    from tqdm import tqdm

    langs = list(languages or manifest.languages)
    for lang in tqdm(langs, desc="evaluate", unit="lang", leave=False):
        report.languages.append(evaluate_language(scorer, manifest.root, lang, collator, batch_size, max_sequences))
    if prompts is not None:
        vocab = read_entity_vocab(manifest.entity_vocab_path)
        report.cloze, report.predictions = evaluate_cloze(
            scorer, read_prompts(prompts), tok, vocab, languages, manifest.limits.max_mention_length
        )
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path,
                        help="training output dir, OUT/checkpoints[/TAG], or a `pretrain export` directory")
    parser.add_argument("--shards", required=True, type=Path, help="shards directory (its validation split is used)")
    parser.add_argument("--languages", default=None, help="comma-separated subset (default: all in the shards)")
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS, help="cloze prompt JSONL")
    parser.add_argument("--no-cloze", action="store_true", help="skip the cloze probe")
    parser.add_argument("--seed", type=int, default=0, help="masking seed")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-sequences", type=int, default=None, help="per language (default: all)")
    parser.add_argument("--device", default=None, help="torch device (default: DeepSpeed's accelerator device, e.g. cuda:0; cpu under DS_ACCELERATOR=cpu)")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--show", type=int, default=0, metavar="N", help="print N cloze predictions per language")


def run_cli(args: argparse.Namespace) -> int:
    languages = [x for x in args.languages.split(",") if x] if args.languages else None
    report = evaluate(
        args.checkpoint, args.shards, languages, None if args.no_cloze else args.prompts,
        seed=args.seed, batch_size=args.batch_size, max_sequences=args.max_sequences, device=args.device,
    )
    print(report.table())
    if args.show and report.predictions:
        print("\n" + report.examples(args.show))
    if args.json is not None:
        write_json(args.json, report.to_dict())
    n = sum(r.sequences for r in report.languages)
    print(f"evaluate: {len(report.languages)} languages, {n} validation sequences, "
          f"{sum(c.prompts for c in report.cloze)} cloze queries -> {args.json or 'stdout'}")
    return 0
