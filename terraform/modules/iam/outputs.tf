output "pipeline_role_arns" {
  description = "IRSA role ARN per pipeline: the chart's `pipelines.<name>.serviceAccount.roleArn`."
  value       = { for name in keys(var.pipelines) : name => aws_iam_role.this[name].arn }
}

output "database_secret_reader_role_arn" {
  description = "IRSA role ARN of the secret-sync controller's ServiceAccount (null when not requested)."
  value       = var.database_secret_reader == null ? null : aws_iam_role.this["database-secret-reader"].arn
}

output "registry_reader_role_arns" {
  description = "IRSA role ARN per registry reader (e.g. Flux's source-controller): the `eks.amazonaws.com/role-arn` annotation of its ServiceAccount."
  value       = { for key in keys(local.registry_readers) : trimprefix(key, "ecr-") => aws_iam_role.this[key].arn }
}

output "cluster_autoscaler_role_arn" {
  description = "IRSA role ARN of the Cluster Autoscaler's ServiceAccount: its `eks.amazonaws.com/role-arn` annotation (null when not requested)."
  value       = var.cluster_autoscaler == null ? null : aws_iam_role.this["cluster-autoscaler"].arn
}

output "log_shipper_role_arn" {
  description = "IRSA role ARN of the log shipper's ServiceAccount: its `eks.amazonaws.com/role-arn` annotation (null when not requested)."
  value       = var.log_shipper == null ? null : aws_iam_role.this["log-shipper"].arn
}
