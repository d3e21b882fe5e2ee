"""Reading an extracted corpus directory (DESIGN.md step 1) with its schema checked up front.

A corpus is DIR/pages-NNNNN.parquet + DIR/redirects.parquet + DIR/siteinfo.json. Later stages read
pages in file order, batch by batch, so a language never has to fit in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from data_prep.common.errors import InputError

PAGE_COLUMNS = ("page_id", "title", "paragraphs")


@dataclass(frozen=True)
class Corpus:
    path: Path
    lang: str
    page_files: tuple[Path, ...]

    @property
    def num_pages(self) -> int:
        import pyarrow.parquet as pq

        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.page_files)


def _check_schema(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as e:
        raise InputError(f"{path}: not a readable parquet file ({e})") from None
    missing = [c for c in PAGE_COLUMNS if c not in schema.names]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(PAGE_COLUMNS)})")
    para = schema.field("paragraphs").type
    ok = pa.types.is_list(para) or pa.types.is_large_list(para)
    item = para.value_type if ok else None
    ok = ok and pa.types.is_struct(item) and {"text", "links"} <= {f.name for f in item}
    if ok:
        links = item.field("links").type
        ok = (pa.types.is_list(links) or pa.types.is_large_list(links)) and pa.types.is_struct(links.value_type)
        ok = ok and {"start", "end", "title"} <= {f.name for f in links.value_type}
    if not ok:
        raise InputError(
            f"{path}: column paragraphs must be list<struct<text, links list<struct<start, end, title>>>>, got {para}"
        )


def open_corpus(corpus_dir: str | Path) -> Corpus:
    """Check DIR's layout and page schema; the language comes from siteinfo.json."""
    path = Path(corpus_dir)
    if not path.is_dir():
        raise InputError(f"{path}: corpus directory not found")
    siteinfo = path / "siteinfo.json"
    try:
        lang = json.loads(siteinfo.read_text(encoding="utf-8"))["lang"]
    except FileNotFoundError:
        raise InputError(f"{siteinfo}: missing (is {path} the output of 'data_prep extract'?)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{siteinfo}: no 'lang' ({type(e).__name__}: {e})") from None
    files = tuple(sorted(path.glob("pages-*.parquet")))
    if not files:
        raise InputError(f"{path}: no pages-*.parquet files (is it the output of 'data_prep extract'?)")
    for f in files:
        _check_schema(f)
    return Corpus(path, str(lang), files)


def iter_page_batches(
    corpus: Corpus, batch_size: int = 64, columns: Sequence[str] = PAGE_COLUMNS
) -> Iterator[list[dict]]:
    """Pages in file order as lists of ``{column: python value}`` dicts."""
    import pyarrow.parquet as pq

    # parquet reads in small batches are slow (a fixed cost per batch): read big ones, cut them here
    for f in corpus.page_files:
        pf = pq.ParquetFile(f)
        for batch in pf.iter_batches(batch_size=max(batch_size, 4096), columns=list(columns)):
            rows = batch.to_pylist()
            for i in range(0, len(rows), batch_size):
                yield rows[i : i + batch_size]


def iter_pages(corpus: Corpus, columns: Sequence[str] = PAGE_COLUMNS) -> Iterator[dict]:
    for batch in iter_page_batches(corpus, 256, columns):
        yield from batch
