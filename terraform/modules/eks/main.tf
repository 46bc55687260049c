# An EKS cluster with a private-by-default API, envelope-encrypted secrets, every control-plane
# log type, managed node groups (IMDSv2 only, encrypted disks) and an OIDC provider so that pods
# get AWS permissions through IRSA instead of the node role.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  partition      = data.aws_partition.current.partition
  log_group_name = "/aws/eks/${var.name}/cluster"
  log_group_arn  = "arn:${local.partition}:logs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:log-group:${local.log_group_name}"
  # The containers' stdout and stderr, shipped by Fluent Bit (k8s/platform/fluent-bit.yaml): kept
  # here, they outlive the pods that scale-to-zero deletes.
  container_log_group_name = "/aws/eks/${var.name}/containers"
  container_log_group_arn  = "arn:${local.partition}:logs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:log-group:${local.container_log_group_name}"

  node_groups = merge(
    {
      general = merge(var.general_node_group, {
        capacity_type = "ON_DEMAND"
        ami_type      = "AL2023_x86_64_STANDARD"
        labels        = { "galpipe.io/node-group" = "general" }
        taints        = []
      })
    },
    var.spot_node_group == null ? {} : {
      spot = merge(var.spot_node_group, {
        capacity_type = "SPOT"
        ami_type      = "AL2023_x86_64_STANDARD"
        labels        = { "galpipe.io/node-group" = "spot" }
        # Only pods that tolerate the taint (the chart's radon) land on interruptible nodes;
        # the platform and every other pipeline stay on the general group.
        taints = var.spot_taint == null ? [] : [var.spot_taint]
      })
    },
    var.gpu_node_group == null ? {} : {
      gpu = merge(var.gpu_node_group, {
        # Amazon Linux 2023 with the NVIDIA driver and container toolkit (x86_64: g and p types).
        ami_type = "AL2023_x86_64_NVIDIA"
        labels   = local.gpu_labels
        taints   = [local.gpu_taint]
      })
    },
  )

  # What a pod needs to land on a GPU node: the chart's pipelines.morphology.gpu defaults
  # (nodeSelector galpipe.io/node-group=gpu, toleration nvidia.com/gpu=true:NoSchedule).
  gpu_labels = { "galpipe.io/node-group" = "gpu" }
  gpu_taint  = { key = "nvidia.com/gpu", value = "true", effect = "NO_SCHEDULE" }

  oidc_issuer = trimprefix(aws_eks_cluster.this.identity[0].oidc[0].issuer, "https://")
}

module "key" {
  source = "../kms"

  alias                          = "${var.name}-eks"
  description                    = "EKS ${var.name}: Kubernetes secrets, control-plane and container logs"
  deletion_window_in_days        = var.kms_deletion_window_in_days
  cloudwatch_logs_log_group_arns = [local.log_group_arn, local.container_log_group_arn]
  tags                           = var.tags
}

# Created before the cluster so that EKS writes into a KMS-encrypted group with a retention.
resource "aws_cloudwatch_log_group" "cluster" {
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = module.key.key_arn
  tags              = var.tags
}

# Created by Terraform, not by the log shipper: its retention and key are set here, and the
# shipper's role may only write into it (no logs:CreateLogGroup).
resource "aws_cloudwatch_log_group" "containers" {
  name              = local.container_log_group_name
  retention_in_days = var.container_log_retention_days
  kms_key_id        = module.key.key_arn
  tags              = var.tags
}

# ---------------------------------------------------------------------------------------------
# Control plane

