"""``python -m pretrain.demo HF_DIR``: masked-entity predictions with plain ``transformers``.

Loads an exported directory exactly as a user would (``LukeForMaskedLM`` + ``MLukeTokenizer``, nothing
from this project) and, for one sentence per language, hides the entity of a mention behind ``[MASK]`` and
prints the top predictions: the sentence keeps its words, so this is the entity-linking view of the
masked-entity objective.
"""

from __future__ import annotations

import argparse
import sys

# (lang, sentence, mention to mask, other mention, its entity title); sentences written for this demo.
EXAMPLES = [
    ("en", "Tokyo is the largest city of Japan and its capital.", "Tokyo", "Japan", "Japan"),
    ("ja", "東京は日本の首都であり、最大の都市である。", "東京", "日本", "日本"),
    ("de", "Berlin ist die Hauptstadt von Deutschland.", "Berlin", "Deutschland", "Deutschland"),
]


def _name(titles: dict[str, str], lang: str, idx: int) -> str:
    """The entity's title in ``lang``, else in English (marked), else in any language (marked)."""
    if lang in titles:
        return titles[lang]
    for other in ("en", *sorted(titles)):
        if other in titles:
            return f"{titles[other]} ({other})"
    return f"#{idx}"


def predict(hf_dir: str, top_k: int = 5, languages: list[str] | None = None) -> list[tuple[str, str, list[str]]]:
    import torch
    from transformers import LukeForMaskedLM, MLukeTokenizer

    tokenizer = MLukeTokenizer.from_pretrained(hf_dir)
    model = LukeForMaskedLM.from_pretrained(hf_dir).eval()
    names: dict[int, dict[str, str]] = {}  # id -> {lang: title}
    for key, idx in tokenizer.entity_vocab.items():
        lang, sep, title = key.partition(":")
        if sep:
            names.setdefault(idx, {})[lang] = title
    results = []
    for lang, text, masked, other, other_title in EXAMPLES:
        if languages and lang not in languages:
            continue
        s = text.index(masked)
        o = text.index(other)
        other_key = f"{lang}:{other_title}"
        enc = tokenizer(
            text,
            entities=["[MASK]", other_key if other_key in tokenizer.entity_vocab else "[UNK]"],
            entity_spans=[(s, s + len(masked)), (o, o + len(other))],
            return_tensors="pt",
        )
        with torch.no_grad():
            logits = model(**enc).entity_logits[0, 0]
        logits[:4] = float("-inf")  # [PAD] [UNK] [MASK] [MASK2] are never answers
        top = logits.topk(top_k).indices.tolist()
        shown = [_name(names.get(i, {}), lang, i) for i in top]
        results.append((lang, text.replace(masked, "[" + masked + "]", 1), shown))
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pretrain.demo", description=__doc__.splitlines()[0])
    p.add_argument("hf_dir")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--languages", help="comma-separated subset of en,ja,de")
    args = p.parse_args(argv)
    langs = args.languages.split(",") if args.languages else None
    for lang, shown_text, top in predict(args.hf_dir, args.top_k, langs):
        print(f"{lang}: {shown_text}\n    masked entity -> {', '.join(top)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
