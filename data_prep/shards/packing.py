"""A batch of pages -> packed training sequences with exact entity spans (the per-page work of ``data_prep shards``).

Links are looked up (redirects already folded into the link map), paragraphs split into sentences
(links do not move the boundaries: a link crossing one is dropped and counted, as the reference mLUKE
pipeline does; Thai, whose boundaries are guessed from spaces, never splits inside a link), the text
cut at sentence and link boundaries and every piece encoded on its own, so no token straddles a
mention and a mention is exactly a run of tokens. A piece that continues a word is encoded without
sentencepiece's dummy "▁" prefix, so the cuts add no spurious word starts; a word starts at the text
start or after a character the model's normaliser reads as whitespace (spaces, but also LRM/RLM,
ZWSP, ZWNJ), so the tokens decode exactly like the paragraph encoded whole.
Sentences of fewer than ``min_sentence_tokens`` tokens are dropped with their mentions; the rest of
a page is packed greedily into sequences of at most ``max_seq_length - 2`` tokens. A mention longer
than ``max_mention_length`` is kept with its full span (counted as ``mentions_long``): the trainer
reads only its first ``max_mention_length`` positions, as the reference does.

Speed: the stage should cost little more than encoding the text, so the batch is handled as columns.
Pages come in as an Arrow table (no per-page dicts); the paragraphs of the batch are joined into one
string, split into sentences and cut into pieces with numpy over its code points, and the pieces are
encoded in one call (``XlmrSentencePiece.encode_marked``) into one flat id array. Sentences, mentions
and sequences are then index ranges into that array. Python loops remain per sentence (greedy
packing), never per token.
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass

import numpy as np

from data_prep.common.errors import InputError
from data_prep.shards.sentences import SPACE, boundaries_from_spaces, char_flags, split_code_points
from data_prep.shards.shard_writer import Chunk
from data_prep.shards.spm import CONT_MARK, PIECE_MARK, XlmrSentencePiece

LOOP = -1  # link_map value for a title whose redirect chain loops
# counters that are not drops: input seen, sentences cut to fit a sequence, mentions longer than
# max_mention_length (kept whole; the trainer reads only their first max_mention_length tokens)
SEEN = ("links", "sentences", "sentences_split", "mentions_long")
_MISSING = -4  # a title not in the link map
_NEW, _CONT = -2, -3  # piece codes (entity ids are >= 0): text that starts / continues a sentence


@dataclass(frozen=True)
class ShardConfig:
    max_seq_length: int = 512
    max_entity_length: int = 128
    max_mention_length: int = 30
    valid_fraction: float = 0.005
    keep_no_entity: bool = False
    min_sentence_tokens: int = 0  # sentences of fewer tokens are dropped with their links (mLUKE: 5)

    def check(self) -> None:
        if self.max_seq_length < 3:
            raise InputError(f"--max-seq-length {self.max_seq_length}: must be at least 3 (<s>, a token, </s>)")
        if self.max_entity_length < 1 or self.max_mention_length < 1:
            raise InputError("--max-entity-length and --max-mention-length must be at least 1")
        if not 0.0 <= self.valid_fraction <= 1.0:
            raise InputError(f"--valid-fraction {self.valid_fraction}: must be in [0, 1]")
        if self.min_sentence_tokens < 0:
            raise InputError(f"--min-sentence-tokens {self.min_sentence_tokens}: must be >= 0")


def _stable_order(*keys: np.ndarray) -> np.ndarray:
    """Indices sorting by ``keys`` (first key most significant), ties in input order."""
    order = np.arange(len(keys[0]))
    for key in reversed(keys):
        order = order[np.argsort(key[order], kind="stable")]
    return order


@dataclass
class _Text:
    """The paragraph texts of a batch joined by NUL into one string, and the same as code points."""

    joined: str
    cp: np.ndarray  # uint32 code points of ``joined``
    flags: np.ndarray  # ``sentences.char_flags()`` of each code point
    lo: np.ndarray  # int64 offset of each paragraph in ``joined``
    hi: np.ndarray  # int64 end of each paragraph

    @classmethod
    def of(cls, texts: list[str]) -> _Text:
        lens = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        lo = np.cumsum(lens + 1) - (lens + 1)
        joined = "\x00".join(texts)
        cp = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype="<u4").copy()
        return cls(joined, cp, char_flags()[cp], lo, lo + lens)


@dataclass
class _Links:
    """The kept links of a batch, sorted by (paragraph, start, end), non-overlapping."""

    para: list[int]
    start: list[int]
    end: list[int]
    entity: list[int]


def _non_empty_non_overlapping(text: _Text, para, s, e, entity, counts: collections.Counter) -> _Links:
    """Drop links whose anchor is empty or blank, then any link overlapping the last one kept."""
    a = text.lo[para] + s
    solid = np.zeros(len(text.cp) + 1, dtype=np.int64)  # non-whitespace characters before each offset
    np.cumsum((text.flags & SPACE) == 0, out=solid[1:])
    blank = solid[a + (e - s)] == solid[a]
    counts["links_empty"] += int(blank.sum())
    para, s, e, entity = (x[~blank] for x in (para, s, e, entity))
    # sorted by start, so without an overlap between neighbours there is none at all
    if ((para[1:] == para[:-1]) & (s[1:] < e[:-1])).any():
        para, s, e, entity = (x.tolist() for x in (para, s, e, entity))
        kept = []
        for i in range(len(para)):
            if kept and para[kept[-1]] == para[i] and s[i] < e[kept[-1]]:
                counts["links_overlapping"] += 1
            else:
                kept.append(i)
        return _Links(*([x[i] for i in kept] for x in (para, s, e, entity)))
    return _Links(para.tolist(), s.tolist(), e.tolist(), entity.tolist())


class PageProcessor:
    """Turns batches of pages into packed sequences; everything it needs for one language, picklable."""

    def __init__(self, lang: str, source: str, tokenizer: XlmrSentencePiece, link_map: dict[str, int], config: ShardConfig):
        self.lang = lang
        self.source = source  # the corpus directory, for error messages
        self.tok = tokenizer
        self.link_map = link_map
        self.config = config

    def prepare(self) -> None:
        """Do the one-time work (imports, lookup tables) now: called before worker processes are
        forked, so each worker inherits it instead of repeating it for every language."""
        import pyarrow.compute  # noqa: F401

        char_flags()
        self.tok.gap_table  # noqa: B018

    # ------------------------------------------------------------ links
    def _links(self, table, text: _Text, para_page: np.ndarray, items, counts: collections.Counter) -> _Links:
        """The links of a batch checked (a span outside its paragraph is bad input), mapped to entity
        ids and filtered: not in the vocabulary, redirect loop, blank anchor, overlapping (counted)."""
        import pyarrow.compute as pc

        links = items.field("links")
        link_para = pc.list_parent_indices(links).to_numpy()  # paragraph of each link
        flat = links.flatten()
        start = flat.field("start")
        end = flat.field("end")
        n = len(link_para)
        counts["links"] += n
        if not n:
            return _Links([], [], [], [])
        s = start.fill_null(-1).to_numpy().astype(np.int64)
        e = end.fill_null(-1).to_numpy().astype(np.int64)
        texts_len = text.hi - text.lo
        bad = (s < 0) | (e < s) | (e > texts_len[link_para]) | np.asarray(start.is_null()) | np.asarray(end.is_null())
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            para = int(link_para[k])
            page = int(para_page[para])
            first_para = int(np.searchsorted(para_page, page))
            row = table.slice(page, 1).select(["page_id", "title"]).to_pylist()[0]
            raise InputError(
                f"{self.source}: page {row['page_id']} ({row['title']!r}) paragraph {para - first_para}: "
                f"link span [{start[k].as_py()}, {end[k].as_py()}) outside the paragraph text (length {int(texts_len[para])})"
            )
        titles = flat.field("title").to_pylist()
        entity = np.fromiter(map(self.link_map.get, titles, itertools.repeat(_MISSING)), dtype=np.int64, count=n)
        order = _stable_order(link_para, s, e)
        link_para, s, e, entity = link_para[order], s[order], e[order], entity[order]
        missing = entity == _MISSING
        loop = entity == LOOP
        counts["links_not_in_vocab"] += int(missing.sum())
        counts["links_redirect_loop"] += int(loop.sum())
        cand = np.flatnonzero(~missing & ~loop)
        return _non_empty_non_overlapping(text, link_para[cand], s[cand], e[cand], entity[cand], counts)

    # ------------------------------------------------------------ cutting
    def _cut(self, text: _Text, links: _Links, counts: collections.Counter) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Cut every paragraph at sentence and link boundaries and encode the pieces. Returns the ids
        of all pieces (concatenated), then per piece its number of ids, its code (the entity id of a
        mention, ``_NEW`` for text that starts a sentence, ``_CONT`` for text that continues one) and
        its paragraph.

        The paragraphs are joined by NUL into one string, split into sentences with numpy, and the
        pieces are marked in place (``XlmrSentencePiece.encode_marked``): a mark is inserted before
        each piece with numpy on the code points, so no piece is ever sliced out as its own string.
        A sentence is [its text before the first link][link][text between links][link]...[the rest];
        a sentence that starts with a link gets an empty first piece, so every sentence starts with
        a ``_NEW`` piece.
        """
        joined, cp, para_lo, para_hi = text.joined, text.cp, text.lo, text.hi
        l_para = np.asarray(links.para, dtype=np.int64)
        a = para_lo[l_para] + np.asarray(links.start, dtype=np.int64)  # sorted: paragraphs are in order
        b = para_lo[l_para] + np.asarray(links.end, dtype=np.int64)
        entity = np.asarray(links.entity, dtype=np.int64)
        # The boundaries ignore the links, as in the reference, except in Thai: there they are guessed
        # from spaces (the reference's ICU splitter finds almost none in Thai text), and a link with a
        # space in it keeps its sentence whole instead of being lost.
        keep_whole = (a, b) if boundaries_from_spaces(self.lang) else (np.zeros(0, np.int64), np.zeros(0, np.int64))
        s_start, s_end, _ = split_code_points(joined, cp, para_lo, para_hi, self.lang, *keep_whole, text.flags)
        counts["sentences"] += len(s_start)
        # a link belongs to the first sentence ending after its start (it may start in whitespace
        # before it); one reaching into the next sentence crosses a boundary: dropped, its text stays
        l_sent = np.searchsorted(s_end, a, side="right")
        nxt = np.append(s_start[1:], np.iinfo(np.int64).max)[np.minimum(l_sent, max(len(s_start) - 1, 0))]
        crossing = b > nxt
        if crossing.any():
            counts["links_crossing_sentences"] += int(crossing.sum())
            a, b, entity, l_sent = a[~crossing], b[~crossing], entity[~crossing], l_sent[~crossing]
        first = np.ones(len(a), dtype=bool)
        first[1:] = l_sent[1:] != l_sent[:-1]
        last = np.ones(len(a), dtype=bool)
        last[:-1] = first[1:]
        has_link = np.zeros(len(s_start), dtype=bool)
        has_link[l_sent] = True
        nxt_a = np.append(a[1:], 0)
        # the pieces, as (start, end, code) blocks; concatenation order breaks ties of equal starts
        # (an empty _NEW piece comes before the link at its position)
        lead = first & (a > s_start[l_sent])  # text before the sentence's first link
        blocks = [
            (s_start[~has_link], s_end[~has_link], np.full((~has_link).sum(), _NEW)),
            (s_start[l_sent[lead]], a[lead], np.full(lead.sum(), _NEW)),
            (a[first & ~lead], a[first & ~lead], np.full((first & ~lead).sum(), _NEW)),  # empty: starts with a link
            (a, b, entity),
        ]
        between = ~last & (nxt_a > b)
        tail = last & (b < s_end[l_sent])
        blocks += [(b[between], nxt_a[between], np.full(between.sum(), _CONT)), (b[tail], s_end[l_sent[tail]], np.full(tail.sum(), _CONT))]
        p_start, p_end, codes = (np.concatenate(x) for x in zip(*blocks))
        order = np.argsort(p_start, kind="stable")
        p_start, p_end, codes = p_start[order], p_end[order], codes[order]
        p_para = np.searchsorted(para_lo, p_start, side="right") - 1
        # "▁" only where a word starts: paragraph start, after a gap, or a leading gap
        gap = self.tok.gap_table
        is_gap = gap[cp[np.minimum(p_start, len(cp) - 1)]] if len(cp) else np.zeros(len(p_start), bool)
        word_start = (p_start == para_lo[p_para]) | (p_start == p_end) | is_gap | gap[cp[p_start - 1]]
        if not self.tok.can_mark(joined):  # marker characters or odd spaces in the text: piece by piece
            pieces = [joined[x:y] for x, y in zip(p_start.tolist(), p_end.tolist())]
            ids, piece_len = self.tok.encode_pieces(pieces, word_start.tolist())
            return ids, piece_len, codes, p_para
        cp[para_hi[:-1]] = 32  # the NULs become spaces (the batch text is not used after this)
        mark = np.array([ord(c) for c in PIECE_MARK + CONT_MARK], dtype="<u4")
        take = np.ones((len(p_start), len(mark)), dtype=bool)
        take[:, -1] = ~word_start
        marks = np.broadcast_to(mark, take.shape)[take]
        marked = np.insert(cp, np.repeat(p_start, take.sum(axis=1)), marks)
        ids, piece_len = self.tok.encode_marked(marked.tobytes().decode("utf-32-le", "surrogatepass"))
        return ids, piece_len, codes, p_para

    # ------------------------------------------------------------ packing
    def _units(self, sent_page, sent_start, sent_len, m_start, m_end, counts) -> tuple[list[int], list[int], list[int]]:
        """(page, token start, length) of the units to pack: the sentences, with overlong ones cut at
        token boundaries outside mentions (mentions no longer than the limit usually make one exist;
        otherwise the cut falls at the limit and the straddling mention is lost)."""
        limit = self.config.max_seq_length - 2
        pages, starts, lens = sent_page.tolist(), sent_start.tolist(), sent_len.tolist()
        if max(lens, default=0) <= limit:
            return pages, starts, lens
        out_p: list[int] = []
        out_s: list[int] = []
        out_l: list[int] = []
        for page, start, n in zip(pages, starts, lens):
            if n <= limit:
                out_p.append(page)
                out_s.append(start)
                out_l.append(n)
                continue
            counts["sentences_split"] += 1
            end = start + n
            lo, hi = np.searchsorted(m_start, [start, end])
            mentions = list(zip(m_start[lo:hi].tolist(), m_end[lo:hi].tolist()))
            while start < end:
                cut = min(start + limit, end)
                if cut < end:
                    c = cut
                    while c > start and any(ms < c < me for ms, me in mentions):
                        c -= 1
                    cut = c if c > start else cut
                out_p.append(page)
                out_s.append(start)
                out_l.append(cut - start)
                start = cut
        return out_p, out_s, out_l

    def _pack(self, pages: list[int], starts: list[int], lens: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Greedy packing of the units (in order, contiguous in the token array) into sequences of at
        most ``max_seq_length - 2`` tokens that never cross pages: (page, token start, length) each."""
        limit = self.config.max_seq_length - 2
        seq_page: list[int] = []
        seq_start: list[int] = []
        seq_len: list[int] = []
        cur_page, cur_start, cur_len = -1, 0, 0
        for page, start, n in zip(pages, starts, lens):
            if cur_len and (page != cur_page or cur_len + n > limit):
                seq_page.append(cur_page)
                seq_start.append(cur_start)
                seq_len.append(cur_len)
                cur_len = 0
            if not cur_len:
                cur_page, cur_start = page, start
            cur_len += n
        if cur_len:
            seq_page.append(cur_page)
            seq_start.append(cur_start)
            seq_len.append(cur_len)
        return (np.asarray(seq_page, dtype=np.int64), np.asarray(seq_start, dtype=np.int64), np.asarray(seq_len, dtype=np.int64))

    # ------------------------------------------------------------ the batch
    def process_table(self, table) -> tuple[np.ndarray, Chunk, collections.Counter]:
        """Packed sequences of a batch of pages (an Arrow table with the corpus' page columns):
        (page id of each page, the sequences as columns with one ``page_id`` per row, counts)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        counts: collections.Counter = collections.Counter()
        page_ids = np.asarray(table.column("page_id").to_numpy(), dtype=np.int64)
        paragraphs = table.column("paragraphs")
        paragraphs = paragraphs.combine_chunks() if paragraphs.num_chunks else pa.array([], paragraphs.type)
        para_page = pc.list_parent_indices(paragraphs).to_numpy()  # page of each paragraph
        items = paragraphs.flatten()
        text = _Text.of(items.field("text").fill_null("").to_pylist())
        links = self._links(table, text, para_page, items, counts)
        ids, piece_len, codes, piece_para = self._cut(text, links, counts)
        del text
        piece_start = np.cumsum(piece_len) - piece_len
        piece_page = para_page[piece_para]

        # sentences: each starts with a _NEW piece; its tokens run to the next sentence's first token
        new = np.flatnonzero(codes == _NEW)
        sent_start = piece_start[new]
        sent_len = np.add.reduceat(piece_len, new) if len(new) else np.zeros(0, np.int64)
        sent_page = piece_page[new]
        nonempty = sent_len > 0
        sent_start, sent_len, sent_page = sent_start[nonempty], sent_len[nonempty], sent_page[nonempty]
        sent_para = piece_para[new][nonempty]

        # mentions: a piece with an entity id, unless it encodes to nothing
        is_mention = codes >= 0
        m_len = piece_len[is_mention]
        counts["mentions_empty"] += int((m_len == 0).sum())
        ok = m_len > 0
        m_start, m_len, m_entity = piece_start[is_mention][ok], m_len[ok], codes[is_mention][ok]
        if self.config.min_sentence_tokens > 1:
            ids, sent_start, sent_len, sent_page, m_start, m_len, m_entity = self._drop_short(
                ids, sent_start, sent_len, sent_page, sent_para, m_start, m_len, m_entity, counts
            )
        counts["mentions_long"] += int((m_len > self.config.max_mention_length).sum())
        m_end = m_start + m_len

        units = self._units(sent_page, sent_start, sent_len, m_start, m_end, counts)
        seq_page, seq_start, seq_len = self._pack(*units)
        return page_ids, self._columns(page_ids, ids, seq_page, seq_start, seq_len, m_start, m_end, m_entity, counts), counts

    def _drop_short(self, ids, sent_start, sent_len, sent_page, sent_para, m_start, m_len, m_entity, counts):
        """Remove the sentences of fewer than ``min_sentence_tokens`` tokens, their tokens and their
        mentions; the kept sentences and mentions move down by the tokens removed before them.

        Thai sentences are guessed from spaces, so they are much shorter than the reference's (its ICU
        splitter seldom breaks Thai text inside a paragraph): there the whole paragraph is measured."""
        if boundaries_from_spaces(self.lang):
            para_len = np.bincount(sent_para, weights=sent_len)
            short = para_len[sent_para] < self.config.min_sentence_tokens
        else:
            short = sent_len < self.config.min_sentence_tokens
        if not short.any():
            return ids, sent_start, sent_len, sent_page, m_start, m_len, m_entity
        removed = np.where(short, sent_len, 0)
        shift = np.cumsum(removed) - removed  # tokens of short sentences before each sentence
        m_sent = np.searchsorted(sent_start, m_start, side="right") - 1
        m_short = short[m_sent]
        counts["sentences_short"] += int(short.sum())
        counts["tokens_short_sentences"] += int(removed.sum())
        counts["mentions_short_sentences"] += int(m_short.sum())
        ids = ids[~np.repeat(short, sent_len)]  # the sentences cover the id array in order
        keep = ~m_short
        m_start = m_start[keep] - shift[m_sent[keep]]
        return ids, (sent_start - shift)[~short], sent_len[~short], sent_page[~short], m_start, m_len[keep], m_entity[keep]

    def _columns(self, page_ids, ids, seq_page, seq_start, seq_len, m_start, m_end, m_entity, counts) -> Chunk:
        """The kept sequences as columns: mentions assigned to their sequence, at most
        ``max_entity_length`` per sequence, sequences without entities dropped unless asked to keep."""
        n_seq = len(seq_start)
        m_seq = np.searchsorted(seq_start, m_start, side="right") - 1
        inside = m_end <= seq_start[m_seq] + seq_len[m_seq] if len(m_seq) else np.zeros(0, bool)
        counts["mentions_cut"] += int((~inside).sum())
        m_seq, m_start, m_end, m_entity = m_seq[inside], m_start[inside], m_end[inside], m_entity[inside]
        first = np.searchsorted(m_seq, np.arange(n_seq))  # first mention of each sequence
        under = np.arange(len(m_seq)) - first[m_seq] < self.config.max_entity_length
        counts["entities_over_limit"] += int((~under).sum())
        m_seq, m_start, m_end, m_entity = m_seq[under], m_start[under], m_end[under], m_entity[under]
        n_ent = np.bincount(m_seq, minlength=n_seq)
        keep = np.ones(n_seq, bool)
        if not self.config.keep_no_entity:
            keep = n_ent > 0
            counts["sequences_without_entities"] += int((~keep).sum())
            counts["tokens_without_entities"] += int(seq_len[~keep].sum())
        m_keep = keep[m_seq]
        m_seq = m_seq[m_keep]
        token_keep = np.repeat(keep, seq_len)
        return Chunk(
            page_ids=page_ids[seq_page[keep]],
            word_lens=seq_len[keep],
            word_ids=XlmrSentencePiece.to_fairseq(ids[token_keep]),
            entity_lens=n_ent[keep].astype(np.int64),
            entity_ids=m_entity[m_keep].astype(np.int32),
            entity_starts=(m_start[m_keep] - seq_start[m_seq]).astype(np.int32),
            entity_ends=(m_end[m_keep] - seq_start[m_seq]).astype(np.int32),
        )
