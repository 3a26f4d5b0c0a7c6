# Target-tracking autoscaling of the service on average CPU and memory. Either policy can scale
# out; the service scales in only when both are below their targets. Scale-in is slow on purpose:
# each task that goes drains its tunnels for up to drain_timeout_seconds.

resource "aws_appautoscaling_target" "egressd" {
  service_namespace  = "ecs"
  scalable_dimension = "ecs:service:DesiredCount"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.egressd.name}"
  min_capacity       = var.min_count
  max_capacity       = var.max_count

  tags = local.tags

  lifecycle {
    precondition {
      condition     = var.min_count <= var.max_count
      error_message = "min_count must not exceed max_count."
    }
  }
}

resource "aws_appautoscaling_policy" "cpu" {
  name               = "${var.name}-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.egressd.service_namespace
  scalable_dimension = aws_appautoscaling_target.egressd.scalable_dimension
  resource_id        = aws_appautoscaling_target.egressd.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.cpu_target_percent
    scale_in_cooldown  = var.scale_in_cooldown_seconds
    scale_out_cooldown = var.scale_out_cooldown_seconds

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
  }
}

resource "aws_appautoscaling_policy" "memory" {
  name               = "${var.name}-memory"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.egressd.service_namespace
  scalable_dimension = aws_appautoscaling_target.egressd.scalable_dimension
  resource_id        = aws_appautoscaling_target.egressd.resource_id

  target_tracking_scaling_policy_configuration {
    target_value       = var.memory_target_percent
    scale_in_cooldown  = var.scale_in_cooldown_seconds
    scale_out_cooldown = var.scale_out_cooldown_seconds

    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageMemoryUtilization"
    }
  }
}
