output "egress_ips" {
  description = "The fixed egress IPs: the Elastic IPs of the NAT gateways, one per zone. Give these to the SaaS services that filter by source address."
  value       = aws_eip.nat[*].public_ip
}

output "egress_ips_by_az" {
  description = "Egress IP of each Availability Zone."
  value       = zipmap(local.azs, aws_eip.nat[*].public_ip)
}

output "nat_gateway_ids" {
  description = "NAT gateway IDs, in zone order."
  value       = aws_nat_gateway.this[*].id
}

output "proxy_endpoint" {
  description = "host:port the clients (security service, office) forward to."
  value       = "${aws_lb.proxy.dns_name}:${var.listener_port}"
}

output "proxy_url" {
  description = "Proxy URL for curl -x and tests/smoke.sh."
  value       = "http://${aws_lb.proxy.dns_name}:${var.listener_port}"
}

output "nlb_dns_name" {
  description = "DNS name of the NLB."
  value       = aws_lb.proxy.dns_name
}

output "nlb_zone_id" {
  description = "Route 53 hosted zone ID of the NLB, for an alias record."
  value       = aws_lb.proxy.zone_id
}

output "nlb_arn" {
  description = "ARN of the NLB."
  value       = aws_lb.proxy.arn
}

output "target_group_arn" {
  description = "ARN of the proxy target group."
  value       = aws_lb_target_group.proxy.arn
}

output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "private_subnet_ids" {
  description = "Subnets of the egressd tasks."
  value       = aws_subnet.private[*].id
}

output "public_subnet_ids" {
  description = "Subnets of the NAT gateways."
  value       = aws_subnet.public[*].id
}

output "lb_subnet_ids" {
  description = "Subnets of the NLB."
  value       = aws_subnet.lb[*].id
}

output "trusted_proxy_cidrs" {
  description = "What EGRESSD_TRUSTED_PROXIES is set to."
  value       = local.trusted_proxy_cidrs
}

output "ecs_cluster_name" {
  description = "Name of the ECS cluster."
  value       = aws_ecs_cluster.this.name
}

output "ecs_service_name" {
  description = "Name of the ECS service."
  value       = aws_ecs_service.egressd.name
}

output "task_definition_arn" {
  description = "ARN of the current task definition revision."
  value       = aws_ecs_task_definition.egressd.arn
}

output "task_security_group_id" {
  description = "Security group of the egressd tasks."
  value       = aws_security_group.task.id
}

output "nlb_security_group_id" {
  description = "Security group of the NLB."
  value       = aws_security_group.nlb.id
}

output "log_group_name" {
  description = "CloudWatch log group of the access log and diagnostics."
  value       = aws_cloudwatch_log_group.egressd.name
}

output "alarm_names" {
  description = "Names of the CloudWatch alarms."
  value = concat(
    [aws_cloudwatch_metric_alarm.healthy_hosts.alarm_name],
    aws_cloudwatch_metric_alarm.nat_port_allocation[*].alarm_name,
    aws_cloudwatch_metric_alarm.nat_egress_bytes[*].alarm_name,
  )
}
