"""XLM-R's sentencepiece tokeniser with the fairseq id layout, and ``train-spm`` to train one.

XLM-R ships ``sentencepiece.bpe.model``, which is a UNIGRAM model despite its name, with the spm
pieces ``<unk>``0 ``<s>``1 ``</s>``2. fairseq (and so ``transformers.XLMRobertaTokenizer``) shifts them
into its own dictionary: ``<s>``0 ``<pad>``1 ``</s>``2 ``<unk>``3, spm piece i (i >= 3) -> i + 1,
spm's unknown (0) -> 3, and ``<mask>`` appended last at len(spm) + 1.

Parity with ``transformers.XLMRobertaTokenizer`` (5.x, which converts the spm model to a ``tokenizers``
Unigram model): the ids are equal on ordinary text, unknown characters (emoji, rare CJK, consecutive
unknowns fused into one ``<unk>``), NFKC-normalised forms and odd whitespace, with one deliberate
exception: the literal strings "<s>", "</s>", "<pad>", "<unk>" and "<mask>" in the text become special
ids in transformers but stay plain text here (a page that mentions "<mask>" must not mask anything).

For exact entity spans the text is cut at link boundaries and the pieces are encoded separately.
A piece that continues a word (no whitespace before it) must not get the word-start "▁" that
sentencepiece's ``add_dummy_prefix`` adds, so a second processor is loaded from the same model with
that flag switched off in its ``ModelProto`` (sentencepiece 0.2 has no per-call option). Many short pieces are encoded word by word through a cache
(``encode_pieces``): exact for XLM-R's kind of model, whose pieces never span whitespace, and checked
against the model when it is loaded.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import heapq
import io
import itertools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.common.atomic import atomic_path
from data_prep.common.errors import InputError

BOS_ID, PAD_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
FAIRSEQ_OFFSET = 1

# ``encode_marked`` reads many texts joined into one string: a mark glued to the first word of each
# text, and a second one after it when the text continues a word. Private-use characters, so text
# never holds them (checked per batch); the piece mark encodes as one id that no model has.
_PIECE, CONT_MARK = "\ue000", "\ue001"
PIECE_MARK = f" {_PIECE}"
_BOUNDARY_ID = -1


def model_proto(data: bytes):
    """The parsed ``ModelProto`` of a sentencepiece model file's bytes."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(data)
    return proto


def without_dummy_prefix(data: bytes) -> bytes:
    """The same model with ``normalizer_spec.add_dummy_prefix = false``."""
    proto = model_proto(data)
    proto.normalizer_spec.add_dummy_prefix = False
    return proto.SerializeToString()


