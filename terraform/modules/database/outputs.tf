output "instance_identifier" {
  description = "Identifier of the DB instance."
  value       = aws_db_instance.this.identifier
}

output "instance_arn" {
  description = "ARN of the DB instance."
  value       = aws_db_instance.this.arn
}

output "address" {
  description = "DNS name of the instance (follows a multi-AZ failover)."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "PostgreSQL port."
  value       = aws_db_instance.this.port
}

output "database_name" {
  description = "Name of the application database."
  value       = aws_db_instance.this.db_name
}

output "master_username" {
  description = "Master user name (the password is in the secret of `master_user_secret_arn`)."
  value       = aws_db_instance.this.username
}

output "master_user_secret_arn" {
  description = "ARN of the Secrets Manager secret (JSON with `username` and `password`) that RDS manages and rotates."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "kms_key_arn" {
  description = "ARN of the KMS key of the storage and of the master secret (readers of the secret need kms:Decrypt on it)."
  value       = module.key.key_arn
}

output "security_group_id" {
  description = "ID of the database's security group."
  value       = aws_security_group.this.id
}

output "alarm_arns" {
  description = "ARNs of the instance's CloudWatch alarms, by name (cpu, free-storage, freeable-memory, connections, transaction-ids)."
  value       = { for name, alarm in aws_cloudwatch_metric_alarm.this : name => alarm.arn }
}

output "role_secret_arns" {
  description = "ARNs of the Secrets Manager secrets of the roles pods use (`app`, `migrator`, `scaler`): JSON with engine, host, port, dbname, username and password, read by External Secrets Operator."
  value       = { for role, secret in aws_secretsmanager_secret.role : role => secret.arn }
}

output "role_secret_names" {
  description = "Names of the roles' secrets (`<name>/database/<role>`): the `remoteRef` keys of the ExternalSecrets in k8s/envs/<env>/database-secrets.yaml."
  value       = { for role, secret in aws_secretsmanager_secret.role : role => secret.name }
}
