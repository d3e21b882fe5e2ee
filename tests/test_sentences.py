"""Rule-based sentence splitting per script."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.shards.sentences import split_code_points, split_paragraphs, split_sentences


def sentences(text: str, lang: str, protected=()) -> list[str]:
    return [text[s:e] for s, e in split_sentences(text, lang, protected)]


@pytest.mark.parametrize(
    "lang, text, expected",
    [
        ("en", "The bay is calm. Boats leave at dawn! Do they return? Yes.",
         ["The bay is calm.", "Boats leave at dawn!", "Do they return?", "Yes."]),
        # abbreviations, initials, decimals, lower-case continuation
        ("en", "Dr. Rowe came, e.g. in spring. J. R. Smith paid 3.5 pounds. He said no. but left.",
         ["Dr. Rowe came, e.g. in spring.", "J. R. Smith paid 3.5 pounds.", "He said no. but left."]),
        ("en", 'He said "Go home." Then he left.\nA new line', ['He said "Go home."', "Then he left.", "A new line"]),
        ("en", "It ended... Then more.", ["It ended...", "Then more."]),
        ("de", "Am 3. Oktober 1990 kam er z.B. an. Die Stadt wuchs.", ["Am 3. Oktober 1990 kam er z.B. an.", "Die Stadt wuchs."]),
        ("en", "The score was 3. Then it rained.", ["The score was 3.", "Then it rained."]),  # no ordinal rule in en
        ("ru", "Маяк построили в 1821 г. Потом его перестроили. Рыбаки рады!",
         ["Маяк построили в 1821 г. Потом его перестроили.", "Рыбаки рады!"]),
        ("el", "Πού είναι ο φάρος; Κοντά στο νερό. Τέλος", ["Πού είναι ο φάρος;", "Κοντά στο νερό.", "Τέλος"]),
        ("en", "One; two. Three", ["One; two.", "Three"]),  # ";" is not a terminator outside Greek
        ("ja", "港町は静かだ。「灯台は古い。」そうだ！本当？はい", ["港町は静かだ。", "「灯台は古い。」", "そうだ！", "本当？", "はい"]),
        ("zh", "港口城市很安静。灯塔很古老！ 你去过吗？", ["港口城市很安静。", "灯塔很古老！", "你去过吗？"]),
        ("hi", "यह एक वाक्य है। यह दूसरा है॥ तीसरा", ["यह एक वाक्य है।", "यह दूसरा है॥", "तीसरा"]),
        ("ar", "هل تعرف المنارة؟بنيت قديما. يخرج الصيادون۔ انتهى", ["هل تعرف المنارة؟", "بنيت قديما.", "يخرج الصيادون۔", "انتهى"]),
        ("th", "เมืองท่าตั้งอยู่ริมอ่าว ชาวประมงออกเรือ ปี 1821 มีนก", ["เมืองท่าตั้งอยู่ริมอ่าว", "ชาวประมงออกเรือ", "ปี 1821 มีนก"]),  # Thai-space-Thai only
        ("en", "  padded.   Text  ", ["padded.", "Text"]),
        ("en", "", []),
        ("en", " \n ", []),
    ],
)
def test_split_per_script(lang, text, expected):
    assert sentences(text, lang) == expected


def test_never_splits_inside_a_protected_span():
    text = "He met Mr. Smith. Then Capt. Ahab sailed. The end. Fin"
    # without protection: the ship name "The end. Fin" would be cut
    assert sentences(text, "en")[-2:] == ["The end.", "Fin"]
    start = text.index("The end")
    assert sentences(text, "en", [(start, len(text))]) == ["He met Mr. Smith.", "Then Capt. Ahab sailed.", "The end. Fin"]
    # a span covering only the gap between two sentences also forbids the cut
    gap = text.index(" Then")
    assert sentences(text, "en", [(gap, gap + 1)])[0] == "He met Mr. Smith. Then Capt. Ahab sailed."
    # a span ending exactly at the boundary does not
    assert sentences(text, "en", [(7, gap)])[0] == "He met Mr. Smith."


def test_protected_span_in_text_without_whitespace():
    text = "東京。大阪。京都"
    assert sentences(text, "ja") == ["東京。", "大阪。", "京都"]
    assert sentences(text, "ja", [(1, 4)]) == ["東京。大阪。", "京都"]
    assert sentences(text, "ja", [(3, 5)]) == ["東京。", "大阪。", "京都"]  # starts at the boundary


def test_spans_cover_all_text():
    text = "A first one. B second one!  C third?\nD"
    spans = split_sentences(text, "en")
    covered = set()
    for s, e in spans:
        covered.update(range(s, e))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())
    assert all(not text[s].isspace() and not text[e - 1].isspace() for s, e in spans)


def _random_batch(lang: str, count: int, seed: int = 0):
    """Random NUL-joined paragraphs over the characters the rules care about, with protected spans."""
    import random

    rng = random.Random(f"{lang}{seed}")
    alphabet = ["a", "B", "c", "Dr", "e.g", "J", "3", "12", "1234", " ", "  ", "\n", " \n ", "\t", "\u3000", ".", "!", "?",
                ";", "…", "»", ")", '"', "(", "«", "「", "」", "。", "！", "ก", "ข", "\u00a0", "؟", "।", "й", "Z"]
    paragraphs = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 16))) for _ in range(count)]
    protected = []
    for p in paragraphs:  # a few protected spans per paragraph, sorted and disjoint
        cuts = sorted(rng.sample(range(len(p) + 1), min(len(p) + 1, 2 * rng.randrange(0, 2))))
        protected.append(list(zip(cuts[::2], cuts[1::2])))
    text = "\x00".join(paragraphs)
    bounds, pos = [], 0
    for p in paragraphs:
        bounds.append((pos, pos + len(p)))
        pos += len(p) + 1
    starts = [lo + s for (lo, _), spans in zip(bounds, protected) for s, _ in spans]
    ends = [lo + e for (lo, _), spans in zip(bounds, protected) for _, e in spans]
    return paragraphs, protected, text, bounds, starts, ends


@pytest.mark.parametrize("lang", ["en", "de", "el", "ja", "th", "ar"])
def test_batch_of_paragraphs_splits_like_each_paragraph_alone(lang):
    """``split_paragraphs`` scans many NUL-separated paragraphs at once; every paragraph must split
    exactly as it does alone, whatever stands at its edges (marks, closers, spaces, Thai, newlines)."""
    paragraphs, protected, text, bounds, starts, ends = _random_batch(lang, 400)
    spans, per_para = split_paragraphs(text, lang, bounds, starts, ends)
    want = [[(lo + s, lo + e) for s, e in split_sentences(p, lang, prot)] for (lo, _), p, prot in zip(bounds, paragraphs, protected)]
    assert per_para == [len(w) for w in want]
    assert spans == [s for w in want for s in w]
    assert sum(per_para) > 300  # the random paragraphs do split


@pytest.mark.parametrize("lang", ["en", "de", "el", "ja", "th", "ar", "ru"])
@pytest.mark.parametrize("seed", range(3))
def test_vectorised_rules_equal_the_regex_rules(lang, seed):
    """``split_code_points`` (numpy, what the shards stage runs) gives exactly the spans of
    ``split_paragraphs`` (regex and Python, the readable statement of the rules)."""
    _, _, text, bounds, starts, ends = _random_batch(lang, 3000, seed)
    want, per_para = split_paragraphs(text, lang, bounds, starts, ends)
    cp = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    lo, hi = (np.array(x, dtype=np.int64) for x in zip(*bounds))
    s, e, para = split_code_points(text, cp, lo, hi, lang, np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64))
    assert list(zip(s.tolist(), e.tolist())) == want
    assert np.bincount(para, minlength=len(bounds)).tolist() == per_para
    assert len(want) > 2000


@pytest.mark.parametrize(
    "paragraphs",
    [[], [""], ["", ""], ["abc"], ["abc.", "x"], ["。"], ["   "], ["a. B"], ["\n"], ["e.g. X. Y"], ["ก ข"]],
)
def test_vectorised_rules_on_edge_batches(paragraphs):
    """Batches without whitespace, marks, separators or text at all."""
    text = "\x00".join(paragraphs)
    lo = np.cumsum([0] + [len(p) + 1 for p in paragraphs[:-1]]).astype(np.int64)[: len(paragraphs)]
    hi = lo + np.array([len(p) for p in paragraphs], dtype=np.int64)
    cp = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    none = np.zeros(0, dtype=np.int64)
    for lang in ("en", "th"):
        want, per_para = split_paragraphs(text, lang, list(zip(lo.tolist(), hi.tolist())), [], [])
        s, e, para = split_code_points(text, cp, lo, hi, lang, none, none)
        assert list(zip(s.tolist(), e.tolist())) == want
        assert np.bincount(para, minlength=len(paragraphs)).tolist() == per_para
