variable "name" {
  description = "Identifier of the DB instance and prefix of its other resources, e.g. `galpipe-dev`."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name)) && !strcontains(var.name, "--")
    error_message = "The name must be 3-32 characters: lowercase letters, digits and single '-', starting with a letter."
  }
}

variable "vpc_id" {
  description = "ID of the VPC of the database's security group."
  type        = string

  validation {
    condition     = startswith(var.vpc_id, "vpc-")
    error_message = "The VPC ID must start with 'vpc-'."
  }
}

variable "subnet_ids" {
  description = "Private subnets in at least two zones for the DB subnet group."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2 && alltrue([for id in var.subnet_ids : startswith(id, "subnet-")])
    error_message = "At least two subnet IDs (each starting with 'subnet-') are required: RDS needs two zones."
  }
}

variable "client_security_groups" {
  description = "Security groups whose members may connect on the PostgreSQL port, keyed by a static label (e.g. `{ eks-nodes = <node security group> }`; keys must be known at plan time)."
  type        = map(string)

  validation {
    condition     = length(var.client_security_groups) > 0 && alltrue([for id in values(var.client_security_groups) : startswith(id, "sg-")])
    error_message = "At least one security group ID (starting with 'sg-') must be allowed in, or nothing can use the database."
  }
}

variable "engine_version" {
  description = "PostgreSQL version: a major 16 release, either `16` (RDS picks the default minor) or `16.N`."
  type        = string
  default     = "16"

  validation {
    condition     = can(regex("^16(\\.[0-9]+)?$", var.engine_version))
    error_message = "The engine version must be PostgreSQL 16: \"16\" or \"16.N\" (the parameter group family is postgres16)."
  }
}

variable "instance_class" {
  description = "DB instance class, e.g. `db.t4g.medium` (dev) or `db.r7g.large` (prod)."
  type        = string

  validation {
    condition     = can(regex("^db\\.[a-z0-9]+\\.[a-z0-9]+$", var.instance_class))
    error_message = "The instance class must look like db.<family>.<size>, e.g. db.t4g.medium."
  }
}

variable "allocated_storage_gib" {
  description = "Initial gp3 storage (GiB)."
  type        = number
  default     = 20

  validation {
    condition     = var.allocated_storage_gib >= 20 && var.allocated_storage_gib <= 65536
    error_message = "RDS PostgreSQL on gp3 takes 20 to 65536 GiB."
  }
}

variable "max_allocated_storage_gib" {
  description = "Ceiling for storage autoscaling (GiB); equal to `allocated_storage_gib` to turn autoscaling off."
  type        = number
  default     = 200

  validation {
    condition     = var.max_allocated_storage_gib >= var.allocated_storage_gib && var.max_allocated_storage_gib <= 65536
    error_message = "The storage ceiling must be at least allocated_storage_gib and at most 65536 GiB."
  }
}

variable "database_name" {
  description = "Name of the database created in the instance."
  type        = string
  default     = "galpipe"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.database_name))
    error_message = "The database name must start with a letter and have at most 63 lowercase letters, digits or '_'."
  }
}

variable "master_username" {
  description = "Master user name; its password is generated and rotated by RDS in Secrets Manager."
  type        = string
  default     = "galpipe"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.master_username)) && !contains(["postgres", "rdsadmin", "admin"], var.master_username)
    error_message = "The master user name must start with a letter, have at most 63 lowercase letters, digits or '_', and not be a reserved name (postgres, rdsadmin, admin)."
  }
}

variable "multi_az" {
  description = "Run a synchronous standby in a second zone (automatic failover)."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Refuse to delete the instance (turn off, apply, then destroy, to delete on purpose)."
  type        = bool
  default     = true
}

variable "backup_retention_days" {
  description = "Days of automated backups; point-in-time recovery reaches back this far."
  type        = number
  default     = 14

  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 35
    error_message = "Backups must be kept 1 to 35 days (0 would turn off point-in-time recovery)."
  }
}

variable "skip_final_snapshot" {
  description = "Delete without a final snapshot (only for disposable environments)."
  type        = bool
  default     = false
}

variable "backup_window" {
  description = "Daily UTC window for automated backups, `hh24:mi-hh24:mi`."
  type        = string
  default     = "02:00-03:00"

  validation {
    condition     = can(regex("^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$", var.backup_window))
    error_message = "The backup window must be hh24:mi-hh24:mi in UTC, e.g. 02:00-03:00."
  }
}

variable "maintenance_window" {
  description = "Weekly UTC maintenance window, `ddd:hh24:mi-ddd:hh24:mi` (must not overlap the backup window)."
  type        = string
  default     = "sun:04:00-sun:05:00"

  validation {
    condition     = can(regex("^(mon|tue|wed|thu|fri|sat|sun):([01][0-9]|2[0-3]):[0-5][0-9]-(mon|tue|wed|thu|fri|sat|sun):([01][0-9]|2[0-3]):[0-5][0-9]$", var.maintenance_window))
    error_message = "The maintenance window must be ddd:hh24:mi-ddd:hh24:mi in UTC, e.g. sun:04:00-sun:05:00."
  }
}

