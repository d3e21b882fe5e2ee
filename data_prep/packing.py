"""One page -> packed training sequences with exact entity spans (the per-page work of ``data_prep shards``).

Links are looked up (redirects already folded into the link map), paragraphs split into sentences
(never inside a link), the text cut at sentence and link boundaries and every piece encoded on its
own, so no token straddles a mention and a mention is exactly a run of tokens. A piece that continues
a word is encoded without sentencepiece's dummy "▁" prefix, so the cuts add no spurious word starts;
a word starts at the text start or after a character the model's normaliser reads as whitespace
(spaces, but also LRM/RLM, ZWSP, ZWNJ), so the tokens decode exactly like the paragraph encoded whole.
Sentences of one page are packed greedily into sequences of at most ``max_seq_length - 2`` tokens.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass

from data_prep.errors import InputError
from data_prep.sentences import split_sentences
from data_prep.spm import XlmrSentencePiece

LOOP = -1  # link_map value for a title whose redirect chain loops
SEEN = ("links", "sentences", "sentences_split")  # counters that are not drops
_NEW, _CONT = -2, -3  # piece codes in a page plan (entity ids are >= 0)


@dataclass(frozen=True)
class ShardConfig:
    max_seq_length: int = 512
    max_entity_length: int = 128
    max_mention_length: int = 30
    valid_fraction: float = 0.005
    keep_no_entity: bool = False

    def check(self) -> None:
        if self.max_seq_length < 3:
            raise InputError(f"--max-seq-length {self.max_seq_length}: must be at least 3 (<s>, a token, </s>)")
        if self.max_entity_length < 1 or self.max_mention_length < 1:
            raise InputError("--max-entity-length and --max-mention-length must be at least 1")
        if not 0.0 <= self.valid_fraction <= 1.0:
            raise InputError(f"--valid-fraction {self.valid_fraction}: must be in [0, 1]")


@dataclass
class PackedSequence:
    spm_ids: list[int]  # sentencepiece ids (fairseq shift applied per chunk, vectorised); no <s>/</s>
    mentions: list[tuple[int, int, int]]  # (token start, token end exclusive, entity id)


@dataclass
class _Sentence:
    ids: list[int]  # spm ids (shifted to fairseq later, per page)
    mentions: list[tuple[int, int, int]]  # (token start, token end, entity id)


class PageProcessor:
    """Turns one page into packed sequences; everything it needs for one language, picklable."""

    def __init__(self, lang: str, source: str, tokenizer: XlmrSentencePiece, link_map: dict[str, int], config: ShardConfig):
        self.lang = lang
        self.source = source  # the corpus directory, for error messages
        self.tok = tokenizer
        self.link_map = link_map
        self.config = config

    def _links(self, page: dict, p_index: int, text: str, links: list[dict], counts: collections.Counter):
        """Valid, vocabulary-mapped links of a paragraph, sorted, non-overlapping: (start, end, entity)."""
        out = []
        n = len(text)
        if not links:
            return out
        for link in links:
            start, end = link["start"], link["end"]
            if start is None or end is None or not 0 <= start <= end <= n:
                raise InputError(
                    f"{self.source}: page {page['page_id']} ({page.get('title')!r}) paragraph {p_index}: "
                    f"link span [{start}, {end}) outside the paragraph text (length {n})"
                )
        counts["links"] += len(links)
        for link in sorted(links, key=lambda x: (x["start"], x["end"])):
            start, end = link["start"], link["end"]
            entity = self.link_map.get(link["title"])
            if entity is None:
                counts["links_not_in_vocab"] += 1
            elif entity == LOOP:
                counts["links_redirect_loop"] += 1
            elif start == end or not text[start:end].strip():
                counts["links_empty"] += 1
            elif out and start < out[-1][1]:
                counts["links_overlapping"] += 1
            else:
                out.append((start, end, entity))
        return out

    def _plan(self, page: dict, counts: collections.Counter, pieces: list[str], word_start: list[bool]) -> list[int]:
        """Cut the page's text at sentence and link boundaries and append the pieces (and whether each
        starts a word) to ``pieces``/``word_start``. Returns one code per piece: the entity id of a
        mention, ``_NEW`` for text that starts a sentence, ``_CONT`` for text that continues one."""
        plan: list[int] = []
        n_sent = 0
        gap = self.tok.word_gaps  # characters the model reads as whitespace (LRM, ZWSP, ... too)
        for p_index, para in enumerate(page["paragraphs"] or ()):
            text = para["text"] or ""
            links = self._links(page, p_index, text, para.get("links"), counts)
            n_links = len(links)
            li = 0  # links and sentences are both in text order, and no link crosses a sentence
            for s, e in split_sentences(text, self.lang, [(a, b) for a, b, _ in links]):
                n_sent += 1
                if li == n_links or links[li][0] >= e:  # the common case: a sentence without links
                    pieces.append(text[s:e])
                    word_start.append(s == 0 or text[s - 1] in gap or text[s] in gap)
                    plan.append(_NEW)
                    continue
                pos = s
                code = _NEW
                # a link belongs to the sentence it starts in (it may end in trimmed whitespace after it)
                while li < n_links and links[li][0] < e:
                    a, b, entity = links[li]
                    li += 1
                    if a > pos:
                        pieces.append(text[pos:a])
                        word_start.append(pos == 0 or text[pos - 1] in gap or text[pos] in gap)
                        plan.append(code)
                    elif code == _NEW:  # the sentence starts with the mention
                        pieces.append("")
                        word_start.append(True)
                        plan.append(_NEW)
                    # "▁" only where a word starts: text start, after a gap, or a leading gap
                    pieces.append(text[a:b])
                    word_start.append(a == 0 or text[a - 1] in gap or text[a] in gap)
                    plan.append(entity)
                    pos = b
                    code = _CONT
                if pos < e:
                    pieces.append(text[pos:e])
                    word_start.append(text[pos - 1] in gap or text[pos] in gap)
                    plan.append(_CONT)
        counts["sentences"] += n_sent
        return plan

    def _sentences(self, plan: list[int], encoded: list[list[int]], counts: collections.Counter) -> list[_Sentence]:
        sentences: list[_Sentence] = []
        max_mention = self.config.max_mention_length
        ids: list[int] = []
        mentions: list[tuple[int, int, int]] = []
        for code, piece in zip(plan, encoded):
            if code == _NEW:
                ids, mentions = [], []
                sentences.append(_Sentence(ids, mentions))
            elif code >= 0:
                n = len(piece)
                if not n:
                    counts["mentions_empty"] += 1
                elif n > max_mention:
                    counts["mentions_too_long"] += 1
                else:
                    mentions.append((len(ids), len(ids) + n, code))
            ids += piece
        return [s for s in sentences if s.ids]

    def _fit(self, sentences: list[_Sentence], limit: int, counts: collections.Counter) -> Iterator[_Sentence]:
        """Sentences no longer than ``limit``: overlong ones are cut at token boundaries outside mentions."""
        for sent in sentences:
            if len(sent.ids) <= limit:
                yield sent
                continue
            counts["sentences_split"] += 1
            start = 0
            mentions = sent.mentions
            while start < len(sent.ids):
                cut = min(start + limit, len(sent.ids))
                if cut < len(sent.ids):
                    # back off to the last boundary not strictly inside a mention (mentions <= limit long
                    # usually make one exist); otherwise cut at the limit and lose the straddling mention
                    c = cut
                    while c > start and any(ms < c < me for ms, me, _ in mentions):
                        c -= 1
                    cut = c if c > start else cut
                kept = [(ms - start, me - start, ent) for ms, me, ent in mentions if ms >= start and me <= cut]
                counts["mentions_cut"] += sum(1 for ms, me, _ in mentions if ms < cut < me)
                yield _Sentence(sent.ids[start:cut], kept)
                start = cut

    def _pack(self, sentences: Iterator[_Sentence], counts: collections.Counter) -> list[PackedSequence]:
        limit = self.config.max_seq_length - 2
        out: list[PackedSequence] = []
        ids: list[int] = []
        mentions: list[tuple[int, int, int]] = []

        def flush():
            if not ids:
                return
            kept = mentions
            if len(kept) > self.config.max_entity_length:
                counts["entities_over_limit"] += len(kept) - self.config.max_entity_length
                kept = kept[: self.config.max_entity_length]
            if not kept and not self.config.keep_no_entity:
                counts["sequences_without_entities"] += 1
                counts["tokens_without_entities"] += len(ids)
                return
            out.append(PackedSequence(ids, kept))

        for sent in sentences:
            if ids and len(ids) + len(sent.ids) > limit:
                flush()
                ids, mentions = [], []
            offset = len(ids)
            ids.extend(sent.ids)
            mentions.extend((s + offset, e + offset, ent) for s, e, ent in sent.mentions)
        flush()
        return out

    def process_batch(self, pages: list[dict]) -> tuple[list[list[PackedSequence]], collections.Counter]:
        """Sequences of each page. The pieces of all pages are encoded in one call per prefix mode:
        sentencepiece's per-call overhead would otherwise cost more than the encoding itself."""
        counts: collections.Counter = collections.Counter()
        pieces: list[str] = []
        word_start: list[bool] = []
        plans = [self._plan(page, counts, pieces, word_start) for page in pages]
        encoded = self.tok.encode_many(pieces, word_start)
        out = []
        pos = 0
        limit = self.config.max_seq_length - 2
        for plan in plans:
            sentences = self._sentences(plan, encoded[pos : pos + len(plan)], counts)
            pos += len(plan)
            out.append(self._pack(self._fit(sentences, limit, counts), counts))
        return out, counts

    def process(self, page: dict) -> tuple[list[PackedSequence], collections.Counter]:
        seqs, counts = self.process_batch([page])
        return seqs[0], counts
