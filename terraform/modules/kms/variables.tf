variable "alias" {
  description = "Alias of the key without the `alias/` prefix, e.g. `galpipe-dev-s3`."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z0-9/_-]{1,250}$", var.alias)) && !startswith(var.alias, "aws/")
    error_message = "The alias must be 1-250 characters of letters, digits, '/', '_' and '-', and must not start with 'aws/' (reserved for AWS managed keys)."
  }
}

variable "description" {
  description = "What the key protects (shown in the KMS console)."
  type        = string

  validation {
    condition     = length(var.description) > 0 && length(var.description) <= 8192
    error_message = "The description must be 1-8192 characters."
  }
}

variable "deletion_window_in_days" {
  description = "Days between `terraform destroy` and the key's deletion (a scheduled deletion can be cancelled)."
  type        = number
  default     = 30

  validation {
    condition     = var.deletion_window_in_days >= 7 && var.deletion_window_in_days <= 30
    error_message = "KMS accepts a deletion window of 7 to 30 days."
  }
}

variable "cloudwatch_logs_log_group_arns" {
  description = "ARNs (wildcards allowed) of CloudWatch Logs log groups that may encrypt with this key; empty for a key that CloudWatch Logs does not use."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.cloudwatch_logs_log_group_arns : startswith(arn, "arn:")])
    error_message = "Each log group ARN must start with 'arn:'."
  }
}

variable "tags" {
  description = "Tags for the key (the provider's default_tags are added)."
  type        = map(string)
  default     = {}

  validation {
    condition     = length(var.tags) <= 40 && alltrue([for key, value in var.tags : length(key) >= 1 && length(key) <= 128 && length(value) <= 256 && !startswith(key, "aws:")])
    error_message = "At most 40 tags (the provider's default_tags take the rest of AWS's 50), keys of 1-128 characters not starting with 'aws:', values of at most 256."
  }
}
