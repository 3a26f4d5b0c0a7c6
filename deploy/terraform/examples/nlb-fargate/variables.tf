variable "region" {
  description = "AWS region to deploy to."
  type        = string
  default     = "eu-central-1"
}

variable "name" {
  description = "Name prefix of every resource."
  type        = string
  default     = "egressd"
}

variable "az_count" {
  description = "Availability Zones to use: one NAT gateway and one egress IP each."
  type        = number
  default     = 3
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC (/16 to /20)."
  type        = string
  default     = "10.42.0.0/16"
}

variable "allowed_source_cidrs" {
  description = "Client ranges allowed to use the proxy: the security service's egress ranges and the office. Required."
  type        = list(string)
}

variable "metrics_source_cidrs" {
  description = "Ranges allowed to scrape the admin port (/metrics) on the tasks."
  type        = list(string)
  default     = []
}

variable "image" {
  description = "egressd container image. Required."
  type        = string
}

variable "cpu" {
  description = "Fargate task CPU units."
  type        = number
  default     = 512
}

variable "memory" {
  description = "Fargate task memory (MiB)."
  type        = number
  default     = 1024
}

variable "desired_count" {
  description = "Tasks at creation; autoscaling owns the count afterwards."
  type        = number
  default     = 3
}

variable "min_count" {
  description = "Fewest tasks autoscaling keeps (and the healthy-hosts alarm threshold)."
  type        = number
  default     = 3
}

variable "max_count" {
  description = "Most tasks autoscaling may run."
  type        = number
  default     = 12
}

variable "nlb_internal" {
  description = "true for an internal NLB (clients over VPN, Direct Connect or a transit gateway)."
  type        = bool
  default     = false
}

variable "alarm_actions" {
  description = "ARNs (e.g. an SNS topic) notified when an alarm fires or clears."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags of the module's resources."
  type        = map(string)
  default     = {}
}

variable "default_tags" {
  description = "Provider default_tags: added to every resource the AWS provider creates."
  type        = map(string)
  default     = { ManagedBy = "terraform", Application = "egressd" }
}
