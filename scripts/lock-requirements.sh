#!/usr/bin/env bash
# Regenerates services/requirements.txt: every package the image installs (pyproject.toml's
# core dependencies and the build backend in services/build-requirements.in), pinned, with the
# SHA-256 of every file PyPI has for each pinned version (so one lock serves linux/amd64 and
# linux/arm64). services/Dockerfile installs it with `pip install --require-hashes --no-deps`.
#
# Needs uv (`pip install uv`). Resolves for the image's Python (3.11) on glibc Linux.
# Usage: scripts/lock-requirements.sh [--upgrade | --upgrade-package NAME ...]
set -euo pipefail

cd "$(dirname "$0")/.."
uv=${UV:-uv}
command -v "${uv}" > /dev/null || {
  echo "$0: uv not found (pip install uv, or set UV to its path)" >&2
  exit 2
}
"${uv}" pip compile pyproject.toml services/build-requirements.in \
  --python-version 3.11 --python-platform x86_64-manylinux_2_36 \
  --generate-hashes --output-file services/requirements.txt "$@"
