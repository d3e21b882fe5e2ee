"""Entity vocabulary files: the project's JSONL format and Hugging Face ``MLukeTokenizer``'s ``entity_vocab.json``.

JSONL (DESIGN.md, step 3), one entity per line in id order::

    {"id": 4, "qid": "Q1490", "entities": [["Tokyo", "en"], ["東京都", "ja"]], "count": 1234}

Specials take the fixed ids 0-3 with ``"entities": [["[PAD]", null]]``, ``"qid": null`` and count 0.

``entity_vocab.json`` (transformers): a flat object ``{"[PAD]": 0, ..., "en:Tokyo": 4, "ja:東京都": 4}``;
all names of one entity map to its id, specials are bare.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from data_prep.common.atomic import atomic_path
from data_prep.common.errors import InputError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[MASK]", "[MASK2]")
PAD_ID, UNK_ID, MASK_ID, MASK2_ID = range(4)


@dataclass(frozen=True)
class EntityEntry:
    id: int
    qid: str | None
    entities: tuple[tuple[str, str | None], ...]  # (title, lang); lang None for specials
    count: int

    def to_json(self) -> str:
        obj = {"id": self.id, "qid": self.qid, "entities": [list(e) for e in self.entities], "count": self.count}
        return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))


def special_entries() -> list[EntityEntry]:
    return [EntityEntry(i, None, ((name, None),), 0) for i, name in enumerate(SPECIAL_TOKENS)]


class EntityVocab:
    """An id-ordered list of entities with (lang, title) -> id lookup."""

    def __init__(self, entries: list[EntityEntry]):
        self.entries = entries
        self._by_lang: dict[str, dict[str, int]] = {}  # lang -> title -> id: one wiki's titles at once
        for e in entries:
            for title, lang in e.entities:
                if lang is not None:
                    self._by_lang.setdefault(lang, {})[title] = e.id

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, lang: str, title: str) -> int | None:
        """Entity id of ``title`` (normalised, redirect-resolved) in wiki ``lang``, or None."""
        return self._by_lang.get(lang, {}).get(title)

    def titles(self, lang: str) -> dict[str, int]:
        """title -> entity id of every title of wiki ``lang`` (do not modify)."""
        return self._by_lang.get(lang, {})

    def languages(self) -> set[str]:
        return set(self._by_lang)


def write_entity_vocab(path: str | Path, entries: Iterable[EntityEntry]) -> None:
    """Write the JSONL vocabulary atomically; entries must already be in id order starting with the specials."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for expected_id, e in enumerate(entries):
            if e.id != expected_id:
                raise ValueError(f"entity ids must be consecutive from 0: got {e.id} at position {expected_id}")
            f.write(e.to_json() + "\n")


def write_hf_entity_vocab(path: str | Path, vocab: EntityVocab) -> None:
    """Write transformers' flat ``entity_vocab.json`` ("lang:title" keys, bare specials)."""
    flat: dict[str, int] = {}
    for e in vocab.entries:
        for title, lang in e.entities:
            flat[title if lang is None else f"{lang}:{title}"] = e.id
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(flat, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")


def read_entity_vocab(path: str | Path) -> EntityVocab:
    """Read either format (JSONL or transformers' entity_vocab.json), checking ids and specials."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: entity vocabulary file not found")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("{") and not text.lstrip().startswith('{"id"'):
        entries = _entries_from_flat(path, text)
    else:
        entries = _entries_from_jsonl(path, text)
    for i, name in enumerate(SPECIAL_TOKENS):
        if i >= len(entries) or entries[i].entities[0][0] != name:
            raise InputError(f"{path}: id {i} must be the special entity {name}")
    return EntityVocab(entries)


def _entries_from_jsonl(path: Path, text: str) -> list[EntityEntry]:
    entries: list[EntityEntry] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            entry = EntityEntry(
                int(obj["id"]),
                obj.get("qid"),
                tuple((str(t), None if lang is None else str(lang)) for t, lang in obj["entities"]),
                int(obj.get("count", 0)),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"{path}:{lineno}: not an entity vocabulary line ({e})") from None
        if entry.id != len(entries):
            what = "duplicate" if entry.id < len(entries) else "out-of-order"
            raise InputError(f"{path}:{lineno}: {what} entity id {entry.id} (expected {len(entries)})")
        entries.append(entry)
    return entries


def _entries_from_flat(path: Path, text: str) -> list[EntityEntry]:
    try:
        flat = json.loads(text)
    except ValueError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    names: dict[int, list[tuple[str, str | None]]] = {}
    for key, idx in flat.items():
        if key in SPECIAL_TOKENS:
            names.setdefault(int(idx), []).append((key, None))
        else:
            lang, sep, title = key.partition(":")
            if not sep:
                raise InputError(f"{path}: key {key!r} is neither a special nor 'lang:title'")
            names.setdefault(int(idx), []).append((title, lang))
    if sorted(names) != list(range(len(names))):
        raise InputError(f"{path}: entity ids are not consecutive from 0")
    return [EntityEntry(i, None, tuple(sorted(names[i], key=lambda x: (x[1] or "", x[0]))), 0) for i in range(len(names))]
