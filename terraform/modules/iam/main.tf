# IRSA roles: each trusts exactly one Kubernetes ServiceAccount of the cluster (the `sub` claim)
# and allows only what its controller needs: a pipeline its object actions on its key prefix, the
# secret reader the database roles' secrets, the registry readers their repositories, the Cluster
# Autoscaler the node groups of its own cluster, and the log shipper one log group.

data "aws_region" "current" {}

locals {
  # The KMS permission that goes with each object action under SSE-KMS.
  kms_actions_for = {
    "s3:GetObject" = ["kms:Decrypt"]
    "s3:PutObject" = ["kms:GenerateDataKey"]
  }

  registry_readers = var.registry_readers == null ? {} : {
    for key, sa in var.registry_readers.service_accounts : "ecr-${key}" => "system:serviceaccount:${sa.namespace}:${sa.service_account}"
  }

  # Role name suffix => the one ServiceAccount (`sub` claim) that may assume the role.
  service_accounts = merge(
    { for name, p in var.pipelines : name => "system:serviceaccount:${p.namespace}:${p.service_account}" },
    var.database_secret_reader == null ? {} : {
      database-secret-reader = "system:serviceaccount:${var.database_secret_reader.namespace}:${var.database_secret_reader.service_account}"
    },
    var.cluster_autoscaler == null ? {} : {
      cluster-autoscaler = "system:serviceaccount:${var.cluster_autoscaler.namespace}:${var.cluster_autoscaler.service_account}"
    },
    var.log_shipper == null ? {} : {
      log-shipper = "system:serviceaccount:${var.log_shipper.namespace}:${var.log_shipper.service_account}"
    },
    local.registry_readers,
  )

  # arn:<partition>:eks:<region>:<account>:cluster/<name>: the autoscaler's permissions stay in
  # the cluster's own partition, region and account.
  autoscaled_cluster = var.cluster_autoscaler == null ? null : regex(
    "^arn:(?P<partition>[a-z-]+):eks:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):cluster/(?P<name>.+)$",
    var.cluster_autoscaler.cluster_arn,
  )
}

data "aws_iam_policy_document" "assume" {
  for_each = local.service_accounts

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:sub"
      values   = [each.value]
    }

    condition {
      test     = "StringEquals"
      variable = "${var.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  for_each = local.service_accounts

  name                 = "${var.name}-${each.key}"
  description          = "IRSA role of ${each.value}"
  assume_role_policy   = data.aws_iam_policy_document.assume[each.key].json
  max_session_duration = 3600
  tags                 = var.tags
}

