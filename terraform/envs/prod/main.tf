# The prod environment: a NAT gateway per zone, a multi-AZ database with deletion protection,
# a final snapshot and five weeks of point-in-time recovery, and nothing that Terraform may
# delete while it still holds data. Images come from the registry of envs/dev: prod runs the
# very images that ran in dev.

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

  name                    = var.name
  cidr_block              = var.vpc_cidr
  availability_zones      = local.availability_zones
  single_nat_gateway      = false
  flow_log_retention_days = 365
}

module "eks" {
  source = "../../modules/eks"

  name                         = var.name
  kubernetes_version           = var.kubernetes_version
  vpc_id                       = module.network.vpc_id
  subnet_ids                   = module.network.private_subnet_ids
  endpoint_public_access_cidrs = var.api_public_access_cidrs
  cluster_admin_principal_arns = var.cluster_admin_principal_arns
  enable_addons                = true

  general_node_group = {
    instance_types = var.general_instance_types
    min_size       = 3 # one per zone: the platform survives a zone outage
    max_size       = 6
    desired_size   = 3
  }

  spot_node_group = length(var.spot_instance_types) == 0 ? null : {
    instance_types = var.spot_instance_types
    min_size       = 0
    max_size       = var.spot_max_size
    desired_size   = 0
  }

  gpu_node_group = length(var.gpu_instance_types) == 0 ? null : {
    instance_types = var.gpu_instance_types
    min_size       = 0
    max_size       = var.gpu_max_size
    desired_size   = 0
  }
}

module "database" {
  source = "../../modules/database"

  name                      = var.name
  vpc_id                    = module.network.vpc_id
  subnet_ids                = module.network.private_subnet_ids
  client_security_groups    = { eks-nodes = module.eks.node_security_group_id }
  instance_class            = var.database_instance_class
  allocated_storage_gib     = var.database_storage_gib
  max_allocated_storage_gib = var.database_max_storage_gib
  max_connections           = var.database_max_connections
  multi_az                  = true
  deletion_protection       = true
  skip_final_snapshot       = false
  backup_retention_days     = 35
}

module "storage" {
  source = "../../modules/storage"

  bucket_name   = "${var.name}-cutouts-${data.aws_caller_identity.current.account_id}"
  object_prefix = "galpipe"
  force_destroy = false
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

  # Flux pulls the chart and reads image tags from dev's registry (prod runs the images that
  # ran in dev); with IMDS limited to one hop each controller needs its own role.
  registry_readers = {
    repository_arns = var.registry_repository_arns
    service_accounts = {
      flux-source = { namespace = "flux-system", service_account = "source-controller" }
      flux-images = { namespace = "flux-system", service_account = "image-reflector-controller" }
    }
  }
}
