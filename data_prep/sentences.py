"""Rule-based sentence splitting for the mLUKE languages, with no JVM or ICU dependency.

Sentences only decide where a training sequence may end, so the rules aim at "never split in the
middle of a sentence" more than at catching every boundary:

- Latin, Cyrillic, Greek (and Arabic/Devanagari text that uses them): ``. ! ? …`` (Greek also ``;``)
  followed by optional closing quotes/brackets and whitespace. A period does not end a sentence after
  an abbreviation ("e.g.", "Dr.", "z.B."), a single letter (initials), an ordinal number in languages
  that write ordinals with a period ("am 3. Oktober"), or when the next word starts in lower case.
  Decimals ("3.5") never split since no whitespace follows the period.
- Chinese/Japanese: ``。！？`` (and half-width ``｡``) split with or without following whitespace.
- Devanagari/Bengali: danda ``।`` and double danda ``॥``.
- Arabic script: ``؟`` and ``۔`` (and ``.``/``!`` by the first rule; Arabic has no case).
- Thai has no sentence punctuation; in Thai text (lang "th") whitespace between two Thai characters
  separates sentences.
- A newline always ends a sentence.
No split ever falls inside a protected span (a link anchor).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence

# Abbreviations after which a period does not end a sentence (case-sensitive, without the final period).
# Dotted forms like "e.g" / "z.B" / "т.е" are caught by the internal-period rule and need no entry.
ABBREVIATIONS = frozenset(
    """
    Mr Mrs Ms Dr Prof St Mt Ft Jr Sr Sen Rep Gov Gen Col Lt Capt Sgt Rev Hon vs cf No Nr Vol vol Fig fig
    pp ca approx Inc Ltd Co Corp Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec
    bzw vgl ggf evtl Str Hl Abs Mme Mlle Ste Av Sra Sres Dra Sig Dott Avv Ing Dhr Mevr Ir Blz np tzn Św ul
    Sp Sz Ks Tn Bpk Jl Dk
    им ул пр проф акад Св гг св
    """.split()
)
# Languages that write ordinal numbers with a period ("3. Oktober"), so "3." rarely ends a sentence.
ORDINAL_PERIOD_LANGS = frozenset("de fi pl tr cs sk sl hr sr bs da no nb nn hu is et lv lt".split())

_CLOSERS = "\"'”’»)]}」』）】〉》›"
_OPENERS = "\"'“‘«([{「『（【〈《‹¿¡"
_THAI = "\u0e00-\u0e7f"
_CL = re.escape(_CLOSERS)

# Each alternative ends where the sentence ends; the trailing \s* (part of the match) is the gap
# up to the next sentence, so one match gives both positions. The leading lookahead lets the regex
# engine skip most positions with one character-class test. The Thai rule is used for Thai only.
_MARKS = rf"""
      (?P<latin>[.!?…;]+[{_CL}]*)(?=\s)
    | (?P<cjk>[。！？｡]+[{_CL}]*)
    | (?P<danda>[।॥]+[{_CL}]*)
    | (?P<arabic>[؟۔]+[{_CL}]*)
    | (?P<newline>)(?=\n)
