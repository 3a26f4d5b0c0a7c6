# Input variables of the egressd module. Every one is listed, with its default, in
# deploy/terraform/README.md (tests/deploy checks that the two agree).
#
# Validation blocks here refer to their own variable only (works on every Terraform >= 1.5);
# rules that tie several variables together are preconditions on the resources that use them.

# ------------------------------------------------------------------------------------------------
# Naming
# ------------------------------------------------------------------------------------------------

variable "name" {
  description = "Name prefix of every resource (VPC, NLB, ECS cluster and service, log group, alarms). Lower-case letters, digits and hyphens, at most 24 characters (the NLB and target group names add a suffix and AWS caps them at 32)."
  type        = string
  default     = "egressd"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,22}[a-z0-9]$", var.name))
    error_message = "name must be 2-24 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-'."
  }
}

variable "tags" {
  description = "Tags added to every resource that takes tags (on top of the provider's default_tags)."
  type        = map(string)
  default     = {}
}

# ------------------------------------------------------------------------------------------------
# Network
# ------------------------------------------------------------------------------------------------

variable "az_count" {
  description = "Number of Availability Zones to use when azs is empty: the first az_count zones of the region that need no opt-in. Each zone gets a private, a public (NAT) and a load balancer subnet, one NAT gateway and one Elastic IP."
  type        = number
  default     = 3

  validation {
    condition     = var.az_count >= 1 && var.az_count <= 6 && floor(var.az_count) == var.az_count
    error_message = "az_count must be a whole number from 1 to 6 (the default subnet layout has room for 6 zones)."
  }
}

variable "azs" {
  description = "Explicit Availability Zone names (e.g. [\"eu-central-1a\", \"eu-central-1b\"]). Empty: the first az_count zones of the region. When set, it decides the number of zones and az_count is ignored."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.azs) <= 6 && length(distinct(var.azs)) == length(var.azs)
    error_message = "azs must list at most 6 distinct zone names."
  }
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC, /16 to /20. Pick a range that does not overlap the office or VPN networks that reach the proxy privately."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && can(regex("^[0-9.]+/(1[6-9]|20)$", var.vpc_cidr))
    error_message = "vpc_cidr must be an IPv4 CIDR with a prefix length from /16 to /20."
  }
}

variable "private_subnet_cidrs" {
  description = "CIDRs of the private subnets (the egressd tasks), one per zone. Empty: cidrsubnet(vpc_cidr, 4, i), a /20 each in a /16."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.private_subnet_cidrs : can(cidrhost(c, 0))])
    error_message = "private_subnet_cidrs must be IPv4 CIDRs."
  }
}

variable "public_subnet_cidrs" {
  description = "CIDRs of the public subnets that hold the NAT gateways, one per zone. Empty: cidrsubnet(vpc_cidr, 8, 224 + i), a /24 each in a /16."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.public_subnet_cidrs : can(cidrhost(c, 0))])
    error_message = "public_subnet_cidrs must be IPv4 CIDRs."
  }
}

variable "lb_subnet_cidrs" {
  description = "CIDRs of the load balancer subnets (the NLB only, with their own network ACL), one per zone. Empty: cidrsubnet(vpc_cidr, 8, 240 + i), a /24 each in a /16. AWS wants at least 8 free addresses in each."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.lb_subnet_cidrs : can(cidrhost(c, 0))])
    error_message = "lb_subnet_cidrs must be IPv4 CIDRs."
  }
}

