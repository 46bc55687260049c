# CloudWatch alarms on the instance, sent to the SNS topics in var.alarm_actions (the on-call
# pager's topic): what fails galpipe before PostgreSQL itself reports an error. No ReplicaLag
# alarm: the instance has no read replica (multi-AZ is a synchronous standby, not a replica).
# Each alarm fires after `alarm_evaluation_minutes` of breaching five-minute periods, and sends
# its recovery too (ok_actions), so the page closes itself.

locals {
  alarm_period_seconds = 300
  alarm_periods        = ceil(var.alarm_evaluation_minutes * 60 / local.alarm_period_seconds)
  gib                  = 1024 * 1024 * 1024
  mib                  = 1024 * 1024

  alarms = {
    cpu = {
      metric      = "CPUUtilization"
      statistic   = "Average"
      comparison  = "GreaterThanThreshold"
      threshold   = var.alarm_cpu_percent
      description = "CPU above ${var.alarm_cpu_percent}%: radon workers wait on the database; scale the instance class or lower KEDA's maxReplicaCount."
    }
    free-storage = {
      metric      = "FreeStorageSpace"
      statistic   = "Minimum"
      comparison  = "LessThanThreshold"
      threshold   = var.alarm_free_storage_gib * local.gib
      description = "Less than ${var.alarm_free_storage_gib} GiB of storage free: storage autoscaling is at its ceiling (max_allocated_storage_gib) or cannot keep up; PostgreSQL stops when the disk is full."
    }
    freeable-memory = {
      metric      = "FreeableMemory"
      statistic   = "Minimum"
      comparison  = "LessThanThreshold"
      threshold   = var.alarm_freeable_memory_mib * local.mib
      description = "Less than ${var.alarm_freeable_memory_mib} MiB of memory free: the instance swaps or kills backends; lower the connection count or scale the instance class."
    }
    connections = {
      metric      = "DatabaseConnections"
      statistic   = "Maximum"
      comparison  = "GreaterThanThreshold"
      threshold   = floor(var.max_connections * var.alarm_connections_percent / 100)
      description = "More than ${var.alarm_connections_percent}% of max_connections (${var.max_connections}) in use: new pods' pools will be refused; lower maxReplicaCount x GALPIPE_DB_POOL_SIZE or raise max_connections."
    }
    transaction-ids = {
      metric      = "MaximumUsedTransactionIDs"
      statistic   = "Maximum"
      comparison  = "GreaterThanThreshold"
      threshold   = var.alarm_max_used_transaction_ids
      description = "Transaction IDs used above ${var.alarm_max_used_transaction_ids}: autovacuum is not freezing; at about 2.1 billion PostgreSQL stops accepting writes to prevent wraparound."
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "this" {
  for_each = local.alarms

  alarm_name          = "${var.name}-rds-${each.key}"
  alarm_description   = each.value.description
  namespace           = "AWS/RDS"
  metric_name         = each.value.metric
  statistic           = each.value.statistic
  comparison_operator = each.value.comparison
  threshold           = each.value.threshold
  period              = local.alarm_period_seconds
  evaluation_periods  = local.alarm_periods
  datapoints_to_alarm = local.alarm_periods
  # No data means the instance reports nothing (stopped, failing over): not a breach of these
  # thresholds; RDS events cover an instance that is down.
  treat_missing_data = "notBreaching"

  dimensions = {
    DBInstanceIdentifier = aws_db_instance.this.identifier
  }

  alarm_actions = var.alarm_actions
  ok_actions    = var.alarm_actions
  tags          = var.tags
}
