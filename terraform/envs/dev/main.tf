# The dev environment: the same shape as prod, sized down and disposable (one NAT gateway,
# single-AZ database without deletion protection, cutout bucket deletable with content). It also
# owns the image registry that every environment pulls from.

module "platform" {
  #checkov:skip=CKV_AWS_157:dev runs a single-AZ instance to halve its cost; prod is multi-AZ
  #checkov:skip=CKV_AWS_293:dev is disposable (terraform destroy must work); prod has deletion protection
  source = "../../modules/platform"

  name                        = var.name
  availability_zones          = var.availability_zones
  vpc_cidr                    = var.vpc_cidr
  single_nat_gateway          = true
  kms_deletion_window_in_days = 7

  kubernetes_version           = var.kubernetes_version
  api_public_access_cidrs      = var.api_public_access_cidrs
  cluster_admin_principal_arns = var.cluster_admin_principal_arns
  enable_eks_addons            = var.enable_eks_addons

  general_node_group = {
    instance_types = var.general_instance_types
    min_size       = 1
    max_size       = 3
    desired_size   = 2
  }
  spot_instance_types = var.spot_instance_types
  spot_max_size       = var.spot_max_size

  database_instance_class        = var.database_instance_class
  database_storage_gib           = 20
  database_max_storage_gib       = 100
  database_multi_az              = false
  database_deletion_protection   = false
  database_skip_final_snapshot   = true
  database_backup_retention_days = 7
  database_alarm_actions         = var.alarm_sns_topic_arns

  bucket_force_destroy = true

  image_repository_url     = module.registry.repository_urls["image"]
  registry_repository_arns = values(module.registry.repository_arns)

  kubernetes_namespace             = var.kubernetes_namespace
  helm_release_name                = var.helm_release_name
  external_secrets_service_account = var.external_secrets_service_account
}

# The one registry of every environment: CI pushes here, dev's Flux rolls out the newest tag,
# and prod pulls the very same images (promotion by tag, never a rebuild). So it outlives dev:
# `terraform destroy` of dev fails while it holds images, rather than deleting what prod runs.
module "registry" {
  source = "../../modules/registry"

  repositories = {
    image = "${var.name}/galpipe"
    chart = "${var.name}/charts/galpipe" # Flux's OCIRepository oci://.../<name>/charts/galpipe
  }
  kms_alias        = "${var.name}-ecr"
  pull_account_ids = var.registry_pull_account_ids
  force_delete     = false
}
