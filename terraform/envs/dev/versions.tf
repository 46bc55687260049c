terraform {
  required_version = ">= 1.10"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60, < 6.0"
    }
  }

  # Remote state in S3, in this environment's own account, created once by terraform/bootstrap
  # there. The bucket, region and KMS key come from backend.hcl (copy backend.hcl.example):
  #   terraform init -backend-config=backend.hcl
  # Locking is S3-native: a lock file next to the state (no DynamoDB table).
  backend "s3" {
    key          = "galpipe/dev/terraform.tfstate"
    encrypt      = true
    use_lockfile = true
  }
}