# ---------------------------------------------------------------- tokeniser
@functools.cache
def _gap_candidates() -> frozenset[str]:
    """Characters a normaliser might read as whitespace: Python's whitespace, Unicode separators and
    format characters, the "▁" meta symbol, BOM and U+FFFD."""
    import unicodedata

    out = {c for c in map(chr, range(0x3001)) if c.isspace()} | {"\u2581", "\ufeff", "\ufffd"}
    # planes 0-2 and the tag/variation block of plane 14 hold every such character
    for code in itertools.chain(range(0x30000), range(0xE0000, 0xE1000)):
        if unicodedata.category(chr(code)) in ("Cf", "Zs", "Zl", "Zp"):
            out.add(chr(code))
    return frozenset(out)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class XlmrSentencePiece:
    """An XLM-R sentencepiece model speaking fairseq ids (what ``XLMRobertaTokenizer`` returns)."""

    CACHE_LIMIT = 2_000_000  # cached words (both prefix modes); the cache is emptied when it would grow past it

    def __init__(self, model_proto: bytes, path: str | Path = "<bytes>"):
        import sentencepiece

        self.path = Path(path)
        self.model_proto = model_proto
        self.sp = sentencepiece.SentencePieceProcessor()
        self.sp_cont = sentencepiece.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(model_proto)
            self.sp_cont.LoadFromSerializedProto(without_dummy_prefix(model_proto))
        except Exception as e:  # sentencepiece raises RuntimeError/OSError with a multi-line message
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"{path}: not a sentencepiece model ({first})") from None
        if self.sp.unk_id() != 0 or self.sp.bos_id() != 1 or self.sp.eos_id() != 2:
            raise InputError(
                f"{path}: not an XLM-R style sentencepiece model (needs <unk>=0 <s>=1 </s>=2, has "
                f"unk={self.sp.unk_id()} bos={self.sp.bos_id()} eos={self.sp.eos_id()})"
            )
        self.word_gaps = self._word_gaps()
        self._gap_table: np.ndarray | None = None
        self._cache: dict[str, bytes] = {}  # word (marks included) -> its spm ids as int32 bytes
        self._check_word_cache()

    @classmethod
    def load(cls, path: str | Path) -> XlmrSentencePiece:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: sentencepiece model file not found")
        return cls(path.read_bytes(), path)

    def __getstate__(self):  # sentencepiece processors do not pickle; rebuild from the bytes
        return {"model_proto": self.model_proto, "path": self.path}

    def __setstate__(self, state):
        self.__init__(state["model_proto"], state["path"])

    @property
    def spm_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def mask_id(self) -> int:
        return self.spm_size + FAIRSEQ_OFFSET

    @property
    def vocab_size(self) -> int:
        """Size of the fairseq dictionary, ``<mask>`` included (XLM-R: 250002)."""
        return self.spm_size + FAIRSEQ_OFFSET + 1

    @staticmethod
    def to_fairseq(spm_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        ids = np.asarray(spm_ids, dtype=np.int32) + FAIRSEQ_OFFSET
        ids[ids == FAIRSEQ_OFFSET] = UNK_ID  # spm's unknown (0) -> fairseq <unk>
        return ids

    def encode(self, text: str, word_start: bool = True) -> np.ndarray:
        """Fairseq ids of ``text`` without <s>/</s>; ``word_start=False`` adds no leading "▁"."""
        return self.to_fairseq((self.sp if word_start else self.sp_cont).encode(text))

    def encode_pieces(self, texts: Sequence[str], word_start: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
        """spm ids (NOT shifted) of many texts, concatenated, and how many belong to each text;
        ``word_start[i]=False`` encodes text i without the leading "▁"."""
        if not self._cacheable("".join(texts)):
            return self._flatten(self._encode_direct(texts, word_start))
        odd = [i for i, t in enumerate(texts) if self._odd_space.search(t)] if self._odd_space is not None else []
        # the rare text with an odd space is encoded directly and spliced in where its ids belong
        skip = set(odd)
        parts = ["" if i in skip else t for i, t in enumerate(texts)] if odd else texts
        ids, counts = self.encode_marked("".join(PIECE_MARK + (t if ws else CONT_MARK + t.lstrip()) for t, ws in zip(parts, word_start)))
        if odd:
            d_ids, d_counts = self._flatten(self._encode_direct([texts[i] for i in odd], [word_start[i] for i in odd]))
            starts = np.cumsum(counts) - counts
            ids = np.insert(ids, np.repeat(starts[odd], d_counts), d_ids)
            counts[odd] = d_counts
        return ids, counts

    def can_mark(self, text: str) -> bool:
        """Whether pieces of ``text`` can go through ``encode_marked``: the model qualifies for the word
        cache and the text holds neither a marker character nor an odd space."""
        return self._cacheable(text) and not (self._odd_space is not None and self._odd_space.search(text))

    def _cacheable(self, text: str) -> bool:
        """The model qualifies for the word cache and ``text`` holds no marker character."""
        return self._word_cache and _PIECE not in text and CONT_MARK not in text

    def encode_marked(self, marked: str) -> tuple[np.ndarray, np.ndarray]:
        """spm ids of a batch of pieces written as one string, each piece preceded by ``PIECE_MARK``
        and a continuing piece also by ``CONT_MARK`` (nothing but whitespace before the first mark):
        the concatenated ids and the number of ids of each piece. The marks glue to the piece's first
        word, so they cost no words of their own.

        Each whitespace-separated word is encoded once and cached as packed int32 bytes: a unigram
        model whose pieces never span whitespace (XLM-R's) segments every word independently, so this
        equals encoding each piece whole, and Zipf's law makes most words cache hits. One
        ``str.split``, one ``map`` over the cache and one bytes join do the work in C.
        """
        words = marked.split()
        cache = self._cache
        try:
            buf = b"".join(map(cache.__getitem__, words))
        except KeyError:
            self._fill_cache(words)
            buf = b"".join(map(cache.__getitem__, words))
        ids = np.frombuffer(buf, dtype=np.int32)
        bounds = np.flatnonzero(ids == _BOUNDARY_ID)  # one per piece
        counts = np.diff(bounds, append=len(ids)) - 1
        return np.delete(ids, bounds), counts

    def _fill_cache(self, words: list[str]) -> None:
        cache = self._cache
        missing = set(words).difference(cache)
        if len(cache) + len(missing) > self.CACHE_LIMIT:  # simply start over: the next words refill it
            cache.clear()
            missing = set(words)
        keys = sorted(missing)
        bare = [k[1:] if k[0] == _PIECE else k for k in keys]  # (no word is empty: split() drops those)
        boundary = np.array([_BOUNDARY_ID], dtype=np.int32).tobytes()
        for cont, proc in ((False, self.sp), (True, self.sp_cont)):
            todo = [(k, b[1:] if cont else b) for k, b in zip(keys, bare) if (b[:1] == CONT_MARK) == cont]
            texts = [t for _, t in todo if t]
            # one thread: parallelism comes from worker processes, not spm's own thread pool
            encoded = iter(proc.encode(texts, num_threads=1) if texts else ())
            for k, t in todo:
                ids = np.array(next(encoded) if t else [], dtype=np.int32).tobytes()
                cache[k] = boundary + ids if k[0] == _PIECE else ids

    @staticmethod
    def _flatten(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        counts = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
        return np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int32, count=int(counts.sum())), counts

    def _encode_direct(self, texts: Sequence[str], word_start: Sequence[bool]) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in texts]
        for mode, proc in ((True, self.sp), (False, self.sp_cont)):
            idx = [i for i, ws in enumerate(word_start) if bool(ws) == mode and texts[i]]
            if idx:
                for i, ids in zip(idx, proc.encode([texts[i] for i in idx], num_threads=1)):
                    out[i] = ids
        return out

    @property
    def gap_table(self) -> np.ndarray:
        """``word_gaps`` as a boolean table indexed by code point."""
        if self._gap_table is None:
            table = np.zeros(0x110000, dtype=bool)
            table[[ord(c) for c in self.word_gaps]] = True
            self._gap_table = table
        return self._gap_table

    def _word_gaps(self) -> frozenset[str]:
        """Characters that separate words for this model: whitespace its normaliser keeps as a space
        and format characters it turns into one (XLM-R: LRM/RLM, ZWSP, ZWNJ, BOM, ...). A piece of
        text after one of them starts a word ("▁"); after anything else it continues one."""
        norm = self.sp_cont.normalize
        return frozenset(c for c in _gap_candidates() if norm(f"a{c}b") == "a\u2581b")

    def _check_word_cache(self) -> None:
        """Decide whether word-by-word encoding is exact for this model, and for which whitespace.

        It is when no piece holds "▁" after its first character (pieces never span words) and extra
        whitespace is dropped; a whitespace character (by Python's ``str.split``) that the model does
        not turn into a word boundary sends texts containing it to direct encoding.
        """
        sp = self.sp
        spans_words = any("\u2581" in piece[1:] for piece in sp.id_to_piece(list(range(sp.get_piece_size()))))
        base = sp.encode("a b")
        squeezes = sp.encode("  a   b ") == base and self.sp_cont.encode("a  b ") == self.sp_cont.encode("a b")
        self._word_cache = not spans_words and squeezes
        odd = [c for c in map(chr, range(0x3001)) if c.isspace() and sp.encode(f"a{c}b") != base]
        self._odd_space = re.compile("[" + re.escape("".join(odd)) + "]") if odd else None

    def id_to_piece(self, fairseq_id: int) -> str:
        if fairseq_id in (BOS_ID, PAD_ID, EOS_ID, UNK_ID):
            return ("<s>", "<pad>", "</s>", "<unk>")[fairseq_id]
        if fairseq_id == self.mask_id:
            return "<mask>"
        return self.sp.id_to_piece(int(fairseq_id) - FAIRSEQ_OFFSET)

    def decode(self, fairseq_ids: Iterable[int]) -> str:
        """Text of fairseq ids (``<unk>`` decodes as sentencepiece's " ⁇ ")."""
        ids = [0 if i == UNK_ID else int(i) - FAIRSEQ_OFFSET for i in fairseq_ids if i not in (BOS_ID, PAD_ID, EOS_ID)]
        return self.sp.decode(ids)

    def normalize(self, text: str) -> str:
        """The text as the model sees it (NFKC etc.), whitespace as spaces, no dummy prefix."""
        return self.sp_cont.normalize(text).replace("\u2581", " ")


# ---------------------------------------------------------------- training
# What makes a trained model of XLM-R's kind: a unigram model, XLM-R's special pieces and normaliser.
XLMR_KIND = dict(
    model_type="unigram",
    unk_id=0,
    bos_id=1,
    eos_id=2,
    pad_id=-1,
    normalization_rule_name="nmt_nfkc",
    add_dummy_prefix=True,
    remove_extra_whitespaces=True,
    byte_fallback=False,
)

@dataclass
class SpmTrainStats:
    languages: dict[str, int]  # lang -> sentences used
    sentences: int
    vocab_size: int  # actual number of spm pieces (a soft limit: tiny corpora give fewer)
    sha256: str


def _sample_sentences(corpus_dirs: Sequence[Path], max_sentences: int, seed: int) -> tuple[list[str], dict[str, int]]:
    """Balanced, deterministic sample of sentences: the same cap for every language.

    Within a language a sentence is kept if its seeded hash is among the ``cap`` smallest, which
    spreads the sample over the whole corpus (not just the first pages) without a random generator;
    the kept sentences are then emitted in corpus order so the trainer sees a fixed input order.
    """
    from data_prep.pages.corpus_reader import iter_pages, open_corpus
    from data_prep.shards.sentences import split_sentences

    corpora = [open_corpus(d) for d in corpus_dirs]
    cap = max(1, max_sentences // max(1, len(corpora)))
    sample: list[str] = []
    counts: dict[str, int] = {}
    for corpus in corpora:
        heap: list[tuple[int, int, str]] = []  # (-hash, order, text): a max-heap of the cap smallest
        order = 0
        for page in iter_pages(corpus, columns=("page_id", "paragraphs")):
            for para in page["paragraphs"] or ():
                text = para["text"] or ""
                for s, e in split_sentences(text, corpus.lang):
                    sentence = text[s:e]
                    digest = hashlib.blake2b(f"{seed}\0{sentence}".encode(), digest_size=8).digest()
                    key = -int.from_bytes(digest, "big")
                    if len(heap) < cap:
                        heapq.heappush(heap, (key, order, sentence))
                    elif key > heap[0][0]:
                        heapq.heapreplace(heap, (key, order, sentence))
                    order += 1
        kept = sorted(heap, key=lambda x: x[1])
        sample.extend(t for _, _, t in kept)
        counts[corpus.lang] = len(kept)
    return sample, counts


def train_spm(
    corpus_dirs: Sequence[str | Path],
    vocab_size: int,
    out: str | Path,
    seed: int = 0,
    max_sentences: int = 2_000_000,
    character_coverage: float = 0.9995,
    threads: int = 1,
) -> SpmTrainStats:
    """Train an XLM-R style unigram model on the paragraphs of extracted corpora; write ``out`` atomically."""
    import sentencepiece

    if vocab_size < 8:
        raise InputError(f"--vocab-size {vocab_size}: too small (needs room for the 3 specials and characters)")
    sentences, counts = _sample_sentences([Path(d) for d in corpus_dirs], max_sentences, seed)
    if not sentences:
        raise InputError(f"{', '.join(map(str, corpus_dirs))}: no paragraph text to train on")
    sentencepiece.set_random_generator_seed(seed)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        hard_vocab_limit=False,  # a small corpus yields fewer pieces instead of failing
        character_coverage=character_coverage,
        **XLMR_KIND,
        split_digits=False,
        max_sentence_length=1 << 16,
        input_sentence_size=0,  # the sample above is the whole input: no trainer-side sampling
        shuffle_input_sentence=False,
        num_threads=threads,
        minloglevel=2,
    )
    proto = model.getvalue()
    tok = XlmrSentencePiece(proto, out)
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_bytes(proto)
    return SpmTrainStats(counts, len(sentences), tok.spm_size, hashlib.sha256(proto).hexdigest())


# ---------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", nargs="+", required=True, type=Path, help="extracted corpus directories")
    parser.add_argument("--vocab-size", type=int, required=True, help="number of sentencepiece pieces")
    parser.add_argument("--out", type=Path, required=True, help="model file to write (e.g. sentencepiece.bpe.model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-sentences", type=int, default=2_000_000, help="sample cap, split evenly over languages")
    parser.add_argument("--character-coverage", type=float, default=0.9995)
    parser.add_argument("--threads", type=int, default=1)


def run_cli(args: argparse.Namespace) -> int:
    stats = train_spm(
        args.corpus, args.vocab_size, args.out, seed=args.seed, max_sentences=args.max_sentences,
        character_coverage=args.character_coverage, threads=args.threads,
    )
    langs = json.dumps(stats.languages, sort_keys=True)
    print(f"train-spm: {stats.vocab_size} pieces from {stats.sentences} sentences {langs} -> {args.out}")
    return 0
