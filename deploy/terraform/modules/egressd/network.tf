# VPC, three subnet tiers per zone, one NAT gateway + Elastic IP per zone, routes, network ACLs.
#
# Subnet tiers:
#   private  the egressd tasks; default route to the NAT gateway of the same zone.
#   public   the NAT gateways only; default route to the internet gateway.
#   lb       the NLB only; default route to the internet gateway; its own network ACL.
#
# Why the NLB does not share the NAT gateways' subnets: network ACLs are stateless, so the NAT
# subnets must admit the internet's answers to NAT'd connections, inbound TCP 1024-65535 from
# 0.0.0.0/0. The proxy port (3128) lies in that range. In a shared subnet the only protection is a
# deny of the proxy port from 0.0.0.0/0 numbered before that allow, and that deny also drops the
# answers of any NAT'd connection whose translated source port happens to be 3128: a rare,
# unexplainable upstream hang. With the NLB alone in its subnets, their ACL admits the proxy port
# from allowed_source_cidrs only, denies it from everywhere else, and needs no ephemeral-port
# allow from the internet at all.

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = merge(local.tags, { Name = var.name })

  lifecycle {
    precondition {
      condition     = length(var.private_subnet_cidrs) == 0 || length(var.private_subnet_cidrs) == local.az_count
      error_message = "private_subnet_cidrs must be empty or list one CIDR per Availability Zone."
    }
    precondition {
      condition     = length(var.public_subnet_cidrs) == 0 || length(var.public_subnet_cidrs) == local.az_count
      error_message = "public_subnet_cidrs must be empty or list one CIDR per Availability Zone."
    }
    precondition {
      condition     = length(var.lb_subnet_cidrs) == 0 || length(var.lb_subnet_cidrs) == local.az_count
      error_message = "lb_subnet_cidrs must be empty or list one CIDR per Availability Zone."
    }
  }
}

# The default security group of the VPC: no rules, so nothing that lands in it by accident can
# talk to anything.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = "${var.name}-default-deny" })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = var.name })
}

resource "aws_subnet" "private" {
  count = local.az_count

  vpc_id                  = aws_vpc.this.id
  availability_zone       = local.azs[count.index]
  cidr_block              = local.private_subnet_cidrs[count.index]
  map_public_ip_on_launch = false

  tags = merge(local.tags, { Name = "${var.name}-private-${local.azs[count.index]}", Tier = "private" })
}

resource "aws_subnet" "public" {
  count = local.az_count

  vpc_id                  = aws_vpc.this.id
  availability_zone       = local.azs[count.index]
  cidr_block              = local.public_subnet_cidrs[count.index]
  map_public_ip_on_launch = false

  tags = merge(local.tags, { Name = "${var.name}-nat-${local.azs[count.index]}", Tier = "public" })
}

resource "aws_subnet" "lb" {
  count = local.az_count

  vpc_id                  = aws_vpc.this.id
  availability_zone       = local.azs[count.index]
  cidr_block              = local.lb_subnet_cidrs[count.index]
  map_public_ip_on_launch = false

  tags = merge(local.tags, { Name = "${var.name}-lb-${local.azs[count.index]}", Tier = "lb" })
}

# ------------------------------------------------------------------------------------------------
# Egress: one Elastic IP and one NAT gateway per zone. These addresses are what SaaS services
# see; they are the module's main output (egress_ips). A NAT gateway can be replaced without
# changing them, but destroying an Elastic IP (a lower az_count, a renamed resource, a destroy)
# gives the address back to AWS for good: read every plan for aws_eip deletions.
# ------------------------------------------------------------------------------------------------

resource "aws_eip" "nat" {
  count = local.az_count

  domain = "vpc"
  tags   = merge(local.tags, { Name = "${var.name}-egress-${local.azs[count.index]}" })

  depends_on = [aws_internet_gateway.this]
}

resource "aws_nat_gateway" "this" {
  count = local.az_count

  allocation_id     = aws_eip.nat[count.index].id
  subnet_id         = aws_subnet.public[count.index].id
  connectivity_type = "public"

  tags = merge(local.tags, { Name = "${var.name}-${local.azs[count.index]}" })

  depends_on = [aws_internet_gateway.this]
}

# ------------------------------------------------------------------------------------------------
# Routes
# ------------------------------------------------------------------------------------------------

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = "${var.name}-public" })
}

resource "aws_route" "public_internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  count = local.az_count

  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

resource "aws_route_table_association" "lb" {
  count = local.az_count

  subnet_id      = aws_subnet.lb[count.index].id
  route_table_id = aws_route_table.public.id
}

# One route table per zone: a task leaves through the NAT gateway of its own zone, so a zone
# failure takes only that zone's tasks and egress IP with it, and no traffic pays for crossing
# zones.
resource "aws_route_table" "private" {
  count = local.az_count

  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = "${var.name}-private-${local.azs[count.index]}" })
}

resource "aws_route" "private_nat" {
  count = local.az_count

  route_table_id         = aws_route_table.private[count.index].id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[count.index].id
}

resource "aws_route_table_association" "private" {
  count = local.az_count

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[count.index].id
}

