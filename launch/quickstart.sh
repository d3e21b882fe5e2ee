#!/usr/bin/env bash
# The main job on the bundled sample, end to end (README, first command):
#   extract 7 languages -> interwiki -> entity vocabulary -> sentencepiece -> shards
#   -> stage-1 and stage-2 training with 2 DeepSpeed ranks (CPU here, GPUs where present)
#   -> export to Hugging Face -> evaluate -> masked-entity predictions with transformers.
# Everything lands in runs/sample/; re-running skips finished data steps and resumes training.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash launch/setup.sh
PY=.venv/bin/python
export WANDB_MODE=${WANDB_MODE:-offline} TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export NUM_GPUS=${NUM_GPUS:-2}   # 2 ranks: on a CPU-only machine these are gloo CPU ranks
step() { printf '\n== %s\n' "$*"; }

step "1/6 data: extract, interwiki, entity vocabulary, sentencepiece, shards"
$PY -m data_prep run --config configs/data/sample.yaml

step "2/6 train stage 1 (entity side only)"
bash launch/train_single_node.sh configs/train/sample_stage1.yaml
step "3/6 train stage 2 (all parameters, from stage 1)"
bash launch/train_single_node.sh configs/train/sample_stage2.yaml

step "4/6 export to Hugging Face format"
$PY -m pretrain export --checkpoint runs/sample/stage2/checkpoints --out runs/sample/hf

step "5/6 evaluate (validation split + entity cloze prompts)"
$PY -m pretrain evaluate --checkpoint runs/sample/hf --shards runs/sample/data/shards --json runs/sample/eval.json

step "6/6 masked-entity prediction with transformers' LukeForMaskedLM + MLukeTokenizer"
$PY -m pretrain.demo runs/sample/hf

printf '\nquickstart: done in %ss; data runs/sample/data, checkpoints runs/sample/stage{1,2}, HF model runs/sample/hf, W&B (%s) runs under wandb/\n' \
  "$(( $(date +%s) - start ))" "$WANDB_MODE"
