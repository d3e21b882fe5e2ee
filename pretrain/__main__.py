"""``python -m pretrain SUBCOMMAND ...`` (train, export, evaluate).

The ``deepspeed`` launcher runs ``python -m pretrain --local_rank=N train ...``: the flag comes before
the subcommand, so it is taken out here and exported as ``LOCAL_RANK`` (which the launcher also sets).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from data_prep.errors import InputError

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("pretrain.train", "Train mLUKE with DeepSpeed (run under the deepspeed launcher or torchrun)"),
    "export": ("pretrain.export", "Export a DeepSpeed checkpoint to a Hugging Face LukeForMaskedLM directory"),
    "evaluate": ("pretrain.evaluate", "Masked-word / masked-entity metrics per language and entity cloze probes"),
}


def pop_local_rank(argv: list[str]) -> list[str]:
    """Remove ``--local_rank=N`` / ``--local_rank N`` (any position) and export it as LOCAL_RANK."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--local_rank=") or a.startswith("--local-rank="):
            os.environ.setdefault("LOCAL_RANK", a.split("=", 1)[1])
        elif a in ("--local_rank", "--local-rank") and i + 1 < len(argv):
            os.environ.setdefault("LOCAL_RANK", argv[i + 1])
            i += 1
        else:
            out.append(a)
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    argv = pop_local_rank(list(sys.argv[1:] if argv is None else argv))
    if not argv or argv[0] not in SUBCOMMANDS:
        parser = argparse.ArgumentParser(prog="python -m pretrain")
        sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
        for name, (_, help_text) in SUBCOMMANDS.items():
            sub.add_parser(name, help=help_text)
        parser.parse_args(argv)
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
    sub_parser = argparse.ArgumentParser(prog=f"python -m pretrain {name}", description=help_text)
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    try:
        return int(module.run_cli(args) or 0)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
