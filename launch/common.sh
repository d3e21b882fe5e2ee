# Shared by launch/train_single_node.sh, launch/train_multi_node.sh and the SLURM scripts.
# Sourced, never run. Defines the repository root, the Python interpreter, the deepspeed launcher,
# device detection, environment defaults and `launch_run` (which honours DRY_RUN=1).
#
# Variables read (all optional):
#   MLUKE_ROOT   repository root (default: the parent of this file's directory)
#   PYTHON       interpreter (default: $MLUKE_ROOT/.venv/bin/python, else python3 on PATH)
#   NUM_GPUS     ranks per node (GPUs; on a CPU-only machine: CPU ranks, default 2)
#   DRY_RUN=1    print the command that would run (prefixed by "+ ") instead of running it

MLUKE_ROOT=${MLUKE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$MLUKE_ROOT/.venv/bin/python" ]]; then PYTHON=$MLUKE_ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
# `python -m deepspeed.launcher.runner` is what the `deepspeed` console script runs. Calling it through
# our interpreter pins the venv: the launcher starts every rank with its own sys.executable.
# shellcheck disable=SC2034  # used by the scripts that source this file
DEEPSPEED_LAUNCHER=("$PYTHON" -u -m deepspeed.launcher.runner)

# Names of the variables these scripts set or default; DRY_RUN prints them in front of the command.
LAUNCH_ENV_VARS=()

launch_log() { echo "[launch] $*" >&2; }
launch_die() { echo "error: $*" >&2; exit 2; }

# launch_default NAME VALUE: export NAME=VALUE unless NAME is set and not empty (the caller wins).
launch_default() {
  local name=$1 value=$2
  if [[ -z "${!name:-}" ]]; then export "$name=$value"; fi
  LAUNCH_ENV_VARS+=("$name")
}

# Number of visible CUDA GPUs on this machine (0 when none). nvidia-smi is fast; without it, ask torch
# (covers ROCm builds too). CUDA_VISIBLE_DEVICES narrows the count as it narrows what torch sees.
launch_count_gpus() {
  local n=0
  if command -v nvidia-smi >/dev/null 2>&1; then
    n=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
  else
    n=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
    echo "${n:-0}"
    return
  fi
  if [[ -n "${CUDA_VISIBLE_DEVICES+x}" && "$n" -gt 0 ]]; then
    local mask=${CUDA_VISIBLE_DEVICES//[[:space:]]/} visible=0
    if [[ -n "$mask" && "$mask" != "-1" ]]; then
      IFS=, read -ra ids <<<"$mask"
      visible=${#ids[@]}
    fi
    if ((visible < n)); then n=$visible; fi
  fi
  echo "${n:-0}"
}

# Defaults for any rank, CPU or GPU.
launch_common_env() {
  launch_default TOKENIZERS_PARALLELISM false
  launch_default PYTHONUNBUFFERED 1
  # Python tracebacks of every thread on SIGSEGV/SIGABRT (e.g. NCCL aborts): a dead rank says where.
  launch_default PYTHONFAULTHANDLER 1
}

# Defaults for GPU ranks.
launch_gpu_env() {
  # A rank that dies or times out in a collective tears the job down instead of leaving the others
  # hanging until the process-group timeout (deepspeed.timeout_s) on every rank.
  launch_default TORCH_NCCL_ASYNC_ERROR_HANDLING 1
  launch_default NCCL_DEBUG WARN
  # Growable allocator segments: micro-batches of varying length (and ZeRO's gather/release of buckets)
  # otherwise fragment the cache until an out-of-memory error with many GiB reserved but free.
  launch_default PYTORCH_CUDA_ALLOC_CONF expandable_segments:True
}

# Decide CPU or GPU for THIS machine, the ranks it runs (LAUNCH_RANKS) and the environment defaults.
# DS_ACCELERATOR=cpu in the environment forces CPU even where GPUs exist.
launch_setup_devices() {
  local gpus
  if [[ "${DS_ACCELERATOR:-}" == "cpu" ]]; then
    gpus=0
  else
    gpus=$(launch_count_gpus)
  fi
  local cores
  cores=$(nproc 2>/dev/null || echo 1)
  if ((gpus == 0)); then
    # No GPU: DeepSpeed's CPU accelerator with the gloo backend (bf16 or fp32; fp16 needs a GPU).
    launch_default DS_ACCELERATOR cpu
    LAUNCH_RANKS=${NUM_GPUS:-$((cores >= 2 ? 2 : 1))}
    launch_log "no GPU found: DS_ACCELERATOR=$DS_ACCELERATOR, $LAUNCH_RANKS CPU rank(s) on this node"
  else
    LAUNCH_RANKS=${NUM_GPUS:-$gpus}
    ((LAUNCH_RANKS <= gpus)) ||
      launch_die "$LAUNCH_RANKS rank(s) asked for (NUM_GPUS, or this node's slots in the hostfile) but only $gpus GPU(s) visible on $(hostname)"
    launch_gpu_env
  fi
  [[ "$LAUNCH_RANKS" =~ ^[1-9][0-9]*$ ]] || launch_die "NUM_GPUS must be a positive integer, got '$LAUNCH_RANKS'"
  # One BLAS/OpenMP pool per rank sized to its share of the cores (torch otherwise takes all of them in
  # every rank and the ranks fight over the cores; this matters most for the CPU runs).
  launch_default OMP_NUM_THREADS $((cores / LAUNCH_RANKS > 0 ? cores / LAUNCH_RANKS : 1))
  launch_common_env
}

# launch_run CMD...: run CMD (exec, so signals reach the launcher), or print it with DRY_RUN=1.
launch_run() {
  if [[ "${DRY_RUN:-0}" == "1" ]]; then
    local prefix="" name
    for name in "${LAUNCH_ENV_VARS[@]}"; do
      prefix+="$name=$(printf '%q' "${!name}") "
    done
    echo "+ ${prefix}$(printf '%q ' "$@")"
    return 0
  fi
  exec "$@"
}
