#!/usr/bin/env bash
# terraform init of one env directory against the S3 remote state, for CI (infra.yml).
#
# The backend block in terraform/envs/<env>/versions.tf fixes the state key; the bucket, lock
# table and KMS key are the outputs of terraform/bootstrap, given as repository variables:
#   TF_STATE_BUCKET, TF_LOCK_TABLE, TF_STATE_KMS_KEY, AWS_REGION
# Usage: scripts/terraform-init.sh terraform/envs/dev
set -euo pipefail

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
  echo "usage: $0 ENV_DIR (e.g. terraform/envs/dev); got: $*" >&2
  exit 2
fi
env_dir=$1

missing=()
for name in TF_STATE_BUCKET TF_LOCK_TABLE TF_STATE_KMS_KEY AWS_REGION; do
  [ -n "${!name:-}" ] || missing+=("${name}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "$0: set the repository variables ${missing[*]} (outputs of terraform/bootstrap)" >&2
  exit 2
fi

terraform -chdir="${env_dir}" init -input=false \
  -backend-config="bucket=${TF_STATE_BUCKET}" \
  -backend-config="dynamodb_table=${TF_LOCK_TABLE}" \
  -backend-config="kms_key_id=${TF_STATE_KMS_KEY}" \
  -backend-config="region=${AWS_REGION}"
