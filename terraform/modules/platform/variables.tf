# What differs between the environments. Sizes and redundancy have no defaults on purpose: each
# environment states them, so a new one cannot inherit prod's cost or dev's fragility unnoticed.

variable "name" {
  description = "Name of the environment's resources (cluster, database, role prefix, bucket `<name>-cutouts-<account id>`), e.g. `galpipe-dev`."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name)) && !strcontains(var.name, "--")
    error_message = "The name must be 3-32 characters: lowercase letters, digits and single '-', starting with a letter."
  }
}

variable "availability_zones" {
  description = "The three availability zones of the environment; null for the provider region's zones a, b and c."
  type        = list(string)
  default     = null

  validation {
    condition     = var.availability_zones == null || try(length(distinct(var.availability_zones)) == 3, false)
    error_message = "Give three distinct availability zones, or null for the region's zones a, b and c."
  }
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC (/16 or /17)."
  type        = string

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0))
    error_message = "The VPC CIDR must be a valid IPv4 CIDR block."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper; a zone outage cuts egress) instead of one per zone."
  type        = bool
}

variable "kms_deletion_window_in_days" {
  description = "Deletion window of the KMS keys of the flow logs, the cluster, the database and the bucket, in days (a scheduled deletion can be cancelled)."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_in_days >= 7 && var.kms_deletion_window_in_days <= 30
    error_message = "KMS accepts a deletion window of 7 to 30 days."
  }
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of the cluster, e.g. `1.33`."
  type        = string

  validation {
    condition     = can(regex("^1\\.[0-9]{2}$", var.kubernetes_version))
    error_message = "The Kubernetes version must be a minor version such as \"1.33\"."
  }
}

variable "api_public_access_cidrs" {
  description = "CIDRs allowed to reach the Kubernetes API from the internet; empty keeps the API private to the VPC."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for cidr in var.api_public_access_cidrs : can(cidrhost(cidr, 0)) && cidr != "0.0.0.0/0"])
    error_message = "Each CIDR must be a valid IPv4 block, and 0.0.0.0/0 is not allowed."
  }
}

variable "cluster_admin_principal_arns" {
  description = "IAM roles or users given cluster-admin through EKS access entries."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.cluster_admin_principal_arns : can(regex("^arn:[a-z-]+:iam::[0-9]{12}:(role|user)/", arn))])
    error_message = "Each admin principal must be an IAM role or user ARN."
  }
}

variable "enable_eks_addons" {
  description = "Install the EKS core add-ons. True on AWS; only an API emulator without the add-on API (moto, in the offline tests) turns it off."
  type        = bool
  default     = true
}

variable "general_node_group" {
  description = "Instance types and sizes of the always-on on-demand node group (the platform's controllers and the pipelines)."
  type = object({
    instance_types = list(string)
    min_size       = number
    max_size       = number
    desired_size   = number
  })

  validation {
    condition     = length(var.general_node_group.instance_types) > 0 && var.general_node_group.min_size >= 1 && var.general_node_group.min_size <= var.general_node_group.desired_size && var.general_node_group.desired_size <= var.general_node_group.max_size
    error_message = "The general node group needs instance types and 1 <= min_size <= desired_size <= max_size."
  }
}

variable "spot_instance_types" {
  description = "Instance types of the spot node group for radon workers, which scales from zero; empty for no spot group."
  type        = list(string)

  validation {
    condition     = length(var.spot_instance_types) == 0 || length(var.spot_instance_types) >= 2
    error_message = "Give no spot instance types (no spot group) or at least two (spot capacity varies by type)."
  }
}

variable "spot_max_size" {
  description = "Most spot nodes (bounds the radon scale-out together with KEDA's maxReplicaCount)."
  type        = number

  validation {
    condition     = var.spot_max_size >= 1 && var.spot_max_size <= 100
    error_message = "spot_max_size must be 1 to 100."
  }
}

