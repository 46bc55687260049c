# One Secrets Manager secret per database role that pods use (galpipe_app, galpipe_migrator,
# galpipe_scaler; services/galpipe/db/migrations/0008_roles.sql), so that no pod needs the master
# user. External Secrets Operator copies each into the galpipe namespace (k8s/envs/<env>/
# database-secrets.yaml). Each holds what the RDS rotation functions read: engine, host, port,
# dbname, username and password.
#
# Terraform writes the first value only (ignore_changes): the password is then set on the role
# once (docs/deploy-aws.md, step 5) and from there on belongs to rotation, which Terraform must
# neither undo nor report as drift. The first password is 128 random bits (uuid() reads
# crypto/rand) made without an AWS call, so a read-only plan role can plan it.

locals {
  database_roles = {
    app      = "galpipe_app"
    migrator = "galpipe_migrator"
    scaler   = "galpipe_scaler"
  }
}

resource "aws_secretsmanager_secret" "role" {
  #checkov:skip=CKV2_AWS_57:rotation needs the single-user PostgreSQL rotation function inside the VPC, deployed outside this module; aws_secretsmanager_secret_rotation.role turns it on when role_secret_rotation names it
  for_each = local.database_roles

  name        = "${var.name}/database/${each.key}"
  description = "PostgreSQL role ${each.value} of ${var.name}: connection and password (rotated in place)"
  kms_key_id  = module.key.key_arn
  tags        = var.tags
}

resource "aws_secretsmanager_secret_version" "role" {
  for_each = local.database_roles

  secret_id = aws_secretsmanager_secret.role[each.key].id
  secret_string = jsonencode({
    engine   = "postgres"
    host     = aws_db_instance.this.address
    port     = aws_db_instance.this.port
    dbname   = aws_db_instance.this.db_name
    username = each.value
    password = replace(uuid(), "-", "")
  })

  lifecycle {
    # Rotation owns the value after the first write (see above).
    ignore_changes = [secret_string]
  }
}

resource "aws_secretsmanager_secret_rotation" "role" {
  #checkov:skip=CKV_AWS_304:the interval is variable role_secret_rotation.days, which its validation holds to 1-90 days
  for_each = var.role_secret_rotation == null ? {} : local.database_roles

  secret_id           = aws_secretsmanager_secret.role[each.key].id
  rotation_lambda_arn = var.role_secret_rotation.lambda_arn

  rotation_rules {
    automatically_after_days = var.role_secret_rotation.days
  }

  depends_on = [aws_secretsmanager_secret_version.role]
}