variable "allowed_source_cidrs" {
  description = "Client ranges allowed to use the proxy: the security service's published egress ranges (Netskope, Zscaler, Cato) and the office. Required, no default. Used by the NLB security group, the load balancer subnets' network ACL and egressd's own source gate (EGRESSD_ALLOW_SOURCES). At most 18 entries with the default network ACL quota (nacl_rule_quota)."
  type        = list(string)

  validation {
    condition     = length(var.allowed_source_cidrs) > 0
    error_message = "allowed_source_cidrs must not be empty: list the security service's ranges and the office."
  }

  validation {
    condition = alltrue([
      for c in var.allowed_source_cidrs :
      can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+/[0-9]+$", c)) && try(cidrsubnet(c, 0, 0) == c && tonumber(split("/", c)[1]) >= 8, false)
    ])
    error_message = "allowed_source_cidrs must be IPv4 CIDRs written with their network address (203.0.113.0/24, not 203.0.113.7/24) and a prefix length of at least /8; 0.0.0.0/0 or anything wider than /8 would make an open proxy."
  }

  validation {
    condition     = length(distinct(var.allowed_source_cidrs)) == length(var.allowed_source_cidrs)
    error_message = "allowed_source_cidrs must not repeat an entry."
  }
}

variable "metrics_source_cidrs" {
  description = "Ranges allowed to reach the admin port (GET /metrics, /healthz, /readyz) on the tasks directly, e.g. a Prometheus server in the VPC or a peered one. The NLB health checks are allowed anyway. Default: none."
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([
      for c in var.metrics_source_cidrs :
      can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+/[0-9]+$", c)) && try(cidrsubnet(c, 0, 0) == c && tonumber(split("/", c)[1]) >= 8, false)
    ])
    error_message = "metrics_source_cidrs must be IPv4 CIDRs written with their network address and a prefix length of at least /8 (never 0.0.0.0/0)."
  }
}

variable "trusted_proxy_cidrs" {
  description = "Peers egressd trusts to send a PROXY protocol header (EGRESSD_TRUSTED_PROXIES). Empty: the load balancer subnets' CIDRs, where the NLB's private addresses are. Never list client networks here: a trusted peer can claim any source address."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.trusted_proxy_cidrs : can(cidrhost(c, 0)) && !endswith(c, "/0")])
    error_message = "trusted_proxy_cidrs must be CIDRs narrower than /0."
  }
}

variable "nacl_rule_quota" {
  description = "Inbound/outbound rules allowed per network ACL in this account (AWS default 20, adjustable to 40). The load balancer subnets' ACL uses 2 + length(allowed_source_cidrs) inbound rules; a plan with more fails early with a clear message instead of at apply."
  type        = number
  default     = 20

  validation {
    condition     = var.nacl_rule_quota >= 20 && var.nacl_rule_quota <= 40
    error_message = "nacl_rule_quota must be from 20 to 40."
  }
}

variable "upstream_tcp_ports" {
  description = "Destination TCP ports the tasks may connect to on the internet (task security group egress). Keep it equal to egressd's gates (EGRESSD_CONNECT_PORTS, EGRESSD_HTTP_PORTS). 443 is always allowed as well: the tasks pull their image and ship logs over it."
  type        = list(number)
  default     = [80, 443]

  validation {
    condition     = length(var.upstream_tcp_ports) > 0 && alltrue([for p in var.upstream_tcp_ports : p >= 1 && p <= 65535 && floor(p) == p])
    error_message = "upstream_tcp_ports must be a non-empty list of ports from 1 to 65535."
  }
}

# ------------------------------------------------------------------------------------------------
# Load balancer
# ------------------------------------------------------------------------------------------------

variable "nlb_internal" {
  description = "false: an internet-facing NLB (clients such as Netskope or Zscaler reach it over the internet). true: an internal NLB, for clients that arrive over VPN, Direct Connect, peering or a transit gateway."
  type        = bool
  default     = false
}

variable "listener_port" {
  description = "TCP port of the NLB listener that clients connect to."
  type        = number
  default     = 3128

  validation {
    condition     = var.listener_port >= 1 && var.listener_port <= 65535 && floor(var.listener_port) == var.listener_port
    error_message = "listener_port must be from 1 to 65535."
  }
}

variable "nlb_tcp_idle_timeout_seconds" {
  description = "Idle timeout of the NLB's TCP flows (60-6000 s; AWS default 350). Keep it above egressd's timeouts.tunnel_idle (300 s) so egressd closes idle tunnels first and clients see a clean close instead of a silent drop."
  type        = number
  default     = 350

  validation {
    condition     = var.nlb_tcp_idle_timeout_seconds >= 60 && var.nlb_tcp_idle_timeout_seconds <= 6000
    error_message = "nlb_tcp_idle_timeout_seconds must be from 60 to 6000."
  }
}

