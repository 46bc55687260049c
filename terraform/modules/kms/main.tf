# One customer managed key with yearly rotation. The key policy delegates to IAM (the account
# root statement), so who may use the key is decided by IAM policies such as the IRSA roles';
# CloudWatch Logs is a service principal and needs its own statement.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

data "aws_iam_policy_document" "key" {
  #checkov:skip=CKV_AWS_109:a key policy's "*" resource is this key alone; the root statement hands control to IAM policies, the documented default key policy
  #checkov:skip=CKV_AWS_111:a key policy's "*" resource is this key alone; the root statement hands control to IAM policies, the documented default key policy
  #checkov:skip=CKV_AWS_356:a key policy's "*" resource is this key alone (key policies cannot name other resources)
  statement {
    sid       = "DelegateToIam"
    actions   = ["kms:*"]
    resources = ["*"] # in a key policy, "*" means this key

    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  dynamic "statement" {
    for_each = length(var.cloudwatch_logs_log_group_arns) > 0 ? [1] : []

    content {
      sid       = "AllowCloudWatchLogs"
      actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
      resources = ["*"]

      principals {
        type        = "Service"
        identifiers = ["logs.${data.aws_region.current.name}.amazonaws.com"]
      }

      condition {
        test     = "ArnLike"
        variable = "kms:EncryptionContext:aws:logs:arn"
        values   = var.cloudwatch_logs_log_group_arns
      }
    }
  }
}

resource "aws_kms_key" "this" {
  description             = var.description
  deletion_window_in_days = var.deletion_window_in_days
  enable_key_rotation     = true
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.alias}"
  target_key_id = aws_kms_key.this.key_id
}
