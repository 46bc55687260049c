output "cluster_name" {
  description = "EKS cluster name (`aws eks update-kubeconfig --region <region> --name <cluster_name>`)."
  value       = module.eks.cluster_name
}

output "cluster_endpoint" {
  description = "HTTPS endpoint of the Kubernetes API."
  value       = module.eks.cluster_endpoint
}

output "database_address" {
  description = "Host name of the PostgreSQL instance."
  value       = module.database.address
}

output "database_port" {
  description = "PostgreSQL port."
  value       = module.database.port
}

output "database_name" {
  description = "Name of the application database."
  value       = module.database.database_name
}

output "database_secret_arn" {
  description = "Secrets Manager secret with the database user name and password (managed and rotated by RDS)."
  value       = module.database.master_user_secret_arn
}

output "bucket_name" {
  description = "Name of the cutout bucket."
  value       = module.storage.bucket_name
}

output "object_store_url" {
  description = "GALPIPE_OBJECT_STORE of the pipelines (chart value `objectStore.url`)."
  value       = module.storage.object_store_url
}

output "flux_role_arns" {
  description = "IRSA role ARNs of Flux's source-controller (`flux-source`) and image-reflector-controller (`flux-images`): annotate their ServiceAccounts with them."
  value       = { for key, arn in module.iam.registry_reader_role_arns : key => arn if startswith(key, "flux-") }
}

output "policy_controller_role_arn" {
  description = "IRSA role ARN of the Sigstore policy-controller webhook (reads the signatures in ECR): `policy_controller_role_arn` in the postBuild.substitute of k8s/clusters/<env>/platform.yaml."
  value       = module.iam.registry_reader_role_arns["policy-controller"]
}

output "log_shipper_role_arn" {
  description = "IRSA role ARN of Fluent Bit's ServiceAccount (writes only into the containers' log group): `log_shipper_role_arn` in the postBuild.substitute of k8s/clusters/<env>/platform.yaml."
  value       = module.iam.log_shipper_role_arn
}

output "container_log_group_name" {
  description = "CloudWatch Logs group of the containers' logs (`/aws/eks/<cluster>/containers`)."
  value       = module.eks.container_log_group_name
}

output "database_role_secret_names" {
  description = "Secrets Manager secrets of the database roles pods use, by role (`app`, `migrator`, `scaler`): the `remoteRef` keys of k8s/envs/<env>/database-secrets.yaml."
  value       = module.database.role_secret_names
}

output "pipeline_role_arns" {
  description = "IRSA role ARN per pipeline (chart value `pipelines.<name>.serviceAccount.roleArn`)."
  value       = module.iam.pipeline_role_arns
}

output "external_secrets_role_arn" {
  description = "IRSA role ARN of the External Secrets Operator's ServiceAccount (reads the database roles' secrets only): `external_secrets_role_arn` in the postBuild.substitute of k8s/clusters/<env>/platform.yaml."
  value       = module.iam.database_secret_reader_role_arn
}

output "cluster_autoscaler_role_arn" {
  description = "IRSA role ARN of the Cluster Autoscaler's ServiceAccount: `cluster_autoscaler_role_arn` in the postBuild.substitute of k8s/clusters/<env>/platform.yaml."
  value       = module.iam.cluster_autoscaler_role_arn
}

output "chart_values" {
  description = "The environment's values for charts/galpipe, in the chart's shape: `terraform output -json chart_values > values-aws.json` and pass it with `-f`."
  value = {
    image       = { repository = var.image_repository_url }
    objectStore = { url = module.storage.object_store_url }
    pipelines = {
      for pipeline, role_arn in module.iam.pipeline_role_arns : pipeline => {
        serviceAccount = { roleArn = role_arn }
      }
    }
  }
}
