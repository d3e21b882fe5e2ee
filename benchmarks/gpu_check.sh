#!/usr/bin/env bash
# One command that checks a GPU node, in at most 8 minutes on one H200 (offline, on the node's image):
#
#     bash benchmarks/gpu_wheels.sh     # first, on a machine with PyPI: builds the wheelhouse .whl/
#     bash benchmarks/gpu_check.sh      # then on the GPU node, from a copy of the repository with .whl/
#
# Parts, each under its own timeout so one hang cannot eat the budget:
#   install      a venv (.gpuenv) that sees the image's packages, filled from .whl/ with --no-index;
#                the image's torch stays (checked: same version before and after)
#   tests        tests/test_gpu.py (marker gpu): ZeRO-3 bf16 stage 1 with activation checkpointing ->
#                ZeRO-1 bf16 stage 2, stopped and resumed; fp16; DS_ACCELERATOR=cpu on a GPU machine;
#                train.compile with FlexAttention against eager SDPA
#   mluke-base   benchmarks/bench_model.py --device cuda --dtype bf16 at mluke-base shape (ours and
#   mluke-large  transformers.LukeForMaskedLM): tokens/s, MFU, peak memory, host syncs, attention kernel
# then one summary table. Logs and results: OUT (default runs/gpu_check/<UTC time>/).
#
# Options:
#   --only PARTS     comma-separated subset of: install,tests,mluke-base,mluke-large
#   --skip-install   use PYTHON as it is (an image that already has every package)
#   --budget S       total seconds (default 480); a part never runs past what is left
#   --dry-run        print the commands, run nothing
#   -h, --help
# Variables: PYTHON (the image's interpreter, default python3), WHEELHOUSE (.whl), VENV (.gpuenv), OUT.
set -uo pipefail  # no -e: a failed part is recorded and the next one runs

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
PY=${PYTHON:-python3}
WHEELHOUSE=${WHEELHOUSE:-.whl}
VENV=${VENV:-.gpuenv}
BUDGET=480
ALL_PARTS=(install tests mluke-base mluke-large)
# Seconds each part may take at most (they add up to 470: the rest is for start-up and the summary).
declare -A LIMIT=([install]=50 [tests]=240 [mluke-base]=75 [mluke-large]=105)
PARTS=$(IFS=,; echo "${ALL_PARTS[*]}")
DRY=0
SKIP_INSTALL=0

