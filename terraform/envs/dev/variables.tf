variable "region" {
  description = "AWS region of the environment."
  type        = string
  default     = "eu-west-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "The region must be an AWS region name such as eu-west-1."
  }
}

variable "availability_zones" {
  description = "The three availability zones of the environment; null for the region's zones a, b and c."
  type        = list(string)
  default     = null

  validation {
    condition     = var.availability_zones == null || try(length(distinct(var.availability_zones)) == 3 && alltrue([for zone in var.availability_zones : startswith(zone, var.region)]), false)
    error_message = "Give three distinct availability zones of the environment's region (e.g. eu-west-1a, eu-west-1b, eu-west-1c), or null."
  }
}

variable "name" {
  description = "Name of the environment's resources (cluster, database, role prefix)."
  type        = string
  default     = "galpipe-dev"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "The name must be 3-32 characters: lowercase letters, digits and '-', starting with a letter."
  }
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC (/16 or /17)."
  type        = string
  default     = "10.20.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0))
    error_message = "The VPC CIDR must be a valid IPv4 CIDR block."
  }
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of the cluster."
  type        = string
  default     = "1.33"

  validation {
    condition     = can(regex("^1\\.[0-9]{2}$", var.kubernetes_version))
    error_message = "The Kubernetes version must be a minor version such as \"1.33\"."
  }
}

variable "api_public_access_cidrs" {
  description = "CIDRs (your office or VPN egress) allowed to reach the Kubernetes API from the internet; empty keeps the API private."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for cidr in var.api_public_access_cidrs : can(cidrhost(cidr, 0)) && cidr != "0.0.0.0/0"])
    error_message = "Each CIDR must be a valid IPv4 block, and 0.0.0.0/0 is not allowed."
  }
}

variable "cluster_admin_principal_arns" {
  description = "IAM roles or users given cluster-admin through EKS access entries (e.g. your SSO admin role)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.cluster_admin_principal_arns : can(regex("^arn:[a-z-]+:iam::[0-9]{12}:(role|user)/", arn))])
    error_message = "Each admin principal must be an IAM role or user ARN."
  }
}

variable "general_instance_types" {
  description = "Instance types of the general (on-demand) node group."
  type        = list(string)
  default     = ["m7i.large"]

  validation {
    condition     = length(var.general_instance_types) > 0 && alltrue([for type in var.general_instance_types : can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", type))])
    error_message = "At least one instance type, each like m7i.large, is needed."
  }
}

variable "spot_instance_types" {
  description = "Instance types of the spot node group for radon workers; empty for no spot group."
  type        = list(string)
  default     = ["c7i.xlarge", "c6i.xlarge", "c7a.xlarge"]

  validation {
    condition     = length(var.spot_instance_types) == 0 || length(var.spot_instance_types) >= 2
    error_message = "Give no spot instance types (no spot group) or at least two (spot capacity varies by type)."
  }
}

variable "spot_max_size" {
  description = "Most spot nodes (bounds the radon scale-out together with KEDA's maxReplicaCount)."
  type        = number
  default     = 5

  validation {
    condition     = var.spot_max_size >= 1 && var.spot_max_size <= 100
    error_message = "spot_max_size must be 1 to 100."
  }
}

variable "database_instance_class" {
  description = "RDS instance class of the database."
  type        = string
  default     = "db.t4g.medium"

  validation {
    condition     = can(regex("^db\\.[a-z0-9]+\\.[a-z0-9]+$", var.database_instance_class))
    error_message = "The instance class must look like db.<family>.<size>."
  }
}

variable "enable_eks_addons" {
  description = "Install the EKS core add-ons. Keep true; the offline tests set false because moto does not implement the EKS add-on API (CreateAddon)."
  type        = bool
  default     = true
}

variable "registry_pull_account_ids" {
  description = "AWS accounts of other environments (prod) that pull the images and charts of this registry; empty when they share this account."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.registry_pull_account_ids : can(regex("^[0-9]{12}$", id))])
    error_message = "Each account must be a 12-digit AWS account ID."
  }
}

variable "kubernetes_namespace" {
  description = "Namespace of the galpipe Helm release (the IRSA trust names its ServiceAccounts)."
  type        = string
  default     = "galpipe"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.kubernetes_namespace))
    error_message = "The namespace must be a DNS label."
  }
}

variable "helm_release_name" {
  description = "Name of the galpipe Helm release: the chart names each pipeline's ServiceAccount `<release>-<pipeline>`."
  type        = string
  default     = "galpipe"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,51}[a-z0-9])?$", var.helm_release_name))
    error_message = "The release name must be a DNS label of at most 53 characters."
  }
}

variable "external_secrets_service_account" {
  description = "Namespace and name of the External Secrets Operator's ServiceAccount, which builds the chart's database Secret from the RDS secret."
  type = object({
    namespace = string
    name      = string
  })
  default = {
    namespace = "external-secrets"
    name      = "external-secrets"
  }

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.external_secrets_service_account.namespace)) && can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.external_secrets_service_account.name))
    error_message = "The namespace must be a DNS label and the ServiceAccount name a DNS subdomain."
  }
}

variable "alarm_sns_topic_arns" {
  description = "SNS topics that the database's CloudWatch alarms notify (CPU, free storage, freeable memory, connections, transaction IDs): the on-call pager's topic, in this account. Empty: the alarms show in the console only."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.alarm_sns_topic_arns : can(regex("^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}$", arn))])
    error_message = "Each entry must be an SNS topic ARN, arn:aws:sns:<region>:<account>:<topic>."
  }
}