variable "enable_deletion_protection" {
  description = "Deletion protection on the NLB. Turn it on in production: deleting the NLB changes the address the security service forwards to."
  type        = bool
  default     = false
}

variable "health_check_interval_seconds" {
  description = "Seconds between NLB health checks (HTTP GET /readyz on the admin port), 5 to 300."
  type        = number
  default     = 10

  validation {
    condition     = var.health_check_interval_seconds >= 5 && var.health_check_interval_seconds <= 300
    error_message = "health_check_interval_seconds must be from 5 to 300."
  }
}

variable "health_check_timeout_seconds" {
  description = "Seconds the NLB waits for a /readyz answer, 2 to 120; must be below the interval."
  type        = number
  default     = 5

  validation {
    condition     = var.health_check_timeout_seconds >= 2 && var.health_check_timeout_seconds <= 120
    error_message = "health_check_timeout_seconds must be from 2 to 120."
  }
}

variable "healthy_threshold" {
  description = "Consecutive successful health checks before a target receives traffic (2-10)."
  type        = number
  default     = 2

  validation {
    condition     = var.healthy_threshold >= 2 && var.healthy_threshold <= 10
    error_message = "healthy_threshold must be from 2 to 10."
  }
}

variable "unhealthy_threshold" {
  description = "Consecutive failed health checks before a target stops receiving new connections (2-10). With the defaults a draining task (/readyz 503) is out of rotation within about 20 s."
  type        = number
  default     = 2

  validation {
    condition     = var.unhealthy_threshold >= 2 && var.unhealthy_threshold <= 10
    error_message = "unhealthy_threshold must be from 2 to 10."
  }
}

variable "terminate_connections_on_unhealthy" {
  description = "Whether the NLB resets the open connections of a target that turns unhealthy. Default false: a task whose /readyz fails for a moment keeps its tunnels; a task that really fails is replaced by ECS (container health check), which deregisters it with the normal drain."
  type        = bool
  default     = false
}

# ------------------------------------------------------------------------------------------------
# Container and task
# ------------------------------------------------------------------------------------------------

variable "image" {
  description = "egressd container image (e.g. 123456789012.dkr.ecr.eu-central-1.amazonaws.com/egressd:1.2.3). The image runs egressd with its config at /etc/egressd/egressd.yaml; start from conf/examples/nlb-fargate.yaml."
  type        = string

  validation {
    condition     = length(trimspace(var.image)) > 0
    error_message = "image must be set."
  }
}

variable "proxy_port" {
  description = "Port egressd's proxy listener uses in the container (EGRESSD_LISTEN), the target port of the NLB."
  type        = number
  default     = 3128

  validation {
    condition     = var.proxy_port >= 1024 && var.proxy_port <= 65535
    error_message = "proxy_port must be from 1024 to 65535 (the container runs as a non-root user with no capabilities)."
  }
}

variable "admin_port" {
  description = "Port of egressd's admin listener (EGRESSD_ADMIN_LISTEN): /metrics, /healthz, /readyz. The NLB health check and the container health check use /readyz on it."
  type        = number
  default     = 9090

  validation {
    condition     = var.admin_port >= 1024 && var.admin_port <= 65535
    error_message = "admin_port must be from 1024 to 65535."
  }
}

variable "cpu" {
  description = "Fargate task CPU units (256 = 0.25 vCPU). Must form a valid Fargate combination with memory."
  type        = number
  default     = 512

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.cpu)
    error_message = "cpu must be one of 256, 512, 1024, 2048, 4096, 8192, 16384."
  }
}

variable "memory" {
  description = "Fargate task memory in MiB. Must form a valid Fargate combination with cpu (512 CPU: 1024-4096)."
  type        = number
  default     = 1024

  validation {
    condition     = var.memory >= 512 && var.memory <= 122880
    error_message = "memory must be from 512 to 122880 MiB."
  }
}

