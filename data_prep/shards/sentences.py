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
import functools
import re
from collections.abc import Sequence

import numpy as np

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

# Languages without sentence punctuation, whose boundaries these rules guess from the spaces between
# words of their script (so their "sentences" are phrases, much shorter than a sentence splitter's).
SPACE_GUESSED = frozenset({"th"})


def boundaries_from_spaces(lang: str) -> bool:
    """Whether ``lang``'s sentence boundaries are guessed from spaces (the Thai rule above)."""
    return lang in SPACE_GUESSED


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
    regex = _BOUNDARY_THAI if boundaries_from_spaces(lang) else _BOUNDARY
    pi = -1
    lo = hi = begin = counted = 0

    def next_paragraph() -> bool:
        """Close the current paragraph (its last sentence runs to its last non-space) and open the next."""
        nonlocal pi, lo, hi, begin, counted
        if pi >= 0:
            end = len(text[begin:hi].rstrip()) + begin
            if end > begin:
                spans.append((begin, end))
            per_para.append(len(spans) - counted)
            counted = len(spans)
        pi += 1
        if pi == len(paragraphs):
            return False
        lo, hi = paragraphs[pi]
        begin = _LEADING_SPACE.match(text, lo, hi).end()
        return True

    next_paragraph()
    for m in regex.finditer(text, lo, paragraphs[-1][1]):
        mstart = m.start()
        while mstart >= hi:  # the paragraph ends before this match
            next_paragraph()
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
    while next_paragraph():
        pass
    return spans, per_para


# ---------------------------------------------------------------- the same rules, vectorised
# ``split_paragraphs`` above is the readable statement of the rules: a regex scan and a Python decision
# per match. The shards stage runs the same rules with numpy over the code points of a whole batch
# (``split_code_points``): the matches the regex would find are runs of marks, closers and whitespace,
# and every decision but the abbreviation check on short words before a period is an array operation.
# A test holds the two to the same output.
SPACE, _LATIN, _CJK, _DANDA, _ARABIC, _CLOSER, _OPENER, _NEWLINE, _THAI_CH, _THAI_SP, _SEP3, _DOT, _SEMI = (
    1 << i for i in range(13)
)
_MAX_SHORT = max(max(map(len, ABBREVIATIONS)), 3)  # longer words before a period need no Python check


@functools.cache
def char_flags() -> np.ndarray:
    """One bit per character class the rules use, indexed by code point (``SPACE`` is ``str.isspace``,
    what ``str.strip`` and the regex ``\\s`` remove)."""
    flags = np.zeros(0x110000, dtype=np.uint16)
    flags[[c for c in range(0x3001) if chr(c).isspace()]] |= SPACE  # no whitespace above U+3000

    def mark(chars: str, bit: int) -> None:
        flags[[ord(c) for c in chars]] |= bit

    mark(".!?…;", _LATIN)
    mark("。！？｡", _CJK)
    mark("।॥", _DANDA)
    mark("؟۔", _ARABIC)
    mark(_CLOSERS, _CLOSER)
    mark(_OPENERS, _OPENER)
    mark("\n", _NEWLINE)
    flags[0x0E00:0x0E80] |= _THAI_CH
    mark(" \t\u00a0", _THAI_SP)
    mark(" \n\u00a0", _SEP3)
    mark(".", _DOT)
    mark(";", _SEMI)
    return flags


class _Changes:
    """Where the character classes change along the text: one pass over all the code points, after
    which every class's runs come from this short list."""

    def __init__(self, flags: np.ndarray):
        padded = np.zeros(len(flags) + 2, dtype=flags.dtype)
        padded[1:-1] = flags
        self.at = np.flatnonzero(padded[1:] != padded[:-1])  # offset of the first character after a change
        self.before = padded[self.at]  # the classes before and after each change
        self.after = padded[self.at + 1]

    def runs(self, bit: int) -> _Runs:
        return _Runs(self.at[((self.before ^ self.after) & bit) != 0])

    def first_of_groups(self, bit: int) -> np.ndarray:
        """Offsets of the first character of every group of consecutive characters having ``bit``
        (whether a range holds such a character can be told from these alone)."""
        return self.at[(self.after & bit) != 0]


class _Runs:
    """The maximal runs of characters of one class, as sorted starts and ends."""

    def __init__(self, edges: np.ndarray):
        self.starts, self.ends = edges[0::2], edges[1::2]

    def skip(self, at: np.ndarray) -> np.ndarray:
        """For each position in ``at``: the first position >= it outside every run."""
        if not len(self.starts):
            return at
        i = np.searchsorted(self.starts, at, side="right") - 1
        ok = i >= 0
        inside = np.zeros(len(at), dtype=bool)
        inside[ok] = at[ok] < self.ends[i[ok]]
        return np.where(inside, self.ends[np.maximum(i, 0)], at)


