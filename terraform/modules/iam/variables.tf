variable "name" {
  description = "Prefix of the role names, e.g. `galpipe-dev` (roles are `<name>-<pipeline>`)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "The name must be 3-32 characters: lowercase letters, digits and '-', starting with a letter."
  }
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC provider (output `oidc_provider_arn` of the eks module)."
  type        = string

  validation {
    condition     = can(regex("^arn:[a-z-]+:iam::[0-9]{12}:oidc-provider/.+$", var.oidc_provider_arn))
    error_message = "The OIDC provider ARN must look like arn:aws:iam::123456789012:oidc-provider/oidc.eks.<region>.amazonaws.com/id/<id>."
  }
}

variable "oidc_issuer" {
  description = "The cluster's OIDC issuer without `https://` (output `oidc_issuer` of the eks module)."
  type        = string

  validation {
    condition     = length(var.oidc_issuer) > 0 && !startswith(var.oidc_issuer, "https://")
    error_message = "The OIDC issuer must be given without the https:// scheme, e.g. oidc.eks.eu-west-1.amazonaws.com/id/ABC."
  }
}

variable "bucket_arn" {
  description = "ARN of the cutout bucket."
  type        = string

  validation {
    condition     = can(regex("^arn:[a-z-]+:s3:::[a-z0-9][a-z0-9.-]+$", var.bucket_arn))
    error_message = "The bucket ARN must look like arn:aws:s3:::bucket-name (no key part)."
  }
}

variable "bucket_kms_key_arn" {
  description = "ARN of the bucket's KMS key: writers need kms:GenerateDataKey on it, readers kms:Decrypt."
  type        = string

  validation {
    condition     = can(regex("^arn:[a-z-]+:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.bucket_kms_key_arn))
    error_message = "The bucket key must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)."
  }
}

variable "object_prefix" {
  description = "galpipe's store prefix inside the bucket (the `<prefix>` of `s3://<bucket>/<prefix>`)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$", var.object_prefix))
    error_message = "The prefix must be '/'-separated segments of lowercase letters, digits, '.', '_' and '-', without a leading or trailing '/'."
  }
}

variable "pipelines" {
  description = <<-EOT
    One IRSA role per pipeline, keyed by pipeline name. `namespace` and `service_account` name the
    Kubernetes ServiceAccount that may assume it; `key_prefix` is the part of the object keys (under
    `object_prefix`) the pipeline works on, e.g. `cutouts/`; `object_actions` is what it may do
    there: "s3:GetObject" (read, and HeadObject) and/or "s3:PutObject" (write). Nothing else is
    grantable: no listing, no deletion, nothing outside the prefix.
  EOT
  type = map(object({
    namespace       = string
    service_account = string
    key_prefix      = string
    object_actions  = list(string)
  }))

  validation {
    condition = alltrue([for name, p in var.pipelines :
      can(regex("^[a-z][a-z0-9-]{0,30}$", name)) && !contains(["database-secret-reader", "cluster-autoscaler", "log-shipper"], name) &&
      can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", p.namespace)) &&
      can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", p.service_account)) &&
      can(regex("^([a-z0-9][a-z0-9._-]*/)+$", p.key_prefix)) &&
      length(p.object_actions) > 0 &&
    length(setsubtract(p.object_actions, ["s3:GetObject", "s3:PutObject"])) == 0])
    error_message = "Each pipeline needs a lowercase name (not \"database-secret-reader\", \"cluster-autoscaler\" or \"log-shipper\", the roles of those controllers), a valid namespace and ServiceAccount name, a key_prefix of '/'-terminated segments (e.g. \"cutouts/\"), and object_actions drawn only from \"s3:GetObject\" and \"s3:PutObject\"."
  }
}

