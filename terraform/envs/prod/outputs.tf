output "region" {
  description = "AWS region of the environment."
  value       = var.region
}

output "cluster_name" {
  description = "EKS cluster name (`aws eks update-kubeconfig --region <region> --name <cluster_name>`)."
  value       = module.platform.cluster_name
}

output "cluster_endpoint" {
  description = "HTTPS endpoint of the Kubernetes API."
  value       = module.platform.cluster_endpoint
}

output "database_address" {
  description = "Host name of the PostgreSQL instance."
  value       = module.platform.database_address
}

output "database_port" {
  description = "PostgreSQL port."
  value       = module.platform.database_port
}

output "database_name" {
  description = "Name of the application database."
  value       = module.platform.database_name
}

output "database_secret_arn" {
  description = "Secrets Manager secret with the database user name and password (managed and rotated by RDS)."
  value       = module.platform.database_secret_arn
}

output "bucket_name" {
  description = "Name of the cutout bucket."
  value       = module.platform.bucket_name
}

output "object_store_url" {
  description = "GALPIPE_OBJECT_STORE of the pipelines (chart value `objectStore.url`)."
  value       = module.platform.object_store_url
}

output "image_repository_url" {
  description = "The image repository prod pulls from: dev's registry (chart value `image.repository` in k8s/envs/prod/galpipe.yaml)."
  value       = var.image_repository_url
}

output "flux_role_arns" {
  description = "IRSA role ARNs of Flux's source-controller (`flux-source`) and image-reflector-controller (`flux-images`): annotate their ServiceAccounts with them."
  value       = module.platform.flux_role_arns
}

output "pipeline_role_arns" {
  description = "IRSA role ARN per pipeline (chart value `pipelines.<name>.serviceAccount.roleArn`)."
  value       = module.platform.pipeline_role_arns
}

output "external_secrets_role_arn" {
  description = "IRSA role ARN of the External Secrets Operator's ServiceAccount (reads the database roles' secrets only): `external_secrets_role_arn` in the postBuild.substitute of k8s/clusters/prod/platform.yaml."
  value       = module.platform.external_secrets_role_arn
}

output "cluster_autoscaler_role_arn" {
  description = "IRSA role ARN of the Cluster Autoscaler's ServiceAccount: `cluster_autoscaler_role_arn` in the postBuild.substitute of k8s/clusters/prod/platform.yaml (with `cluster_name` and `region`)."
  value       = module.platform.cluster_autoscaler_role_arn
}

output "chart_values" {
  description = "The environment's values for charts/galpipe, in the chart's shape: `terraform output -json chart_values > values-aws.json` and pass it with `-f`."
  value       = module.platform.chart_values
}

output "policy_controller_role_arn" {
  description = "IRSA role ARN of the Sigstore policy-controller webhook: `policy_controller_role_arn` in the postBuild.substitute of k8s/clusters/prod/platform.yaml."
  value       = module.platform.policy_controller_role_arn
}

output "log_shipper_role_arn" {
  description = "IRSA role ARN of Fluent Bit (writes the containers' logs): `log_shipper_role_arn` in the postBuild.substitute of k8s/clusters/prod/platform.yaml."
  value       = module.platform.log_shipper_role_arn
}

output "container_log_group_name" {
  description = "CloudWatch Logs group where the containers' logs are kept (`/aws/eks/<cluster>/containers`)."
  value       = module.platform.container_log_group_name
}

output "database_role_secret_names" {
  description = "Secrets Manager secrets of the database roles (`app`, `migrator`, `scaler`): the keys of the ExternalSecrets in k8s/envs/prod/database-secrets.yaml."
  value       = module.platform.database_role_secret_names
}