variable "cpu_architecture" {
  description = "CPU architecture of the tasks: X86_64 or ARM64 (Graviton; the image must be built for it)."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "platform_version" {
  description = "Fargate platform version. LATEST or 1.4.0 and later (systemControls need 1.4.0)."
  type        = string
  default     = "LATEST"
}

variable "drain_delay_seconds" {
  description = "egressd's drain.delay in the image's config (default 5 s): how long listeners keep accepting after SIGTERM. Used only to check stop_timeout."
  type        = number
  default     = 5

  validation {
    condition     = var.drain_delay_seconds >= 0 && var.drain_delay_seconds <= 60
    error_message = "drain_delay_seconds must be from 0 to 60."
  }
}

variable "drain_timeout_seconds" {
  description = "egressd's drain.timeout in the image's config (default 90 s): how long in-flight requests and tunnels may run after the listeners close. Also the NLB deregistration delay, so tunnels get the same time whichever way a task leaves."
  type        = number
  default     = 90

  validation {
    condition     = var.drain_timeout_seconds >= 0 && var.drain_timeout_seconds <= 3600
    error_message = "drain_timeout_seconds must be from 0 to 3600."
  }
}

variable "stop_timeout" {
  description = "Seconds ECS waits after SIGTERM before SIGKILL (container stopTimeout, Fargate maximum 120). Must exceed drain_delay_seconds + drain_timeout_seconds."
  type        = number
  default     = 120

  validation {
    condition     = var.stop_timeout >= 2 && var.stop_timeout <= 120
    error_message = "stop_timeout must be from 2 to 120 seconds (Fargate's maximum)."
  }
}

variable "nofile_limit" {
  description = "nofile ulimit (soft and hard) of the container. Each proxied connection uses up to two sockets and, while splicing, two pipe descriptors; keep it above 2 x limits.max_connections plus max_pipes x 2."
  type        = number
  default     = 65536

  validation {
    condition     = var.nofile_limit >= 1024 && var.nofile_limit <= 1048576
    error_message = "nofile_limit must be from 1024 to 1048576 (Fargate's maximum)."
  }
}

variable "tcp_keepalive_time_seconds" {
  description = "net.ipv4.tcp_keepalive_time in the task (systemControls): idle seconds before the first keepalive probe on sockets that enable SO_KEEPALIVE without setting TCP_KEEPIDLE themselves (egressd sets 240 s on its own sockets). Must stay below the NAT gateway's fixed 350 s idle timeout."
  type        = number
  default     = 60

  validation {
    condition     = var.tcp_keepalive_time_seconds >= 10 && var.tcp_keepalive_time_seconds < 350
    error_message = "tcp_keepalive_time_seconds must be from 10 to 349 (below the NAT gateway's 350 s idle timeout)."
  }
}

variable "tcp_keepalive_interval_seconds" {
  description = "net.ipv4.tcp_keepalive_intvl in the task (systemControls): seconds between keepalive probes after the first one, egressd's sockets included."
  type        = number
  default     = 30

  validation {
    condition     = var.tcp_keepalive_interval_seconds >= 1 && var.tcp_keepalive_interval_seconds < 350
    error_message = "tcp_keepalive_interval_seconds must be from 1 to 349."
  }
}

variable "readonly_root_filesystem" {
  description = "Mount the container's root file system read-only (egressd writes only to stdout and stderr)."
  type        = bool
  default     = true
}

variable "extra_environment" {
  description = "More environment variables for the container, e.g. { EGRESSD_LOG_LEVEL = \"debug\", EGRESSD_CONNECT_PORTS = \"443,8443\" }. Unknown EGRESSD_* names stop egressd at start. The variables this module sets itself cannot be overridden here: EGRESSD_LISTEN (proxy_port), EGRESSD_ADMIN_LISTEN (admin_port), EGRESSD_TRUSTED_PROXIES (trusted_proxy_cidrs), EGRESSD_ALLOW_SOURCES (allowed_source_cidrs) and EGRESSD_PROXY_PROTOCOL (always required behind the NLB)."
  type        = map(string)
  default     = {}
}

variable "log_retention_days" {
  description = "Retention of the CloudWatch log group (access log and diagnostics)."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ... 3653)."
  }
}

