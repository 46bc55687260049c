#!/usr/bin/env bash
# Regenerates services/requirements.txt: every package the image installs (pyproject.toml's
# core dependencies and the build backend in services/build-requirements.in), pinned, with the
# SHA-256 of every file PyPI has for each pinned version (so one lock serves linux/amd64 and
# linux/arm64). services/Dockerfile installs it with `pip install --require-hashes --no-deps`.
#
# With --gpu it regenerates services/requirements-gpu.txt instead, the lock of the GPU image
# (linux/amd64 only; services/Dockerfile's REQUIREMENTS build argument): the same inputs plus
# services/gpu-requirements.in (onnxruntime-gpu and the CUDA libraries it loads, from PyPI's
# nvidia-* wheels), every shared package constrained to its version in services/requirements.txt,
# and onnxruntime itself left out (onnxruntime-gpu installs the same `onnxruntime` module).
# Refresh the CPU lock first, then this one.
#
# Needs uv (`pip install uv`). Resolves for the image's Python (3.11) on glibc Linux.
# Usage: scripts/lock-requirements.sh [--gpu] [--upgrade | --upgrade-package NAME ...]
set -euo pipefail

cd "$(dirname "$0")/.."
uv=${UV:-uv}
command -v "${uv}" > /dev/null || {
  echo "$0: uv not found (pip install uv, or set UV to its path)" >&2
  exit 2
}
if [[ "${1:-}" == "--gpu" ]]; then
  shift
  "${uv}" pip compile pyproject.toml services/build-requirements.in services/gpu-requirements.in \
    --constraint services/requirements.txt --no-emit-package onnxruntime \
    --python-version 3.11 --python-platform x86_64-manylinux_2_36 \
    --generate-hashes --output-file services/requirements-gpu.txt "$@"
  exit
fi
"${uv}" pip compile pyproject.toml services/build-requirements.in \
  --python-version 3.11 --python-platform x86_64-manylinux_2_36 \
  --generate-hashes --output-file services/requirements.txt "$@"