# ------------------------------------------------------------------------------------------------
# Network ACL of the load balancer subnets. Inbound, in order:
#   100        anything from the VPC (the tasks' answers and health check answers to the NLB)
#   200 + i    the listener port from allowed_source_cidrs[i]
#   900        deny the listener port from 0.0.0.0/0 (explicit; the implicit final deny would
#              drop it too, but this one stays first if someone adds a wide allow later)
# Outbound:
#   100        anything to the VPC (NLB to the tasks: proxy port and health checks)
#   200 + i    answers to allowed_source_cidrs[i] on ephemeral ports 1024-65535
# ------------------------------------------------------------------------------------------------

resource "aws_network_acl" "lb" {
  vpc_id     = aws_vpc.this.id
  subnet_ids = aws_subnet.lb[*].id
  tags       = merge(local.tags, { Name = "${var.name}-lb" })

  lifecycle {
    precondition {
      condition     = length(var.allowed_source_cidrs) + 2 <= var.nacl_rule_quota
      error_message = "allowed_source_cidrs has more entries than the load balancer subnets' network ACL can hold (nacl_rule_quota - 2). Summarise the ranges or raise the quota and nacl_rule_quota."
    }
  }
}

resource "aws_network_acl_rule" "lb_in_vpc" {
  network_acl_id = aws_network_acl.lb.id
  egress         = false
  rule_number    = 100
  rule_action    = "allow"
  protocol       = "-1"
  cidr_block     = var.vpc_cidr
}

resource "aws_network_acl_rule" "lb_in_clients" {
  count = length(var.allowed_source_cidrs)

  network_acl_id = aws_network_acl.lb.id
  egress         = false
  rule_number    = 200 + count.index
  rule_action    = "allow"
  protocol       = "tcp"
  cidr_block     = var.allowed_source_cidrs[count.index]
  from_port      = var.listener_port
  to_port        = var.listener_port
}

resource "aws_network_acl_rule" "lb_in_deny_listener" {
  network_acl_id = aws_network_acl.lb.id
  egress         = false
  rule_number    = 900
  rule_action    = "deny"
  protocol       = "tcp"
  cidr_block     = "0.0.0.0/0"
  from_port      = var.listener_port
  to_port        = var.listener_port
}

resource "aws_network_acl_rule" "lb_out_vpc" {
  network_acl_id = aws_network_acl.lb.id
  egress         = true
  rule_number    = 100
  rule_action    = "allow"
  protocol       = "-1"
  cidr_block     = var.vpc_cidr
}

resource "aws_network_acl_rule" "lb_out_clients" {
  count = length(var.allowed_source_cidrs)

  network_acl_id = aws_network_acl.lb.id
  egress         = true
  rule_number    = 200 + count.index
  rule_action    = "allow"
  protocol       = "tcp"
  cidr_block     = var.allowed_source_cidrs[count.index]
  from_port      = 1024
  to_port        = 65535
}

# ------------------------------------------------------------------------------------------------
# Network ACL of the public (NAT gateway) subnets. Nothing listens here: a NAT gateway accepts no
# connection from the internet. Inbound:
#   100   anything from the VPC (the tasks' outbound traffic to the NAT gateways)
#   200   TCP 1024-65535 from 0.0.0.0/0: the answers to NAT'd connections (the NAT gateway's
#         translated source ports). No deny of the proxy port here, see the top of this file.
#   210   ICMP destination unreachable from 0.0.0.0/0 (path MTU discovery, fast failures)
# Outbound:
#   100   anything: NAT'd connections to the internet and the answers back to the tasks
# egressd speaks TCP only and resolves names through the VPC resolver, so no UDP is admitted.
# ------------------------------------------------------------------------------------------------

resource "aws_network_acl" "public" {
  vpc_id     = aws_vpc.this.id
  subnet_ids = aws_subnet.public[*].id
  tags       = merge(local.tags, { Name = "${var.name}-nat" })
}

resource "aws_network_acl_rule" "public_in_vpc" {
  network_acl_id = aws_network_acl.public.id
  egress         = false
  rule_number    = 100
  rule_action    = "allow"
  protocol       = "-1"
  cidr_block     = var.vpc_cidr
}

resource "aws_network_acl_rule" "public_in_nat_return" {
  network_acl_id = aws_network_acl.public.id
  egress         = false
  rule_number    = 200
  rule_action    = "allow"
  protocol       = "tcp"
  cidr_block     = "0.0.0.0/0"
  from_port      = 1024
  to_port        = 65535
}

resource "aws_network_acl_rule" "public_in_icmp_unreachable" {
  network_acl_id = aws_network_acl.public.id
  egress         = false
  rule_number    = 210
  rule_action    = "allow"
  protocol       = "icmp"
  cidr_block     = "0.0.0.0/0"
  icmp_type      = 3
  icmp_code      = -1
}

resource "aws_network_acl_rule" "public_out_all" {
  network_acl_id = aws_network_acl.public.id
  egress         = true
  rule_number    = 100
  rule_action    = "allow"
  protocol       = "-1"
  cidr_block     = "0.0.0.0/0"
}
