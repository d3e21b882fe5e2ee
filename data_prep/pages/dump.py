"""Reading MediaWiki XML dumps: plain / bz2 / gzip files, multistream bz2 + index, any XML encoding.

The reader never builds a DOM.  Everything is turned into UTF-8 bytes first (a UTF-16 dump is
transcoded), the header up to ``</siteinfo>`` is parsed once, and the pages are cut at ``</page>``
boundaries into chunks of raw bytes that workers parse with expat (:func:`parse_pages`).  Cutting at
the literal ``</page>`` is safe: in well-formed XML a ``<`` inside text is always escaped.

Multistream dumps (``*-multistream.xml.bz2``) are a concatenation of independent bz2 streams: the
header, then 100 pages per stream, then the closing tag; the index (``offset:page_id:title`` lines)
gives each stream's byte offset, so any stream can be decompressed on its own (:func:`read_stream`).
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import re
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

from data_prep.common.errors import InputError

BLOCK_SIZE = 1 << 20
CHUNK_PAGES = 100  # pages per work item when one reader feeds the workers (like a multistream stream)
CHUNK_BYTES = 4 << 20
_BZ2_STREAM_MAGIC = b"BZh"
_BZ2_BLOCK_MAGIC = b"1AY&SY"  # 0x314159265359, the first block header of every bz2 stream
_XML_DECL_RE = re.compile(rb"^\s*<\?xml[^>]*\?>")
_XML_DECL_TEXT_RE = re.compile(r"^\s*<\?xml[^>]*\?>")
_ENCODING_RE = re.compile(rb"""^\s*<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")
_WRAP_HEAD = b'<?xml version="1.0" encoding="utf-8"?><pages>'
_WRAP_TAIL = b"</pages>"


@dataclass
class SiteInfo:
    lang: str = ""
    dbname: str = ""
    sitename: str = ""
    base: str = ""
    generator: str = ""
    case: str = "first-letter"
    namespaces: dict[int, str] = field(default_factory=dict)
    namespace_cases: dict[int, str] = field(default_factory=dict)
    header: bytes = b""  # the raw UTF-8 header up to </siteinfo> (no XML declaration)

    def to_json(self) -> dict:
        return {
            "lang": self.lang,
            "dbname": self.dbname,
            "sitename": self.sitename,
            "base": self.base,
            "generator": self.generator,
            "case": self.case,
            "namespaces": {str(k): v for k, v in sorted(self.namespaces.items())},
        }


@dataclass
class RawPage:
    title: str = ""
    ns: int = 0
    page_id: int = 0
    redirect: str | None = None
    text: str = ""


# --- opening files ----------------------------------------------------------------------------------


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise InputError(f"{path}: {what} not found")
    if not path.is_file():
        raise InputError(f"{path}: {what} is not a file")


def open_compressed(path: Path):
    """Binary file object over the decompressed content (bz2 / gzip detected by magic bytes)."""
    with open(path, "rb") as f:
        magic = f.read(3)
    if magic == _BZ2_STREAM_MAGIC:
        return bz2.open(path, "rb")  # reads every concatenated stream (multistream files included)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def iter_raw_blocks(path: Path, block_size: int = BLOCK_SIZE) -> Iterator[bytes]:
    """Decompressed blocks of ``path``; truncated or corrupt compressed data -> InputError."""
    f = open_compressed(path)
    try:
        while True:
            try:
                block = f.read(block_size)
            except EOFError as e:
                raise InputError(f"{path}: compressed file is truncated ({e})") from None
            except (OSError, zlib.error) as e:
                raise InputError(f"{path}: corrupt compressed data ({e})") from None
            if not block:
                return
            yield block
    finally:
        f.close()


