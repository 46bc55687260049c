output "cluster_name" {
  description = "Name of the EKS cluster (`aws eks update-kubeconfig --name ...`)."
  value       = aws_eks_cluster.this.name
}

output "cluster_arn" {
  description = "ARN of the EKS cluster."
  value       = aws_eks_cluster.this.arn
}

output "cluster_endpoint" {
  description = "HTTPS endpoint of the Kubernetes API."
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_certificate_authority_data" {
  description = "Base64 PEM of the cluster's certificate authority."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "node_security_group_id" {
  description = "Security group of every managed node: the client identity the database admits."
  value       = aws_security_group.node.id
}

output "oidc_provider_arn" {
  description = "ARN of the IAM OIDC provider of the cluster (the Federated principal of IRSA trust policies)."
  value       = aws_iam_openid_connect_provider.this.arn
}

output "oidc_issuer" {
  description = "The cluster's OIDC issuer without `https://` (the prefix of the `:sub` and `:aud` condition keys)."
  value       = local.oidc_issuer
}

output "node_role_arn" {
  description = "ARN of the IAM role of the managed nodes."
  value       = aws_iam_role.node.arn
}

output "node_group_names" {
  description = "Names of the managed node groups, by role (general, spot, gpu)."
  value       = { for key, group in aws_eks_node_group.this : key => group.node_group_name }
}

output "gpu_node_scheduling" {
  description = "What a pod needs to run on the GPU node group, in Kubernetes' spelling (the chart's pipelines.morphology.gpu): its nodeSelector and its toleration; null without a GPU group."
  value = var.gpu_node_group == null ? null : {
    node_group_name = aws_eks_node_group.this["gpu"].node_group_name
    node_selector   = local.gpu_labels
    toleration = {
      key      = local.gpu_taint.key
      operator = "Equal"
      value    = local.gpu_taint.value
      effect   = "NoSchedule"
    }
  }
}

output "addons" {
  description = "Names of the installed EKS add-ons (empty where `enable_addons` is false)."
  value       = sort(keys(aws_eks_addon.this))
}

output "container_log_group_name" {
  description = "Name of the CloudWatch Logs group of the containers' logs (`/aws/eks/<name>/containers`), where the log shipper writes."
  value       = aws_cloudwatch_log_group.containers.name
}

output "container_log_group_arn" {
  description = "ARN of the containers' log group (without the `:*` suffix): the only group the log shipper's IRSA role may write to."
  value       = aws_cloudwatch_log_group.containers.arn
}
