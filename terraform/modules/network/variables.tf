variable "name" {
  description = "Name prefix of every resource, e.g. `galpipe-dev`; also the EKS cluster name that the subnets are tagged for."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "The name must be 3-32 characters: lowercase letters, digits and '-', starting with a letter."
  }
}

variable "cidr_block" {
  description = "IPv4 CIDR of the VPC; each subnet gets a /20 of it (private) or a /24 (public), so it must be a /16 or a /17."
  type        = string
  default     = "10.0.0.0/16"

  validation {
    condition     = can(cidrhost(var.cidr_block, 0)) && contains(["16", "17"], try(split("/", var.cidr_block)[1], ""))
    error_message = "The VPC CIDR must be a valid IPv4 block of size /16 or /17 (three private /20s must fit in its upper half)."
  }
}

variable "availability_zones" {
  description = "Availability zones to spread the subnets over (one private and one public subnet in each)."
  type        = list(string)

  validation {
    condition     = length(var.availability_zones) == 3 && length(distinct(var.availability_zones)) == 3
    error_message = "Exactly three distinct availability zones are expected (RDS multi-AZ and EKS need at least two; three survive the loss of one)."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper; a zone outage cuts egress) instead of one per zone."
  type        = bool
  default     = false
}

variable "flow_log_retention_days" {
  description = "Days to keep VPC flow logs in CloudWatch Logs."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_log_retention_days)
    error_message = "The retention must be one of CloudWatch Logs' values (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)."
  }
}

variable "kms_deletion_window_in_days" {
  description = "Deletion window of the flow-log KMS key (days)."
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