usage() { sed -n '2,/^set /p' "${BASH_SOURCE[0]}" | sed -e '/^set /d' -e 's/^# \{0,1\}//'; }
die() { echo "error: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --only) [[ $# -ge 2 ]] || die "--only needs a value"; PARTS=$2; shift 2 ;;
    --only=*) PARTS=${1#*=}; shift ;;
    --skip-install) SKIP_INSTALL=1; shift ;;
    --budget) [[ $# -ge 2 ]] || die "--budget needs a value"; BUDGET=$2; shift 2 ;;
    --budget=*) BUDGET=${1#*=}; shift ;;
    --dry-run) DRY=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
[[ $BUDGET =~ ^[0-9]+$ ]] || die "--budget must be a whole number of seconds, got '$BUDGET'"
IFS=, read -r -a SELECTED <<< "$PARTS"
[[ ${#SELECTED[@]} -gt 0 ]] || die "--only: no part given"
for p in "${SELECTED[@]}"; do
  [[ " ${ALL_PARTS[*]} " == *" $p "* ]] || die "--only: unknown part '$p' (parts: ${ALL_PARTS[*]})"
done
wants() { [[ ",$PARTS," == *",$1,"* && ! ($1 == install && $SKIP_INSTALL == 1) ]]; }

OUT=${OUT:-runs/gpu_check/$(date -u +%Y%m%d-%H%M%S)}
START=$SECONDS
if [[ $DRY == 0 ]]; then
  mkdir -p "$OUT" || exit 2
  : > "$OUT/parts.tsv"
fi

# The project from this checkout, nothing from the network, the GPU not hidden by an inherited setting.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export WANDB_MODE=disabled WANDB_SILENT=true HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
# As launch/common.sh sets it for GPU ranks: the allocator the trainer runs with (less fragmentation).
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
unset DS_ACCELERATOR

# left DEFAULT: a part's time limit, DEFAULT or what remains of the budget if less.
left() {
  local remaining=$((BUDGET - (SECONDS - START)))
  (( remaining < $1 )) && echo "$remaining" || echo "$1"
}

record() {  # record NAME RC SECONDS NOTE
  [[ $DRY == 1 ]] || printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$OUT/parts.tsv"
}

# part NAME CMD...: run CMD under NAME's time limit, output shown and kept in OUT/NAME.log.
part() {
  local name=$1 limit t0=$SECONDS rc
  shift
  limit=$(left "${LIMIT[$name]}")
  if [[ $DRY == 1 ]]; then
    printf '+ timeout %s' "$limit"; printf ' %q' "$@"; printf '\n'
    return 0
  fi
  if (( limit < 10 )); then
    record "$name" 124 0 "not started: the budget was spent"
    return 124
  fi
  echo "=== $name (at most ${limit}s)"
  # timeout signals the whole process group: the benchmark's and the tests' child processes go too.
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  rc=${PIPESTATUS[0]}
  record "$name" "$rc" $((SECONDS - t0)) ""
  return "$rc"
}

torch_version() { "$1" -c 'import torch; print(torch.__version__)' 2>/dev/null; }

# Install: a venv whose site-packages come first, then every sys.path folder of the image's interpreter
# (added with site.addsitedir, so their .pth files work too). Unlike --system-site-packages this also
# works when the image's own Python is a venv or a conda env. pip sees the image's packages as installed
# and adds only what is missing or too old; torch is pinned to the image's version by a constraint.
install() {
  local t0=$SECONDS before after vpy site_dir limit wanted pip=() rc=0
  before=$(torch_version "$PY") || { record install 2 $((SECONDS - t0)) "$PY cannot import torch"; return 2; }
  [[ -f $WHEELHOUSE/requirements.txt ]] || {
    record install 2 $((SECONDS - t0)) "no $WHEELHOUSE/requirements.txt: run benchmarks/gpu_wheels.sh where PyPI is reachable and copy $WHEELHOUSE here"
    return 2
  }
  # A wheelhouse built for other requirements (pyproject.toml changed since) would install the wrong set.
  if wanted=$("$PY" benchmarks/gpu_check.py requirements 2>/dev/null) &&
     [[ $wanted != "$(cat "$WHEELHOUSE/requirements.txt")" ]]; then
    record install 2 $((SECONDS - t0)) "$WHEELHOUSE is stale (pyproject.toml's requirements changed): rebuild it with benchmarks/gpu_wheels.sh"
    return 2
  fi
  echo "=== install (torch $before from the image)"
  # Without pip of its own: the pip (and setuptools, which torch requires) that ensurepip would put in the
  # venv would hide the image's. The image's pip installs into it (--python); ensurepip only if it has none.
  if [[ ! -x $VENV/bin/python ]]; then
    "$PY" -m venv --without-pip "$VENV" || { record install 2 $((SECONDS - t0)) "$PY -m venv failed"; return 2; }
  fi
  vpy=$VENV/bin/python
  site_dir=$("$vpy" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  "$PY" - > "$site_dir/_image_packages.pth" <<'EOF'
import os, sys, sysconfig
stdlib = os.path.realpath(sysconfig.get_paths()["stdlib"])
for p in sys.path:
    real = os.path.realpath(p) if p else ""
    if real and os.path.isdir(real) and (real.endswith(("site-packages", "dist-packages")) or not real.startswith(stdlib)):
        print(f"import site; site.addsitedir({real!r})")
EOF
  if "$PY" -m pip --python "$vpy" --version >/dev/null 2>&1; then
    pip=("$PY" -m pip --python "$vpy")
  else
    "$vpy" -m pip --version >/dev/null 2>&1 || "$vpy" -m ensurepip --default-pip >/dev/null
    pip=("$vpy" -m pip)
  fi
  echo "torch==$before" > "$VENV/torch-constraint.txt"
  limit=$(left "${LIMIT[install]}")
  (( limit >= 10 )) || { record install 124 $((SECONDS - t0)) "the budget was spent"; return 124; }
  timeout -k 10 "$limit" "${pip[@]}" install --no-index --find-links "$WHEELHOUSE" \
    --constraint "$VENV/torch-constraint.txt" --disable-pip-version-check --no-warn-script-location \
    -r "$WHEELHOUSE/requirements.txt" 2>&1 | tee "$OUT/install.log"
  rc=${PIPESTATUS[0]}
  after=$(torch_version "$vpy")
  if [[ $after != "$before" ]]; then
    record install 3 $((SECONDS - t0)) "torch changed: $before -> ${after:-not importable}"
    return 3
  fi
  record install "$rc" $((SECONDS - t0)) "torch $before unchanged"
  VPY=$vpy
  return "$rc"
}

# The interpreter of the later parts: the venv once installed (or from an earlier run), else the image's.
VPY=$PY
if [[ $SKIP_INSTALL == 0 && -x $VENV/bin/python ]]; then VPY=$VENV/bin/python; fi
if wants install; then
  if [[ $DRY == 1 ]]; then
    echo "+ $PY -m venv --without-pip $VENV"
    echo "+ $PY -m pip --python $VENV/bin/python install --no-index --find-links $WHEELHOUSE --constraint $VENV/torch-constraint.txt -r $WHEELHOUSE/requirements.txt"
    VPY=$VENV/bin/python
  else
    install
  fi
fi

if [[ $DRY == 0 ]]; then
  "$VPY" - > "$OUT/environment.txt" 2>&1 <<'EOF'
import importlib.metadata as md, platform
try:
    import torch
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    gpu += f"; torch {torch.__version__} (CUDA {torch.version.cuda})"
except Exception as e:  # still name the rest
    gpu = f"torch: {type(e).__name__}: {e}"
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "missing"
pkgs = ", ".join(f"{n} {version(n)}" for n in ("deepspeed", "transformers", "tokenizers", "datasets", "wandb"))
print(f"{gpu}; Python {platform.python_version()}; {pkgs}")
EOF
  cat "$OUT/environment.txt"
fi

# Without a CUDA device the tests would all be skipped (and pass) and the benchmark fail: say so instead.
if [[ $DRY == 0 ]] && ! "$VPY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
  for p in tests mluke-base mluke-large; do
    if wants "$p"; then record "$p" 2 0 "not run: torch sees no CUDA device"; fi
  done
  PARTS=install
fi

if wants tests; then
  part tests "$VPY" -m pytest tests/test_gpu.py -m gpu -v -p no:cacheprovider --junitxml "$OUT/tests.xml"
fi

# bench NAME SHAPE_ARGS...: 512 words, 128 entities, 250k words, 1.2M entities, bf16; batch 16 x 2
# accumulated (the AdamW update of the big tables is paid once per 2 micro-batches, as in pretraining).
bench() {
  local name=$1 per_model
  shift
  per_model=$((($(left "${LIMIT[$name]}") - 6) / 2))  # ours, then LukeForMaskedLM; python start-up aside
  part "$name" "$VPY" benchmarks/bench_model.py --device cuda --dtype bf16 --seq 512 --entities 128 \
    --vocab 250002 --entity-vocab 1200000 --batch 16 --accum 2 --warmup 2 --steps 8 "$@" \
    --timeout "$per_model" --json "$OUT/bench_$name.json"
}
if wants mluke-base; then bench mluke-base --hidden 768 --layers 12 --heads 12 --intermediate 3072; fi
if wants mluke-large; then bench mluke-large --hidden 1024 --layers 24 --heads 16 --intermediate 4096; fi

[[ $DRY == 1 ]] && exit 0
echo
echo "=== summary ($OUT)"
"$PY" benchmarks/gpu_check.py summary "$OUT" | tee "$OUT/summary.txt"
awk -F '\t' '$2 != 0 { failed = 1 } END { exit failed }' "$OUT/parts.tsv"