variable "max_connections" {
  description = "PostgreSQL max_connections: every worker pod holds a pool, so size it for the largest scale-out (KEDA maxReplicas x pool size) plus headroom."
  type        = number
  default     = 400

  validation {
    condition     = var.max_connections >= 50 && var.max_connections <= 5000
    error_message = "max_connections must be 50 to 5000."
  }
}

variable "log_min_duration_ms" {
  description = "Statements slower than this many milliseconds are logged (CloudWatch Logs)."
  type        = number
  default     = 1000

  validation {
    condition     = var.log_min_duration_ms >= 0
    error_message = "log_min_duration_ms must be 0 or more milliseconds."
  }
}

variable "monitoring_interval_seconds" {
  description = "Enhanced Monitoring interval (OS metrics), in seconds."
  type        = number
  default     = 60

  validation {
    condition     = contains([1, 5, 10, 15, 30, 60], var.monitoring_interval_seconds)
    error_message = "Enhanced Monitoring takes 1, 5, 10, 15, 30 or 60 seconds."
  }
}

variable "kms_deletion_window_in_days" {
  description = "Deletion window of the database's KMS key (storage, Performance Insights, master secret), in days."
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

variable "alarm_actions" {
  description = "ARNs of the SNS topics that the instance's CloudWatch alarms notify when they fire and when they recover (the on-call pager's topic); empty: the alarms show in the console only."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.alarm_actions : can(regex("^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}$", arn))])
    error_message = "Each alarm action must be an SNS topic ARN, arn:aws:sns:<region>:<account>:<topic>."
  }
}

variable "alarm_evaluation_minutes" {
  description = "Minutes a metric must breach its threshold before its alarm fires (whole five-minute periods, rounded up)."
  type        = number
  default     = 15

  validation {
    condition     = var.alarm_evaluation_minutes >= 5 && var.alarm_evaluation_minutes <= 1440
    error_message = "The evaluation time must be 5 to 1440 minutes (one five-minute period to a day)."
  }
}

variable "alarm_cpu_percent" {
  description = "CPU utilisation (percent) above which the CPU alarm fires."
  type        = number
  default     = 80

  validation {
    condition     = var.alarm_cpu_percent > 0 && var.alarm_cpu_percent < 100
    error_message = "The CPU threshold must be a percentage between 0 and 100 (exclusive)."
  }
}

variable "alarm_free_storage_gib" {
  description = "Free storage (GiB) below which the storage alarm fires; keep it below 10% of allocated_storage_gib, where storage autoscaling acts, so the alarm means autoscaling cannot help."
  type        = number
  default     = 1

  validation {
    condition     = var.alarm_free_storage_gib > 0 && var.alarm_free_storage_gib < var.allocated_storage_gib
    error_message = "The free-storage threshold must be more than 0 GiB and less than allocated_storage_gib."
  }
}

variable "alarm_freeable_memory_mib" {
  description = "Freeable memory (MiB) below which the memory alarm fires."
  type        = number
  default     = 256

  validation {
    condition     = var.alarm_freeable_memory_mib >= 64
    error_message = "The freeable-memory threshold must be at least 64 MiB."
  }
}

variable "alarm_connections_percent" {
  description = "Share of max_connections (percent) in use above which the connections alarm fires."
  type        = number
  default     = 80

  validation {
    condition     = var.alarm_connections_percent > 0 && var.alarm_connections_percent < 100
    error_message = "The connections threshold must be a percentage between 0 and 100 (exclusive)."
  }
}

variable "alarm_max_used_transaction_ids" {
  description = "Transaction IDs used (age of the oldest unfrozen transaction) above which the wraparound alarm fires; PostgreSQL stops writes near 2.1 billion."
  type        = number
  default     = 1000000000

  validation {
    condition     = var.alarm_max_used_transaction_ids >= 100000000 && var.alarm_max_used_transaction_ids <= 2000000000
    error_message = "The transaction-ID threshold must be 100 million to 2 billion."
  }
}

variable "role_secret_rotation" {
  description = <<-EOT
    Rotation of the roles' secrets (app, migrator, scaler): `lambda_arn` is a Secrets Manager
    rotation function of the single-user PostgreSQL kind (AWS's
    SecretsManagerRDSPostgreSQLRotationSingleUser, deployed in the database's VPC with access to
    it and to Secrets Manager), `days` the interval. Null: no rotation until one is configured.
  EOT
  type = object({
    lambda_arn = string
    days       = number
  })
  default = null

  validation {
    condition = var.role_secret_rotation == null || try(
      can(regex("^arn:[a-z-]+:lambda:[a-z0-9-]+:[0-9]{12}:function:[A-Za-z0-9_-]{1,64}$", var.role_secret_rotation.lambda_arn)) &&
    var.role_secret_rotation.days >= 1 && var.role_secret_rotation.days <= 90, false)
    error_message = "Rotation needs a Lambda function ARN (arn:aws:lambda:<region>:<account>:function:<name>) and 1 to 90 days."
  }
}
