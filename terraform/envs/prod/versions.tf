terraform {
  required_version = ">= 1.9"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60, < 6.0"
    }
  }

  # Remote state in S3 with a DynamoDB lock table, both created once by terraform/bootstrap.
  # The bucket, table and region come from backend.hcl (copy backend.hcl.example):
  #   terraform init -backend-config=backend.hcl
  backend "s3" {
    key     = "galpipe/prod/terraform.tfstate"
    encrypt = true
  }
}
