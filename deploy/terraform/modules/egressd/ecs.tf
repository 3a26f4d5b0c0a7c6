# ECS cluster, Fargate task definition and service, CloudWatch log group, task execution role.

resource "aws_cloudwatch_log_group" "egressd" {
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = local.tags
}

resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = var.container_insights
  }

  tags = local.tags
}

# ------------------------------------------------------------------------------------------------
# Task execution role: lets ECS pull the image and write to the log group. egressd itself calls
# no AWS API, so the task has no task role.
# ------------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name_prefix        = "${var.name}-exec-"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

# ------------------------------------------------------------------------------------------------
# Container definition. Written as an HCL object (not a JSON string) so tests/deploy can check it.
# ------------------------------------------------------------------------------------------------

locals {
  # Settings the deployment depends on. extra_environment cannot override them (merge order).
  container_base_environment = {
    EGRESSD_LISTEN          = "0.0.0.0:${var.proxy_port}"
    EGRESSD_ADMIN_LISTEN    = "0.0.0.0:${var.admin_port}"
    EGRESSD_PROXY_PROTOCOL  = "required"
    EGRESSD_TRUSTED_PROXIES = join(",", local.trusted_proxy_cidrs)
    EGRESSD_ALLOW_SOURCES   = join(",", var.allowed_source_cidrs)
  }

  container_environment = [
    for k, v in merge(var.extra_environment, local.container_base_environment) : { name = k, value = v }
  ]

  container_definition = {
    name      = local.container_name
    image     = var.image
    essential = true

    portMappings = [
      { name = "proxy", containerPort = var.proxy_port, hostPort = var.proxy_port, protocol = "tcp" },
      { name = "admin", containerPort = var.admin_port, hostPort = var.admin_port, protocol = "tcp" },
    ]

    environment = local.container_environment

    # /readyz: 200 while accepting, 503 from SIGTERM on. `egressd probe` exits 0 on a 2xx. Without
    # a URL it finds /readyz from the container's own settings (EGRESSD_ADMIN_LISTEN above, or
    # admin.health_address when extra_environment turns admin TLS on), so it cannot drift from them.
    healthCheck = {
      command     = ["CMD", "/usr/local/bin/egressd", "probe"]
      interval    = 10
      timeout     = 5
      retries     = 3
      startPeriod = 15
    }

    # SIGTERM starts egressd's drain; SIGKILL follows after stopTimeout (> drain.delay + timeout).
    stopTimeout = var.stop_timeout

    ulimits = [
      { name = "nofile", softLimit = var.nofile_limit, hardLimit = var.nofile_limit },
    ]

    # Backstop for the NAT gateway's 350 s idle timeout. egressd itself sets SO_KEEPALIVE and
    # TCP_KEEPIDLE 240 s on its upstream and client sockets; these kernel defaults pace the later
    # probes and cover any socket that enables SO_KEEPALIVE without its own TCP_KEEPIDLE.
    systemControls = [
      { namespace = "net.ipv4.tcp_keepalive_time", value = tostring(var.tcp_keepalive_time_seconds) },
      { namespace = "net.ipv4.tcp_keepalive_intvl", value = tostring(var.tcp_keepalive_interval_seconds) },
    ]

    readonlyRootFilesystem = var.readonly_root_filesystem

    linuxParameters = {
      capabilities = { add = [], drop = ["ALL"] }
    }

    logConfiguration = {
      logDriver = "awslogs"
      options = merge(
        {
          "awslogs-group"         = aws_cloudwatch_log_group.egressd.name
          "awslogs-region"        = data.aws_region.current.region
          "awslogs-stream-prefix" = "egressd"
          "mode"                  = var.log_driver_mode
        },
        var.log_driver_mode == "non-blocking" ? { "max-buffer-size" = var.log_max_buffer_size } : {}
      )
    }
  }
}

resource "aws_ecs_task_definition" "egressd" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.cpu)
  memory                   = tostring(var.memory)
  execution_role_arn       = aws_iam_role.execution.arn
  container_definitions    = jsonencode([local.container_definition])

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = var.stop_timeout > var.drain_delay_seconds + var.drain_timeout_seconds
      error_message = "stop_timeout must exceed drain_delay_seconds + drain_timeout_seconds, or ECS kills egressd in the middle of its drain."
    }
  }
}

resource "aws_ecs_service" "egressd" {
  name             = var.name
  cluster          = aws_ecs_cluster.this.id
  task_definition  = aws_ecs_task_definition.egressd.arn
  desired_count    = var.desired_count
  launch_type      = "FARGATE"
  platform_version = var.platform_version

  # Start new tasks before stopping old ones: capacity never drops during a deployment.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  health_check_grace_period_seconds  = var.health_check_grace_period_seconds
  availability_zone_rebalancing      = "ENABLED"

  enable_ecs_managed_tags = true
  propagate_tags          = "SERVICE"

  network_configuration {
    subnets          = aws_subnet.private[*].id
    security_groups  = [aws_security_group.task.id]
    assign_public_ip = false
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.proxy.arn
    container_name   = local.container_name
    container_port   = var.proxy_port
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  tags = local.tags

  lifecycle {
    # Autoscaling owns the task count after the first apply.
    ignore_changes = [desired_count]

    precondition {
      condition     = var.min_count <= var.desired_count && var.desired_count <= var.max_count
      error_message = "desired_count must lie between min_count and max_count."
    }
  }

  # The target group must belong to a listener before a service can use it; the tasks need their
  # NAT route to pull the image; the execution role must be usable.
  depends_on = [aws_lb_listener.proxy, aws_route.private_nat, aws_iam_role_policy_attachment.execution]
}
