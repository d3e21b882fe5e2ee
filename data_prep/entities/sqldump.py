"""Streaming parser for MySQL ``mysqldump`` files (Wikimedia's ``*-page_props.sql.gz`` and friends).

A dump is a header of comments and ``CREATE TABLE``, then long lines of multi-row inserts::

    INSERT INTO `page_props` VALUES (12,'wikibase_item','Q42',NULL),(13,'defaultsort','O\\'Brien',NULL);

The file is read line by line (one INSERT per line, as mysqldump writes them), so memory is bounded by the
longest line (about 1 MB in Wikimedia dumps), never by the file. A line that does not parse is counted
and skipped with all its rows: a syntax error mid-line means the line is corrupt, and guessing where the
next row starts could invent rows.

Values come back as Python objects: ``int``, ``float``, ``str`` (quoted strings, decoded as UTF-8 with
invalid bytes replaced), ``bytes`` (binary literals ``_binary'...'``, ``0x...``, ``X'...'``) and ``None``.
"""

from __future__ import annotations

import bz2
import gzip
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from data_prep.common.errors import InputError

# MySQL string escapes (https://dev.mysql.com/doc/refman/8.0/en/string-literals.html). ``\%`` and ``\_``
# keep their backslash (they only mean something in LIKE patterns); any other ``\x`` is ``x``.
_ESCAPES = {
    b"0": b"\x00",
    b"'": b"'",
    b'"': b'"',
    b"b": b"\x08",
    b"n": b"\n",
    b"r": b"\r",
    b"t": b"\t",
    b"Z": b"\x1a",
    b"\\": b"\\",
    b"%": b"\\%",
    b"_": b"\\_",
}
_ESCAPE_RE = re.compile(rb"\\(.)|''", re.DOTALL)


def _unescape(raw: bytes) -> bytes:
    if b"\\" not in raw and b"''" not in raw:
        return raw

    def sub(m: re.Match) -> bytes:
        ch = m.group(1)
        if ch is None:  # '' inside a quoted string is one quote
            return b"'"
        return _ESCAPES.get(ch, ch)

    return _ESCAPE_RE.sub(sub, raw)


# One value, anchored at the current position; the alternatives are tried in order.
# "Unrolled loop" form: every repetition must start with an escape, so a run of ordinary bytes can only
# be matched one way and an unterminated string fails in linear time (no catastrophic backtracking).
_QUOTED = rb"'([^'\\]*(?:(?:\\.|'')[^'\\]*)*)'"
_VALUE_RE = re.compile(
    rb"\s*(?:"
    + _QUOTED  # 1: string
    + rb"|(NULL)"  # 2
    + rb"|(-?\d+)(?![\d.eExX])"  # 3: integer (not the 0 of 0x..)
    + rb"|(-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![xX])"  # 4: float / decimal
    + rb"|_binary\s*"
    + _QUOTED  # 5: binary string
    + rb"|0x([0-9A-Fa-f]*)"  # 6: hex literal
    + rb"|[xX]'([0-9A-Fa-f]*)'"  # 7: hex string literal
    + rb")\s*",
    re.DOTALL,
)
_VALUE_ALTS = _VALUE_RE.pattern[len(rb"\s*(?:") : -len(rb")\s*")]
_ROW_RE_CACHE: dict[int, re.Pattern] = {}


def _row_re(ncols: int) -> re.Pattern:
    """One regex for a whole row of ``ncols`` values (7 groups per value, as in ``_VALUE_RE``)."""
    if ncols not in _ROW_RE_CACHE:
        value = rb"(?:" + _VALUE_ALTS + rb")"
        body = rb"\s*,\s*".join([value] * ncols)
        _ROW_RE_CACHE[ncols] = re.compile(rb"\(\s*" + body + rb"\s*\)\s*([,;])", re.DOTALL)
    return _ROW_RE_CACHE[ncols]


def _convert(groups: tuple, i: int) -> Any:
    """The Python value of one value of a ``_row_re`` match (its groups ``i .. i+6``), common kinds first."""
    g = groups[i + 2]
    if g is not None:
        return int(g)
    g = groups[i]
    if g is not None:
        return (_unescape(g) if b"\\" in g or b"''" in g else g).decode("utf-8", "replace")
    if groups[i + 1] is not None:
        return None
    if groups[i + 3] is not None:
        return float(groups[i + 3])
    if groups[i + 4] is not None:
        return _unescape(groups[i + 4])
    h = groups[i + 5] if groups[i + 5] is not None else groups[i + 6]
    return bytes.fromhex(h.decode("ascii"))


