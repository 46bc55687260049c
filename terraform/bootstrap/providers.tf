provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project   = "galpipe"
      Component = "terraform-state"
      ManagedBy = "terraform"
    }
  }
}
