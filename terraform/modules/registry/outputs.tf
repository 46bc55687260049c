output "repository_names" {
  description = "Repository names by role (`image`, `chart`, ...)."
  value       = { for role, repository in aws_ecr_repository.this : role => repository.name }
}

output "repository_arns" {
  description = "Repository ARNs by role (resources of pull and push policies)."
  value       = { for role, repository in aws_ecr_repository.this : role => repository.arn }
}

output "repository_urls" {
  description = "Repository URLs by role: `image` is the chart's `image.repository`."
  value       = { for role, repository in aws_ecr_repository.this : role => repository.repository_url }
}

output "kms_key_arn" {
  description = "ARN of the KMS key of the repositories."
  value       = module.key.key_arn
}