def parse_rows(
    line: bytes, start: int, ncols: int, where: tuple[int, bytes] | None = None, stats: DumpStats | None = None
) -> list[tuple[Any, ...]]:
    """``parse_values`` for rows of a known width: one regex match per row instead of one per value.

    ``where=(k, value)`` keeps only rows whose column ``k`` is the string ``value``; the others are
    counted in ``stats.rows_filtered`` and never converted (most of the speed on page_props, where a
    quarter of the rows are ``wikibase_item``). Any line the row regex cannot read whole goes to
    ``parse_values``, so results and errors are exactly the general parser's.
    """
    row_match = _row_re(ncols).match
    rows: list[tuple[Any, ...]] = []
    pos = start
    n = len(line)
    while pos < n and line[pos] in b" \t":
        pos += 1
    offsets = range(0, 7 * ncols, 7)
    filtered = 0
    while True:
        m = row_match(line, pos)
        if m is None:
            return _filter_rows(parse_values(line, start), ncols, where, stats)
        groups = m.groups()
        if where is not None:
            raw = groups[7 * where[0]]
            if raw is None:
                raw = groups[7 * where[0] + 4]
            if raw is not None and (b"\\" in raw or b"''" in raw):
                raw = _unescape(raw)
            if raw != where[1]:
                filtered += 1
                pos = m.end()
                if groups[-1] == b";":
                    break
                continue
        rows.append(tuple([_convert(groups, i) for i in offsets]))
        pos = m.end()
        if groups[-1] == b";":
            break
    if line[pos:].strip():
        return _filter_rows(parse_values(line, start), ncols, where, stats)
    if stats is not None:
        stats.rows_filtered += filtered
    return rows


def _filter_rows(
    rows: list[tuple[Any, ...]], ncols: int, where: tuple[int, bytes] | None, stats: DumpStats | None
) -> list[tuple[Any, ...]]:
    if where is None:
        return rows
    k, value = where
    text = value.decode("utf-8")
    # Rows of the wrong width stay: the caller counts them as bad rows.
    kept = [r for r in rows if len(r) != ncols or r[k] == text or r[k] == value]
    if stats is not None:
        stats.rows_filtered += len(rows) - len(kept)
    return kept


_INSERT_RE = re.compile(rb"INSERT\s+(?:IGNORE\s+)?INTO\s+`?([^`\s(]+)`?\s*(?:\(([^)]*)\)\s*)?VALUES\s*", re.I)
_CREATE_RE = re.compile(rb"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?`?([^`\s(]+)`?", re.I)
_COLUMN_DEF_RE = re.compile(rb"^\s*`([^`]+)`\s+\w")


_SQL_STARTS = (b"--", b"/*", b"CREATE", b"INSERT", b"DROP", b"SET", b"LOCK", b"UNLOCK", b"USE", b"ALTER")


class SQLSyntaxError(ValueError):
    """A line of the dump that is not a well-formed INSERT statement."""


def parse_values(line: bytes, start: int = 0) -> list[tuple[Any, ...]]:
    """Parse ``(v, ...),(v, ...);`` from ``line[start:]`` into a list of row tuples."""
    rows: list[tuple[Any, ...]] = []
    pos = start
    n = len(line)
    match = _VALUE_RE.match
    while True:
        while pos < n and line[pos] in b" \t\r\n":
            pos += 1
        if pos >= n or line[pos] != 0x28:  # "("
            raise SQLSyntaxError(f"expected '(' at byte {pos}")
        pos += 1
        row: list[Any] = []
        while True:
            m = match(line, pos)
            if m is None:
                raise SQLSyntaxError(f"bad value at byte {pos}")
            g = m.lastindex
            if g == 1:
                row.append(_unescape(m.group(1)).decode("utf-8", "replace"))
            elif g == 2:
                row.append(None)
            elif g == 3:
                row.append(int(m.group(3)))
            elif g == 4:
                row.append(float(m.group(4)))
            elif g == 5:
                row.append(_unescape(m.group(5)))
            else:
                row.append(bytes.fromhex(m.group(g).decode("ascii")))
            pos = m.end()
            if pos < n and line[pos] == 0x2C:  # "," -> next value
                pos += 1
                continue
            if pos < n and line[pos] == 0x29:  # ")" -> end of row
                pos += 1
                break
            raise SQLSyntaxError(f"expected ',' or ')' at byte {pos}")
        rows.append(tuple(row))
        while pos < n and line[pos] in b" \t\r\n":
            pos += 1
        if pos < n and line[pos] == 0x2C:
            pos += 1
            continue
        if pos < n and line[pos] == 0x3B:  # ";"
            if line[pos + 1 :].strip():
                raise SQLSyntaxError(f"unexpected text after ';' at byte {pos + 1}")
            return rows
        raise SQLSyntaxError(f"expected ',' or ';' after a row at byte {pos}")


