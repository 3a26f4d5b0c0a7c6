#!/usr/bin/env bash
# End-to-end rehearsal of the production path on loopback: HAProxy (the AWS NLB stand-in, TCP
# mode, send-proxy-v2, health checks on /readyz) in front of two egressd instances bound to a
# stand-in Elastic IP, an origin that admits only that IP, curl and raw clients. See
# tests/e2e/test_e2e_nlb.py for what is checked.
#
# usage: tests/e2e/run_e2e.sh [EGRESSD_BINARY] [TEST_NAME...]
#   EGRESSD_BINARY  default: $EGRESSD_BIN, else build/egressd of this repository
#   TEST_NAME       optional unittest selectors, e.g. E2ENlbTest.test_80_rolling_restart_loses_no_request
#
# Exit status: 0 passed; 1 failed (124: the 600 s guard stopped a hung run); 2 bad usage or
# no binary; 77 skipped because haproxy, curl or openssl is not installed
# (scripts/install-deps.sh installs them; for ctest: SKIP_RETURN_CODE 77).
# Everything stays on loopback (127.0.0.9-127.0.0.53); nothing is sent anywhere else.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

missing=()
for tool in haproxy curl openssl; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]} > 0)); then
  echo "run_e2e: SKIP: not installed: ${missing[*]}" >&2
  exit 77
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo "run_e2e: python3 is required" >&2
  exit 2
fi

BIN=${EGRESSD_BIN:-$REPO/build/egressd}
if [[ $# -ge 1 && "$1" != -* && "$1" != *E2ENlbTest* && "$1" != test_* ]]; then
  BIN=$1
  shift
fi
if [[ ! -x "$BIN" ]]; then
  echo "run_e2e: egressd binary not found or not executable: $BIN" >&2
  echo "usage: $0 [EGRESSD_BINARY] [TEST_NAME...]" >&2
  exit 2
fi
BIN=$(realpath "$BIN")

tests=()
for t in "$@"; do
  [[ $t == test_e2e_nlb.* ]] || t="test_e2e_nlb.$t"
  tests+=("$t")
done
((${#tests[@]} > 0)) || tests=(test_e2e_nlb)

cd "$HERE"
# The tests keep their own failure guards; this one only stops a hung run (ctest has its own).
guard=()
command -v timeout >/dev/null 2>&1 && guard=(timeout --kill-after=10 600)
exec env -i PATH="$PATH" LANG=C.UTF-8 \
  EGRESSD_BIN="$BIN" PYTHONPATH="$REPO/tests/support" PYTHONDONTWRITEBYTECODE=1 \
  "${guard[@]}" python3 -m unittest -v "${tests[@]}"
