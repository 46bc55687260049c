# The prod environment: a NAT gateway per zone, a multi-AZ database with deletion protection,
# a final snapshot and five weeks of point-in-time recovery, and nothing that Terraform may
# delete while it still holds data. Images come from the registry of envs/dev: prod runs the
# very images that ran in dev.

module "platform" {
  source = "../../modules/platform"

  name               = var.name
  availability_zones = var.availability_zones
  vpc_cidr           = var.vpc_cidr
  single_nat_gateway = false

  kubernetes_version           = var.kubernetes_version
  api_public_access_cidrs      = var.api_public_access_cidrs
  cluster_admin_principal_arns = var.cluster_admin_principal_arns
  enable_eks_addons            = true

  general_node_group = {
    instance_types = var.general_instance_types
    min_size       = 3 # one per zone: the platform survives a zone outage
    max_size       = 6
    desired_size   = 3
  }
  spot_instance_types = var.spot_instance_types
  spot_max_size       = var.spot_max_size
  gpu_instance_types  = var.gpu_instance_types
  gpu_max_size        = var.gpu_max_size

  database_instance_class        = var.database_instance_class
  database_storage_gib           = var.database_storage_gib
  database_max_storage_gib       = var.database_max_storage_gib
  database_max_connections       = var.database_max_connections
  database_multi_az              = true
  database_deletion_protection   = true
  database_skip_final_snapshot   = false
  database_backup_retention_days = 35
  database_alarm_actions         = var.alarm_sns_topic_arns

  bucket_force_destroy = false

  # Flux pulls the chart and reads image tags from dev's registry: prod runs the images that
  # ran in dev.
  image_repository_url     = var.image_repository_url
  registry_repository_arns = var.registry_repository_arns

  kubernetes_namespace             = var.kubernetes_namespace
  helm_release_name                = var.helm_release_name
  external_secrets_service_account = var.external_secrets_service_account
}