variable "database_secret_reader" {
  description = <<-EOT
    Optional IRSA role for the ServiceAccount of a secret-sync controller (External Secrets
    Operator) that builds the chart's database Secrets: it may read only `secret_arns` (the
    secrets of the database roles that pods use, never the master's) and decrypt them through
    Secrets Manager with their key `kms_key_arn`. Null for none.
  EOT
  type = object({
    namespace       = string
    service_account = string
    secret_arns     = list(string)
    kms_key_arn     = string
  })
  default = null

  validation {
    condition = var.database_secret_reader == null || try(
      length(var.database_secret_reader.secret_arns) > 0 &&
      alltrue([for arn in var.database_secret_reader.secret_arns : can(regex("^arn:[a-z-]+:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", arn))]) &&
    can(regex("^arn:[a-z-]+:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.database_secret_reader.kms_key_arn)), false)
    error_message = "The database secret reader needs one or more Secrets Manager secret ARNs and a KMS key ARN."
  }
}

variable "cluster_autoscaler" {
  description = <<-EOT
    Optional IRSA role for the Kubernetes Cluster Autoscaler, trusted by the ServiceAccount
    `namespace`/`service_account` (its Helm release's `rbac.serviceAccount.name`). It may read the
    auto-scaling groups, launch templates and instance types, describe the managed node groups of
    the cluster `cluster_arn`, and set the capacity of (or terminate an instance in) only the
    auto-scaling groups tagged `k8s.io/cluster-autoscaler/<cluster name> = owned`, as EKS tags
    those of its managed node groups. Null for none.
  EOT
  type = object({
    namespace       = string
    service_account = string
    cluster_arn     = string
  })
  default = null

  validation {
    condition = var.cluster_autoscaler == null || try(
      can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.cluster_autoscaler.namespace)) &&
      can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.cluster_autoscaler.service_account)) &&
    can(regex("^arn:[a-z-]+:eks:[a-z0-9-]+:[0-9]{12}:cluster/[A-Za-z0-9][A-Za-z0-9_-]{0,99}$", var.cluster_autoscaler.cluster_arn)), false)
    error_message = "The Cluster Autoscaler needs a namespace (a DNS label), a ServiceAccount name (a DNS subdomain) and an EKS cluster ARN (arn:aws:eks:<region>:<account>:cluster/<name>)."
  }
}

variable "log_shipper" {
  description = <<-EOT
    Optional IRSA role for the log shipper (Fluent Bit's DaemonSet), trusted by the ServiceAccount
    `namespace`/`service_account`: it may create log streams in, and put events into, the one
    CloudWatch Logs group `log_group_arn` (the containers' group of modules/eks, ARN without the
    `:*` suffix), nothing else. Null for none.
  EOT
  type = object({
    namespace       = string
    service_account = string
    log_group_arn   = string
  })
  default = null

  validation {
    condition = var.log_shipper == null || try(
      can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.log_shipper.namespace)) &&
      can(regex("^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$", var.log_shipper.service_account)) &&
    can(regex("^arn:[a-z-]+:logs:[a-z0-9-]+:[0-9]{12}:log-group:[^:*]+$", var.log_shipper.log_group_arn)), false)
    error_message = "The log shipper needs a namespace (a DNS label), a ServiceAccount name (a DNS subdomain) and a log group ARN without a ':*' suffix (arn:aws:logs:<region>:<account>:log-group:<name>)."
  }
}

variable "registry_readers" {
  description = <<-EOT
    Optional IRSA roles for controllers that read ECR through the AWS API rather than the node
    role: Flux's source-controller (the OCI Helm chart) and image-reflector-controller (the
    image tags Flux orders). `service_accounts` is keyed by a short name used in the role name
    (`<name>-ecr-<key>`); `repository_arns` are the repositories they may read. Null for none.
  EOT
  type = object({
    repository_arns = list(string)
    service_accounts = map(object({
      namespace       = string
      service_account = string
    }))
  })
  default = null

  validation {
    condition = var.registry_readers == null || try(
      length(var.registry_readers.repository_arns) > 0 &&
      alltrue([for arn in var.registry_readers.repository_arns : can(regex("^arn:[a-z-]+:ecr:[a-z0-9-]+:[0-9]{12}:repository/.+$", arn))]) &&
    alltrue([for key in keys(var.registry_readers.service_accounts) : can(regex("^[a-z][a-z0-9-]{0,24}$", key))]), false)
    error_message = "Registry readers need ECR repository ARNs and service-account keys of at most 25 lowercase letters, digits and '-'."
  }
}

variable "tags" {
  description = "Tags for every role (the provider's default_tags are added)."
  type        = map(string)
  default     = {}

  validation {
    condition     = length(var.tags) <= 40 && alltrue([for key, value in var.tags : length(key) >= 1 && length(key) <= 128 && length(value) <= 256 && !startswith(key, "aws:")])
    error_message = "At most 40 tags (the provider's default_tags take the rest of AWS's 50), keys of 1-128 characters not starting with 'aws:', values of at most 256."
  }
}
