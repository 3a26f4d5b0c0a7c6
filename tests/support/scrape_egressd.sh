#!/usr/bin/env bash
# Starts an egressd binary on loopback (proxy and admin on port 0, 1 worker, access log off),
# waits for its admin listener, saves one /metrics scrape (checked to be the Prometheus text
# format, non-empty) and stops it. Shared by tests/support/check_metrics.sh and
# tests/monitoring/check_monitoring.sh.
#
# usage: tests/support/scrape_egressd.sh EGRESSD_BINARY OUT_FILE [CONFIG_FILE]
#        tests/support/scrape_egressd.sh URL OUT_FILE        (a running egressd: only scrape)
# Exit: 0 scraped; 1 egressd did not start or the scrape failed (the reason on stderr); 2 usage.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
  echo "usage: $0 EGRESSD_BINARY OUT_FILE [CONFIG_FILE]" >&2
  exit 2
fi
out=$2
scrape() {  # scrape URL: the body of a 200 Prometheus text answer into $out
  python3 - "$1" "$out" <<'PY'
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
        ctype = r.headers.get("Content-Type", "")
        if not ctype.startswith("text/plain; version=0.0.4"):
            sys.exit(f"scrape_egressd: unexpected Content-Type {ctype!r}")
        body = r.read()
except (urllib.error.URLError, OSError) as e:  # HTTPError (non-2xx) is a URLError
    sys.exit(f"scrape_egressd: scraping {sys.argv[1]}: {e}")
if not body:
    sys.exit(f"scrape_egressd: {sys.argv[1]} returned an empty body")
open(sys.argv[2], "wb").write(body)
PY
}
if [[ "$1" == http://* || "$1" == https://* ]]; then
  scrape "$1"
  exit
fi
bin=$(realpath "$1")
config_args=()
[[ $# -eq 3 ]] && config_args=(--config "$3")

work=$(mktemp -d)
egressd_pid=

cleanup() {
  local rc=$? i
  if [[ -n "$egressd_pid" ]] && kill -0 "$egressd_pid" 2>/dev/null; then
    # The first SIGTERM starts the drain, a second one exits at once.
    kill -TERM "$egressd_pid" 2>/dev/null || true
    for i in $(seq 1 300); do
      kill -0 "$egressd_pid" 2>/dev/null || break
      ((i == 2)) && kill -TERM "$egressd_pid" 2>/dev/null
      sleep 0.1
    done
    kill -KILL "$egressd_pid" 2>/dev/null || true
    wait "$egressd_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

: >"$work/stderr"  # exists before the wait loop greps it
env -i PATH="$PATH" \
  EGRESSD_LISTEN=127.0.0.1:0 \
  EGRESSD_ADMIN_LISTEN=127.0.0.1:0 \
  EGRESSD_WORKERS=1 \
  EGRESSD_ACCESS_LOG=off \
  "$bin" "${config_args[@]}" >"$work/stdout" 2>"$work/stderr" &
egressd_pid=$!
pattern='listening on 127\.0\.0\.1:[0-9]+ \(admin\)'
deadline=$((SECONDS + 20))
until grep -qE "$pattern" "$work/stderr"; do
  if ! kill -0 "$egressd_pid" 2>/dev/null || ((SECONDS >= deadline)); then
    echo "scrape_egressd: egressd did not report 'listening on ... (admin)'" >&2
    tail -n 20 "$work/stderr" >&2 || true
    exit 1
  fi
  sleep 0.05
done
port=$(grep -oE "$pattern" "$work/stderr" | head -n1 | sed -E 's/.*:([0-9]+) \(admin\)/\1/')

scrape "http://127.0.0.1:$port/metrics"
