#!/usr/bin/env bash
# Train on one machine with every GPU it has (or N CPU ranks where it has none).
#
#   launch/train_single_node.sh CONFIG [key.path=value ...] [--dry-run]
#
#   launch/train_single_node.sh configs/train/mluke_base_stage1.yaml
#   NUM_GPUS=4 launch/train_single_node.sh configs/train/mluke_base_stage1.yaml train.micro_batch_size=8
#   launch/train_single_node.sh configs/train/debug.yaml                  # CPU-only box: 2 gloo ranks
#
# Runs `deepspeed --num_gpus N --master_port P --module pretrain train --config CONFIG ...`.
# Environment:
#   NUM_GPUS       ranks (default: all visible GPUs; CPU-only: 2, or 1 on a 1-core machine)
#   MASTER_PORT    rendezvous port (default 29500; change it to run two jobs on one machine)
#   DS_ACCELERATOR=cpu forces CPU ranks even where GPUs exist (set automatically where there are none)
#   PYTHON         interpreter (default .venv/bin/python)
#   DRY_RUN=1      print the command instead of running it
# Running the same command again on the same output_dir resumes from its latest checkpoint.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $# -ge 1 && "$1" != -* ]] || launch_die "usage: $0 CONFIG [key.path=value ...] [--dry-run]"
CONFIG=$1
shift
[[ -f "$CONFIG" ]] || launch_die "$CONFIG: config file not found"

launch_setup_devices
launch_default MASTER_PORT 29500

launch_run "${DEEPSPEED_LAUNCHER[@]}" \
  --num_gpus "$LAUNCH_RANKS" \
  --master_port "$MASTER_PORT" \
  --module pretrain train --config "$CONFIG" "$@"
