"""Multi-hop redirect resolution for one wiki (``redirects.parquet`` of an extracted corpus)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from data_prep.errors import InputError


def read_redirects(corpus_dir: str | Path) -> dict[str, str]:
    """Read ``corpus_dir/redirects.parquet`` as {title: target} (both normalised, one hop)."""
    import pyarrow.parquet as pq

    path = Path(corpus_dir) / "redirects.parquet"
    if not path.is_file():
        raise InputError(f"{path}: missing (is {corpus_dir} the output of 'data_prep extract'?)")
    try:
        table = pq.read_table(path, columns=["title", "target"])
    except Exception as e:  # pyarrow raises several types for a broken file
        raise InputError(f"{path}: not a readable redirects table ({e})") from None
    return dict(zip(table.column("title").to_pylist(), table.column("target").to_pylist()))


class RedirectResolver:
    """Follows redirect chains to their final target.

    Wikipedia allows only single redirects, but dumps are snapshots taken while editors fix double
    redirects, so chains (A -> B -> C) occur and must be followed; loops (A -> B -> A) have no target.
    The closure is computed once, so ``resolve`` is one dict lookup.
    """

    def __init__(self, redirects: Mapping[str, str], max_hops: int = 16):
        self.loops: set[str] = set()
        self._final: dict[str, str | None] = {}
        for start in redirects:
            if start in self._final:
                continue
            path = [start]
            seen = {start}
            final: str | None = None
            node = start
            for _ in range(max_hops):
                nxt = redirects.get(node)
                if nxt is None:  # node is not a redirect: it is the final target
                    final = node
                    break
                if nxt in self._final:  # joins a chain resolved earlier
                    final = self._final[nxt]
                    break
                if nxt in seen:  # loop
                    break
                path.append(nxt)
                seen.add(nxt)
                node = nxt
            for t in path:
                if t in redirects:
                    self._final[t] = final
                    if final is None:
                        self.loops.add(t)

    def resolve(self, title: str) -> str | None:
        """The final target of ``title`` (``title`` itself if it is not a redirect); None inside a loop."""
        return self._final.get(title, title)

    def is_redirect(self, title: str) -> bool:
        return title in self._final
