# One galpipe environment on AWS: the network, an EKS cluster, the PostgreSQL database that
# admits the cluster's nodes, the cutout bucket, and the IRSA roles of the pipelines, the
# External Secrets Operator, Flux and the Cluster Autoscaler. The environments (envs/dev,
# envs/prod) call it with what differs between them: sizes, redundancy, and how much of it
# `terraform destroy` may delete.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}

locals {
  # Pinned zones: subnets, NAT gateways and the database must not move when AWS adds a zone.
  availability_zones = coalesce(var.availability_zones, [for letter in ["a", "b", "c"] : "${data.aws_region.current.name}${letter}"])

  # Both pipelines work on the cutouts under the store prefix (pipelines/fetch.py's keys are
  # `cutouts/<layer>/<bands>-<size>px-<pixscale>as/<source_id>.fits`). fetch writes and reads
  # back what it wrote (its integrity check); radon only reads.
  pipeline_access = {
    fetch = ["s3:PutObject", "s3:GetObject"]
    radon = ["s3:GetObject"]
  }
}

module "network" {
  source = "../network"

  name                        = var.name
  cidr_block                  = var.vpc_cidr
  availability_zones          = local.availability_zones
  single_nat_gateway          = var.single_nat_gateway
  flow_log_retention_days     = 365
  kms_deletion_window_in_days = var.kms_deletion_window_in_days
}

module "eks" {
  source = "../eks"

  name                         = var.name
  kubernetes_version           = var.kubernetes_version
  vpc_id                       = module.network.vpc_id
  subnet_ids                   = module.network.private_subnet_ids
  endpoint_public_access_cidrs = var.api_public_access_cidrs
  cluster_admin_principal_arns = var.cluster_admin_principal_arns
  enable_addons                = var.enable_eks_addons
  container_log_retention_days = var.container_log_retention_days
  kms_deletion_window_in_days  = var.kms_deletion_window_in_days
  general_node_group           = var.general_node_group

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
  source = "../database"

  name                        = var.name
  vpc_id                      = module.network.vpc_id
  subnet_ids                  = module.network.private_subnet_ids
  client_security_groups      = { eks-nodes = module.eks.node_security_group_id }
  instance_class              = var.database_instance_class
  allocated_storage_gib       = var.database_storage_gib
  max_allocated_storage_gib   = var.database_max_storage_gib
  max_connections             = var.database_max_connections
  multi_az                    = var.database_multi_az
  deletion_protection         = var.database_deletion_protection
  skip_final_snapshot         = var.database_skip_final_snapshot
  backup_retention_days       = var.database_backup_retention_days
  kms_deletion_window_in_days = var.kms_deletion_window_in_days
  alarm_actions               = var.database_alarm_actions
  role_secret_rotation        = var.database_role_secret_rotation
}

module "storage" {
  source = "../storage"

  bucket_name                 = "${var.name}-cutouts-${data.aws_caller_identity.current.account_id}"
  object_prefix               = "galpipe"
  force_destroy               = var.bucket_force_destroy
  kms_deletion_window_in_days = var.kms_deletion_window_in_days
}

module "iam" {
  source = "../iam"

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

  # External Secrets Operator reads the secrets of the roles pods use, never the master's.
  database_secret_reader = {
    namespace       = var.external_secrets_service_account.namespace
    service_account = var.external_secrets_service_account.name
    secret_arns     = values(module.database.role_secret_arns)
    kms_key_arn     = module.database.kms_key_arn
  }

  # Fluent Bit (k8s/platform/fluent-bit.yaml) ships the containers' logs into the group the eks
  # module made, so they outlive the pods that scale-to-zero deletes.
  log_shipper = {
    namespace       = var.log_shipper_service_account.namespace
    service_account = var.log_shipper_service_account.name
    log_group_arn   = module.eks.container_log_group_arn
  }

  # KEDA scales the pipelines' pods; the Cluster Autoscaler (k8s/platform/cluster-autoscaler.yaml)
  # scales the node groups to fit them, within each group's min_size and max_size.
  cluster_autoscaler = {
    namespace       = var.cluster_autoscaler_service_account.namespace
    service_account = var.cluster_autoscaler_service_account.name
    cluster_arn     = module.eks.cluster_arn
  }

  # Flux reads the chart and the image tags through the AWS API (`provider: aws`); with IMDS
  # limited to one hop it cannot borrow the node role, so each controller gets its own role.
  registry_readers = {
    repository_arns = var.registry_repository_arns
    service_accounts = {
      flux-source = { namespace = "flux-system", service_account = "source-controller" }
      flux-images = { namespace = "flux-system", service_account = "image-reflector-controller" }
      # The policy-controller's webhook reads the image's signature from ECR to admit its pods
      # (k8s/platform/policy-controller.yaml).
      policy-controller = { namespace = var.policy_controller_service_account.namespace, service_account = var.policy_controller_service_account.name }
    }
  }
}
