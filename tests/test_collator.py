"""Dynamic masking and padding: exact counts, ratios, specials, entity positions, determinism, masking units
(by hand and on the bundled sample's shards in four scripts)."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest

from pretrain.collator import (
    ALONE,
    CONTINUES,
    STARTS,
    Collator,
    MaskingConfig,
    count_targets,
    mask_sample,
    n_to_mask,
    unit_table,
    word_spans,
)
from pretrain.data import Sample, load_split, read_manifest, spm_size

SPM = 100  # pieces; fairseq ids of ordinary pieces are 4..100, <mask> is 101
CFG = MaskingConfig(spm_size=SPM, max_mention_length=3, seed=7)
# even ids start a word, odd ids continue one; specials are units of their own
WORD_START = np.array([ALONE] * 4 + [STARTS if i % 2 == 0 else CONTINUES for i in range(4, SPM + 2)], dtype=np.int8)


def sample(index: int, words: list[int], ents=(), starts=(), ends=()) -> Sample:
    return Sample(index, "en", list(words), list(ents), list(starts), list(ends))


def test_mask_id_is_after_the_pieces():
    assert CFG.mask_id == 101


def test_n_to_mask():
    assert [n_to_mask(n, 0.15) for n in (0, 1, 3, 10, 40, 100)] == [0, 1, 1, 2, 6, 15]


def test_subword_masking_exact_count_and_specials():
    words = [4 + (i % 90) for i in range(40)]
    m = mask_sample(sample(0, words), CFG, None)
    assert m.input_ids[0] == 0 and m.input_ids[-1] == 2 and len(m.input_ids) == 42
    assert m.mlm_labels[0] == -100 and m.mlm_labels[-1] == -100  # <s>, </s> never predicted
    masked = np.flatnonzero(m.mlm_labels != -100)
    assert len(masked) == 6  # round(0.15 * 40)
    assert (m.mlm_labels[masked] == np.array(words)[masked - 1]).all()  # labels are the original ids
    changed = m.input_ids[1:-1] != np.array(words)
    assert not changed[np.flatnonzero(m.mlm_labels[1:-1] == -100)].any()  # only masked positions change


def test_whole_word_masking_masks_whole_words():
    # 20 words of two pieces each: (even start, odd continuation)
    words = [x for w in range(20) for x in (4 + 2 * (w % 40), 5 + 2 * (w % 40))]
    m = mask_sample(sample(3, words), CFG, WORD_START)
    masked = np.flatnonzero(m.mlm_labels[1:-1] != -100)
    assert len(masked) == 6  # round(0.15 * 20) = 3 words x 2 pieces
    assert masked.reshape(-1, 2)[:, 0].tolist() == (masked.reshape(-1, 2)[:, 1] - 1).tolist()
    assert all(p % 2 == 0 for p in masked[::2])  # each masked run starts at a word start


def test_replacement_ratios_over_many_samples():
    counts = {"mask": 0, "random": 0, "kept": 0}
    for i in range(300):
        words = [4 + ((i + 3 * k) % 96) for k in range(50)]
        m = mask_sample(sample(i, words), CFG, None)
        pos = np.flatnonzero(m.mlm_labels != -100)
        got, orig = m.input_ids[pos], m.mlm_labels[pos]
        assert ((got == CFG.mask_id) | ((got >= 4) & (got <= SPM))).all()  # never a special id
        counts["mask"] += int((got == CFG.mask_id).sum())
        counts["kept"] += int((got == orig).sum())
        counts["random"] += int(((got != orig) & (got != CFG.mask_id)).sum())
    total = sum(counts.values())
    assert total == 300 * 8  # round(0.15 * 50) = 8 per sample, exactly
    # 2400 draws: binomial sd of a 10% share is 0.6%; a random id equal to the original counts as kept (~1%)
    assert counts["mask"] / total == pytest.approx(0.8, abs=0.025)
    assert counts["random"] / total == pytest.approx(0.1 * 96 / 97, abs=0.02)
    assert counts["kept"] / total == pytest.approx(0.1 + 0.1 / 97, abs=0.02)


def test_at_least_one_of_each():
    m = mask_sample(sample(1, [10, 11], [17], [0], [2]), CFG, None)
    assert (m.mlm_labels != -100).sum() == 1  # round(0.3) = 0 -> 1
    assert m.mep_labels.tolist() == [17] and m.entity_ids.tolist() == [2]  # the single entity -> [MASK]
    none = mask_sample(sample(1, [10, 11]), CFG, None)
    assert len(none.entity_ids) == 0 and none.entity_position_ids.shape == (0, 3)


def test_entity_masking_count_and_positions():
    ents = list(range(10, 30))
    starts = list(range(20))
    ends = [s + 1 for s in starts]
    ends[0] = 2  # a two-token mention
    ends[5] = 10  # longer than max_mention_length (3): truncated
    m = mask_sample(sample(4, list(range(4, 30)), ents, starts, ends), CFG, None)
    assert (m.mep_labels != -100).sum() == 3  # round(0.15 * 20)
    chosen = np.flatnonzero(m.mep_labels != -100)
    assert (m.entity_ids[chosen] == 2).all() and (m.mep_labels[chosen] == np.array(ents)[chosen]).all()
    assert (np.delete(m.entity_ids, chosen) == np.delete(np.array(ents), chosen)).all()
    # +1 for <s>: token offsets into word_ids become indices into input_ids
    assert m.entity_position_ids[0].tolist() == [1, 2, -1]
    assert m.entity_position_ids[1].tolist() == [2, -1, -1]
    assert m.entity_position_ids[5].tolist() == [6, 7, 8]


def test_same_seed_and_index_same_masks():
    s = sample(42, list(range(4, 60)), [5, 6, 7, 8, 9, 10, 11], list(range(7)), list(range(1, 8)))
    a, b = mask_sample(s, CFG, WORD_START), mask_sample(s, CFG, WORD_START)
    assert (a.input_ids == b.input_ids).all() and (a.entity_ids == b.entity_ids).all()
    c = mask_sample(sample(43, s.word_ids, s.entity_ids, s.entity_starts, s.entity_ends), CFG, WORD_START)
    d = mask_sample(s, MaskingConfig(spm_size=SPM, max_mention_length=3, seed=8), WORD_START)
    assert not (a.mlm_labels == c.mlm_labels).all() and not (a.mlm_labels == d.mlm_labels).all()


def test_collate_pads_to_longest():
    batch = Collator(CFG, WORD_START)([
        sample(0, [4, 5, 6], [9], [1], [3]),
        sample(1, [8, 9, 10, 11, 12, 13], [12, 13], [0, 4], [1, 6]),
        sample(2, [20]),
    ])
    assert batch["input_ids"].shape == (3, 8) and batch["entity_ids"].shape == (3, 2)
    assert batch["entity_position_ids"].shape == (3, 2, 3)
    ids, att = batch["input_ids"], batch["attention_mask"]
    assert ids[0, :5].tolist()[0] == 0 and ids[0, 4] == 2 and ids[0, 5:].tolist() == [1, 1, 1]
    assert att[0].tolist() == [1] * 5 + [0] * 3 and att[1].tolist() == [1] * 8
    assert ids[2].tolist()[:3] == [0, ids[2, 1].item(), 2] and att[2].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert (batch["mlm_labels"][att == 0] == -100).all()  # pads never predicted
    ea = batch["entity_attention_mask"]
    assert ea.tolist() == [[1, 0], [1, 1], [0, 0]]
    assert batch["entity_ids"][0, 1] == 0 and batch["entity_ids"][2].tolist() == [0, 0]  # entity pad 0
    assert batch["mep_labels"][ea == 0].tolist() == [-100] * 3
    assert batch["entity_position_ids"][1].tolist() == [[1, -1, -1], [5, 6, -1]]
    assert batch["entity_position_ids"][2].tolist() == [[-1, -1, -1]] * 2
    # a budget of one token per sample: the one-piece word where there is one, else one whole word (at least
    # one); words: [4 5] [6] | [8 9] [10 11] [12 13] | [20]; one entity per sample with any
    words = {0: [[3]], 1: [[1, 2], [3, 4], [5, 6]], 2: [[1]]}
    for i, options in words.items():
        assert np.flatnonzero(batch["mlm_labels"][i] != -100).tolist() in options
    n_words = sum(int((batch["mlm_labels"][i] != -100).sum()) for i in range(3))
    assert count_targets(batch) == (n_words, 2)


# ------------------------------------------------------------------------------------ masking units


def test_word_spans_by_hand():
    # fairseq ids -> kind: 10 starts, 11 continues, 12 is a piece of a script written without spaces
    units = np.full(20, CONTINUES, dtype=np.int8)
    units[:4], units[10], units[12] = ALONE, STARTS, ALONE
    words = np.array([11, 10, 11, 11, 12, 12, 11, 11, 10] + [11] * 10 + [3, 11])
    # a leading continuation | a word of 3 | two alone pieces | continuations after one start a unit |
    # a word of 11 pieces split every 4 | <unk> alone | a continuation after it
    assert word_spans(words, units, 4).tolist() == [0, 1, 4, 5, 6, 8, 12, 16, 19, 20, 21]
    assert word_spans(words, units, 100).tolist() == [0, 1, 4, 5, 6, 8, 19, 20, 21]
    assert word_spans(words, None).tolist() == list(range(22))
    assert word_spans(words[:0], units).tolist() == [0]


def test_whole_word_budget_is_counted_in_tokens():
    five = [x for w in range(8) for x in [4 + 2 * w] + [5 + 2 * w] * 4]  # 8 words of 5 pieces: 40 tokens
    for i in range(20):
        m = mask_sample(sample(i, five), CFG, WORD_START)
        masked = np.flatnonzero(m.mlm_labels[1:-1] != -100)
        # budget round(0.15 * 40) = 6 tokens: one word of 5 fits, a second would not
        assert len(masked) == 5 and masked[0] % 5 == 0 and masked.tolist() == list(range(masked[0], masked[0] + 5))
        assert m.masked_units.tolist() == [5]
    long = [4] + [5] * 20  # one word of 21 pieces, capped at 8: units 8, 8, 5; budget 3 fits none
    m = mask_sample(sample(0, long), MaskingConfig(spm_size=SPM, max_mention_length=3, seed=7, max_word_pieces=8), WORD_START)
    masked = np.flatnonzero(m.mlm_labels[1:-1] != -100).tolist()
    assert masked in (list(range(0, 8)), list(range(8, 16)), list(range(16, 21)))  # at least one: a whole unit


def test_unit_table_from_the_sample_spm(sample_shards):
    import sentencepiece as spm

    path = str(read_manifest(sample_shards).spm_path)
    sp = spm.SentencePieceProcessor(model_file=path)
    table = unit_table(path)
    assert len(table) == sp.get_piece_size() + 2 and (table[:4] == ALONE).all() and table[-1] == ALONE
    for text in ("東京は日本の首都である。", "东京是日本的首都。", "กรุงเทพมหานครเป็นเมืองหลวง"):
        pieces = [p for p in sp.encode(text, out_type=str) if p != "\u2581"]
        assert pieces and all(table[sp.piece_to_id(p) + 1] == ALONE for p in pieces), text
    ids = sp.encode("Tokyo is a metropolis of Kantō", out_type=int)
    kinds = [int(table[i + 1]) for i in ids]
    assert kinds == [STARTS if sp.id_to_piece(i).startswith("\u2581") else CONTINUES for i in ids]
    assert STARTS in kinds and CONTINUES in kinds


def _no_space_piece(piece: str) -> bool:
    """Judged from Unicode character names, independently of the collator's block table."""
    return any(n.startswith(("CJK", "HIRAGANA", "KATAKANA", "THAI", "IDEOGRAPHIC")) for n in map(unicodedata.name, piece, [""] * len(piece)))


