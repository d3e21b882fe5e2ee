#!/usr/bin/env bash
# Train on several machines listed in a DeepSpeed hostfile ("HOST slots=GPUS" per line, see
# launch/hostfile.example). Two ways to start it:
#
# 1) From ONE machine, which reaches the others by passwordless ssh (pdsh):
#      HOSTFILE=hostfile launch/train_multi_node.sh CONFIG [key.path=value ...]
#    DeepSpeed runs `cd $PWD; $PYTHON -m deepspeed.launcher.launch ...` on every host, so the repository,
#    the venv and the data must be at the same paths on all of them (a shared filesystem). Only a few
#    variables travel (NCCL_*, PYTHON*, UCX_*, ...): this script writes the others that matter into
#    ./.deepspeed_env (see below), which DeepSpeed reads and exports on every host.
#
# 2) On EVERY machine, with its node rank (no ssh; what launch/slurm_train.sbatch does):
#      HOSTFILE=hostfile NODE_RANK=k MASTER_ADDR=host0 launch/train_multi_node.sh CONFIG ...
#    Each machine starts its own ranks; the environment is the one each machine already has.
#
# Environment:
#   HOSTFILE      DeepSpeed hostfile (default ./hostfile)
#   MASTER_ADDR   address of the first host, reachable from all (default: first host of the hostfile)
#   MASTER_PORT   rendezvous port (default 29500)
#   NODE_RANK     this machine's index in the hostfile: selects mode 2 (SLURM_NODEID is used when
#                 NO_SSH=1 and NODE_RANK is unset)
#   NUM_GPUS      ranks on EVERY node (default: each host's slots in the hostfile)
#   DS_LAUNCHER   pdsh (default) | openmpi | mvapich | mpich | impi | slurm  (mode 1 only)
#   SSH_PORT      ssh port for pdsh (mode 1 only)
#   DS_ENV_EXTRA  space-separated names of further variables to put in .deepspeed_env
#   DS_ENV_SECRETS=1  also write WANDB_API_KEY / HF_TOKEN there (by default they are left out: a file in
#                 the working directory is no place for a secret; use `wandb login` / `huggingface-cli
#                 login`, whose files in a shared $HOME every node reads)
#   DRY_RUN=1     print the command (and write nothing) instead of running it
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Variables every rank needs, whatever node it runs on. DeepSpeed already forwards NCCL_*, PYTHON*,
# UCX_*, MV2_* and MLFLOW_*; these are the rest (W&B settings, caches, our device choice).
DS_ENV_PREFIXES=(WANDB_ HF_ TRANSFORMERS_ TORCH_ CUDA_ NCCL_ PYTHONPATH DS_ACCELERATOR OMP_NUM_THREADS
  TOKENIZERS_PARALLELISM PYTHONUNBUFFERED PYTHONFAULTHANDLER PYTORCH_CUDA_ALLOC_CONF)
DS_ENV_SECRET_NAMES=(WANDB_API_KEY HF_TOKEN HUGGING_FACE_HUB_TOKEN)

# write_deepspeed_env FILE: KEY=VALUE lines, nothing else (DeepSpeed's reader takes every line as one
# assignment: no comments, no blank lines). Rewritten at every launch from the launching shell, so it
# never carries a stale value; put hand-written extras in ~/.deepspeed_env (also read, earlier).
write_deepspeed_env() {
  local file=$1 name prefix tmp keep
  tmp=$(mktemp "${file}.XXXXXX")
  chmod 600 "$tmp"
  while IFS= read -r name; do
    keep=0
    for prefix in "${DS_ENV_PREFIXES[@]}" ${DS_ENV_EXTRA:-}; do
      if [[ "$name" == "$prefix"* ]]; then keep=1; fi
    done
    if [[ "${DS_ENV_SECRETS:-0}" != "1" ]]; then
      for prefix in "${DS_ENV_SECRET_NAMES[@]}"; do
        if [[ "$name" == "$prefix" ]]; then keep=0; fi
      done
    fi
    # A value spanning lines cannot be written as one line; CUDA_VISIBLE_DEVICES is set per node by
    # DeepSpeed itself and must not travel.
    if [[ "$name" == CUDA_VISIBLE_DEVICES || "${!name}" == *$'\n'* ]]; then keep=0; fi
    if ((keep)); then printf '%s=%s\n' "$name" "${!name}" >>"$tmp"; fi
  done < <(compgen -e | LC_ALL=C sort)
  mv -f "$tmp" "$file"
}

