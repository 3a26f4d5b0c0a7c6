#!/usr/bin/env bash
# Lints the Dockerfile with dockerfile-utils (npm, pinned in package-lock.json): any error or
# warning fails. Exit 77 when node/npm are missing.
set -euo pipefail
cd "$(dirname "$0")"
command -v npm >/dev/null || { echo "SKIP: npm not installed"; exit 77; }
[ -x node_modules/.bin/dockerfile-utils ] || npm ci --no-audit --no-fund --silent
out="$(node_modules/.bin/dockerfile-utils lint ../../Dockerfile 2>&1)" || true
if [ -n "$out" ]; then
  echo "$out"
  echo "FAIL: dockerfile-utils reported problems in Dockerfile"
  exit 1
fi
echo "ok: Dockerfile lint clean"
