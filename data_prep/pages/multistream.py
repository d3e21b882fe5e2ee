"""``data_prep make-multistream``: write a dump as Wikimedia's multistream bz2 plus its index.

Layout, as Wikimedia publishes ``*-pages-articles-multistream.xml.bz2``: the first bz2 stream holds the
``<mediawiki>`` header and ``<siteinfo>``, then every stream holds 100 ``<page>`` elements, and the last
stream holds the closing ``</mediawiki>``.  The index ``*-multistream-index.txt.bz2`` has one
``offset:page_id:title`` line per page, ``offset`` being the byte offset of the page's stream.
The output bytes are a pure function of the input (bz2 at level 9 is deterministic).
"""

from __future__ import annotations

import argparse
import bz2
import sys
from dataclasses import dataclass
from pathlib import Path

from data_prep.common.atomic import atomic_path
from data_prep.common.errors import InputError
from data_prep.pages.dump import PageXMLError, parse_pages, read_header_and_chunks

PAGES_PER_STREAM = 100


@dataclass
class MultistreamFiles:
    dump: Path
    index: Path
    streams: int
    pages: int


def output_names(dump: Path, out_dir: Path) -> tuple[Path, Path]:
    name = dump.name
    for suffix in (".bz2", ".gz", ".xml"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith("-multistream"):
        name = name[: -len("-multistream")]
    return out_dir / f"{name}-multistream.xml.bz2", out_dir / f"{name}-multistream-index.txt.bz2"


def make_multistream(dump: Path, out_dir: Path, pages_per_stream: int = PAGES_PER_STREAM) -> MultistreamFiles:
    """Rewrite ``dump`` (xml / bz2 / gz, any XML encoding) as a UTF-8 multistream bz2 and its index."""
    dump, out_dir = Path(dump), Path(out_dir)
    info, chunks = read_header_and_chunks(dump, chunk_pages=pages_per_stream, chunk_bytes=1 << 62)
    dump_out, index_out = output_names(dump, out_dir)
    if dump_out.resolve() == dump.resolve():
        raise InputError(f"{dump}: the output would overwrite the input; choose another --out-dir")
    n_streams = n_pages = 0
    # Both files are written as they go (an enwiki index has 7M lines); bz2 output does not depend
    # on how the input is fed to the compressor, so the bytes stay deterministic.
    index_compressor = bz2.BZ2Compressor(9)
    with atomic_path(dump_out) as tmp, open(tmp, "wb") as f, atomic_path(index_out) as tmp_index, \
            open(tmp_index, "wb") as fi:
        f.write(bz2.compress(info.header.strip() + b"\n", 9))
        n_streams += 1
        for chunk in chunks:
            offset = f.tell()
            try:
                pages = parse_pages(chunk.data)
            except PageXMLError as e:
                raise InputError(
                    f"{dump}: malformed XML at line {chunk.first_line + e.line - 1}, column {e.column}: {e.message}"
                ) from None
            fi.write(index_compressor.compress(b"".join(f"{offset}:{p.page_id}:{p.title}\n".encode() for p in pages)))
            n_pages += len(pages)
            f.write(bz2.compress(chunk.data.lstrip(b"\r\n") + b"\n", 9))
            n_streams += 1
        f.write(bz2.compress(b"</mediawiki>\n", 9))
        n_streams += 1
        fi.write(index_compressor.flush())
    return MultistreamFiles(dump_out, index_out, n_streams, n_pages)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dump", type=Path, required=True, help="an XML dump (.xml, .xml.bz2, .xml.gz)")
    parser.add_argument("--out-dir", type=Path, required=True, help="where to write the multistream file and index")
    parser.add_argument("--pages-per-stream", type=int, default=PAGES_PER_STREAM)


def run_cli(args: argparse.Namespace) -> int:
    res = make_multistream(args.dump, args.out_dir, args.pages_per_stream)
    print(f"make-multistream: {res.pages} pages in {res.streams} bz2 streams -> {res.dump}, {res.index}", file=sys.stderr)
    return 0
