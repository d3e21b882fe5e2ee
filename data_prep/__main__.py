"""``python -m data_prep SUBCOMMAND ...``: the CLI only parses arguments and calls typed functions."""

from __future__ import annotations

import sys

from data_prep.common.cli import dispatch

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "extract": ("data_prep.pages.extract", "Wikipedia XML dump -> pages-*.parquet, redirects.parquet, stats"),
    "make-multistream": ("data_prep.pages.multistream", "Write a multistream .xml.bz2 and its index from an XML dump"),
    "interwiki": ("data_prep.entities.interwiki", "page_props SQL dumps or Wikidata JSON -> (lang, title, qid) table"),
    "entity-vocab": ("data_prep.entities.entity_vocab", "Count redirect-resolved link targets -> multilingual entity vocab"),
    "train-spm": ("data_prep.shards.spm", "Train an XLM-R style sentencepiece unigram model on extracted corpora"),
    "shards": ("data_prep.shards.build", "Tokenise pages, align entity spans, pack -> datasets shards"),
    "run": ("data_prep.pipeline", "Run extract -> interwiki -> entity-vocab -> (train-spm) -> shards from a YAML config"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return dispatch("python -m data_prep", SUBCOMMANDS, argv, "Wikipedia dumps -> mLUKE training shards")


if __name__ == "__main__":
    sys.exit(main())