data "aws_iam_policy_document" "pipeline" {
  for_each = var.pipelines

  statement {
    sid       = "ObjectsUnderPrefix"
    actions   = sort(each.value.object_actions)
    resources = ["${var.bucket_arn}/${var.object_prefix}/${each.value.key_prefix}*"]
  }

  statement {
    sid       = "BucketKeyThroughS3"
    actions   = sort(distinct(flatten([for action in each.value.object_actions : local.kms_actions_for[action]])))
    resources = [var.bucket_kms_key_arn]

    # Only as S3's SSE-KMS on this bucket, never a direct KMS call.
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${data.aws_region.current.name}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "pipeline" {
  for_each = var.pipelines

  name   = "objects"
  role   = aws_iam_role.this[each.key].id
  policy = data.aws_iam_policy_document.pipeline[each.key].json
}

data "aws_iam_policy_document" "database_secret" {
  count = var.database_secret_reader == null ? 0 : 1

  statement {
    sid       = "ReadDatabaseSecrets"
    actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    resources = sort(var.database_secret_reader.secret_arns)
  }

  statement {
    sid       = "DecryptThroughSecretsManager"
    actions   = ["kms:Decrypt"]
    resources = [var.database_secret_reader.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${data.aws_region.current.name}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "database_secret" {
  count = var.database_secret_reader == null ? 0 : 1

  name   = "database-secret"
  role   = aws_iam_role.this["database-secret-reader"].id
  policy = data.aws_iam_policy_document.database_secret[0].json
}

data "aws_iam_policy_document" "registry_read" {
  count = var.registry_readers == null ? 0 : 1

  statement {
    sid       = "RegistryLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # GetAuthorizationToken has no resource-level permissions
  }

  statement {
    sid = "ReadRepositories"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:DescribeImages",
      "ecr:DescribeRepositories",
      "ecr:GetDownloadUrlForLayer",
      "ecr:ListImages",
    ]
    resources = var.registry_readers.repository_arns
  }
}

resource "aws_iam_role_policy" "registry_read" {
  for_each = local.registry_readers

  name   = "registry-read"
  role   = aws_iam_role.this[each.key].id
  policy = data.aws_iam_policy_document.registry_read[0].json
}

# The Cluster Autoscaler's policy as its AWS documentation recommends it for auto-discovery
# (kubernetes/autoscaler, cluster-autoscaler/cloudprovider/aws/README.md, "Full Cluster
# Autoscaler Features Policy"), with the two actions that change capacity narrowed to the
# auto-scaling groups that carry this cluster's ownership tag. EKS puts that tag
# (`k8s.io/cluster-autoscaler/<cluster> = owned`) on the group of every managed node group.
data "aws_iam_policy_document" "cluster_autoscaler" {
  count = var.cluster_autoscaler == null ? 0 : 1

  statement {
    sid = "DiscoverNodeGroups"
    actions = [
      "autoscaling:DescribeAutoScalingGroups",
      "autoscaling:DescribeAutoScalingInstances",
      "autoscaling:DescribeLaunchConfigurations",
      "autoscaling:DescribeScalingActivities",
      "ec2:DescribeImages",
      "ec2:DescribeInstanceTypes",
      "ec2:DescribeLaunchTemplateVersions",
      "ec2:GetInstanceTypesFromInstanceRequirements",
    ]
    resources = ["*"] # these reads have no resource-level permissions
  }

  # The labels and taints of a managed node group at zero nodes: what lets the autoscaler start
  # the spot or GPU group from nothing for a pod that selects it.
  statement {
    sid       = "DescribeOwnManagedNodeGroups"
    actions   = ["eks:DescribeNodegroup"]
    resources = ["arn:${local.autoscaled_cluster.partition}:eks:${local.autoscaled_cluster.region}:${local.autoscaled_cluster.account}:nodegroup/${local.autoscaled_cluster.name}/*"]
  }

  statement {
    sid = "ScaleOwnNodeGroups"
    actions = [
      "autoscaling:SetDesiredCapacity",
      "autoscaling:TerminateInstanceInAutoScalingGroup",
    ]
    resources = ["arn:${local.autoscaled_cluster.partition}:autoscaling:${local.autoscaled_cluster.region}:${local.autoscaled_cluster.account}:autoScalingGroup:*:autoScalingGroupName/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/k8s.io/cluster-autoscaler/${local.autoscaled_cluster.name}"
      values   = ["owned"]
    }
  }
}

resource "aws_iam_role_policy" "cluster_autoscaler" {
  count = var.cluster_autoscaler == null ? 0 : 1

  name   = "cluster-autoscaler"
  role   = aws_iam_role.this["cluster-autoscaler"].id
  policy = data.aws_iam_policy_document.cluster_autoscaler[0].json
}

# Fluent Bit's cloudwatch_logs output: it creates a stream per container log file in the one
# group Terraform made (modules/eks, with its retention and key) and puts events into it. No
# logs:CreateLogGroup (the output runs with auto_create_group off) and no other group.
data "aws_iam_policy_document" "log_shipper" {
  count = var.log_shipper == null ? 0 : 1

  statement {
    sid = "WriteContainerLogs"
    actions = [
      "logs:CreateLogStream",
      "logs:DescribeLogStreams",
      "logs:PutLogEvents",
    ]
    # The group (CreateLogStream, DescribeLogStreams) and its streams (PutLogEvents).
    resources = [var.log_shipper.log_group_arn, "${var.log_shipper.log_group_arn}:log-stream:*"]
  }
}

resource "aws_iam_role_policy" "log_shipper" {
  count = var.log_shipper == null ? 0 : 1

  name   = "container-logs"
  role   = aws_iam_role.this["log-shipper"].id
  policy = data.aws_iam_policy_document.log_shipper[0].json
}
