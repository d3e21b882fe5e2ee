#!/usr/bin/env bash
# Build the wheelhouse that benchmarks/gpu_check.sh installs from on an offline GPU node.
#
#     bash benchmarks/gpu_wheels.sh        # on a machine with PyPI and this project's .venv
#
# The node's image (Python 3.12, x86-64) brings its own CUDA torch, transformers, sentencepiece, pyarrow
# and numpy. The wheelhouse (.whl/, git-ignored, under 60 MiB) holds the rest of what pyproject.toml
# needs: DeepSpeed 0.19.8 (PyPI has only its sdist: built here as a py3-none-any wheel without compiled
# ops, which DeepSpeed compiles at run time when asked), datasets, wandb, mwparserfromhell, the pinned
# transformers and tokenizers, pytest, and the dependencies of these that the image may lack; plus
# requirements.txt, the list gpu_check.sh installs. Copy it to the node with the repository.
#
# Variables (all optional):
#   WHEELHOUSE       output folder (default .whl)
#   BUILD_PYTHON     builds the DeepSpeed wheel; needs torch (default .venv/bin/python)
#   DOWNLOAD_PYTHON  runs `pip download`; a Python 3.12, so that environment markers are evaluated as
#                    on the image (default python3.12 if it runs, else BUILD_PYTHON with a warning)
#   IMAGE_HAS        projects the image is known to have: their wheels are left out (default below)
#   MAX_MIB          size limit (default 60)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WHEELHOUSE=${WHEELHOUSE:-.whl}
BUILD_PYTHON=${BUILD_PYTHON:-.venv/bin/python}
MAX_MIB=${MAX_MIB:-60}
DEEPSPEED_VERSION=0.19.8
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64)
# What the image has, and why the pinned stack is content with its versions: numpy, pyarrow and
# sentencepiece by its description; tokenizers, regex, safetensors, pyyaml, tqdm, packaging, typer (and
# typer's rich, pygments, markdown-it-py, mdurl, shellingham, annotated-doc) because its transformers
# 5.17 requires them within the same bounds as 5.23; filelock and typing-extensions because torch does.
# huggingface-hub, hf-xet, fsspec and click stay in: 5.23 and datasets ask for newer or capped versions.
IMAGE_HAS=${IMAGE_HAS:-"numpy pyarrow sentencepiece tokenizers regex safetensors pyyaml tqdm packaging typer rich
pygments markdown-it-py mdurl shellingham annotated-doc filelock typing-extensions"}

if [[ -z "${DOWNLOAD_PYTHON:-}" ]]; then
  if python3.12 -V >/dev/null 2>&1; then
    DOWNLOAD_PYTHON=python3.12
  else
    DOWNLOAD_PYTHON=$BUILD_PYTHON
    echo "warning: no python3.12 here: environment markers are evaluated for $("$BUILD_PYTHON" -V 2>&1)" >&2
  fi
fi
"$BUILD_PYTHON" -c 'import torch' 2>/dev/null || { echo "error: $BUILD_PYTHON cannot import torch (set BUILD_PYTHON)" >&2; exit 2; }

# Built in a scratch folder and moved into place at the end: an interrupted run leaves no half wheelhouse.
partial="$WHEELHOUSE.partial"
rm -rf "$partial"
mkdir -p "$partial"

echo "[wheels] building deepspeed $DEEPSPEED_VERSION (sdist -> py3-none-any, no compiled ops)"
# DS_ACCELERATOR=cuda: the wheel records the CUDA accelerator and requires nvidia-ml-py, as a build on a
# GPU machine would; DS_BUILD_OPS=0: no op is compiled (none needs nvcc here). --no-binary and
# --no-cache-dir: a wheel built earlier for the CPU accelerator is not reused.
DS_ACCELERATOR=cuda DS_BUILD_OPS=0 "$BUILD_PYTHON" -m pip wheel --quiet --no-cache-dir --no-deps \
  --no-build-isolation --no-binary deepspeed "deepspeed==$DEEPSPEED_VERSION" -w "$partial"
ds_wheel=$(ls "$partial"/deepspeed-"$DEEPSPEED_VERSION"-py3-none-any.whl)

mapfile -t wanted < <("$BUILD_PYTHON" benchmarks/gpu_check.py download-requirements "$ds_wheel")
echo "[wheels] downloading for CPython 3.12 x86-64: ${wanted[*]}"
platform_args=()
for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
"$DOWNLOAD_PYTHON" -m pip download --quiet --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 "${platform_args[@]}" -d "$partial" "${wanted[@]}"

# shellcheck disable=SC2086  # IMAGE_HAS is a list of names
"$BUILD_PYTHON" benchmarks/gpu_check.py prune "$partial" $IMAGE_HAS
"$BUILD_PYTHON" benchmarks/gpu_check.py requirements > "$partial/requirements.txt"

bytes=$(du -cb "$partial"/*.whl | tail -n 1 | cut -f 1)
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
count=$(find "$partial" -name '*.whl' | wc -l)
if (( bytes > MAX_MIB * 1048576 )); then
  echo "error: the wheelhouse is $mib MiB, over $MAX_MIB MiB (kept in $partial)" >&2
  exit 1
fi
rm -rf "$WHEELHOUSE"
mv "$partial" "$WHEELHOUSE"
echo "[wheels] $WHEELHOUSE: $count wheels, $mib MiB (limit $MAX_MIB MiB)"
