# egressd on ECS Fargate behind an NLB, leaving through one NAT gateway and Elastic IP per zone.
#
#   clients (security service, office)
#     -> NLB in the load balancer subnets (TCP listener, security group + network ACL admit only
#        allowed_source_cidrs)
#     -> target group of type ip, PROXY protocol v2, health check GET /readyz on the admin port
#     -> egressd tasks in the private subnets (one route table per zone)
#     -> NAT gateway of the same zone in its public subnet, with an Elastic IP: the fixed egress IP
#     -> the internet
#
# Files: network.tf (VPC, subnets, NAT, routes, network ACLs), security.tf (security groups),
# nlb.tf, ecs.tf (cluster, task definition, service, logs, IAM), autoscaling.tf, alarms.tf.

data "aws_partition" "current" {}

data "aws_region" "current" {}

data "aws_availability_zones" "available" {
  state = "available"

  # Local Zones and Wavelength Zones need an opt-in and lack NAT gateways or Fargate.
  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }

  lifecycle {
    postcondition {
      condition     = length(var.azs) > 0 || length(self.names) >= var.az_count
      error_message = "The region has fewer usable Availability Zones than az_count."
    }
  }
}

locals {
  # Known at plan time without reading the data source, so count never depends on it.
  az_count = length(var.azs) > 0 ? length(var.azs) : var.az_count
  azs      = length(var.azs) > 0 ? var.azs : slice(data.aws_availability_zones.available.names, 0, var.az_count)

  # Default layout in a /16: private /20s from the bottom, NAT /24s at .224-.229, NLB /24s at
  # .240-.245. In a /20 the same indexes give /24s and /28s.
  private_subnet_cidrs = length(var.private_subnet_cidrs) > 0 ? var.private_subnet_cidrs : [for i in range(local.az_count) : cidrsubnet(var.vpc_cidr, 4, i)]
  public_subnet_cidrs  = length(var.public_subnet_cidrs) > 0 ? var.public_subnet_cidrs : [for i in range(local.az_count) : cidrsubnet(var.vpc_cidr, 8, 224 + i)]
  lb_subnet_cidrs      = length(var.lb_subnet_cidrs) > 0 ? var.lb_subnet_cidrs : [for i in range(local.az_count) : cidrsubnet(var.vpc_cidr, 8, 240 + i)]

  # The NLB connects to the tasks from its private addresses in the load balancer subnets
  # (client IP preservation is off for ip targets), so only those may send a PROXY header.
  trusted_proxy_cidrs = length(var.trusted_proxy_cidrs) > 0 ? var.trusted_proxy_cidrs : local.lb_subnet_cidrs

  container_name = "egressd"

  tags = merge({ Application = "egressd", Name = var.name }, var.tags)
}
