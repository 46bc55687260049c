# The bucket's hardening moved into modules/s3-hardening: a bucket applied before keeps its
# settings (Terraform moves them in the state instead of deleting and re-creating them).
moved {
  from = aws_s3_bucket_public_access_block.this
  to   = module.hardening.aws_s3_bucket_public_access_block.this
}

moved {
  from = aws_s3_bucket_ownership_controls.this
  to   = module.hardening.aws_s3_bucket_ownership_controls.this
}

moved {
  from = aws_s3_bucket_server_side_encryption_configuration.this
  to   = module.hardening.aws_s3_bucket_server_side_encryption_configuration.this
}

moved {
  from = aws_s3_bucket_versioning.this
  to   = module.hardening.aws_s3_bucket_versioning.this
}

moved {
  from = aws_s3_bucket_policy.this
  to   = module.hardening.aws_s3_bucket_policy.this
}
