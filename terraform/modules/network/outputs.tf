output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr_block" {
  description = "IPv4 CIDR of the VPC."
  value       = aws_vpc.this.cidr_block
}

output "private_subnet_ids" {
  description = "IDs of the private subnets, in the order of `availability_zones`."
  value       = [for zone in var.availability_zones : aws_subnet.private[zone].id]
}

output "public_subnet_ids" {
  description = "IDs of the public subnets, in the order of `availability_zones`."
  value       = [for zone in var.availability_zones : aws_subnet.public[zone].id]
}

output "nat_public_ips" {
  description = "Public IPv4 addresses of the NAT gateways: the cluster's egress addresses (for allow-lists at the cutout service)."
  value       = [for key in local.nat_keys : aws_eip.nat[key].public_ip]
}

output "s3_endpoint_id" {
  description = "ID of the S3 gateway endpoint (usable in `aws:SourceVpce` conditions)."
  value       = aws_vpc_endpoint.s3.id
}
