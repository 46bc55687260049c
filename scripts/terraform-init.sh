#!/usr/bin/env bash
# terraform init of one env directory against its S3 remote state, for CI (infra.yml).
#
# The backend block in terraform/envs/<env>/versions.tf fixes the state key and turns on
# S3-native locking (use_lockfile); the bucket and KMS key are outputs of terraform/bootstrap
# applied in that environment's account, given as variables of its GitHub environments:
#   TF_STATE_BUCKET, TF_STATE_KMS_KEY, AWS_REGION
# Providers come exactly as the committed .terraform.lock.hcl locks them (-lockfile=readonly: a
# provider that does not match the lock fails init instead of rewriting the lock).
# Usage: scripts/terraform-init.sh terraform/envs/dev
set -euo pipefail

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
  echo "usage: $0 ENV_DIR (e.g. terraform/envs/dev); got: $*" >&2
  exit 2
fi
env_dir=$1

if [ ! -f "${env_dir}/.terraform.lock.hcl" ]; then
  echo "$0: ${env_dir}/.terraform.lock.hcl is missing; commit it (docs/cicd.md: terraform providers lock)" >&2
  exit 2
fi

missing=()
for name in TF_STATE_BUCKET TF_STATE_KMS_KEY AWS_REGION; do
  [ -n "${!name:-}" ] || missing+=("${name}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "$0: set the variables ${missing[*]} of the GitHub environment (outputs of terraform/bootstrap)" >&2
  exit 2
fi

terraform -chdir="${env_dir}" init -input=false -lockfile=readonly \
  -backend-config="bucket=${TF_STATE_BUCKET}" \
  -backend-config="kms_key_id=${TF_STATE_KMS_KEY}" \
  -backend-config="region=${AWS_REGION}"
