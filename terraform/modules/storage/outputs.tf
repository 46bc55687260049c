output "bucket_name" {
  description = "Name of the cutout bucket."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "ARN of the cutout bucket."
  value       = aws_s3_bucket.this.arn
}

output "object_prefix" {
  description = "Key prefix of galpipe's store inside the bucket."
  value       = var.object_prefix
}

output "object_store_url" {
  description = "Value of GALPIPE_OBJECT_STORE for the pipelines (`s3://<bucket>/<prefix>`)."
  value       = "s3://${aws_s3_bucket.this.id}/${var.object_prefix}"
}

output "kms_key_arn" {
  description = "ARN of the bucket's KMS key (writers need kms:GenerateDataKey, readers kms:Decrypt)."
  value       = module.key.key_arn
}
