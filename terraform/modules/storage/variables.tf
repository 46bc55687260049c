variable "bucket_name" {
  description = "Globally unique name of the cutout bucket, e.g. `galpipe-dev-cutouts-123456789012`."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$", var.bucket_name)) && !strcontains(var.bucket_name, "--")
    error_message = "The bucket name must be 3-63 characters of lowercase letters, digits and single '-', starting and ending with a letter or digit (no dots: virtual-hosted TLS breaks on them)."
  }
}

variable "object_prefix" {
  description = "Key prefix of galpipe's store inside the bucket (`GALPIPE_OBJECT_STORE=s3://<bucket>/<prefix>`); the lifecycle rules apply under it."
  type        = string
  default     = "galpipe"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$", var.object_prefix))
    error_message = "The prefix must be '/'-separated segments of lowercase letters, digits, '.', '_' and '-', without a leading or trailing '/'."
  }
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete a bucket that still holds objects (only for disposable environments)."
  type        = bool
  default     = false
}

variable "infrequent_access_after_days" {
  description = "Days after which a cutout moves to S3 Standard-IA (radon reads each cutout once, soon after fetch)."
  type        = number
  default     = 30

  validation {
    condition     = var.infrequent_access_after_days >= 30
    error_message = "S3 moves objects to Standard-IA no earlier than 30 days after creation."
  }
}

variable "glacier_ir_after_days" {
  description = "Days after which a cutout moves to S3 Glacier Instant Retrieval (kept for re-measurement with a new algorithm version)."
  type        = number
  default     = 90

  validation {
    condition     = var.glacier_ir_after_days >= 90 && var.glacier_ir_after_days >= var.infrequent_access_after_days + 30
    error_message = "Glacier Instant Retrieval needs at least 90 days, and at least 30 days after the move to Standard-IA."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days a replaced or deleted object version is kept before it expires."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1
    error_message = "Noncurrent versions must be kept at least 1 day."
  }
}

variable "kms_deletion_window_in_days" {
  description = "Deletion window of the bucket's KMS key, in days."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_in_days >= 7 && var.kms_deletion_window_in_days <= 30
    error_message = "KMS accepts a deletion window of 7 to 30 days."
  }
}

variable "tags" {
  description = "Tags for every resource (the provider's default_tags are added)."
  type        = map(string)
  default     = {}

  validation {
    condition     = length(var.tags) <= 40 && alltrue([for key, value in var.tags : length(key) >= 1 && length(key) <= 128 && length(value) <= 256 && !startswith(key, "aws:")])
    error_message = "At most 40 tags (the provider's default_tags take the rest of AWS's 50), keys of 1-128 characters not starting with 'aws:', values of at most 256."
  }
}