"""
_BOUNDARY = re.compile(rf"(?=[.!?…;。！？｡।॥؟۔\n])(?:{_MARKS})\s*", re.VERBOSE)
_BOUNDARY_THAI = re.compile(
    rf"(?=[.!?…;。！？｡।॥؟۔\n \t\u00a0])(?:{_MARKS} | (?<=[{_THAI}])(?P<thai>)(?=[ \t\u00a0]+[{_THAI}]))\s*", re.VERBOSE
)
_LEADING_SPACE = re.compile(r"\s*")


def _period_ends_sentence(text: str, dot: int, lo: int, lang: str) -> bool:
    """Whether the period at ``text[dot]`` (followed by whitespace) ends a sentence; the paragraph
    starts at ``lo``."""
    word_start = max(text.rfind(" ", lo, dot), text.rfind("\n", lo, dot), text.rfind("\u00a0", lo, dot), lo - 1) + 1
    word = text[word_start:dot].lstrip(_OPENERS)
    if word in ABBREVIATIONS or "." in word:
        return False
    if len(word) == 1 and word.isalpha():  # initials: "J. R. R. Tolkien", Russian "г."
        return False
    if lang in ORDINAL_PERIOD_LANGS and word.isdigit() and len(word) <= 3:
        return False
    return True


def _next_is_lower(text: str, pos: int, hi: int) -> bool:
    while pos < hi and text[pos] in _OPENERS:
        pos += 1
    return pos < hi and text[pos].islower()


def split_sentences(text: str, lang: str, protected: Sequence[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """Sentence spans ``(start, end)`` of ``text``, whitespace trimmed, in order, none empty.

    ``protected`` are (start, end) character spans (sorted, non-overlapping) that no boundary may cut.
    """
    return split_paragraphs(text, lang, [(0, len(text))], [s for s, _ in protected], [e for _, e in protected])[0]


def split_paragraphs(
    text: str, lang: str, paragraphs: Sequence[tuple[int, int]], protected_starts: Sequence[int], protected_ends: Sequence[int]
) -> tuple[list[tuple[int, int]], list[int]]:
    """Sentence spans of many paragraphs at once: ``text`` holds them at the (start, end) offsets of
    ``paragraphs`` (in order), separated by at least one character that is neither whitespace nor
    punctuation (NUL, say), so no match runs from one into the next and each paragraph splits as if
    it were alone. One regex scan of the whole batch instead of one per paragraph: the per-call cost
    would otherwise be most of the work. Protected spans are given as sorted starts and their ends,
    in ``text`` offsets. Returns the spans (``text`` offsets, in order) and the number per paragraph.
    """
    spans: list[tuple[int, int]] = []
    per_para: list[int] = []
    if not paragraphs:
        return spans, per_para
    starts = protected_starts
    regex = _BOUNDARY_THAI if lang == "th" else _BOUNDARY
    pi = 0
    lo, hi = paragraphs[0]
    begin = _LEADING_SPACE.match(text, lo, hi).end()
    counted = 0
    for m in regex.finditer(text, lo, paragraphs[-1][1]):
        mstart = m.start()
        while mstart >= hi:  # the paragraph ends before this match: close it, open the next
            end = len(text[begin:hi].rstrip()) + begin
            if end > begin:
                spans.append((begin, end))
            per_para.append(len(spans) - counted)
            counted = len(spans)
            pi += 1
            lo, hi = paragraphs[pi]
            begin = _LEADING_SPACE.match(text, lo, hi).end()
        kind = m.lastgroup
        end = m.end(kind)
        nxt = m.end()
        if nxt >= hi or end <= begin:
            continue
        if kind == "latin":
            mark = m.group("latin")
            if ";" in mark and lang != "el":  # the Greek question mark; elsewhere a semicolon
                continue
            if _next_is_lower(text, nxt, hi):
                continue
            if mark[0] == "." and mark.rstrip(_CLOSERS) == "." and not _period_ends_sentence(text, mstart, lo, lang):
                continue
        # Spans are sorted and disjoint, so only the last one starting before ``nxt`` can cover the
        # gap [end, nxt) or straddle ``end`` (when there is no gap).
        if starts:
            i = bisect.bisect_left(starts, nxt)
            if i > 0 and protected_ends[i - 1] > end:
                continue
        if kind == "newline":  # the only boundary that may follow whitespace
            while end > begin and text[end - 1].isspace():
                end -= 1
            if end == begin:
                begin = nxt
                continue
        spans.append((begin, end))
        begin = nxt
    while True:
        end = len(text[begin:hi].rstrip()) + begin
        if end > begin:
            spans.append((begin, end))
        per_para.append(len(spans) - counted)
        counted = len(spans)
        pi += 1
        if pi == len(paragraphs):
            return spans, per_para
        lo, hi = paragraphs[pi]
        begin = _LEADING_SPACE.match(text, lo, hi).end()
