terraform {
  required_version = ">= 1.9"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60, < 6.0"
    }
  }

  # Local state on purpose: this configuration creates the remote-state bucket itself. After the
  # first apply, its state can move into that bucket (see docs/deploy-aws.md).
}