variable "log_kms_key_arn" {
  description = "KMS key ARN to encrypt the log group with. null: CloudWatch Logs' own encryption."
  type        = string
  default     = null
}

variable "log_driver_mode" {
  description = "awslogs delivery mode. non-blocking (default): a slow CloudWatch Logs never stalls egressd's stdout, at the risk of dropping lines when the buffer is full. blocking: no line is lost, but a stalled log stream stalls the proxy."
  type        = string
  default     = "non-blocking"

  validation {
    condition     = contains(["blocking", "non-blocking"], var.log_driver_mode)
    error_message = "log_driver_mode must be blocking or non-blocking."
  }
}

variable "log_max_buffer_size" {
  description = "awslogs buffer in non-blocking mode (e.g. 25m)."
  type        = string
  default     = "25m"
}

variable "container_insights" {
  description = "ECS Container Insights on the cluster: enabled, enhanced or disabled."
  type        = string
  default     = "enabled"

  validation {
    condition     = contains(["enabled", "enhanced", "disabled"], var.container_insights)
    error_message = "container_insights must be enabled, enhanced or disabled."
  }
}

# ------------------------------------------------------------------------------------------------
# Service size and autoscaling
# ------------------------------------------------------------------------------------------------

variable "desired_count" {
  description = "Tasks at creation. Autoscaling owns the count afterwards (changes here are ignored after the first apply)."
  type        = number
  default     = 3
}

variable "min_count" {
  description = "Fewest tasks autoscaling keeps; also the threshold of the healthy-hosts alarm. One per zone keeps every zone served."
  type        = number
  default     = 3

  validation {
    condition     = var.min_count >= 1
    error_message = "min_count must be at least 1."
  }
}

variable "max_count" {
  description = "Most tasks autoscaling may run."
  type        = number
  default     = 12
}

variable "cpu_target_percent" {
  description = "Target average CPU utilisation of the service for target-tracking autoscaling."
  type        = number
  default     = 60

  validation {
    condition     = var.cpu_target_percent > 0 && var.cpu_target_percent <= 100
    error_message = "cpu_target_percent must be from 1 to 100."
  }
}

variable "memory_target_percent" {
  description = "Target average memory utilisation of the service for target-tracking autoscaling."
  type        = number
  default     = 70

  validation {
    condition     = var.memory_target_percent > 0 && var.memory_target_percent <= 100
    error_message = "memory_target_percent must be from 1 to 100."
  }
}

variable "scale_in_cooldown_seconds" {
  description = "Seconds after a scale-in before the next one. Long: every scale-in drains tunnels for up to drain_timeout_seconds."
  type        = number
  default     = 300
}

variable "scale_out_cooldown_seconds" {
  description = "Seconds after a scale-out before the next one."
  type        = number
  default     = 60
}

variable "health_check_grace_period_seconds" {
  description = "Seconds ECS ignores failing NLB health checks of a new task."
  type        = number
  default     = 30
}

# ------------------------------------------------------------------------------------------------
# Alarms
# ------------------------------------------------------------------------------------------------

variable "alarm_actions" {
  description = "ARNs notified when an alarm fires (e.g. an SNS topic). Empty: the alarms exist but notify nobody."
  type        = list(string)
  default     = []
}

variable "ok_actions" {
  description = "ARNs notified when an alarm returns to OK."
  type        = list(string)
  default     = []
}

variable "egress_bytes_alarm_threshold" {
  description = "Bytes one NAT gateway may send to the internet in 5 minutes before the egress-bytes alarm fires (default 10 GiB, about 36 MB/s sustained). An early sign of abuse or a runaway client, and of NAT data-processing cost."
  type        = number
  default     = 10737418240

  validation {
    condition     = var.egress_bytes_alarm_threshold > 0
    error_message = "egress_bytes_alarm_threshold must be positive."
  }
}