def open_maybe_compressed(path: str | Path) -> tuple[BinaryIO, BinaryIO]:
    """Open ``path`` for binary reading, decompressing gzip/bz2 by their magic bytes (not the name).

    Returns (decompressed stream, raw file); ``raw.tell()`` is the compressed position, for progress bars.
    """
    path = Path(path)
    try:
        raw = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except OSError as e:
        raise InputError(f"{path}: cannot open ({e.strerror})") from None
    magic = raw.read(3)
    raw.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw
    if magic == b"BZh":
        return bz2.BZ2File(raw, mode="rb"), raw
    return io.BufferedReader(raw), raw  # type: ignore[arg-type]


@dataclass
class DumpStats:
    lines: int = 0
    insert_lines: int = 0
    rows: int = 0
    bad_lines: int = 0
    bad_rows: int = 0  # rows with the wrong number of columns
    rows_filtered: int = 0  # rows skipped by ``where`` (not converted)
    other_tables: set[str] = field(default_factory=set)
    first_errors: list[str] = field(default_factory=list)  # a few examples for the report

    def bad(self, msg: str) -> None:
        self.bad_lines += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(msg)


def iter_table_rows(
    path: str | Path,
    table: str,
    stats: DumpStats | None = None,
    on_progress: Callable[[int], None] | None = None,
    where: tuple[str, str] | None = None,
) -> Iterator[dict[str, Any] | tuple[Any, ...]]:
    """Yield the rows inserted into ``table`` as dicts keyed by column name.

    ``where=(column, value)``: only rows whose ``column`` is the string ``value`` (others are counted in
    ``stats.rows_filtered`` without being converted; without known column names every row is yielded).

    Column names come from the dump's ``CREATE TABLE`` (or the INSERT's own column list); if neither is
    present rows are yielded as plain tuples. Raises ``InputError`` if the file is not readable as a SQL
    dump or holds no statement for ``table`` at all. ``on_progress(compressed_bytes_read)`` is called
    every few lines.
    """
    path = Path(path)
    stats = stats if stats is not None else DumpStats()
    stream, raw = open_maybe_compressed(path)
    columns: list[str] | None = None
    in_create = False
    seen_table = False
    first_statement = True
    try:
        with stream, raw:
            for lineno, line in enumerate(stream, 1):
                stats.lines += 1
                if on_progress is not None and lineno % 64 == 0:
                    on_progress(raw.tell())
                if first_statement and line.strip():
                    # Fail at once on the wrong kind of file, not after streaming all of it.
                    first_statement = False
                    if not line.lstrip().upper().startswith(_SQL_STARTS):
                        raise InputError(f"{path}: not a SQL dump (line {lineno} starts with {line[:20]!r})")
                if in_create:
                    m = _COLUMN_DEF_RE.match(line)
                    if m:
                        columns.append(m.group(1).decode("utf-8"))  # type: ignore[union-attr]
                    elif line.lstrip().startswith(b")"):
                        in_create = False
                    continue
                if line.startswith(b"INSERT"):
                    m = _INSERT_RE.match(line)
                    if m is None:
                        stats.bad(f"line {lineno}: unreadable INSERT")
                        continue
                    name = m.group(1).decode("utf-8", "replace")
                    if name != table:
                        stats.other_tables.add(name)
                        continue
                    seen_table = True
                    stats.insert_lines += 1
                    cols = columns
                    if m.group(2):
                        cols = [c.strip().strip("`") for c in m.group(2).decode("utf-8").split(",")]
                    try:
                        if cols:
                            k = cols.index(where[0]) if where is not None and where[0] in cols else None
                            cond = (k, where[1].encode("utf-8")) if k is not None else None
                            rows = parse_rows(line, m.end(), len(cols), cond, stats)
                        else:
                            rows = parse_values(line, m.end())
                    except SQLSyntaxError as e:
                        stats.bad(f"line {lineno}: {e}")
                        continue
                    for row in rows:
                        if cols is None:
                            stats.rows += 1
                            yield row
                        elif len(row) != len(cols):
                            stats.bad_rows += 1
                        else:
                            stats.rows += 1
                            yield dict(zip(cols, row))
                elif line.startswith(b"CREATE TABLE"):
                    m = _CREATE_RE.match(line)
                    if m and m.group(1).decode("utf-8", "replace") == table:
                        seen_table = True
                        columns = []
                        in_create = True
            if on_progress is not None:
                on_progress(raw.tell())
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        # Decompression failures: a truncated or corrupt download, not a bad line.
        raise InputError(f"{path}: corrupt or truncated compressed file ({e})") from None
    if not seen_table:
        found = ", ".join(sorted(stats.other_tables)) or "none"
        raise InputError(f"{path}: no CREATE TABLE or INSERT for table `{table}` (tables found: {found})")