# read_hostfile FILE: fills HOSTS and SLOTS (comments and blank lines skipped), checking what DeepSpeed
# would reject later, on every node, with a traceback.
read_hostfile() {
  local file=$1 host rest seen
  [[ -f "$file" ]] || launch_die "$file: hostfile not found (one 'HOST slots=N' line per node; see launch/hostfile.example)"
  HOSTS=()
  SLOTS=()
  while read -r host rest; do
    if [[ -z "$host" || "$host" == \#* ]]; then continue; fi
    [[ "$rest" =~ ^slots=([0-9]+) ]] || launch_die "$file: line for '$host' is not 'HOST slots=N'"
    for seen in "${HOSTS[@]}"; do
      if [[ "$seen" == "$host" ]]; then launch_die "$file: $host is listed twice"; fi
    done
    HOSTS+=("$host")
    SLOTS+=("${BASH_REMATCH[1]}")
  done <"$file"
  ((${#HOSTS[@]} > 0)) || launch_die "$file: no hosts listed"
}

main() {
  [[ $# -ge 1 && "$1" != -* ]] || launch_die "usage: $0 CONFIG [key.path=value ...] [--dry-run]"
  local config=$1
  shift
  [[ -f "$config" ]] || launch_die "$config: config file not found"
  HOSTFILE=${HOSTFILE:-hostfile}
  read_hostfile "$HOSTFILE"

  if [[ -z "${NODE_RANK:-}" && "${NO_SSH:-0}" == "1" ]]; then
    NODE_RANK=${SLURM_NODEID:-}
    [[ -n "$NODE_RANK" ]] || launch_die "NO_SSH=1 needs NODE_RANK (or SLURM_NODEID)"
  fi

  # --num_gpus overrides the slots of EVERY host in the world DeepSpeed builds from the hostfile, so it
  # is passed only when asked for; otherwise the hostfile's slots rule (and may differ between hosts).
  local user_num_gpus=${NUM_GPUS:-} num_gpus_args=()
  if [[ -n "$user_num_gpus" ]]; then num_gpus_args=(--num_gpus "$user_num_gpus"); fi

  if [[ -n "${NODE_RANK:-}" ]]; then
    [[ "$NODE_RANK" =~ ^[0-9]+$ && "$NODE_RANK" -lt ${#HOSTS[@]} ]] ||
      launch_die "NODE_RANK=$NODE_RANK is not a node of $HOSTFILE (0..$((${#HOSTS[@]} - 1)))"
    # This machine runs its own ranks: look at its devices (CPU fallback, threads per rank).
    NUM_GPUS=${user_num_gpus:-${SLOTS[$NODE_RANK]}} launch_setup_devices
  else
    # The ranks run on the other hosts, whose devices this (possibly GPU-less login) machine cannot
    # see: set the device-independent defaults, and the GPU ones unless DS_ACCELERATOR=cpu says CPU.
    launch_common_env
    if [[ "${DS_ACCELERATOR:-}" == "cpu" ]]; then LAUNCH_ENV_VARS+=(DS_ACCELERATOR); else launch_gpu_env; fi
  fi
  launch_default MASTER_ADDR "${HOSTS[0]}"
  launch_default MASTER_PORT 29500

  local args=(--hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT")
  if [[ -n "${NODE_RANK:-}" ]]; then
    # Mode 2: this machine only; every node runs the same line with its own --node_rank.
    args+=(--no_ssh --node_rank "$NODE_RANK" "${num_gpus_args[@]}")
    launch_log "node $NODE_RANK of ${#HOSTS[@]} (${HOSTS[$NODE_RANK]}), $LAUNCH_RANKS rank(s), master $MASTER_ADDR:$MASTER_PORT"
  else
    args+=(--launcher "${DS_LAUNCHER:-pdsh}" "${num_gpus_args[@]}")
    if [[ -n "${SSH_PORT:-}" ]]; then args+=(--ssh_port "$SSH_PORT"); fi
    if [[ "${DRY_RUN:-0}" == "1" ]]; then
      launch_log "would write ./.deepspeed_env"
    else
      write_deepspeed_env .deepspeed_env
      launch_log "wrote ./.deepspeed_env ($(wc -l <.deepspeed_env) variables) for the ${#HOSTS[@]} hosts"
    fi
  fi
  launch_run "${DEEPSPEED_LAUNCHER[@]}" "${args[@]}" --module pretrain train --config "$config" "$@"
}

# Run when executed; only define the functions when sourced (tests).
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
