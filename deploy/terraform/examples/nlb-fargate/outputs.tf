output "egress_ips" {
  description = "The fixed egress IPs (one per zone): allow these at the SaaS services."
  value       = module.egressd.egress_ips
}

output "egress_ips_by_az" {
  description = "Egress IP of each Availability Zone."
  value       = module.egressd.egress_ips_by_az
}

output "proxy_endpoint" {
  description = "host:port the security service or the office forwards to."
  value       = module.egressd.proxy_endpoint
}

output "proxy_url" {
  description = "Proxy URL for curl -x and tests/smoke.sh."
  value       = module.egressd.proxy_url
}

output "nlb_dns_name" {
  description = "DNS name of the NLB."
  value       = module.egressd.nlb_dns_name
}

output "log_group_name" {
  description = "CloudWatch log group of egressd."
  value       = module.egressd.log_group_name
}

output "alarm_names" {
  description = "CloudWatch alarms."
  value       = module.egressd.alarm_names
}
