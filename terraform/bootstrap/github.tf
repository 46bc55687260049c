# AWS roles for the GitHub Actions workflows, without static keys: each trusts GitHub's OIDC
# tokens of this repository only, narrowed by the token's `sub` to the GitHub environment (or
# branch) that may use it. Bootstrap runs once per AWS account, so each environment's account
# holds the roles of that environment only (prod is a separate account):
#   release     (release.yml on main)                    push images and charts to the registry
#                                                        (the dev account only: one registry)
#   plan-<env>  (infra.yml jobs in infra-<env>-plan)     read everything and read the state:
#                                                        no state write, no lock (plan -lock=false)
#   apply-<env> (infra.yml jobs in infra-<env>)          change that environment and its state;
#                                                        the environment's reviewers gate it

locals {
  github          = var.github_repository != null
  github_oidc_url = "token.actions.githubusercontent.com"
  github_oidc_arn = local.github ? (var.create_github_oidc_provider ? aws_iam_openid_connect_provider.github[0].arn : data.aws_iam_openid_connect_provider.github[0].arn) : null
  release         = local.github && var.release_repository_prefix != null
  github_roles = local.github ? merge(
    local.release ? { release = "repo:${var.github_repository}:ref:refs/heads/main" } : {},
    { for env, environment in var.github_environments : "plan-${env}" => "repo:${var.github_repository}:environment:${environment}-plan" },
    { for env, environment in var.github_environments : "apply-${env}" => "repo:${var.github_repository}:environment:${environment}" },
  ) : {}
  plan_roles  = { for name, sub in local.github_roles : name => sub if startswith(name, "plan-") }
  apply_roles = { for name, sub in local.github_roles : name => sub if startswith(name, "apply-") }
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
  count = local.release ? 1 : 0

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
  count = local.release ? 1 : 0

  name   = "push-to-registry"
  role   = aws_iam_role.github["release"].id
  policy = data.aws_iam_policy_document.release[0].json
}

# A plan reads every resource Terraform manages and the state, and writes nothing: it runs with
# -lock=false (a lock is an object written next to the state). Applying a saved plan takes the
# lock and refuses a plan whose state has changed since, so an unlocked plan cannot apply stale.
resource "aws_iam_role_policy_attachment" "plan_read_only" {
  for_each = local.plan_roles

  role       = aws_iam_role.github[each.key].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/ReadOnlyAccess"
}

data "aws_iam_policy_document" "state_read" {
  statement {
    sid       = "ReadStates"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.state.arn}/galpipe/*"]
  }

  statement {
    sid       = "StateBucket"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.state.arn]
  }

  statement {
    sid       = "StateKey"
    actions   = ["kms:Decrypt"]
    resources = [module.key.key_arn]
  }
}

# An apply reads and writes the state and its lock file (`<key>.tflock`, S3-native locking).
data "aws_iam_policy_document" "state_write" {
  source_policy_documents = [data.aws_iam_policy_document.state_read.json]

  statement {
    sid       = "WriteStatesAndLocks"
    actions   = ["s3:PutObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.state.arn}/galpipe/*"]
  }

  statement {
    sid       = "EncryptStates"
    actions   = ["kms:Encrypt", "kms:GenerateDataKey"]
    resources = [module.key.key_arn]
  }
}

resource "aws_iam_role_policy" "state_read" {
  for_each = local.plan_roles

  name   = "terraform-state-read"
  role   = aws_iam_role.github[each.key].id
  policy = data.aws_iam_policy_document.state_read.json
}

resource "aws_iam_role_policy" "state" {
  for_each = local.apply_roles

  name   = "terraform-state"
  role   = aws_iam_role.github[each.key].id
  policy = data.aws_iam_policy_document.state_write.json
}

resource "aws_iam_role_policy_attachment" "apply" {
  #checkov:skip=CKV_AWS_274:an apply creates VPCs, EKS, RDS, S3, KMS and IAM roles, so it needs administrator rights; only infra.yml jobs in the reviewer-gated GitHub environment of that env can assume the role
  for_each = local.apply_roles

  role       = aws_iam_role.github[each.key].name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AdministratorAccess"
}
