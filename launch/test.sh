#!/usr/bin/env bash
# The project's test command (README, .ci/run): install into .venv, then run the whole suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
export DS_ACCELERATOR=cpu WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -m "not gpu" "$@"
