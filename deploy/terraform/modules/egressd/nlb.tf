# Network Load Balancer: TCP passthrough with PROXY protocol v2, so egressd sees the real client
# address (proxy_protocol "required" and trusted_proxies = the load balancer subnets).
#
# Drain alignment (README "Drain timeline and load balancers"): when ECS stops a task it first
# deregisters it and waits the deregistration delay, here drain_timeout_seconds (90 s), then
# closes what is left (connection_termination) and sends SIGTERM; egressd turns /readyz to 503,
# keeps accepting for drain.delay and gives in-flight work up to drain.timeout; stopTimeout (120 s)
# exceeds delay + timeout (95 s). Tunnels get the same 90 s whichever path a task leaves by.

resource "aws_lb" "proxy" {
  name               = "${var.name}-nlb"
  load_balancer_type = "network"
  internal           = var.nlb_internal
  ip_address_type    = "ipv4"
  subnets            = aws_subnet.lb[*].id
  security_groups    = [aws_security_group.nlb.id]

  # Each NLB node sends to healthy targets in every zone, so a zone with fewer tasks (or none,
  # during a deployment) still serves its share of clients.
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.enable_deletion_protection

  # Traffic through a VPC endpoint service (PrivateLink) is filtered by the security group too.
  enforce_security_group_inbound_rules_on_private_link_traffic = "on"

  tags = merge(local.tags, { Name = "${var.name}-nlb" })

  # The NLB's nodes must be able to reach the internet gateway before it takes traffic.
  depends_on = [aws_route_table_association.lb, aws_route.public_internet]
}

resource "aws_lb_target_group" "proxy" {
  name        = "${var.name}-proxy"
  port        = var.proxy_port
  protocol    = "TCP"
  target_type = "ip"
  vpc_id      = aws_vpc.this.id

  # The client address reaches egressd in the PROXY v2 header (and, behind PrivateLink, the VPC
  # endpoint id in TLV 0xEA). Must stay on: egressd's listener requires the header.
  proxy_protocol_v2  = true
  preserve_client_ip = "false"

  deregistration_delay   = tostring(var.drain_timeout_seconds)
  connection_termination = true

  health_check {
    enabled             = true
    protocol            = "HTTP"
    port                = tostring(var.admin_port)
    path                = "/readyz"
    matcher             = "200"
    interval            = var.health_check_interval_seconds
    timeout             = var.health_check_timeout_seconds
    healthy_threshold   = var.healthy_threshold
    unhealthy_threshold = var.unhealthy_threshold
  }

  target_health_state {
    enable_unhealthy_connection_termination = var.terminate_connections_on_unhealthy
    unhealthy_draining_interval             = var.terminate_connections_on_unhealthy ? null : var.drain_timeout_seconds
  }

  tags = merge(local.tags, { Name = "${var.name}-proxy" })

  lifecycle {
    precondition {
      condition     = var.health_check_timeout_seconds < var.health_check_interval_seconds
      error_message = "health_check_timeout_seconds must be below health_check_interval_seconds."
    }
  }
}

resource "aws_lb_listener" "proxy" {
  load_balancer_arn = aws_lb.proxy.arn
  port              = var.listener_port
  protocol          = "TCP"

  # Above egressd's tunnel_idle (300 s): egressd closes idle tunnels itself, cleanly.
  tcp_idle_timeout_seconds = var.nlb_tcp_idle_timeout_seconds

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.proxy.arn
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = var.nlb_tcp_idle_timeout_seconds > 300
      error_message = "nlb_tcp_idle_timeout_seconds must exceed egressd's default timeouts.tunnel_idle (300 s), or the NLB drops idle tunnels silently before egressd closes them."
    }
  }
}
