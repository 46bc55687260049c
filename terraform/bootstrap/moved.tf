# The state bucket's hardening moved into modules/s3-hardening: the applied bootstrap keeps its
# settings (Terraform moves them in the state instead of deleting and re-creating them).
moved {
  from = aws_s3_bucket_public_access_block.state
  to   = module.state_bucket_hardening.aws_s3_bucket_public_access_block.this
}

moved {
  from = aws_s3_bucket_ownership_controls.state
  to   = module.state_bucket_hardening.aws_s3_bucket_ownership_controls.this
}

moved {
  from = aws_s3_bucket_server_side_encryption_configuration.state
  to   = module.state_bucket_hardening.aws_s3_bucket_server_side_encryption_configuration.this
}

moved {
  from = aws_s3_bucket_versioning.state
  to   = module.state_bucket_hardening.aws_s3_bucket_versioning.this
}

moved {
  from = aws_s3_bucket_policy.state
  to   = module.state_bucket_hardening.aws_s3_bucket_policy.this
}

# The DynamoDB lock table gave way to S3-native locking (`use_lockfile` in every backend). It is
# forgotten, not destroyed: a run in progress may still hold a lock in it while the backends
# switch over; delete it by hand afterwards (it has deletion protection).
removed {
  from = aws_dynamodb_table.lock

  lifecycle {
    destroy = false
  }
}
