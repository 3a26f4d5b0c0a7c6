#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests in deploy/kubernetes (no cluster needed):
#   1. yamllint --strict (Debian package yamllint) with tests/k8s/yamllint.yaml;
#   2. kubectl kustomize, when kubectl is installed (renders what `kubectl apply -k` would send);
#   3. tests/k8s/validate.mjs: kubernetes-models .validate() (JSON schemas) and a TypeScript
#      excess-property check on every object, sources and rendered output, the ServiceMonitor
#      with @kubernetes-models/prometheus-operator; consistency checks between the objects and
#      the egressd config; `egressd --check-config` on the ConfigMap's config when EGRESSD_BIN
#      names the egressd binary.
# Installs the pinned npm packages (npm ci, package-lock.json) into tests/k8s/node_modules when
# they are missing or stale.
#
# Usage: [EGRESSD_BIN=build/egressd] tests/k8s/check_kubernetes.sh [MANIFEST_DIR]
# Exit: 0 all passed; 1 a check failed; 77 node or npm is missing (skip).
# Needs: Node.js >= 18 with npm (the machines' nodejs package; on plain Debian 12:
# apt-get install nodejs npm), yamllint (apt-get install yamllint), the npm registry for the
# first npm ci; kubectl is optional.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dir="$(cd "${1:-$repo/deploy/kubernetes}" && pwd)"
start=$(date +%s%N)
elapsed() { echo "$(( ($(date +%s%N) - start) / 1000000 )) ms"; }

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "check_kubernetes: SKIP: $tool not found (install Node.js >= 18 with npm)" >&2
    exit 77
  fi
done
if [ -n "${EGRESSD_BIN:-}" ]; then
  if [ ! -x "$EGRESSD_BIN" ]; then
    echo "check_kubernetes: FAIL: EGRESSD_BIN=$EGRESSD_BIN is not an executable (build it: ninja -C build egressd)"
    exit 1
  fi
  EGRESSD_BIN="$(cd "$(dirname "$EGRESSD_BIN")" && pwd)/$(basename "$EGRESSD_BIN")"
  export EGRESSD_BIN
fi

failed=0

# 1. yamllint
echo "== yamllint --strict $dir"
if ! command -v yamllint >/dev/null 2>&1; then
  echo "check_kubernetes: FAIL: yamllint not found (apt-get install yamllint)"
  failed=1
elif ! yamllint --strict -f parsable -c "$here/yamllint.yaml" "$dir"; then
  echo "check_kubernetes: FAIL: yamllint found problems (above: FILE:LINE:COL: [level] message (rule))"
  failed=1
else
  echo "ok   yamllint"
fi

# npm packages, pinned by package-lock.json. npm writes node_modules/.package-lock.json on
# install; a lock file newer than it means the install is stale.
if [ ! -f "$here/node_modules/.package-lock.json" ] ||
   [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
  echo "== npm ci (tests/k8s/node_modules)"
  t0=$(date +%s%N)
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
  echo "ok   npm ci in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
fi

# 2. kubectl kustomize
rendered=()
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if command -v kubectl >/dev/null 2>&1; then
  echo "== kubectl kustomize $dir"
  if kubectl kustomize "$dir" >"$tmp/rendered.yaml" 2>"$tmp/kustomize.err"; then
    echo "ok   kubectl kustomize: $(grep -c '^kind:' "$tmp/rendered.yaml") objects"
    rendered=(--rendered "$tmp/rendered.yaml")
  else
    sed 's/^/  /' "$tmp/kustomize.err"
    echo "check_kubernetes: FAIL: kubectl kustomize $dir"
    failed=1
  fi
else
  echo "skip kubectl kustomize (kubectl not installed): validating the source files only"
fi

# 3. schemas, TypeScript, consistency, egressd --check-config
echo "== validate.mjs"
if ! node "$here/validate.mjs" --dir "$dir" "${rendered[@]}"; then
  failed=1
fi

if [ "$failed" -ne 0 ]; then
  echo "check_kubernetes: FAILED in $(elapsed)"
  exit 1
fi
echo "check_kubernetes: passed in $(elapsed)"
