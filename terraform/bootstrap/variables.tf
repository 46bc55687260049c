variable "region" {
  description = "AWS region of the state bucket (the environments' backend.hcl names it)."
  type        = string
  default     = "eu-west-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "The region must be an AWS region name such as eu-west-1."
  }
}

variable "name" {
  description = "Prefix of the state bucket (`<name>-<account id>`) and of the key alias."
  type        = string
  default     = "galpipe-tfstate"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,40}[a-z0-9]$", var.name))
    error_message = "The name must be 3-42 characters: lowercase letters, digits and '-', starting with a letter."
  }
}

variable "noncurrent_state_retention_days" {
  description = "Days to keep superseded versions of the state files (how far back a state can be restored)."
  type        = number
  default     = 90

  validation {
    condition     = var.noncurrent_state_retention_days >= 7
    error_message = "Keep old state versions at least 7 days."
  }
}

variable "github_repository" {
  description = "GitHub repository (`owner/name`) whose Actions get AWS roles through GitHub OIDC (release, plan, apply per environment); null for none."
  type        = string
  default     = null

  validation {
    condition     = var.github_repository == null || can(regex("^[A-Za-z0-9-]+/[A-Za-z0-9._-]+$", var.github_repository))
    error_message = "The GitHub repository must be given as owner/name."
  }
}

variable "create_github_oidc_provider" {
  description = "Create the account's GitHub OIDC identity provider (there is one per account: false if it already exists)."
  type        = bool
  default     = true
}

variable "github_environments" {
  description = "GitHub environments of infra.yml's applies, by Terraform environment, for the environments whose resources live in this account (prod is a separate account: bootstrap each account with its own). Each gets an apply role that only jobs of that GitHub environment can assume, and a read-only plan role for jobs of `<environment>-plan`."
  type        = map(string)
  default = {
    dev = "infra-dev"
  }

  validation {
    condition     = alltrue([for env, environment in var.github_environments : can(regex("^[a-z][a-z0-9-]*$", env)) && length(environment) > 0])
    error_message = "Keys are Terraform environment names (lowercase), values GitHub environment names."
  }
}

variable "release_repository_prefix" {
  description = "Name prefix of the ECR repositories that release.yml pushes to (the image and the chart of envs/dev); null in an account without the registry (prod), which then gets no release role."
  type        = string
  default     = "galpipe-dev/"

  validation {
    condition     = var.release_repository_prefix == null || can(regex("^[a-z0-9][a-z0-9._/-]*/$", var.release_repository_prefix))
    error_message = "The prefix must be lowercase repository path segments ending in '/', e.g. galpipe-dev/."
  }
}
