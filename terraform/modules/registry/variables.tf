variable "repositories" {
  description = "ECR repositories to create, keyed by role, e.g. `{ image = \"galpipe-dev/galpipe\", chart = \"galpipe-dev/charts/galpipe\" }` (the chart is an OCI Helm chart that Flux pulls)."
  type        = map(string)

  validation {
    condition = length(var.repositories) > 0 && alltrue([for name in values(var.repositories) :
    can(regex("^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$", name)) && length(name) >= 2 && length(name) <= 256])
    error_message = "Each repository name must be 2-256 characters: lowercase '/'-separated components of letters and digits joined by '.', '_' or '-'."
  }
}

variable "kms_alias" {
  description = "Alias (without `alias/`) of the KMS key that encrypts the repositories, e.g. `galpipe-dev-ecr`."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z0-9/_-]{1,250}$", var.kms_alias)) && !startswith(var.kms_alias, "aws/")
    error_message = "The alias must be 1-250 characters of letters, digits, '/', '_' and '-', not starting with 'aws/'."
  }
}

variable "pull_account_ids" {
  description = "Other AWS accounts (e.g. prod's) whose principals may pull from the repositories: an image is built once and promoted as it is."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.pull_account_ids : can(regex("^[0-9]{12}$", id))])
    error_message = "Each pull account must be a 12-digit AWS account ID."
  }
}

variable "keep_tagged_images" {
  description = "How many of the newest release images per repository (image tags `<run>-<sha>`, chart versions `X.Y.Z`: both start with a digit, see `release_tag_prefixes`) to keep; older ones expire. Prod promotions pin one of them, so keep enough for a rollback."
  type        = number
  default     = 200

  validation {
    condition     = var.keep_tagged_images >= 10
    error_message = "Keep at least 10 release images, so that a rollback target always exists."
  }
}

variable "release_tag_prefixes" {
  description = "Tag prefixes that mark releases (`<CI run number>-<short sha>` and chart versions start with a digit)."
  type        = list(string)
  default     = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]

  validation {
    condition     = length(var.release_tag_prefixes) > 0
    error_message = "At least one release tag prefix is needed."
  }
}

variable "untagged_expire_days" {
  description = "Days after which untagged images (layers of superseded multi-arch builds) expire."
  type        = number
  default     = 7

  validation {
    condition     = var.untagged_expire_days >= 1
    error_message = "Untagged images must be kept at least 1 day."
  }
}

variable "force_delete" {
  description = "Let `terraform destroy` delete the repositories while they hold images (only where no other environment runs these images)."
  type        = bool
  default     = false
}

variable "kms_deletion_window_in_days" {
  description = "Deletion window of the repositories' KMS key, in days."
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
