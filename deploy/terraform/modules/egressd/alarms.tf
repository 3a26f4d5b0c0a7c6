# CloudWatch alarms. They notify alarm_actions / ok_actions (e.g. an SNS topic).

# Fewer healthy egressd targets than min_count. With cross-zone load balancing every NLB node
# counts every target; Minimum over the nodes is the worst view any client gets. No data means
# the target group has no healthy target at all.
resource "aws_cloudwatch_metric_alarm" "healthy_hosts" {
  alarm_name          = "${var.name}-healthy-hosts-below-minimum"
  alarm_description   = "egressd: fewer healthy NLB targets than min_count (${var.min_count}) for 3 minutes."
  namespace           = "AWS/NetworkELB"
  metric_name         = "HealthyHostCount"
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 3
  threshold           = var.min_count
  comparison_operator = "LessThanThreshold"
  treat_missing_data  = "breaching"

  dimensions = {
    LoadBalancer = aws_lb.proxy.arn_suffix
    TargetGroup  = aws_lb_target_group.proxy.arn_suffix
  }

  alarm_actions = var.alarm_actions
  ok_actions    = var.ok_actions
  tags          = local.tags
}

# A NAT gateway could not allocate a source port: more than 55,000 simultaneous connections to
# one destination (IP, port, protocol). Connections fail while it lasts. Remedies: more zones
# (more NAT gateways), secondary addresses on the NAT gateway (each adds egress IPs the SaaS
# side must allow), fewer long-lived idle connections.
resource "aws_cloudwatch_metric_alarm" "nat_port_allocation" {
  count = local.az_count

  alarm_name          = "${var.name}-nat-port-allocation-errors-${local.azs[count.index]}"
  alarm_description   = "egressd: NAT gateway ${local.azs[count.index]} failed to allocate source ports (ErrorPortAllocation > 0)."
  namespace           = "AWS/NATGateway"
  metric_name         = "ErrorPortAllocation"
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"

  dimensions = {
    NatGatewayId = aws_nat_gateway.this[count.index].id
  }

  alarm_actions = var.alarm_actions
  ok_actions    = var.ok_actions
  tags          = local.tags
}

# Unusual egress volume through one NAT gateway (abuse, a runaway client, NAT processing cost).
resource "aws_cloudwatch_metric_alarm" "nat_egress_bytes" {
  count = local.az_count

  alarm_name          = "${var.name}-nat-egress-bytes-${local.azs[count.index]}"
  alarm_description   = "egressd: NAT gateway ${local.azs[count.index]} sent more than ${var.egress_bytes_alarm_threshold} bytes to the internet in 5 minutes, twice in a row."
  namespace           = "AWS/NATGateway"
  metric_name         = "BytesOutToDestination"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 2
  threshold           = var.egress_bytes_alarm_threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"

  dimensions = {
    NatGatewayId = aws_nat_gateway.this[count.index].id
  }

  alarm_actions = var.alarm_actions
  ok_actions    = var.ok_actions
  tags          = local.tags
}
