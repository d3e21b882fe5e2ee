"""Atomic outputs: a killed run never leaves a half-written file that a later stage would read.

Everything is written under a temporary name in the destination directory, then renamed into place
with ``os.replace`` (atomic on POSIX within one filesystem).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it onto ``dest``.

    Works for files and for directories (the caller creates whatever it wants at the yielded path).
    On an exception the temporary is removed and ``dest`` is untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix + ".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_json(dest: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as pretty, key-sorted JSON atomically (sorted keys keep outputs byte-stable)."""
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_parquet(dest: str | os.PathLike, table, row_group_size: int | None = None) -> None:
    """Write a ``pyarrow.Table`` as parquet atomically."""
    import pyarrow.parquet as pq

    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
