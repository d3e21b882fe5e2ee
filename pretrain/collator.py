"""Dynamic masking and batch layout (padded or packed): samples of the shards -> model tensors.

Masking is seeded by (seed, global sample index), so a sample is masked the same way whichever rank,
micro-batch or resumed run sees it. Ids follow fairseq's XLM-R layout: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2,
``<unk>`` 3, spm piece i -> i + 1, ``<mask>`` = spm size + 1; entity ``[PAD]`` 0, ``[MASK]`` 2.

Words are masked by units worth ``mlm_probability`` of the tokens. By default a unit is one piece, as mLUKE
was trained (the reference's whole-word option found no word boundaries in XLM-R's pieces). Whole-word
masking takes a word from one "▁" piece to the next, but one piece in scripts written without spaces
(where that "word" is a clause: 19 pieces on average in the sample's Japanese) and at most
``max_word_pieces``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from pretrain.data import Sample

BOS_ID, PAD_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
ENTITY_PAD_ID, ENTITY_MASK_ID = 0, 2
IGNORE = -100  # label of positions that are not predicted


@dataclass(frozen=True)
class MaskingConfig:
    spm_size: int  # pieces in the sentencepiece model; <mask> = spm_size + 1
    max_mention_length: int = 30
    mlm_probability: float = 0.15  # of the tokens (whole-word masking too: the budget is counted in tokens)
    mep_probability: float = 0.15
    mask_ratio: float = 0.8
    random_ratio: float = 0.1
    seed: int = 0
    max_word_pieces: int = 8  # whole-word masking: a longer word is masked as parts of this many pieces

    @property
    def mask_id(self) -> int:
        return self.spm_size + 1


# What a piece is to whole-word masking (``unit_table``): it continues the current word, starts a word
# ("▁" piece), or is a unit by itself (a piece of a script written without spaces, or a special id).
CONTINUES, STARTS, ALONE = 0, 1, 2

# Unicode blocks of scripts written without spaces between words. In them spm's "▁" marks only a space of the
# text (a phrase or sentence boundary), so a "word" from one "▁" to the next would be a whole clause.
NO_SPACE_BLOCKS = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x0F00, 0x0FFF),  # Tibetan
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x19E0, 0x19FF),  # Khmer symbols
    (0x1B00, 0x1B7F),  # Balinese
    (0x2E80, 0x2FDF),  # CJK and Kangxi radicals
    (0x3000, 0x312F),  # CJK symbols and punctuation, Hiragana, Katakana, Bopomofo
    (0x3190, 0x31FF),  # Kanbun, Bopomofo extended, CJK strokes, Katakana extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA000, 0xA4CF),  # Yi
    (0xA980, 0xA9FF),  # Javanese, Myanmar extended B
    (0xAA60, 0xAA7F),  # Myanmar extended A
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # halfwidth Katakana
    (0x20000, 0x3FFFF),  # CJK extensions B and later
)
_BLOCK_STARTS = [a for a, _ in NO_SPACE_BLOCKS]


def is_no_space_char(ch: str) -> bool:
    i = bisect.bisect_right(_BLOCK_STARTS, ord(ch)) - 1
    return i >= 0 and ord(ch) <= NO_SPACE_BLOCKS[i][1]


def piece_unit(piece: str) -> int:
    """``ALONE`` if any character is of a script written without spaces, else ``STARTS`` for a "▁" piece."""
    if any(is_no_space_char(c) for c in piece):
        return ALONE
    return STARTS if piece.startswith("\u2581") else CONTINUES


@lru_cache(maxsize=4)
def unit_table(spm_path: str) -> np.ndarray:
    """``table[id]`` = ``piece_unit`` of fairseq id ``id``'s spm piece; specials (and ``<mask>``) are ``ALONE``."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=spm_path)
    n = sp.get_piece_size()
    table = np.full(n + 2, ALONE, dtype=np.int8)  # fairseq ids 0..n (+ <mask> at n+1)
    for i in range(3, n):
        table[i + 1] = piece_unit(sp.id_to_piece(i))
    return table


def word_spans(word_ids: np.ndarray, units: np.ndarray | None, max_pieces: int = 8) -> np.ndarray:
    """Start offsets of the masking units (and ``len(word_ids)``): every token (``units`` None, subword
    masking) or every word: from a "▁" piece to the next, one piece in scripts written without spaces,
    and at most ``max_pieces`` pieces (a longer word is split)."""
    n = len(word_ids)
    if units is None or n == 0:
        return np.arange(n + 1)
    kind = units[word_ids]
    alone = kind == ALONE
    start = (kind == STARTS) | alone
    start[1:] |= alone[:-1]  # the piece after a unit of its own starts one too
    start[0] = True
    pos = np.arange(n)
    word_first = np.maximum.accumulate(np.where(start, pos, 0))
    start |= (pos - word_first) % max_pieces == 0
    return np.append(np.flatnonzero(start), n)


