#!/usr/bin/env bash
# Runs shellcheck on every shell script of the repository, found by its shebang, not its name
# (.ci/run has no extension). Tracked and new, not ignored, files count; prints each one checked.
# SHELLCHECK names the binary (default: the project's .venv/bin/shellcheck, then PATH).
set -euo pipefail
cd "$(dirname "$0")/.."

shellcheck_bin=${SHELLCHECK:-.venv/bin/shellcheck}
[ -x "${shellcheck_bin}" ] || shellcheck_bin=$(command -v shellcheck) || {
  echo "$0: shellcheck not found (the deploy extra installs it: make install)" >&2
  exit 2
}

scripts=()
while IFS= read -r -d '' path; do
  [ -f "${path}" ] || continue # deleted in the work tree but still in the index
  first_line=$(head -n 1 -- "${path}" | tr -d '\r')
  if [[ ${first_line} =~ ^#!.*[/[:space:]](ba|da|k)?sh([[:space:]]|$) ]]; then
    scripts+=("${path}")
  fi
done < <(git ls-files -z --cached --others --exclude-standard)

if [ ${#scripts[@]} -eq 0 ]; then
  echo "$0: no shell scripts found" >&2
  exit 2
fi
printf 'shellcheck: %s\n' "${scripts[@]}"
"${shellcheck_bin}" --external-sources "${scripts[@]}"
