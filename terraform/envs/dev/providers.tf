provider "aws" {
  region = var.region

  default_tags {
    tags = {
      Project     = "galpipe"
      Environment = "dev"
      ManagedBy   = "terraform"
    }
  }
}
