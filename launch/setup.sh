#!/usr/bin/env bash
# Creates .venv (once) and installs the project into it.
# torch goes first and alone: a plain "torch" requirement resolved by pip would pull the
# multi-GB CUDA build; with a torch already installed that satisfies the range, nothing more comes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check "$TORCH_SPEC"
fi
stamp=.venv/.mluke-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "is ignored: it is neither" || true
  .venv/bin/python -c "import torch, deepspeed, transformers, datasets, sentencepiece, mwparserfromhell, wandb" \
    2>/dev/null || { echo "setup: dependency install failed" >&2; exit 1; }
  touch "$stamp"
fi
# CPU ranks (no GPU here): DeepSpeed compiles its shared-memory communication op with g++ on first use
# (about a minute, cached in ~/.cache/torch_extensions). Build it now, once, rather than inside the first
# training run or test, where it would eat into the process-group timeout.
if ! command -v nvidia-smi >/dev/null 2>&1 || [ "${DS_ACCELERATOR:-}" = cpu ]; then
  DS_ACCELERATOR=cpu .venv/bin/python -c "
from deepspeed.accelerator import get_accelerator
get_accelerator().create_op_builder('ShareMemCommBuilder').load(verbose=False)" >/dev/null 2>&1 \
    || echo "setup: note: DeepSpeed's CPU communication op did not build; CPU runs will build it themselves" >&2
fi
