# The FITS cutout bucket: private, SSE-KMS, versioned and TLS only (modules/s3-hardening), with
# a key of its own, and cheaper storage classes as cutouts age.

module "key" {
  source = "../kms"

  alias                   = "${var.bucket_name}-s3"
  description             = "S3 bucket ${var.bucket_name}: FITS cutouts"
  deletion_window_in_days = var.kms_deletion_window_in_days
  tags                    = var.tags
}

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_18:server access logs need a second bucket per environment; audit object access with the account's CloudTrail S3 data events
  #checkov:skip=CKV_AWS_144:cutouts are a cache of a public survey (lost objects are fetched again), so cross-region replication would double the storage cost for nothing
  #checkov:skip=CKV2_AWS_62:nothing consumes bucket events; the work queue lives in PostgreSQL
  bucket        = var.bucket_name
  force_destroy = var.force_destroy
  tags          = var.tags
}

module "hardening" {
  source = "../s3-hardening"

  bucket      = aws_s3_bucket.this.id
  kms_key_arn = module.key.key_arn
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = module.hardening.versioned_bucket

  rule {
    id     = "cutouts-to-cheaper-classes"
    status = "Enabled"

    filter {
      prefix = "${var.object_prefix}/"
    }

    transition {
      days          = var.infrequent_access_after_days
      storage_class = "STANDARD_IA"
    }

    transition {
      days          = var.glacier_ir_after_days
      storage_class = "GLACIER_IR"
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }
  }

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }

    expiration {
      expired_object_delete_marker = true
    }
  }
}
