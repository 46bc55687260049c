# The module calls that modules/platform now makes: an environment applied before it existed
# keeps every resource (Terraform moves them in the state instead of replacing them).
moved {
  from = module.network
  to   = module.platform.module.network
}

moved {
  from = module.eks
  to   = module.platform.module.eks
}

moved {
  from = module.database
  to   = module.platform.module.database
}

moved {
  from = module.storage
  to   = module.platform.module.storage
}

moved {
  from = module.iam
  to   = module.platform.module.iam
}
