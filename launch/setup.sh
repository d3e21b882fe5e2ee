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