variable "gpu_instance_types" {
  description = "Instance types of the optional GPU node group, which scales from zero; empty for none (the radon science core runs on CPUs)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for type in var.gpu_instance_types : can(regex("^(g|p)[0-9][a-z0-9-]*\\.[a-z0-9]+$", type))])
    error_message = "GPU instance types belong to the g or p families, e.g. g5.xlarge."
  }
}

variable "gpu_max_size" {
  description = "Most GPU nodes when the GPU group exists."
  type        = number
  default     = 2

  validation {
    condition     = var.gpu_max_size >= 1 && var.gpu_max_size <= 20
    error_message = "gpu_max_size must be 1 to 20."
  }
}

variable "database_instance_class" {
  description = "RDS instance class of the database, e.g. `db.t4g.medium`."
  type        = string

  validation {
    condition     = can(regex("^db\\.[a-z0-9]+\\.[a-z0-9]+$", var.database_instance_class))
    error_message = "The instance class must look like db.<family>.<size>."
  }
}

variable "database_storage_gib" {
  description = "Initial database storage (GiB, gp3)."
  type        = number

  validation {
    condition     = var.database_storage_gib >= 20 && var.database_storage_gib <= 65536
    error_message = "RDS PostgreSQL on gp3 takes 20 to 65536 GiB."
  }
}

variable "database_max_storage_gib" {
  description = "Ceiling of database storage autoscaling (GiB)."
  type        = number

  validation {
    condition     = var.database_max_storage_gib >= var.database_storage_gib && var.database_max_storage_gib <= 65536
    error_message = "The storage ceiling must be at least database_storage_gib and at most 65536 GiB."
  }
}

variable "database_max_connections" {
  description = "PostgreSQL max_connections: at least the sum over pipelines of maxReplicaCount x GALPIPE_DB_POOL_SIZE, plus the monitor, migrations, KEDA and operators."
  type        = number
  default     = 400

  validation {
    condition     = var.database_max_connections >= 100 && var.database_max_connections <= 5000
    error_message = "database_max_connections must be 100 to 5000."
  }
}

variable "database_multi_az" {
  description = "Run a synchronous standby of the database in a second zone (automatic failover)."
  type        = bool
}

variable "database_deletion_protection" {
  description = "Refuse to delete the database (turn off, apply, then destroy, to delete on purpose)."
  type        = bool
}

variable "database_skip_final_snapshot" {
  description = "Delete the database without a final snapshot (only for disposable environments)."
  type        = bool
}

variable "database_backup_retention_days" {
  description = "Days of automated database backups; point-in-time recovery reaches back this far."
  type        = number

  validation {
    condition     = var.database_backup_retention_days >= 1 && var.database_backup_retention_days <= 35
    error_message = "Backups must be kept 1 to 35 days (0 would turn off point-in-time recovery)."
  }
}

variable "bucket_force_destroy" {
  description = "Let `terraform destroy` delete the cutout bucket while it still holds objects (only for disposable environments)."
  type        = bool
}

variable "image_repository_url" {
  description = "URL of the ECR repository of the galpipe image that the environment runs (the `image.repository` of the `chart_values` output)."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{12}\\.dkr\\.ecr\\.[a-z0-9-]+\\.amazonaws\\.com(\\.cn)?/.+$", var.image_repository_url))
    error_message = "The image repository must be an ECR URL: <account>.dkr.ecr.<region>.amazonaws.com/<name>."
  }
}

variable "registry_repository_arns" {
  description = "ARNs of the ECR repositories (image and chart) that Flux's source-controller and image-reflector-controller may read."
  type        = list(string)

  validation {
    condition     = length(var.registry_repository_arns) > 0 && alltrue([for arn in var.registry_repository_arns : can(regex("^arn:[a-z-]+:ecr:[a-z0-9-]+:[0-9]{12}:repository/.+$", arn))])
    error_message = "Give the ECR repository ARNs (arn:aws:ecr:<region>:<account>:repository/<name>)."
  }
}

variable "kubernetes_namespace" {
  description = "Namespace of the galpipe Helm release (the IRSA trust names its ServiceAccounts)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.kubernetes_namespace))
    error_message = "The namespace must be a DNS label."
  }
}

