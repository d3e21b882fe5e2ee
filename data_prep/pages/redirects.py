"""Multi-hop redirect resolution for one wiki (``redirects.parquet`` of an extracted corpus)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from data_prep.common.errors import InputError


def read_redirects(corpus_dir: str | Path) -> dict[str, str]:
    """Read ``corpus_dir/redirects.parquet`` as {title: target} (both normalised, one hop)."""
    import pyarrow.parquet as pq

    path = Path(corpus_dir) / "redirects.parquet"
    if not path.is_file():
        raise InputError(f"{path}: missing (is {corpus_dir} the output of 'data_prep extract'?)")
    try:
        table = pq.ParquetFile(path).read(columns=["title", "target"])
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
        # A chain needing max_hops or more hops is treated like a loop (entity_vocab.resolve_titles
        # applies the same bound), whatever order the titles are visited in.
        self.max_hops = max_hops
        self._target: dict[str, tuple[str | None, int]] = {}  # redirect -> (final title | None, hops)
        for start in redirects:
            path: list[str] = []
            on_path: set[str] = set()
            node = start
            while True:
                if node in self._target:  # joins a chain resolved earlier
                    final, hops = self._target[node]
                    break
                if node not in redirects:  # not a redirect: the final target
                    final, hops = node, 0
                    break
                if node in on_path:  # a loop: nothing on this path reaches an article
                    final, hops = None, 0
                    break
                path.append(node)
                on_path.add(node)
                node = redirects[node]
            for title in reversed(path):
                hops += 1
                self._target[title] = (final, hops)
        self.loops: set[str] = {t for t, (final, hops) in self._target.items() if final is None or hops >= max_hops}

    def resolve(self, title: str) -> str | None:
        """The final target of ``title`` (``title`` itself if it is not a redirect); None inside a loop."""
        hit = self._target.get(title)
        if hit is None:
            return title
        return None if title in self.loops else hit[0]

    def is_redirect(self, title: str) -> bool:
        return title in self._target