@pytest.mark.parametrize("whole_word", [False, True], ids=["subword", "whole-word"])
@pytest.mark.parametrize("lang", ["ja", "zh", "th", "en"])
def test_masked_share_and_units_on_the_sample(sample_shards, lang, whole_word):
    import sentencepiece as spm

    m = read_manifest(sample_shards)
    sp = spm.SentencePieceProcessor(model_file=str(m.spm_path))
    units = unit_table(str(m.spm_path)) if whole_word else None
    cfg = MaskingConfig(spm_size=spm_size(m.spm_path), max_mention_length=30, seed=3, max_word_pieces=8)
    rows = load_split(sample_shards, lang)["word_ids"]
    shares, unit_lengths, no_space_units = [], [], 0
    for k in range(10):  # each sequence under 10 global indices: 10 different maskings
        for r, words in enumerate(rows):
            ms = mask_sample(Sample(k * len(rows) + r, lang, words, [], [], []), cfg, units)
            masked = ms.mlm_labels[1:-1] != -100
            shares.append(masked.mean())
            bounds = word_spans(np.asarray(words), units, cfg.max_word_pieces)
            for a, b in zip(bounds[:-1], bounds[1:]):
                assert masked[a:b].all() or not masked[a:b].any()  # a unit is masked whole or not at all
                if masked[a:b].any():
                    unit_lengths.append(b - a)
                    pieces = [sp.id_to_piece(int(i) - 1) for i in words[a:b]]
                    if any(map(_no_space_piece, pieces)):
                        assert b - a == 1, pieces  # scripts without spaces: one piece
                        no_space_units += 1
            assert sorted(ms.masked_units.tolist()) == sorted(np.diff(bounds)[[masked[a] for a in bounds[:-1]]].tolist())
    shares = np.array(shares)
    assert len(shares) >= 180 and ((shares >= 0.10) & (shares <= 0.20)).mean() >= 0.95
    assert max(unit_lengths) <= (8 if whole_word else 1)
    if lang != "en":
        assert no_space_units > 0.5 * len(unit_lengths)  # most masked units there are single pieces