def n_to_mask(n: int, p: float) -> int:
    """round(p * n), at least one where there is anything to mask."""
    return 0 if n == 0 else min(n, max(1, int(round(p * n))))


def choose_units(rng: np.random.Generator, lengths: np.ndarray, budget: int) -> np.ndarray:
    """Units in random order, each taken whole while it fits the token budget (so the masked tokens fall
    short of it by less than one unit); if none fits, the first one anyway: at least one where present."""
    order = rng.permutation(len(lengths))
    size = lengths.tolist()
    chosen: list[int] = []
    taken = 0
    for u in order.tolist():
        if taken + size[u] <= budget:
            chosen.append(u)
            taken += size[u]
            if taken == budget:
                break
    if not chosen and len(order):
        chosen.append(int(order[0]))
    return np.sort(np.asarray(chosen, dtype=np.int64))


@dataclass
class MaskedSample:
    input_ids: np.ndarray  # with <s> ... </s>
    mlm_labels: np.ndarray
    entity_ids: np.ndarray
    mep_labels: np.ndarray
    entity_position_ids: np.ndarray  # [n_entities, max_mention_length], -1 padded
    masked_units: np.ndarray | None = None  # length in pieces of each unit masked (data-stats reads it)


def mask_sample(sample: Sample, cfg: MaskingConfig, units: np.ndarray | None) -> MaskedSample:
    """Mask one sample; ``units`` is ``unit_table``'s table for whole-word masking, None for subword."""
    rng = np.random.default_rng([cfg.seed, sample.index])
    words = np.asarray(sample.word_ids, dtype=np.int64)
    n = len(words)

    # Words: choose whole units worth mlm_probability of the tokens, then <mask> / random / keep per token.
    bounds = word_spans(words, units, cfg.max_word_pieces)
    lengths = np.diff(bounds)
    chosen = choose_units(rng, lengths, n_to_mask(n, cfg.mlm_probability))
    picked = np.zeros(len(lengths), dtype=bool)
    picked[chosen] = True
    pos = np.flatnonzero(np.repeat(picked, lengths))  # token positions of the chosen units
    labels = np.full(n, IGNORE, dtype=np.int64)
    labels[pos] = words[pos]
    r = rng.random(len(pos))
    random_ids = rng.integers(UNK_ID + 1, cfg.spm_size + 1, size=len(pos))  # ordinary pieces only
    masked = words.copy()
    to_mask = r < cfg.mask_ratio
    to_random = (r >= cfg.mask_ratio) & (r < cfg.mask_ratio + cfg.random_ratio)
    masked[pos[to_mask]] = cfg.mask_id
    masked[pos[to_random]] = random_ids[to_random]

    input_ids = np.concatenate([[BOS_ID], masked, [EOS_ID]])
    mlm_labels = np.concatenate([[IGNORE], labels, [IGNORE]])

    # Entities: 15% -> [MASK].
    ents = np.asarray(sample.entity_ids, dtype=np.int64)
    e_chosen = rng.choice(len(ents), size=n_to_mask(len(ents), cfg.mep_probability), replace=False)
    mep_labels = np.full(len(ents), IGNORE, dtype=np.int64)
    mep_labels[e_chosen] = ents[e_chosen]
    ent_in = ents.copy()
    ent_in[e_chosen] = ENTITY_MASK_ID

    positions = np.full((len(ents), cfg.max_mention_length), -1, dtype=np.int64)
    for j, (s, e) in enumerate(zip(sample.entity_starts, sample.entity_ends)):
        span = np.arange(s + 1, e + 1)[: cfg.max_mention_length]  # +1: <s> comes first
        positions[j, : len(span)] = span
    return MaskedSample(input_ids, mlm_labels, ent_in, mep_labels, positions, lengths[chosen])


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def target_capacity(n_positions: int, probability: float, n_samples: int, n_targets: int) -> int:
    """Slots of a masked-position index tensor, from the row's size and sample count only (so compiled
    code sees few distinct shapes): each sample masks at most round(p x its tokens), at least one, i.e.
    at most p x tokens + 1. ``n_positions`` (every position) should the targets ever overflow that."""
    bound = min(round_up(math.ceil(n_positions * probability) + n_samples, 8), n_positions)
    return bound if n_targets <= bound else n_positions


