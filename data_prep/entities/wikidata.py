"""Streaming reader for the Wikidata JSON dump (``latest-all.json.bz2`` / ``.gz`` / plain).

The dump is one JSON array written one entity per line::

    [
    {"type":"item","id":"Q31", ..., "sitelinks":{"enwiki":{"site":"enwiki","title":"Belgium","badges":[]}, ...}},
    {"type":"property","id":"P31", ...},
    ...
    ]

Each line is parsed on its own, so memory stays constant over a 100+ GB file. Only items (``Q`` ids) are
read, and only the sitelinks of the requested languages' Wikipedias (``enwiki``, ``jawiki``, ... — not
``commonswiki``, ``enwikiquote``, ``specieswiki``, ``simplewiki`` unless ``simple`` is a requested language).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.common.errors import InputError
from data_prep.entities.sqldump import open_maybe_compressed

_QID_RE = re.compile(r"Q[1-9][0-9]*\Z")


def wiki_dbname(lang: str) -> str:
    """Wikipedia database name of a language code: ``en`` -> ``enwiki``, ``zh-yue`` -> ``zh_yuewiki``."""
    return lang.replace("-", "_") + "wiki"


@dataclass
class WikidataStats:
    lines: int = 0
    without_sitelinks: int = 0  # entity lines skipped unparsed: no requested site key in them
    items: int = 0  # items parsed (those with a requested site key)
    items_with_sitelinks: int = 0  # items with at least one sitelink of a requested language
    sitelinks: dict[str, int] = field(default_factory=dict)  # per language
    skipped_entities: dict[str, int] = field(default_factory=dict)  # by type: property, lexeme, ...
    bad_lines: int = 0
    first_errors: list[str] = field(default_factory=list)

    def bad(self, msg: str) -> None:
        self.bad_lines += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(msg)


def iter_sitelinks(
    path: str | Path,
    languages: Iterable[str],
    stats: WikidataStats | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[str, str, str]]:
    """Yield ``(lang, title, qid)`` for every sitelink of a requested language's Wikipedia.

    Malformed lines are counted in ``stats`` and skipped. Raises ``InputError`` if the file does not look
    like a Wikidata JSON dump at all (it must start with ``[`` or an entity object).
    ``on_progress(compressed_bytes_read)`` is called every few hundred lines.
    """
    path = Path(path)
    stats = stats if stats is not None else WikidataStats()
    site_to_lang = {wiki_dbname(lang): lang for lang in languages}
    # A requested site as a JSON key (quotes inside JSON strings are escaped, so this cannot match text).
    site_re = re.compile(b'"(?:' + b"|".join(re.escape(s.encode()) for s in sorted(site_to_lang)) + b')":')
    stream, raw = open_maybe_compressed(path)
    first = True
    try:
        with stream, raw:
            for lineno, line in enumerate(stream, 1):
                stats.lines += 1
                if on_progress is not None and lineno % 256 == 0:
                    on_progress(raw.tell())
                line = line.strip()
                if first and line:
                    first = False
                    if not (line.startswith(b"[") or line.startswith(b"{")):
                        raise InputError(f"{path}: not a Wikidata JSON dump (expected '[' on line {lineno})")
                if line in (b"", b"[", b"]"):
                    continue
                if line.endswith(b","):
                    line = line[:-1]
                if line.endswith(b"}") and site_re.search(line) is None:
                    # No requested sitelink anywhere in a complete-looking line: most of Wikidata's ~100M
                    # entities (scholarly articles, lexemes, ...). Skipping json.loads for them is most of
                    # the speed on a .gz dump; a truncated line does not end with '}' and is parsed (and
                    # counted as bad) below.
                    stats.without_sitelinks += 1
                    continue
                try:
                    entity = json.loads(line)
                except ValueError as e:
                    # UnicodeDecodeError is a ValueError too: both are one bad line.
                    stats.bad(f"line {lineno}: not JSON ({e})")
                    continue
                if not isinstance(entity, dict) or not isinstance(entity.get("id"), str):
                    stats.bad(f"line {lineno}: not an entity object")
                    continue
                kind = entity.get("type")
                qid = entity["id"]
                if kind != "item" or not _QID_RE.match(qid):
                    name = kind if isinstance(kind, str) else "unknown"
                    stats.skipped_entities[name] = stats.skipped_entities.get(name, 0) + 1
                    continue
                stats.items += 1
                sitelinks = entity.get("sitelinks") or {}
                if not isinstance(sitelinks, dict):
                    stats.bad(f"line {lineno}: {qid} has malformed sitelinks")
                    continue
                found = False
                for site, lang in site_to_lang.items():
                    link = sitelinks.get(site)
                    if link is None:
                        continue
                    title = link.get("title") if isinstance(link, dict) else None
                    if not isinstance(title, str) or not title:
                        stats.bad(f"line {lineno}: {qid} has a malformed {site} sitelink")
                        continue
                    found = True
                    stats.sitelinks[lang] = stats.sitelinks.get(lang, 0) + 1
                    yield lang, title, qid
                stats.items_with_sitelinks += found
            if on_progress is not None:
                on_progress(raw.tell())
    except (OSError, EOFError) as e:
        raise InputError(f"{path}: corrupt or truncated compressed file ({e})") from None
    if first:
        raise InputError(f"{path}: empty file, not a Wikidata JSON dump")
