# Remote state for the environments: one private, versioned, KMS-encrypted, TLS-only bucket
# (modules/s3-hardening), and a DynamoDB table whose items lock a state while a plan or apply
# runs.

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

resource "aws_dynamodb_table" "lock" {
  name         = "${var.name}-lock"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "LockID" # the attribute Terraform's S3 backend writes

  attribute {
    name = "LockID"
    type = "S"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = module.key.key_arn
  }

  deletion_protection_enabled = true
}