def split_code_points(
    text: str,
    cp: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    lang: str,
    protected_starts: np.ndarray,
    protected_ends: np.ndarray,
    flags: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``split_paragraphs`` on the code points ``cp`` of ``text`` (paragraphs at ``lo``/``hi``, separated
    by NUL): (span starts, span ends, span paragraph) as arrays, in order. ``flags`` is
    ``char_flags()[cp]`` when the caller has it already."""
    n = len(cp)
    if flags is None:
        flags = char_flags()[cp]
    changes = _Changes(flags)
    space, closer, opener = changes.runs(SPACE), changes.runs(_CLOSER), changes.runs(_OPENER)
    positions = changes.first_of_groups

    def count_between(pos: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.searchsorted(pos, b) - np.searchsorted(pos, a)

    # ---- what the regex would match: mark runs (with closers), then bare whitespace runs
    starts, ends, nxts, kinds = [], [], [], []
    latin = None
    for k, bit in enumerate((_LATIN, _CJK, _DANDA, _ARABIC)):
        runs = changes.runs(bit)
        s, e = runs.starts, closer.skip(runs.ends)
        if bit == _LATIN:  # the latin marks must be followed by whitespace
            latin = runs
            ok = np.zeros(len(e), dtype=bool)
            ok[e < n] = (flags[e[e < n]] & SPACE) != 0
            s, e = s[ok], e[ok]
        starts.append(s)
        ends.append(e)
        nxts.append(space.skip(e))
        kinds.append(np.full(len(s), k))
    mark_end = np.sort(np.concatenate(ends))
    ws, we = space.starts, space.ends
    # a whitespace run right after a mark match was eaten by its trailing \s*
    i = np.minimum(np.searchsorted(mark_end, ws), max(len(mark_end) - 1, 0))
    eaten = mark_end[i] == ws if len(mark_end) else np.zeros(len(ws), dtype=bool)
    ws, we = ws[~eaten], we[~eaten]
    newlines = positions(_NEWLINE)
    first_nl = np.append(newlines, n)[np.searchsorted(newlines, ws)]
    kind_ws = np.where(first_nl < we, 5, -1)  # 5: newline, 6: Thai, -1: no match
    end_ws = first_nl
    if boundaries_from_spaces(lang):
        prev_thai = np.zeros(len(ws), dtype=bool)
        prev_thai[ws > 0] = (flags[ws[ws > 0] - 1] & _THAI_CH) != 0
        next_thai = np.zeros(len(ws), dtype=bool)
        next_thai[we < n] = (flags[we[we < n]] & _THAI_CH) != 0
        # no whitespace but [ \t\u00a0] in the run
        thai = prev_thai & next_thai & (changes.runs(_THAI_SP).skip(ws) >= we)
        kind_ws = np.where(thai, 6, kind_ws)
        end_ws = np.where(thai, ws, end_ws)
    m = kind_ws >= 0
    starts.append(np.where(kind_ws[m] == 6, ws[m], end_ws[m]))
    ends.append(end_ws[m])
    nxts.append(we[m])
    kinds.append(kind_ws[m])
    start, end, nxt, kind = (np.concatenate(x) for x in (starts, ends, nxts, kinds))
    order = np.argsort(start, kind="stable")
    start, end, nxt, kind = start[order], end[order], nxt[order], kind[order]

    # ---- the decisions
    para = np.searchsorted(lo, start, side="right") - 1
    lead = space.skip(lo)
    keep = (nxt < hi[para]) & (end > lead[para])
    li = np.flatnonzero(keep & (kind == 0))
    if len(li):
        mark_stop = latin.skip(start[li])  # the marks without closers
        drop = (count_between(positions(_SEMI), start[li], mark_stop) > 0) & (lang != "el")
        j = opener.skip(nxt[li])
        inside = j < hi[para[li]]
        lower = np.zeros(len(li), dtype=bool)
        lower[inside] = [chr(c).islower() for c in cp[j[inside]].tolist()]
        drop |= lower
        # a lone period: the word before it may be an abbreviation, an initial or an ordinal
        period = ~drop & (mark_stop - start[li] == 1) & ((flags[start[li]] & _DOT) != 0)
        pi = li[period]
        dot = start[pi]
        # the word starts after the last " ", "\n" or "\u00a0" before it (0: none)
        seps = np.concatenate([[0], changes.runs(_SEP3).ends])
        word_start = np.maximum(seps[np.searchsorted(seps, dot, side="right") - 1], lo[para[pi]])
        stripped = np.minimum(opener.skip(word_start), dot)
        dotted = count_between(positions(_DOT), stripped, dot) > 0  # "." inside the word
        not_end = dotted.copy()
        for idx in np.flatnonzero(~dotted & (dot - stripped <= _MAX_SHORT)).tolist():
            word = text[stripped[idx] : dot[idx]]
            not_end[idx] = (
                word in ABBREVIATIONS
                or (len(word) == 1 and word.isalpha())
                or (lang in ORDINAL_PERIOD_LANGS and word.isdigit() and len(word) <= 3)
            )
        keep[li[drop]] = False
        keep[pi[not_end]] = False
    if len(protected_starts):
        i = np.searchsorted(protected_starts, nxt, side="left")
        covered = np.zeros(len(nxt), dtype=bool)
        covered[i > 0] = protected_ends[i[i > 0] - 1] > end[i > 0]
        keep &= ~covered
    start, end, nxt, kind, para = start[keep], end[keep], nxt[keep], kind[keep], para[keep]
    # a newline boundary ends at the last non-space before it (its whitespace run starts there)
    nl = np.flatnonzero(kind == 5)
    end[nl] = space.starts[np.searchsorted(space.starts, end[nl], side="right") - 1]

    # ---- spans: [lead, boundary, boundary, ..., last non-space] per paragraph
    n_para = len(lo)
    final = hi.copy()  # minus the whitespace run ending at hi, if any
    if len(space.starts):
        j = np.searchsorted(space.starts, hi, side="right") - 1
        trail = (j >= 0) & (space.ends[np.maximum(j, 0)] == hi)
        final[trail] = space.starts[j[trail]]
    final = np.maximum(final, lead)
    b_para = np.concatenate([np.arange(n_para), para])
    begins = np.concatenate([lead, nxt])
    e_para = np.concatenate([para, np.arange(n_para)])
    finals = np.concatenate([end, final])
    bo = np.lexsort((begins, b_para))
    eo = np.lexsort((finals, e_para))
    begins, finals, span_para = begins[bo], finals[eo], b_para[bo]
    ok = finals > begins
    return begins[ok], finals[ok], span_para[ok]
