#!/bin/sh
# Offline checks of deploy/terraform (no AWS account, no Terraform registry):
#   1. terraform fmt -check -recursive            (skipped when no terraform binary is installed)
#   2. validate_terraform.mjs: HCL parsed with @cdktf/hcl2json, every aws_* block and reference
#      checked against the AWS provider schema shipped in @cdktn/provider-aws
#   3. terraform_invariants.test.mjs (node --test): PROXY v2, target type ip, /readyz, one EIP per
#      zone, ingress only from the variable CIDRs, drain alignment, outputs, README tables, ...
# The npm packages are installed with `npm ci` into tests/deploy/node_modules when missing or
# older than package-lock.json.
#
# Exit status: 0 all passed, 1 a check failed, 77 node (>= 18) or npm is not installed.
# Needs: nodejs and npm (Debian: apt-get install -y nodejs npm), network access to the npm
# registry for the first npm ci. Optional: terraform on PATH (or /usr/local/bin/terraform).

set -u

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
tf_root="${EGRESSD_TF_ROOT:-$repo/deploy/terraform}"   # override: check a copy
start=$(date +%s)

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "check_terraform: SKIP: node and npm are required (apt-get install -y nodejs npm)" >&2
    exit 77
fi
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 18 ]; then
    echo "check_terraform: SKIP: node >= 18 is required, found $(node --version)" >&2
    exit 77
fi

passed=0
failed=0
step_ok() { passed=$((passed + 1)); echo "check_terraform: ok: $1"; }
step_fail() { failed=$((failed + 1)); echo "check_terraform: FAILED: $1" >&2; }

# 1. Formatting.
tf=$(command -v terraform 2>/dev/null || true)
[ -z "$tf" ] && [ -x /usr/local/bin/terraform ] && tf=/usr/local/bin/terraform
if [ -n "$tf" ]; then
    # A TF_CLI_CONFIG_FILE that points nowhere only adds a warning to every command.
    if [ -n "${TF_CLI_CONFIG_FILE:-}" ] && [ ! -e "$TF_CLI_CONFIG_FILE" ]; then unset TF_CLI_CONFIG_FILE; fi
    export CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1
    if "$tf" fmt -check -recursive -diff "$tf_root"; then
        step_ok "terraform fmt -check -recursive deploy/terraform"
    else
        step_fail "terraform fmt: run 'terraform fmt -recursive deploy/terraform'"
    fi
else
    echo "check_terraform: note: no terraform binary; formatting not checked, variable validations not evaluated"
fi

# 2. npm packages, pinned by package-lock.json.
stamp="$here/node_modules/.egressd-package-lock"
if [ ! -d "$here/node_modules/@cdktn/provider-aws/lib" ] || [ ! -d "$here/node_modules/@cdktf/hcl2json" ] ||
    ! cmp -s "$here/package-lock.json" "$stamp"; then
    t0=$(date +%s)
    if (cd "$here" && npm ci --no-audit --no-fund --loglevel=error); then
        cp "$here/package-lock.json" "$stamp"
        echo "check_terraform: npm ci took $(($(date +%s) - t0)) s"
    else
        step_fail "npm ci in tests/deploy"
        echo "check_terraform: $passed passed, $failed failed"
        exit 1
    fi
fi

# 3. Schema and references.
if node "$here/validate_terraform.mjs" "$tf_root"; then
    step_ok "schema and references (validate_terraform.mjs)"
else
    step_fail "schema and references (validate_terraform.mjs)"
fi

# 4. Invariants.
if (cd "$here" && EGRESSD_TF_ROOT="$tf_root" node --test terraform_invariants.test.mjs); then
    step_ok "invariants (terraform_invariants.test.mjs)"
else
    step_fail "invariants (terraform_invariants.test.mjs)"
fi

echo "check_terraform: took $(($(date +%s) - start)) s"
echo "check_terraform: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