def _index_targets(labels: np.ndarray, languages: np.ndarray, probability: float, n_samples: int) -> tuple[np.ndarray, ...]:
    """Dense labels of a packed row -> (positions, labels, language ids) of fixed size, -100-padded."""
    where = np.flatnonzero(labels != IGNORE)
    k = target_capacity(len(labels), probability, n_samples, len(where))
    positions = np.zeros(k, dtype=np.int64)
    out = np.full(k, IGNORE, dtype=np.int64)
    lang = np.zeros(k, dtype=np.int64)
    positions[: len(where)], out[: len(where)], lang[: len(where)] = where, labels[where], languages[where]
    return positions, out, lang


class Collator:
    """Masks each sample of a micro-batch, then lays them out for the model.

    ``layout="padded"``: one sample per row, words padded to the longest, entities to the most entities
    (evaluation, parity tests). ``layout="packed"`` (training): samples are packed into rows of at most
    ``row_capacity`` positions (words with ``<s>``/``</s>`` plus entities; None: one row for the whole
    micro-batch) by first-fit decreasing. A row holds the words of its samples, then their entities; rows
    are padded to the longest row's words and entities, rounded up to a multiple of ``pad_to_multiple_of``
    positions in all. Segment ids keep attention within a sample, position ids restart per sample, and
    masked positions come as fixed-size index tensors into the flattened rows (see
    ``MLukeForMaskedLM.forward``). The capacity bounds what attention costs: the trainer sets it to the
    largest sample (max_seq_length + 2 + max_entity_length), so a row costs what one padded sample does
    while short samples share it. ``languages`` (sorted names) gives each target a language id for
    per-language metrics (packed only).
    """

    def __init__(self, cfg: MaskingConfig, units: np.ndarray | None, layout: str = "padded",
                 languages: Sequence[str] = (), pad_to_multiple_of: int = 8, row_capacity: int | None = None):
        if layout not in ("padded", "packed"):
            raise ValueError(f"layout {layout!r} is not 'padded' or 'packed'")
        self.cfg = cfg
        self.units = units  # unit_table(spm) for whole-word masking; None: subword masking
        self.layout = layout
        self.language_ids = {lang: i for i, lang in enumerate(languages)}
        self.pad_to_multiple_of = pad_to_multiple_of
        self.row_capacity = row_capacity

    def __call__(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        masked = [mask_sample(s, self.cfg, self.units) for s in samples]
        if self.layout == "packed":
            return self._packed(masked, [self.language_ids.get(s.lang, 0) for s in samples])
        return self._padded(masked)

    def _padded(self, masked: list[MaskedSample]) -> dict[str, torch.Tensor]:
        b = len(masked)
        t = max(len(m.input_ids) for m in masked)
        e = max(1, max(len(m.entity_ids) for m in masked))  # width >= 1 keeps shapes valid without entities
        mm = self.cfg.max_mention_length
        input_ids = np.full((b, t), PAD_ID, dtype=np.int64)
        attention = np.zeros((b, t), dtype=np.int64)
        mlm = np.full((b, t), IGNORE, dtype=np.int64)
        ent = np.full((b, e), ENTITY_PAD_ID, dtype=np.int64)
        ent_att = np.zeros((b, e), dtype=np.int64)
        mep = np.full((b, e), IGNORE, dtype=np.int64)
        ent_pos = np.full((b, e, mm), -1, dtype=np.int64)
        for i, m in enumerate(masked):
            n, k = len(m.input_ids), len(m.entity_ids)
            input_ids[i, :n], attention[i, :n], mlm[i, :n] = m.input_ids, 1, m.mlm_labels
            ent[i, :k], ent_att[i, :k], mep[i, :k], ent_pos[i, :k] = m.entity_ids, 1, m.mep_labels, m.entity_position_ids
        return _tensors(input_ids=input_ids, attention_mask=attention, mlm_labels=mlm, entity_ids=ent,
                        entity_attention_mask=ent_att, entity_position_ids=ent_pos, mep_labels=mep)

    def _packed(self, masked: list[MaskedSample], lang_ids: list[int]) -> dict[str, torch.Tensor]:
        n = len(masked)
        n_words = np.array([len(m.input_ids) for m in masked], dtype=np.int64)
        n_ents = np.array([len(m.entity_ids) for m in masked], dtype=np.int64)
        rows = pack_rows((n_words + n_ents).tolist(), self.row_capacity)
        width_w = max(int(n_words[r].sum()) for r in rows)
        width_e = round_up(width_w + max(int(n_ents[r].sum()) for r in rows), self.pad_to_multiple_of) - width_w
        R, mm = len(rows), self.cfg.max_mention_length
        pad_segment = n  # pads attend only to each other: no row of the mask is empty
        input_ids = np.full((R, width_w), PAD_ID, dtype=np.int64)
        position_ids = np.full((R, width_w), PAD_ID, dtype=np.int64)  # fairseq: pads get the pad position
        segment = np.full((R, width_w), pad_segment, dtype=np.int64)
        mlm = np.full((R, width_w), IGNORE, dtype=np.int64)
        ent_ids = np.full((R, width_e), ENTITY_PAD_ID, dtype=np.int64)
        ent_segment = np.full((R, width_e), pad_segment, dtype=np.int64)
        mep = np.full((R, width_e), IGNORE, dtype=np.int64)
        ent_pos = np.full((R, width_e, mm), -1, dtype=np.int64)
        for r, members in enumerate(rows):
            w = int(n_words[members].sum())
            k = int(n_ents[members].sum())
            input_ids[r, :w] = np.concatenate([masked[i].input_ids for i in members])
            mlm[r, :w] = np.concatenate([masked[i].mlm_labels for i in members])
            # fairseq positions per sample: <s> of each sample gets pad + 1
            position_ids[r, :w] = np.concatenate([np.arange(n_words[i]) for i in members]) + PAD_ID + 1
            segment[r, :w] = np.repeat(members, n_words[members])
            if k:
                ent_ids[r, :k] = np.concatenate([masked[i].entity_ids for i in members])
                mep[r, :k] = np.concatenate([masked[i].mep_labels for i in members])
                # entity position ids index into the entity's own sample: no offset within the row
                ent_pos[r, :k] = np.concatenate([masked[i].entity_position_ids for i in members])
                ent_segment[r, :k] = np.repeat(members, n_ents[members])
        lang = np.append(np.asarray(lang_ids, dtype=np.int64), 0)  # the pad segment gets language 0
        mlm_pos, mlm_lab, mlm_lang = _index_targets(mlm.ravel(), lang[segment.ravel()], self.cfg.mlm_probability, n)
        mep_pos, mep_lab, mep_lang = _index_targets(mep.ravel(), lang[ent_segment.ravel()], self.cfg.mep_probability, n)
        return _tensors(
            input_ids=input_ids,
            position_ids=position_ids,
            segment_ids=segment,
            attention_mask=(segment < pad_segment).astype(np.int64),
            entity_ids=ent_ids,
            entity_position_ids=ent_pos,
            entity_segment_ids=ent_segment,
            entity_attention_mask=(ent_segment < pad_segment).astype(np.int64),
            mlm_positions=mlm_pos, mlm_labels=mlm_lab, mlm_languages=mlm_lang,
            mep_positions=mep_pos, mep_labels=mep_lab, mep_languages=mep_lang,
        )


def pack_rows(sizes: Sequence[int], capacity: int | None) -> list[np.ndarray]:
    """Sample indices of each row: the fewest rows of at most ``capacity`` positions, balanced.

    Rows are padded to the longest one, so balance matters as much as the count: samples go, largest
    first, to the least-filled row (ties: the lower row), starting from as few rows as the total size
    allows and adding a row whenever a sample fits nowhere. A sample larger than ``capacity`` gets a row
    of its own. Deterministic; a row's members keep their micro-batch order; rows come in the order of
    their first member.
    """
    if capacity is None:
        return [np.arange(len(sizes))]
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))
    alone = [[i] for i in order if sizes[i] > capacity]
    rest = [i for i in order if sizes[i] <= capacity]
    n_rows = max(1, -(-sum(sizes[i] for i in rest) // capacity)) if rest else 0
    while rest:
        members: list[list[int]] = [[] for _ in range(n_rows)]
        load = [0] * n_rows
        for i in rest:
            r = min(range(n_rows), key=lambda r: (load[r], r))
            if load[r] + sizes[i] > capacity:
                break
            members[r].append(i)
            load[r] += sizes[i]
        else:
            break
        n_rows += 1
    else:
        members = []
    rows = [m for m in members if m] + alone
    return [np.array(sorted(m), dtype=np.int64) for m in sorted(rows, key=min)]


def _tensors(**arrays: np.ndarray) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.int64)) for k, v in arrays.items()}


def count_targets(batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(masked words, masked entities) of a collated micro-batch (either layout)."""
    return int((batch["mlm_labels"] != IGNORE).sum()), int((batch["mep_labels"] != IGNORE).sum())


def position_counts(batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(positions the encoder computes: words + entity slots of all rows, of which padding) of a micro-batch."""
    computed = batch["attention_mask"].numel() + batch["entity_attention_mask"].numel()
    real = int(batch["attention_mask"].sum()) + int(batch["entity_attention_mask"].sum())
    return computed, computed - real


def pad_fraction(batch: dict[str, torch.Tensor]) -> float:
    """Share of the positions the encoder computes that are padding (either layout)."""
    computed, pads = position_counts(batch)
    return pads / computed if computed else 0.0
