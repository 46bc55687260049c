variable "name" {
  description = "Name of the EKS cluster and prefix of its other resources, e.g. `galpipe-dev` (the subnets are tagged for this name)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "The name must be 3-32 characters: lowercase letters, digits and '-', starting with a letter."
  }
}

variable "kubernetes_version" {
  description = "Kubernetes minor version of the control plane, e.g. `1.33` (managed node groups follow it)."
  type        = string
  default     = "1.33"

  validation {
    condition     = can(regex("^1\\.[0-9]{2}$", var.kubernetes_version))
    error_message = "The Kubernetes version must be a minor version such as \"1.33\"."
  }
}

variable "vpc_id" {
  description = "ID of the VPC the cluster runs in."
  type        = string

  validation {
    condition     = startswith(var.vpc_id, "vpc-")
    error_message = "The VPC ID must start with 'vpc-'."
  }
}

variable "subnet_ids" {
  description = "Private subnets (at least two zones) for the control-plane interfaces and the nodes."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2 && alltrue([for id in var.subnet_ids : startswith(id, "subnet-")])
    error_message = "At least two subnet IDs (each starting with 'subnet-') are required: EKS needs two zones."
  }
}

variable "endpoint_public_access_cidrs" {
  description = "CIDRs allowed to reach the Kubernetes API over the internet; empty keeps the API private to the VPC (reach it through a VPN or bastion)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for cidr in var.endpoint_public_access_cidrs : can(cidrhost(cidr, 0)) && cidr != "0.0.0.0/0"])
    error_message = "Each public access CIDR must be a valid IPv4 block, and 0.0.0.0/0 (the whole internet) is not allowed."
  }
}

variable "cluster_admin_principal_arns" {
  description = "IAM roles or users that get cluster-admin through EKS access entries (besides the identity that creates the cluster)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.cluster_admin_principal_arns : can(regex("^arn:[a-z-]+:iam::[0-9]{12}:(role|user)/", arn))])
    error_message = "Each admin principal must be an IAM role or user ARN (arn:aws:iam::123456789012:role/...)."
  }
}

variable "general_node_group" {
  description = "The always-on on-demand node group that runs the platform (Flux, KEDA, Prometheus) and the pipelines."
  type = object({
    instance_types = list(string)
    min_size       = number
    max_size       = number
    desired_size   = number
    disk_size_gib  = optional(number, 50)
  })

  validation {
    condition     = length(var.general_node_group.instance_types) > 0 && var.general_node_group.min_size >= 1 && var.general_node_group.min_size <= var.general_node_group.desired_size && var.general_node_group.desired_size <= var.general_node_group.max_size
    error_message = "The general node group needs instance types and 1 <= min_size <= desired_size <= max_size."
  }
}

variable "spot_node_group" {
  description = "Optional spot node group (EKS labels its nodes eks.amazonaws.com/capacityType=SPOT) for interruptible workers such as radon; null for none."
  type = object({
    instance_types = list(string)
    min_size       = number
    max_size       = number
    desired_size   = number
    disk_size_gib  = optional(number, 50)
  })
  default = null

  validation {
    condition     = var.spot_node_group == null || try(length(var.spot_node_group.instance_types) >= 2 && var.spot_node_group.min_size >= 0 && var.spot_node_group.min_size <= var.spot_node_group.desired_size && var.spot_node_group.desired_size <= var.spot_node_group.max_size, false)
    error_message = "The spot node group needs at least two instance types (spot capacity varies by type) and 0 <= min_size <= desired_size <= max_size."
  }
}

variable "spot_taint" {
  description = "Taint of the spot node group's nodes, so that only pods tolerating it run there (the chart's radon pipeline tolerates galpipe.io/node-group=spot:NoSchedule by default); null for an untainted group any pod may use."
  type = object({
    key    = string
    value  = string
    effect = string
  })
  default = {
    key    = "galpipe.io/node-group"
    value  = "spot"
    effect = "NO_SCHEDULE"
  }

  validation {
    condition     = var.spot_taint == null || try(contains(["NO_SCHEDULE", "NO_EXECUTE", "PREFER_NO_SCHEDULE"], var.spot_taint.effect) && can(regex("^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", var.spot_taint.key)) && length(var.spot_taint.value) <= 63, false)
    error_message = "The spot taint needs a Kubernetes label-style key, a value of at most 63 characters and effect NO_SCHEDULE, NO_EXECUTE or PREFER_NO_SCHEDULE (the EKS API's spelling)."
  }
}

variable "gpu_node_group" {
  description = "Optional GPU node group (NVIDIA AMI, tainted nvidia.com/gpu=true:NoSchedule so only pods that tolerate it land there); null for none."
  type = object({
    instance_types = list(string)
    min_size       = number
    max_size       = number
    desired_size   = number
    disk_size_gib  = optional(number, 100)
    capacity_type  = optional(string, "ON_DEMAND")
  })
  default = null

  validation {
    condition     = var.gpu_node_group == null || try(length(var.gpu_node_group.instance_types) > 0 && contains(["ON_DEMAND", "SPOT"], var.gpu_node_group.capacity_type) && var.gpu_node_group.min_size >= 0 && var.gpu_node_group.min_size <= var.gpu_node_group.desired_size && var.gpu_node_group.desired_size <= var.gpu_node_group.max_size, false)
    error_message = "The GPU node group needs instance types, capacity_type ON_DEMAND or SPOT, and 0 <= min_size <= desired_size <= max_size."
  }

  validation {
    condition     = var.gpu_node_group == null || try(alltrue([for type in var.gpu_node_group.instance_types : can(regex("^(g|p)[0-9][a-z0-9-]*\\.[a-z0-9]+$", type))]), false)
    error_message = "GPU instance types belong to the NVIDIA g or p families (e.g. g5.xlarge): the NVIDIA AMI needs a GPU."
  }

  validation {
    condition     = var.gpu_node_group == null || try(var.gpu_node_group.disk_size_gib >= 50 && var.gpu_node_group.disk_size_gib <= 1000, false)
    error_message = "The GPU node group's disk_size_gib must be 50 to 1000: the NVIDIA AMI and a CUDA-capable image need at least 50 GiB."
  }
}

variable "enable_addons" {
  description = "Install the core EKS add-ons (vpc-cni with NetworkPolicy enforcement, kube-proxy, coredns, aws-ebs-csi-driver). Always true on AWS; only an API emulator without the add-on API turns it off."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "Days to keep the control-plane logs (api, audit, authenticator, controllerManager, scheduler)."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "The retention must be one of CloudWatch Logs' values (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)."
  }
}

variable "container_log_retention_days" {
  description = "Days to keep the containers' logs in `/aws/eks/<name>/containers` (what Fluent Bit ships from every node)."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.container_log_retention_days)
    error_message = "The retention must be one of CloudWatch Logs' values (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)."
  }
}

variable "kms_deletion_window_in_days" {
  description = "Deletion window of the cluster's KMS key (Kubernetes secrets and control-plane logs), in days."
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
