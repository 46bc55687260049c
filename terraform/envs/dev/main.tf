# The dev environment: the same shape as prod, sized down and disposable (one NAT gateway,
# single-AZ database without deletion protection, cutout bucket deletable with content). It also
# owns the image registry that every environment pulls from.

data "aws_caller_identity" "current" {}

locals {
  # Pinned zones: subnets, NAT gateways and the database must not move when AWS adds a zone.
  availability_zones = coalesce(var.availability_zones, [for letter in ["a", "b", "c"] : "${var.region}${letter}"])

  # Both pipelines work on the cutouts under the store prefix (pipelines/fetch.py's keys are
  # `cutouts/<layer>/<bands>-<size>px-<pixscale>as/<source_id>.fits`). fetch writes and reads
  # back what it wrote (its integrity check); radon only reads.
  pipeline_access = {
    fetch = ["s3:PutObject", "s3:GetObject"]
    radon = ["s3:GetObject"]
  }
}

module "network" {
  source = "../../modules/network"

  name                        = var.name
  cidr_block                  = var.vpc_cidr
  availability_zones          = local.availability_zones
  single_nat_gateway          = true
  flow_log_retention_days     = 365
  kms_deletion_window_in_days = 7
}

module "eks" {
  source = "../../modules/eks"

  name                         = var.name
  kubernetes_version           = var.kubernetes_version
  vpc_id                       = module.network.vpc_id
  subnet_ids                   = module.network.private_subnet_ids
  endpoint_public_access_cidrs = var.api_public_access_cidrs
  cluster_admin_principal_arns = var.cluster_admin_principal_arns
  enable_addons                = var.enable_eks_addons
  kms_deletion_window_in_days  = 7

  general_node_group = {
    instance_types = var.general_instance_types
    min_size       = 1
    max_size       = 3
    desired_size   = 2
  }

  spot_node_group = length(var.spot_instance_types) == 0 ? null : {
    instance_types = var.spot_instance_types
    min_size       = 0
    max_size       = var.spot_max_size
    desired_size   = 0
  }
}

module "database" {
  #checkov:skip=CKV_AWS_157:dev runs a single-AZ instance to halve its cost; prod is multi-AZ
  #checkov:skip=CKV_AWS_293:dev is disposable (terraform destroy must work); prod has deletion protection
  source = "../../modules/database"

  name                        = var.name
  vpc_id                      = module.network.vpc_id
  subnet_ids                  = module.network.private_subnet_ids
  client_security_groups      = { eks-nodes = module.eks.node_security_group_id }
  instance_class              = var.database_instance_class
  allocated_storage_gib       = 20
  max_allocated_storage_gib   = 100
  multi_az                    = false
  deletion_protection         = false
  skip_final_snapshot         = true
  backup_retention_days       = 7
  kms_deletion_window_in_days = 7
}

module "storage" {
  source = "../../modules/storage"

  bucket_name                 = "${var.name}-cutouts-${data.aws_caller_identity.current.account_id}"
  object_prefix               = "galpipe"
  force_destroy               = true
  kms_deletion_window_in_days = 7
}

# The one registry of every environment: CI pushes here, dev's Flux rolls out the newest tag,
# and prod pulls the very same images (promotion by tag, never a rebuild). So it outlives dev:
# `terraform destroy` of dev fails while it holds images, rather than deleting what prod runs.
module "registry" {
  source = "../../modules/registry"

  repositories = {
    image = "${var.name}/galpipe"
    chart = "${var.name}/charts/galpipe" # Flux's HelmRepository oci://.../<name>/charts
  }
  kms_alias        = "${var.name}-ecr"
  pull_account_ids = var.registry_pull_account_ids
  force_delete     = false
}

module "iam" {
  source = "../../modules/iam"

  name               = var.name
  oidc_provider_arn  = module.eks.oidc_provider_arn
  oidc_issuer        = module.eks.oidc_issuer
  bucket_arn         = module.storage.bucket_arn
  bucket_kms_key_arn = module.storage.kms_key_arn
  object_prefix      = module.storage.object_prefix

  pipelines = {
    for pipeline, actions in local.pipeline_access : pipeline => {
      namespace       = var.kubernetes_namespace
      service_account = "${var.helm_release_name}-${pipeline}"
      key_prefix      = "cutouts/"
      object_actions  = actions
    }
  }

  database_secret_reader = {
    namespace       = var.external_secrets_service_account.namespace
    service_account = var.external_secrets_service_account.name
    secret_arn      = module.database.master_user_secret_arn
    kms_key_arn     = module.database.kms_key_arn
  }

  # Flux reads the chart and the image tags through the AWS API (`provider: aws`); with IMDS
  # limited to one hop it cannot borrow the node role, so each controller gets its own role.
  registry_readers = {
    repository_arns = values(module.registry.repository_arns)
    service_accounts = {
      flux-source = { namespace = "flux-system", service_account = "source-controller" }
      flux-images = { namespace = "flux-system", service_account = "image-reflector-controller" }
    }
  }
}
