# AWS roles for the GitHub Actions workflows, without static keys: each trusts GitHub's OIDC
# tokens of this repository only, narrowed by the token's `sub` to the event that may use it.
#   release  (release.yml on main)                 push images and charts to the dev registry
#   plan     (infra.yml on pull requests)          read everything, lock and read the states
#   apply-*  (infra.yml in environment infra-*)    change that environment; reviewers gate it

locals {
  github          = var.github_repository != null
  github_oidc_url = "token.actions.githubusercontent.com"
  github_oidc_arn = local.github ? (var.create_github_oidc_provider ? aws_iam_openid_connect_provider.github[0].arn : data.aws_iam_openid_connect_provider.github[0].arn) : null
  github_roles = local.github ? merge(
    {
      release = "repo:${var.github_repository}:ref:refs/heads/main"
      plan    = "repo:${var.github_repository}:pull_request"
    },
    { for env, environment in var.github_environments : "apply-${env}" => "repo:${var.github_repository}:environment:${environment}" },
  ) : {}
}

resource "aws_iam_openid_connect_provider" "github" {
  count = local.github && var.create_github_oidc_provider ? 1 : 0

  url            = "https://${local.github_oidc_url}"
  client_id_list = ["sts.amazonaws.com"]
}

data "aws_iam_openid_connect_provider" "github" {
  count = local.github && !var.create_github_oidc_provider ? 1 : 0

  url = "https://${local.github_oidc_url}"
}

data "aws_iam_policy_document" "github_assume" {
  for_each = local.github_roles

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [local.github_oidc_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.github_oidc_url}:aud"
      values   = ["sts.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.github_oidc_url}:sub"
      values   = [each.value]
    }
  }
}

resource "aws_iam_role" "github" {
  for_each = local.github_roles

  name                 = "galpipe-github-${each.key}"
  description          = "GitHub Actions of ${var.github_repository} (${each.value})"
  assume_role_policy   = data.aws_iam_policy_document.github_assume[each.key].json
  max_session_duration = 3600
}

data "aws_region" "current" {}
data "aws_partition" "current" {}

data "aws_iam_policy_document" "release" {
  count = local.github ? 1 : 0

  statement {
    sid       = "RegistryLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"] # GetAuthorizationToken has no resource-level permissions
  }

  statement {
    sid = "PushImagesAndCharts"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:CompleteLayerUpload",
      "ecr:DescribeImages",
      "ecr:InitiateLayerUpload",
      "ecr:PutImage",
      "ecr:UploadLayerPart",
    ]
    resources = ["arn:${data.aws_partition.current.partition}:ecr:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:repository/${var.release_repository_prefix}*"]
  }
}

resource "aws_iam_role_policy" "release" {
  count = local.github ? 1 : 0

  name   = "push-to-registry"
  role   = aws_iam_role.github["release"].id
  policy = data.aws_iam_policy_document.release[0].json
}

# A plan reads every resource Terraform manages, and holds the state lock while it reads.
resource "aws_iam_role_policy_attachment" "plan_read_only" {
  count = local.github ? 1 : 0

  role       = aws_iam_role.github["plan"].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/ReadOnlyAccess"
}

data "aws_iam_policy_document" "state_access" {
  statement {
    sid       = "States"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.state.arn}/galpipe/*"]
  }

  statement {
    sid       = "StateBucket"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.state.arn]
  }

  statement {
    sid       = "Locks"
    actions   = ["dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"]
    resources = [aws_dynamodb_table.lock.arn]
  }

  statement {
    sid       = "StateKey"
    actions   = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
    resources = [module.key.key_arn]
  }
}

resource "aws_iam_role_policy" "state" {
  for_each = { for name, sub in local.github_roles : name => sub if name != "release" }

  name   = "terraform-state"
  role   = aws_iam_role.github[each.key].id
  policy = data.aws_iam_policy_document.state_access.json
}

resource "aws_iam_role_policy_attachment" "apply" {
  #checkov:skip=CKV_AWS_274:an apply creates VPCs, EKS, RDS, S3, KMS and IAM roles, so it needs administrator rights; only infra.yml jobs in the reviewer-gated GitHub environment of that env can assume the role
  for_each = local.github ? { for env in keys(var.github_environments) : env => "apply-${env}" } : {}

  role       = aws_iam_role.github[each.value].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AdministratorAccess"
}
