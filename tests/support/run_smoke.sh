#!/usr/bin/env bash
# Runs tests/smoke.sh against a local egressd and local origins (CI, via ctest).
#
# usage: tests/support/run_smoke.sh EGRESSD_BINARY
#
# Everything stays on loopback: the origins listen on 127.0.0.1, egressd re-allows only
# 127.0.0.1/32 as a destination, and its port gates admit only the two origin ports, so the
# denied checks (port 25, 169.254.169.254 on 80/443) are refused before egressd resolves or
# connects anything. Upstream connections leave from 127.0.0.7 (EGRESSD_EGRESS_BIND), which the
# origins' /ip endpoints report back.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 EGRESSD_BINARY" >&2
  exit 2
fi
BIN=$(realpath "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
TESTS=$(dirname "$HERE")
EGRESS_IP=127.0.0.7

work=$(mktemp -d)
origins_pid=
egressd_pid=

stop_pid() {  # stop_pid PID NAME: SIGTERM, wait up to 30 s, then SIGKILL
  local pid=$1 name=$2 i
  [[ -n "$pid" ]] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "run_smoke: $name (pid $pid) did not exit after SIGTERM; killing" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  stop_pid "$egressd_pid" egressd
  stop_pid "$origins_pid" origins
  wait 2>/dev/null || true
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

dump_logs() {
  echo "--- egressd stderr (tail) ---" >&2
  tail -n 40 "$work/egressd.err" >&2 || true
  echo "--- egressd access log (tail) ---" >&2
  tail -n 20 "$work/access.log" >&2 || true
  echo "--- origins stderr ---" >&2
  tail -n 20 "$work/origins.err" >&2 || true
}

wait_for() {  # wait_for SECONDS COMMAND...: poll until COMMAND succeeds
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    if ((SECONDS >= deadline)); then return 1; fi
    sleep 0.1
  done
}

# 1. Origins.
env -i PATH="$PATH" PYTHONDONTWRITEBYTECODE=1 python3 "$HERE/smoke_origins.py" \
  >"$work/origins.json" 2>"$work/origins.err" &
origins_pid=$!
if ! wait_for 30 grep -q '^{' "$work/origins.json"; then
  echo "run_smoke: origins did not start" >&2
  dump_logs
  exit 1
fi
field() {
  python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())[sys.argv[2]])' \
    "$work/origins.json" "$1"
}
TLS_PORT=$(field tls_port)
HTTP_PORT=$(field http_port)

# 2. egressd (clean environment: only PATH and the EGRESSD_* below).
env -i PATH="$PATH" \
  EGRESSD_LISTEN=127.0.0.1:0 \
  EGRESSD_ADMIN_LISTEN=127.0.0.1:0 \
  EGRESSD_ALLOW_DESTINATIONS=127.0.0.1/32 \
  EGRESSD_CONNECT_PORTS="$TLS_PORT" \
  EGRESSD_HTTP_PORTS="$HTTP_PORT" \
  EGRESSD_EGRESS_BIND="$EGRESS_IP" \
  EGRESSD_WORKERS=2 \
  EGRESSD_LOG_LEVEL=debug \
  EGRESSD_ACCESS_LOG=stdout \
  "$BIN" >"$work/access.log" 2>"$work/egressd.err" &
egressd_pid=$!
deadline=$((SECONDS + 20))
until grep -qE 'listening on [0-9.]+:[0-9]+ \(proxy\)' "$work/egressd.err"; do
  if ! kill -0 "$egressd_pid" 2>/dev/null || ((SECONDS >= deadline)); then
    echo "run_smoke: egressd did not report 'listening on ... (proxy)'" >&2
    dump_logs
    exit 1
  fi
  sleep 0.1
done
PROXY_PORT=$(grep -oE 'listening on [0-9.]+:[0-9]+ \(proxy\)' "$work/egressd.err" | head -n1 |
  sed -E 's/.*:([0-9]+) \(proxy\)/\1/')

# 3. The operator's smoke test against it.
set +e
SMOKE_HTTPS_URL=$(field https_url) \
  SMOKE_HTTP_URL=$(field http_url) \
  SMOKE_CACERT=$(field cacert) \
  SMOKE_EGRESS_URL=$(field https_ip_url) \
  SMOKE_EGRESS_HTTP_URL=$(field http_ip_url) \
  SMOKE_TIMEOUT=20 \
  bash "$TESTS/smoke.sh" "http://127.0.0.1:$PROXY_PORT" "$EGRESS_IP"
rc=$?
set -e
if [[ $rc -ne 0 ]]; then
  dump_logs
fi
exit "$rc"
