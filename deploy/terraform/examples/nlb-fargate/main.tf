# Example root: egressd in one region with the module's defaults, which follow the README's
# drain timeline (drain 5 s + 90 s, stopTimeout 120 s, deregistration delay 90 s).
#
#   cp terraform.tfvars.example terraform.tfvars   # set image and allowed_source_cidrs
#   terraform init && terraform apply
#   terraform output egress_ips                     # give these to the SaaS services
#   tests/smoke.sh "$(terraform output -raw proxy_url)" <one of the egress IPs>
#
# The smoke test must run from an address inside allowed_source_cidrs.

module "egressd" {
  source = "../../modules/egressd"

  name                 = var.name
  az_count             = var.az_count
  vpc_cidr             = var.vpc_cidr
  allowed_source_cidrs = var.allowed_source_cidrs
  metrics_source_cidrs = var.metrics_source_cidrs
  image                = var.image
  cpu                  = var.cpu
  memory               = var.memory
  desired_count        = var.desired_count
  min_count            = var.min_count
  max_count            = var.max_count
  nlb_internal         = var.nlb_internal
  alarm_actions        = var.alarm_actions
  ok_actions           = var.alarm_actions
  tags                 = var.tags
}
