output "versioned_bucket" {
  description = "Name of the bucket once versioning is on: lifecycle rules are validated against the versioning state, so a lifecycle configuration takes its bucket from here."
  value       = aws_s3_bucket_versioning.this.bucket
}
