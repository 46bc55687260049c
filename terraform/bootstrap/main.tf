# Remote state for the environments of this account: one private, versioned, KMS-encrypted,
# TLS-only bucket (modules/s3-hardening). The S3 backend locks a state with a lock file next to
# it (`use_lockfile`, Terraform >= 1.10), so no DynamoDB table is needed.

data "aws_caller_identity" "current" {}

module "key" {
  source = "../modules/kms"

  alias       = var.name
  description = "Terraform state of galpipe"
}

resource "aws_s3_bucket" "state" {
  #checkov:skip=CKV_AWS_18:access to the state is audited by CloudTrail data events; access logs would need a second bucket with a state of its own
  #checkov:skip=CKV_AWS_144:versioning protects the state against overwrites; a replica in a second region is the operator's choice for disaster recovery
  #checkov:skip=CKV2_AWS_62:nothing consumes events of the state bucket
  bucket = "${var.name}-${data.aws_caller_identity.current.account_id}"

  lifecycle {
    prevent_destroy = true
  }
}

module "state_bucket_hardening" {
  source = "../modules/s3-hardening"

  bucket      = aws_s3_bucket.state.id
  kms_key_arn = module.key.key_arn
}

resource "aws_s3_bucket_lifecycle_configuration" "state" {
  bucket = module.state_bucket_hardening.versioned_bucket

  rule {
    id     = "old-state-versions"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_state_retention_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}