variable "helm_release_name" {
  description = "Name of the galpipe Helm release: the chart names each pipeline's ServiceAccount `<release>-<pipeline>`."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,51}[a-z0-9])?$", var.helm_release_name))
    error_message = "The release name must be a DNS label of at most 53 characters."
  }
}

variable "external_secrets_service_account" {
  description = "Namespace and name of the External Secrets Operator's ServiceAccount (k8s/platform/external-secrets.yaml), which builds the chart's three database Secrets from the roles' secrets."
  type = object({
    namespace = string
    name      = string
  })

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.external_secrets_service_account.namespace)) && can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.external_secrets_service_account.name))
    error_message = "The namespace must be a DNS label and the ServiceAccount name a DNS subdomain."
  }
}

variable "cluster_autoscaler_service_account" {
  description = "Namespace and name of the Cluster Autoscaler's ServiceAccount (`rbac.serviceAccount.name` of the HelmRelease in k8s/platform/cluster-autoscaler.yaml), which alone may assume its IRSA role."
  type = object({
    namespace = string
    name      = string
  })
  default = {
    namespace = "kube-system"
    name      = "cluster-autoscaler"
  }

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.cluster_autoscaler_service_account.namespace)) && can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.cluster_autoscaler_service_account.name))
    error_message = "The namespace must be a DNS label and the ServiceAccount name a DNS subdomain."
  }
}

variable "database_alarm_actions" {
  description = "ARNs of the SNS topics that the database's CloudWatch alarms notify (the on-call pager's topic); empty: the alarms show in the console only."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.database_alarm_actions : startswith(arn, "arn:") && strcontains(arn, ":sns:")])
    error_message = "Each alarm action must be an SNS topic ARN."
  }
}

variable "log_shipper_service_account" {
  description = "Namespace and name of Fluent Bit's ServiceAccount (`serviceAccount.name` of the HelmRelease in k8s/platform/fluent-bit.yaml), which alone may assume the log shipper's IRSA role."
  type = object({
    namespace = string
    name      = string
  })
  default = {
    namespace = "logging"
    name      = "fluent-bit"
  }

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.log_shipper_service_account.namespace)) && can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.log_shipper_service_account.name))
    error_message = "The namespace must be a DNS label and the ServiceAccount name a DNS subdomain."
  }
}

variable "policy_controller_service_account" {
  description = "Namespace and name of the Sigstore policy-controller webhook's ServiceAccount (`webhook.serviceAccount.name` in k8s/platform/policy-controller.yaml): its IRSA role reads the image repositories, where the signatures are."
  type = object({
    namespace = string
    name      = string
  })
  default = {
    namespace = "cosign-system"
    name      = "policy-controller-webhook"
  }

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.policy_controller_service_account.namespace)) && can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.policy_controller_service_account.name))
    error_message = "The namespace must be a DNS label and the ServiceAccount name a DNS subdomain."
  }
}

variable "container_log_retention_days" {
  description = "Days to keep the containers' logs that Fluent Bit ships to `/aws/eks/<name>/containers`."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.container_log_retention_days)
    error_message = "The retention must be one of CloudWatch Logs' values (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)."
  }
}

variable "database_role_secret_rotation" {
  description = "Rotation of the database roles' secrets: the ARN of a single-user PostgreSQL rotation function in the VPC and the interval in days (modules/database `role_secret_rotation`); null: not rotated until one is deployed."
  type = object({
    lambda_arn = string
    days       = number
  })
  default = null

  validation {
    condition     = var.database_role_secret_rotation == null || try(can(regex("^arn:[a-z-]+:lambda:[a-z0-9-]+:[0-9]{12}:function:[A-Za-z0-9_-]{1,64}$", var.database_role_secret_rotation.lambda_arn)) && var.database_role_secret_rotation.days >= 1 && var.database_role_secret_rotation.days <= 90, false)
    error_message = "Rotation needs a Lambda function ARN (arn:aws:lambda:<region>:<account>:function:<name>) and 1 to 90 days."
  }
}
