output "backend_config" {
  description = "Contents of envs/<env>/backend.hcl for the environments of this account: `terraform output -raw backend_config > ../envs/dev/backend.hcl`."
  value       = <<-EOT
    bucket     = "${aws_s3_bucket.state.id}"
    region     = "${var.region}"
    kms_key_id = "${module.key.key_arn}"
  EOT
}

output "state_bucket" {
  description = "Name of the state bucket."
  value       = aws_s3_bucket.state.id
}

output "kms_key_arn" {
  description = "ARN of the key that encrypts the states (the backend's kms_key_id)."
  value       = module.key.key_arn
}

output "github_role_arns" {
  description = "Role ARNs for GitHub variables: release → repository variable AWS_RELEASE_ROLE_ARN; plan-<env> → AWS_PLAN_ROLE_ARN of the GitHub environment infra-<env>-plan; apply-<env> → AWS_APPLY_ROLE_ARN of infra-<env>."
  value       = { for name, role in aws_iam_role.github : name => role.arn }
}
