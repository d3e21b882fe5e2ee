"""``python -m data_prep SUBCOMMAND ...``: the CLI only parses arguments and calls typed functions.

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and
``run_cli(args) -> int``; modules are imported lazily so ``--help`` is fast and one stage's
dependencies are never needed by another.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from data_prep.errors import InputError

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "extract": ("data_prep.extract", "Wikipedia XML dump -> pages-*.parquet, redirects.parquet, stats"),
    "make-multistream": ("data_prep.multistream", "Write a multistream .xml.bz2 and its index from an XML dump"),
    "interwiki": ("data_prep.interwiki", "page_props SQL dumps or Wikidata JSON -> (lang, title, qid) table"),
    "entity-vocab": ("data_prep.entity_vocab", "Count redirect-resolved link targets -> multilingual entity vocab"),
    "train-spm": ("data_prep.spm", "Train an XLM-R style sentencepiece unigram model on extracted corpora"),
    "shards": ("data_prep.shards", "Tokenise pages, align entity spans, pack -> datasets shards"),
    "run": ("data_prep.pipeline", "Run extract -> interwiki -> entity-vocab -> (train-spm) -> shards from a YAML config"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        # Arguments are added lazily (below) only for the chosen subcommand.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # First pass: find the subcommand; second pass: parse its own arguments.
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        parser.parse_args(argv)  # prints help or the "invalid choice" error and exits
        return 2
    name = argv[0]
    module_name, help_text = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            print(f"error: subcommand {name!r} is not implemented yet", file=sys.stderr)
            return 2
        raise
    sub_parser = argparse.ArgumentParser(prog=f"python -m data_prep {name}", description=help_text)
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    try:
        return int(module.run_cli(args) or 0)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
