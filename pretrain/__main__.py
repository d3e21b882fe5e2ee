"""``python -m pretrain SUBCOMMAND ...`` (train, export, evaluate, data-stats).

The ``deepspeed`` launcher runs ``python -m pretrain --local_rank=N train ...``: the flag comes before
the subcommand, so it is taken out here and exported as ``LOCAL_RANK`` (which the launcher also sets).
"""

from __future__ import annotations

import os
import sys

from data_prep.common.cli import dispatch

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("pretrain.train", "Train mLUKE with DeepSpeed (run under the deepspeed launcher or torchrun)"),
    "export": ("pretrain.export", "Export a DeepSpeed checkpoint to a Hugging Face LukeForMaskedLM directory"),
    "evaluate": ("pretrain.evaluate", "Masked-word / masked-entity metrics per language and entity cloze probes"),
    "data-stats": ("pretrain.data_stats", "What the trainer will see per language: sampling, lengths, masking, padding"),
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
    return dispatch("python -m pretrain", SUBCOMMANDS, argv, "mLUKE pretraining, export and evaluation")


if __name__ == "__main__":
    sys.exit(main())
