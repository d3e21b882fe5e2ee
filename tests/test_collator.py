"""Dynamic masking and padding: exact counts, ratios, specials, entity positions, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from pretrain.collator import Collator, MaskingConfig, count_targets, mask_sample, n_to_mask
from pretrain.data import Sample

SPM = 100  # pieces; fairseq ids of ordinary pieces are 4..100, <mask> is 101
CFG = MaskingConfig(spm_size=SPM, max_mention_length=3, seed=7)
# word starts: even ids start a word, odd ids continue one
WORD_START = np.array([True] * 4 + [i % 2 == 0 for i in range(4, SPM + 2)])


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
    # one whole word per sample (words: [4 5] [6] | [8 9] [10 11] [12 13] | [20]); one entity per sample with any
    words = {0: [[1, 2], [3]], 1: [[1, 2], [3, 4], [5, 6]], 2: [[1]]}
    for i, options in words.items():
        assert np.flatnonzero(batch["mlm_labels"][i] != -100).tolist() in options
    n_words = sum(int((batch["mlm_labels"][i] != -100).sum()) for i in range(3))
    assert count_targets(batch) == (n_words, 2)
