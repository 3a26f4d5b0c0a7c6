terraform {
  # Preconditions and postconditions need 1.2; optional() object attributes 1.3.
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # Checked offline against the 6.x schema (tests/deploy); uses aws_region.region and the NLB
      # listener's tcp_idle_timeout_seconds, which 5.x lacks or names differently.
      version = ">= 6.0, < 7.0"
    }
  }
}
