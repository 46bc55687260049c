#!/usr/bin/env bash
# Fails when charts/galpipe (or the dashboards it packages through its dashboards/ symlink)
# changed since the merge base with BASE but Chart.yaml's version did not grow: release.yml
# publishes a chart version once, so a change under an old version would never reach a cluster.
# Usage: scripts/check-chart-version.sh BASE   (e.g. origin/main; CI: the pull request's base)
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 BASE (a commit or branch to compare with, e.g. origin/main)" >&2
  exit 2
fi
chart=charts/galpipe
packaged=("${chart}" grafana/dashboards)

base="$(git merge-base "$1" HEAD)" || {
  echo "$0: no merge base of '$1' and HEAD (fetch the full history: fetch-depth 0)" >&2
  exit 2
}
if git diff --quiet "${base}" HEAD -- "${packaged[@]}"; then
  echo "chart unchanged since ${base::12}"
  exit 0
fi

version_of() { awk '$1 == "version:" {print $2; exit}'; }
new="$(version_of < "${chart}/Chart.yaml")"
if ! old="$(git show "${base}:${chart}/Chart.yaml" 2> /dev/null | version_of)" || [ -z "${old}" ]; then
  echo "new chart ${new}"
  exit 0
fi
changed="$(git diff --name-only "${base}" HEAD -- "${packaged[@]}" | head -5 | tr '\n' ' ')"
if [ "${new}" = "${old}" ]; then
  echo "${chart}/Chart.yaml: version ${old} unchanged although the chart changed (${changed}); bump it" >&2
  exit 1
fi
if [ "$(printf '%s\n%s\n' "${old}" "${new}" | sort -V | tail -1)" != "${new}" ]; then
  echo "${chart}/Chart.yaml: version ${new} is lower than ${old} at the merge base; bump it above" >&2
  exit 1
fi
echo "chart ${old} -> ${new}"
