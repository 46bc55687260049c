#!/usr/bin/env bash
# The machine's own tools that the tests run, from Debian's packages: installs the missing ones
# when it can (root with apt-get), otherwise names them and the command that installs them.
# `make install` runs it; `sudo make system-packages` runs it as root.
set -euo pipefail

# command:package
tools=(
  "fitsverify:fitsverify"   # checks every FITS file we write against the standard
  "chromium:chromium"       # the web console's browser tests (headless)
  "promtool:prometheus"     # alert rules and their unit tests
  "prometheus:prometheus"   # a real server for the dashboard and alert tests
  "amtool:prometheus-alertmanager"  # checks the Alertmanager configuration and its routes
  "kubectl:kubectl"         # renders the Flux kustomizations
)

missing=()
for entry in "${tools[@]}"; do
  command -v "${entry%%:*}" >/dev/null 2>&1 || missing+=("${entry#*:}")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
# One package may give several commands.
mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages for the tests: ${packages[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
else
  echo "warning: the tests that need these Debian packages will be skipped: ${packages[*]}" >&2
  echo "warning: install them with: sudo make system-packages" >&2
fi