def _detect_encoding(head: bytes) -> tuple[str, int]:
    """(Python codec name, BOM length) from the BOM or the XML declaration, as XML 1.0 Appendix F."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8", 3
    if head.startswith(codecs.BOM_UTF32_LE) or head.startswith(codecs.BOM_UTF32_BE):
        return ("utf-32-le" if head.startswith(codecs.BOM_UTF32_LE) else "utf-32-be"), 4
    if head.startswith(codecs.BOM_UTF16_LE):
        return "utf-16-le", 2
    if head.startswith(codecs.BOM_UTF16_BE):
        return "utf-16-be", 2
    if head.startswith(b"<\x00?\x00"):
        return "utf-16-le", 0
    if head.startswith(b"\x00<\x00?"):
        return "utf-16-be", 0
    m = _ENCODING_RE.match(head)
    if m:
        name = m.group(1).decode("ascii")
        try:
            return codecs.lookup(name).name, 0
        except LookupError:
            return name, -1
    return "utf-8", 0


def iter_utf8_blocks(path: Path, block_size: int = BLOCK_SIZE) -> Iterator[bytes]:
    """Blocks of the dump as UTF-8 bytes, whatever its declared encoding; the XML declaration removed."""
    blocks = iter_raw_blocks(path, block_size)
    first = next(blocks, b"")
    encoding, bom = _detect_encoding(first[:256])
    if bom < 0:
        raise InputError(f"{path}: unsupported XML encoding {encoding!r}")
    if encoding in ("utf-8", "ascii"):
        first = first[bom:]
        m = _XML_DECL_RE.match(first)
        if m:
            first = first[m.end() :]
        yield first
        yield from blocks
        return
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    try:
        text = decoder.decode(first[bom:])
        yield _XML_DECL_TEXT_RE.sub("", text, count=1).encode("utf-8")
        for block in blocks:
            yield decoder.decode(block).encode("utf-8")
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail.encode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: invalid {encoding} data at byte {e.start} of a block ({e.reason})") from None


# --- the header -------------------------------------------------------------------------------------


def parse_siteinfo(header: bytes, path: Path) -> SiteInfo:
    """Parse ``<mediawiki ...><siteinfo>...</siteinfo>`` (UTF-8, without declaration) into SiteInfo."""
    info = SiteInfo()
    state: dict = {"root": None, "stack": [], "buf": [], "ns_key": None, "ns_case": None}

    def start(name, attrs):
        if state["root"] is None:
            state["root"] = name
            if name != "mediawiki":
                raise InputError(f"{path}: not a MediaWiki XML dump (root element is <{name}>, expected <mediawiki>)")
            info.lang = attrs.get("xml:lang", "")
        state["stack"].append(name)
        state["buf"] = []
        if name == "namespace":
            state["ns_key"] = int(attrs.get("key", "0"))
            state["ns_case"] = attrs.get("case")

    def end(name):
        stack = state["stack"]
        text = "".join(state["buf"]).strip()
        if len(stack) >= 2 and stack[-2] == "siteinfo":
            if name in ("sitename", "dbname", "base", "generator", "case"):
                setattr(info, name, text)
        if name == "namespace":
            info.namespaces[state["ns_key"]] = text
            if state["ns_case"]:
                info.namespace_cases[state["ns_key"]] = state["ns_case"]
        stack.pop()
        state["buf"] = []

    def chars(data):
        state["buf"].append(data)

    p = expat.ParserCreate()
    p.StartElementHandler = start
    p.EndElementHandler = end
    p.CharacterDataHandler = chars
    data = b'<?xml version="1.0" encoding="utf-8"?>' + header
    try:
        p.Parse(data, False)
        if b"</mediawiki>" not in header:
            p.Parse(b"</mediawiki>", True)
        else:
            p.Parse(b"", True)
    except expat.ExpatError as e:
        if state["root"] is None:
            raise InputError(f"{path}: not a MediaWiki XML dump (not XML: {expat.errors.messages[e.code]})") from None
        raise InputError(
            f"{path}: malformed XML in the dump header at line {e.lineno}, column {e.offset}: "
            f"{expat.errors.messages[e.code]}"
        ) from None
    if state["root"] is None:
        raise InputError(f"{path}: not a MediaWiki XML dump (empty file or no <mediawiki> root element)")
    if not info.lang:
        info.lang = lang_from_dbname(info.dbname) or lang_from_base(info.base)
    info.lang = info.lang.lower()
    if not info.case:
        info.case = "first-letter"
    return info


def lang_from_dbname(dbname: str) -> str:
    if dbname.endswith("wiki"):
        return dbname[: -len("wiki")].replace("_", "-")
    return ""


def lang_from_base(base: str) -> str:
    m = re.match(r"https?://([a-z-]+)\.wikipedia\.org", base)
    return m.group(1) if m else ""


# --- pages ------------------------------------------------------------------------------------------


class PageXMLError(Exception):
    """Malformed XML inside a chunk of pages: (line within the chunk, column, message, last title)."""

    def __init__(self, line: int, column: int, message: str, title: str) -> None:
        super().__init__(line, column, message, title)
        self.line, self.column, self.message, self.title = line, column, message, title


def parse_pages(data: bytes) -> list[RawPage]:
    """Parse a run of ``<page>`` elements (UTF-8 bytes, no root) with expat."""
    pages: list[RawPage] = []
    stack: list[str] = []
    buf: list[str] = []
    cur = RawPage()

    def start(name, attrs):
        nonlocal cur
        stack.append(name)
        if name == "page":
            cur = RawPage()
            pages.append(cur)
        elif name == "redirect" and len(stack) == 3:
            cur.redirect = attrs.get("title", "")
        buf.clear()

    def end(name):
        depth = len(stack)
        if depth == 3:
            if name == "title":
                cur.title = "".join(buf)
            elif name == "ns":
                cur.ns = int("".join(buf).strip() or 0)
            elif name == "id":
                cur.page_id = int("".join(buf).strip() or 0)
        elif depth == 4 and name == "text":
            cur.text = "".join(buf)
        stack.pop()
        buf.clear()

    p = expat.ParserCreate()
    p.buffer_text = True
    p.buffer_size = 1 << 16
    p.StartElementHandler = start
    p.EndElementHandler = end
    p.CharacterDataHandler = buf.append
    try:
        p.Parse(_WRAP_HEAD, False)
        p.Parse(data, False)
        p.Parse(_WRAP_TAIL, True)
    except expat.ExpatError as e:
        title = pages[-1].title if pages else ""
        raise PageXMLError(e.lineno, e.offset, expat.errors.messages[e.code], title) from None
    except ValueError as e:  # a non-numeric <ns> or <id>
        title = pages[-1].title if pages else ""
        raise PageXMLError(p.CurrentLineNumber, p.CurrentColumnNumber, str(e), title) from None
    return pages


@dataclass
class PageChunk:
    data: bytes  # UTF-8 bytes of complete <page> elements
    n_pages: int
    first_line: int  # line number (1-based) in the decoded dump where ``data`` starts


def read_header_and_chunks(
    path: Path, limit_pages: int | None = None, chunk_pages: int = CHUNK_PAGES, chunk_bytes: int = CHUNK_BYTES
) -> tuple[SiteInfo, Iterator[PageChunk]]:
    """Siteinfo of the dump and an iterator over chunks of whole pages, in dump order."""
    _require_file(path, "dump file")
    blocks = iter_utf8_blocks(path)
    buf = b""
    eof = False
    while True:
        idx = buf.find(b"</siteinfo>")
        if idx >= 0:
            idx += len(b"</siteinfo>")
            break
        idx = buf.find(b"<page>")
        if idx >= 0:
            break
        block = next(blocks, None)
        if block is None:
            idx = len(buf)
            break
        buf += block
        if len(buf) > (64 << 20):
            raise InputError(f"{path}: not a MediaWiki XML dump (no <page> or </siteinfo> in the first 64 MiB)")
    if not buf.strip():
        raise InputError(f"{path}: empty dump (no XML content)")
    header = buf[:idx]
    info = parse_siteinfo(header, path)
    info.header = header
    line = 1 + header.count(b"\n")
    rest = buf[idx:]

    def chunks() -> Iterator[PageChunk]:
        nonlocal rest, eof, line
        total = 0
        buf = rest
        while True:
            # cut as many whole chunks as the buffer holds
            pos = 0
            ends: list[int] = []
            search = 0
            while True:
                e = buf.find(b"</page>", search)
                if e < 0:
                    break
                e += len(b"</page>")
                ends.append(e)
                search = e
                if len(ends) >= chunk_pages or e - pos >= chunk_bytes:
                    if limit_pages is not None and total + len(ends) >= limit_pages:
                        ends = ends[: limit_pages - total]
                        yield PageChunk(buf[pos : ends[-1]], len(ends), line)
                        return
                    data = buf[pos:e]
                    yield PageChunk(data, len(ends), line)
                    line += data.count(b"\n")
                    total += len(ends)
                    pos = e
                    ends = []
            if eof:
                if ends:
                    if limit_pages is not None and total + len(ends) >= limit_pages:
                        ends = ends[: limit_pages - total]
                    data = buf[pos : ends[-1]]
                    yield PageChunk(data, len(ends), line)
                    line += data.count(b"\n")
                    total += len(ends)
                    pos = ends[-1]
                    if limit_pages is not None and total >= limit_pages:
                        return
                tail = buf[pos:].strip()
                if b"<page" in tail:
                    raise InputError(f"{path}: dump ends inside a page near line {line} (truncated file?)")
                if not tail.endswith(b"</mediawiki>"):
                    raise InputError(f"{path}: dump ends without </mediawiki> near line {line} (truncated file?)")
                return
            # keep the unfinished tail, read more
            buf = buf[pos:]
            if limit_pages is not None and total >= limit_pages:
                return
            block = next(blocks, None)
            if block is None:
                eof = True
            else:
                buf += block

    return info, chunks()


# --- multistream ------------------------------------------------------------------------------------


@dataclass
class Stream:
    offset: int
    end: int  # exclusive; the next stream's offset (or the file size)
    page_ids: array  # array('q'): compact, an enwiki index has 7M entries


def read_streams(dump: Path, index: Path) -> list[Stream]:
    """The streams of a multistream dump from its index (``offset:page_id:title`` lines, plain or bz2).

    Titles are not kept (only the offsets and page ids are needed), so the plan stays small.
    """
    _require_file(index, "index file")
    size = dump.stat().st_size
    streams: list[Stream] = []
    data = b"".join(iter_raw_blocks(index))
    cur: Stream | None = None
    for lineno, line in enumerate(data.split(b"\n"), 1):
        if not line:
            continue
        first = line.find(b":")
        second = line.find(b":", first + 1)
        try:
            if first <= 0 or second < 0:
                raise ValueError
            offset, page_id = int(line[:first]), int(line[first + 1 : second])
        except ValueError:
            raise InputError(f"{index}: line {lineno} is not 'offset:page_id:title' (not a multistream index?)") from None
        if cur is not None and offset == cur.offset:
            cur.page_ids.append(page_id)
            continue
        if cur is not None and offset < cur.offset:
            raise InputError(f"{index}: offsets are not increasing ({offset} after {cur.offset}); index does not match {dump}")
        if offset <= 0 or offset >= size:
            raise InputError(f"{index}: offset {offset} is outside the stream area of {dump} ({size} bytes); index does not match the dump")
        if cur is not None:
            cur.end = offset
        cur = Stream(offset, size, array("q", [page_id]))
        streams.append(cur)
    if not streams:
        raise InputError(f"{index}: empty multistream index")
    return streams


def check_stream_start(f, offset: int, dump: Path, index: Path) -> None:
    f.seek(offset)
    head = f.read(10)
    if head[:3] != _BZ2_STREAM_MAGIC or head[4:10] != _BZ2_BLOCK_MAGIC:
        raise InputError(f"{index}: offset {offset} is not the start of a bz2 stream in {dump}; index does not match the dump")


def decompress_range(f, start: int, end: int, dump: Path, index: Path) -> bytes:
    """Decompress the bz2 stream(s) in ``[start, end)`` of an open multistream file."""
    check_stream_start(f, start, dump, index)
    f.seek(start)
    raw = f.read(end - start)
    out: list[bytes] = []
    pos = 0
    while pos < len(raw):
        d = bz2.BZ2Decompressor()
        try:
            out.append(d.decompress(raw[pos:]))
        except OSError as e:
            raise InputError(f"{dump}: corrupt bz2 stream at byte offset {start + pos} ({e})") from None
        if not d.eof:
            raise InputError(f"{dump}: bz2 stream at byte offset {start + pos} is truncated (truncated file?)")
        rest = d.unused_data
        pos = len(raw) - len(rest)
        if rest and not rest.startswith(_BZ2_STREAM_MAGIC):
            raise InputError(
                f"{index}: bytes after the bz2 stream at offset {start} of {dump} are not a stream start; "
                "index does not match the dump"
            )
    return b"".join(out)


def read_multistream_header(dump: Path, first_offset: int, index: Path) -> SiteInfo:
    with open(dump, "rb") as f:
        if f.read(3) != _BZ2_STREAM_MAGIC:
            raise InputError(f"{dump}: not a bz2 file, but an index was given (multistream dumps are .xml.bz2)")
        check_stream_start(f, first_offset, dump, index)
        header = decompress_range(f, 0, first_offset, dump, index)
    encoding, bom = _detect_encoding(header[:256])
    if encoding not in ("utf-8", "ascii") or bom < 0:
        raise InputError(f"{dump}: multistream dumps must be UTF-8 (found {encoding})")
    header = header[bom:]
    m = _XML_DECL_RE.match(header)
    if m:
        header = header[m.end() :]
    if b"<page>" in header:
        raise InputError(f"{index}: the first offset {first_offset} does not follow the header stream of {dump}; index does not match the dump")
    return parse_siteinfo(header.strip(), dump)


def strip_closing(data: bytes) -> bytes:
    """The last stream range ends with ``</mediawiki>``: drop it so the pages parse as a fragment."""
    s = data.rstrip()
    if s.endswith(b"</mediawiki>"):
        return s[: -len(b"</mediawiki>")]
    return data