data "aws_iam_policy_document" "cluster_assume" {
  statement {
    actions = ["sts:AssumeRole", "sts:TagSession"]

    principals {
      type        = "Service"
      identifiers = ["eks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "cluster" {
  name               = "${var.name}-eks-cluster"
  assume_role_policy = data.aws_iam_policy_document.cluster_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "cluster" {
  role       = aws_iam_role.cluster.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonEKSClusterPolicy"
}

# Envelope encryption of Kubernetes secrets: the key policy delegates to IAM, so the cluster
# role needs these rights on its key.
data "aws_iam_policy_document" "cluster_encryption" {
  statement {
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey", "kms:ListGrants"]
    resources = [module.key.key_arn]
  }

  statement {
    actions   = ["kms:CreateGrant"]
    resources = [module.key.key_arn]

    condition {
      test     = "Bool"
      variable = "kms:GrantIsForAWSResource"
      values   = ["true"]
    }
  }
}

resource "aws_iam_role_policy" "cluster_encryption" {
  name   = "secrets-encryption"
  role   = aws_iam_role.cluster.id
  policy = data.aws_iam_policy_document.cluster_encryption.json
}

resource "aws_eks_cluster" "this" {
  name                      = var.name
  version                   = var.kubernetes_version
  role_arn                  = aws_iam_role.cluster.arn
  enabled_cluster_log_types = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

  access_config {
    authentication_mode                         = "API_AND_CONFIG_MAP"
    bootstrap_cluster_creator_admin_permissions = true
  }

  vpc_config {
    subnet_ids              = var.subnet_ids
    endpoint_private_access = true
    endpoint_public_access  = length(var.endpoint_public_access_cidrs) > 0
    public_access_cidrs     = length(var.endpoint_public_access_cidrs) > 0 ? var.endpoint_public_access_cidrs : null
  }

  encryption_config {
    resources = ["secrets"]

    provider {
      key_arn = module.key.key_arn
    }
  }

  tags = var.tags

  depends_on = [
    aws_iam_role_policy_attachment.cluster,
    aws_iam_role_policy.cluster_encryption,
    aws_cloudwatch_log_group.cluster,
  ]
}

resource "aws_eks_access_entry" "admin" {
  for_each = toset(var.cluster_admin_principal_arns)

  cluster_name  = aws_eks_cluster.this.name
  principal_arn = each.value
  tags          = var.tags
}

resource "aws_eks_access_policy_association" "admin" {
  for_each = toset(var.cluster_admin_principal_arns)

  cluster_name  = aws_eks_cluster.this.name
  principal_arn = aws_eks_access_entry.admin[each.value].principal_arn
  policy_arn    = "arn:${local.partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"

  access_scope {
    type = "cluster"
  }
}

# ---------------------------------------------------------------------------------------------
# IRSA: the cluster's OIDC issuer as an IAM identity provider

resource "aws_iam_openid_connect_provider" "this" {
  url            = aws_eks_cluster.this.identity[0].oidc[0].issuer
  client_id_list = ["sts.amazonaws.com"]
  tags           = var.tags
}

# ---------------------------------------------------------------------------------------------
# Managed node groups

data "aws_iam_policy_document" "node_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  name               = "${var.name}-eks-node"
  assume_role_policy = data.aws_iam_policy_document.node_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "node" {
  for_each = toset(["AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly"])

  role       = aws_iam_role.node.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/${each.value}"
}

# Members of this group (every node, hence every pod on the VPC CNI) are the clients other
# services such as the database admit. EKS's own cluster security group is listed too: a launch
# template that names security groups replaces the ones EKS would attach (compact: an API
# emulator that models no cluster security group returns an empty ID).
resource "aws_security_group" "node" {
  name        = "${var.name}-nodes"
  description = "Nodes of EKS cluster ${var.name}: the identity that databases and caches admit"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-nodes" })
}

resource "aws_launch_template" "node" {
  for_each = local.node_groups

  name_prefix            = "${var.name}-${each.key}-"
  update_default_version = true
  vpc_security_group_ids = compact([aws_eks_cluster.this.vpc_config[0].cluster_security_group_id, aws_security_group.node.id])

  # IMDSv2 only, one hop: containers cannot reach the node role's credentials; pods use IRSA.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = each.value.disk_size_gib
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "${var.name}-${each.key}" })
  }

  tags = var.tags
}

resource "aws_eks_node_group" "this" {
  for_each = local.node_groups

  cluster_name    = aws_eks_cluster.this.name
  node_group_name = each.key
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = var.subnet_ids
  capacity_type   = each.value.capacity_type
  ami_type        = each.value.ami_type
  instance_types  = each.value.instance_types
  labels          = each.value.labels

  launch_template {
    id      = aws_launch_template.node[each.key].id
    version = aws_launch_template.node[each.key].latest_version
  }

  scaling_config {
    min_size     = each.value.min_size
    max_size     = each.value.max_size
    desired_size = each.value.desired_size
  }

  update_config {
    max_unavailable_percentage = 33
  }

  dynamic "taint" {
    for_each = each.value.taints

    content {
      key    = taint.value.key
      value  = taint.value.value
      effect = taint.value.effect
    }
  }

  tags = var.tags

  # Autoscalers (KEDA-driven cluster autoscaling) move desired_size; Terraform keeps the bounds.
  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.node]
}

# ---------------------------------------------------------------------------------------------
# Core add-ons; the EBS CSI driver (persistent volumes for Prometheus) gets its own IRSA role.

data "aws_iam_policy_document" "ebs_csi_assume" {
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.this.arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:kube-system:ebs-csi-controller-sa"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "ebs_csi" {
  name               = "${var.name}-ebs-csi"
  assume_role_policy = data.aws_iam_policy_document.ebs_csi_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "ebs_csi" {
  role       = aws_iam_role.ebs_csi.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
}

locals {
  addons = var.enable_addons ? {
    # The VPC CNI's network policy agent enforces the chart's NetworkPolicies; without
    # enableNetworkPolicy the cluster accepts them and silently ignores them.
    vpc-cni = {
      role_arn             = null
      configuration_values = jsonencode({ enableNetworkPolicy = "true" })
    }
    kube-proxy         = { role_arn = null, configuration_values = null }
    coredns            = { role_arn = null, configuration_values = null }
    aws-ebs-csi-driver = { role_arn = aws_iam_role.ebs_csi.arn, configuration_values = null }
  } : {}
}

resource "aws_eks_addon" "this" {
  for_each = local.addons

  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = each.key
  service_account_role_arn    = each.value.role_arn
  configuration_values        = each.value.configuration_values
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "PRESERVE"
  tags                        = var.tags

  # coredns and the EBS CSI controller are Deployments: they need nodes to become healthy.
  depends_on = [aws_eks_node_group.this]
}
