#!/usr/bin/env bash
# The main job on the bundled sample, end to end (README, first command):
#   extract 7 languages -> interwiki -> entity vocabulary -> sentencepiece -> shards
#   -> stage-1 and stage-2 training with 2 DeepSpeed ranks (CPU here, GPUs where present)
#   -> export to Hugging Face -> evaluate -> masked-entity predictions with transformers.
# Everything lands in $RUN_DIR (default runs/sample); re-running skips finished data steps and resumes training.
# TRAIN_OVERRIDES="train.max_steps=20 ..." is appended to both training commands (the end-to-end test uses it).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash launch/setup.sh
PY=.venv/bin/python
RUN_DIR=${RUN_DIR:-runs/sample}
read -ra EXTRA <<<"${TRAIN_OVERRIDES:-}"
export WANDB_MODE=${WANDB_MODE:-offline} TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export NUM_GPUS=${NUM_GPUS:-2}   # 2 ranks: on a CPU-only machine these are gloo CPU ranks
step() { printf '\n== %s\n' "$*"; }

step "1/6 data: extract, interwiki, entity vocabulary, sentencepiece, shards"
$PY -m data_prep run --config configs/data/sample.yaml "out_dir=$RUN_DIR/data"

step "2/6 train stage 1 (entity side only)"
bash launch/train_single_node.sh configs/train/sample_stage1.yaml \
  "output_dir=$RUN_DIR/stage1" "data.shards=$RUN_DIR/data/shards" "${EXTRA[@]}"
step "3/6 train stage 2 (all parameters, from stage 1)"
bash launch/train_single_node.sh configs/train/sample_stage2.yaml \
  "output_dir=$RUN_DIR/stage2" "data.shards=$RUN_DIR/data/shards" "train.init_checkpoint=$RUN_DIR/stage1" "${EXTRA[@]}"

step "4/6 export to Hugging Face format"
$PY -m pretrain export --checkpoint "$RUN_DIR/stage2/checkpoints" --out "$RUN_DIR/hf"

step "5/6 evaluate (validation split + entity cloze prompts)"
$PY -m pretrain evaluate --checkpoint "$RUN_DIR/hf" --shards "$RUN_DIR/data/shards" --json "$RUN_DIR/eval.json"

step "6/6 masked-entity prediction with transformers' LukeForMaskedLM + MLukeTokenizer"
$PY -m pretrain.demo "$RUN_DIR/hf"

printf '\nquickstart: done in %ss -> data %s/data, checkpoints %s/stage{1,2}, HF model %s/hf, W&B runs (%s) in %s/stage*/wandb\n' \
  "$(( $(date +%s) - start ))" "$RUN_DIR" "$RUN_DIR" "$RUN_DIR" "$WANDB_MODE" "$RUN_DIR"
