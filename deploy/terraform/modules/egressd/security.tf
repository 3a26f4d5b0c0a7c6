# Security groups. Ingress comes only from allowed_source_cidrs (to the NLB), from the NLB's own
# security group (to the tasks) and from metrics_source_cidrs (to the admin port): never from
# 0.0.0.0/0. tests/deploy checks that.
#
# The NLB has a security group of its own (NLBs support them since 2023; it can only be set when
# the NLB is created). Client IP preservation is off for the ip target group, so the tasks see
# the NLB's private addresses as peers and can trust that group alone; the real client address
# arrives in the PROXY v2 header.

resource "aws_security_group" "nlb" {
  name        = "${var.name}-nlb"
  description = "egressd NLB: the proxy listener from the allowed client ranges only"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${var.name}-nlb" })
}

resource "aws_vpc_security_group_ingress_rule" "nlb_clients" {
  for_each = toset(var.allowed_source_cidrs)

  security_group_id = aws_security_group.nlb.id
  description       = "proxy clients"
  ip_protocol       = "tcp"
  from_port         = var.listener_port
  to_port           = var.listener_port
  cidr_ipv4         = each.value
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "nlb_to_proxy" {
  security_group_id            = aws_security_group.nlb.id
  description                  = "to egressd's proxy port"
  ip_protocol                  = "tcp"
  from_port                    = var.proxy_port
  to_port                      = var.proxy_port
  referenced_security_group_id = aws_security_group.task.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_egress_rule" "nlb_to_admin" {
  security_group_id            = aws_security_group.nlb.id
  description                  = "health checks to egressd's /readyz"
  ip_protocol                  = "tcp"
  from_port                    = var.admin_port
  to_port                      = var.admin_port
  referenced_security_group_id = aws_security_group.task.id
  tags                         = local.tags
}

resource "aws_security_group" "task" {
  name        = "${var.name}-task"
  description = "egressd tasks: proxy and admin ports from the NLB, out to the internet on the upstream ports"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${var.name}-task" })
}

resource "aws_vpc_security_group_ingress_rule" "task_proxy_from_nlb" {
  security_group_id            = aws_security_group.task.id
  description                  = "proxy traffic from the NLB"
  ip_protocol                  = "tcp"
  from_port                    = var.proxy_port
  to_port                      = var.proxy_port
  referenced_security_group_id = aws_security_group.nlb.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "task_admin_from_nlb" {
  security_group_id            = aws_security_group.task.id
  description                  = "NLB health checks on /readyz"
  ip_protocol                  = "tcp"
  from_port                    = var.admin_port
  to_port                      = var.admin_port
  referenced_security_group_id = aws_security_group.nlb.id
  tags                         = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "task_admin_from_metrics" {
  for_each = toset(var.metrics_source_cidrs)

  security_group_id = aws_security_group.task.id
  description       = "metrics scraper"
  ip_protocol       = "tcp"
  from_port         = var.admin_port
  to_port           = var.admin_port
  cidr_ipv4         = each.value
  tags              = local.tags
}

# The proxy's own traffic to the internet, through the NAT gateways. Amazon DNS (the VPC
# resolver) and the task metadata endpoints are not subject to security groups.
resource "aws_vpc_security_group_egress_rule" "task_https" {
  security_group_id = aws_security_group.task.id
  description       = "HTTPS upstreams, image pulls, CloudWatch Logs"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "task_upstream" {
  for_each = toset([for p in var.upstream_tcp_ports : tostring(p) if p != 443])

  security_group_id = aws_security_group.task.id
  description       = "upstream port ${each.value}"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
  cidr_ipv4         = "0.0.0.0/0"
  tags              = local.tags
}
