#!/usr/bin/env bash
# Validates egressd's /metrics exposition with `promtool check metrics` (Debian package
# `prometheus`): text-format syntax plus Prometheus' naming lints (counters end in _total,
# every family has HELP, units in base units, ...). Any finding fails.
#
# usage: tests/support/check_metrics.sh URL             scrape a running egressd, e.g.
#                                                        http://127.0.0.1:9090/metrics
#        tests/support/check_metrics.sh EGRESSD_BINARY   start the binary on loopback (proxy and
#                                                        admin on port 0), scrape it, stop it
#
# Exit status: 0 clean, 1 promtool reported a problem or the scrape failed, 77 promtool is not
# installed (CTest's SKIP_RETURN_CODE convention), 2 usage.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 URL|EGRESSD_BINARY" >&2
  exit 2
fi
if ! command -v promtool >/dev/null; then
  echo "check_metrics: promtool not found (apt-get install prometheus); skipping" >&2
  exit 77
fi

work=$(mktemp -d)
egressd_pid=

cleanup() {
  local rc=$? i
  if [[ -n "$egressd_pid" ]] && kill -0 "$egressd_pid" 2>/dev/null; then
    kill -TERM "$egressd_pid" 2>/dev/null || true
    # A second SIGTERM skips the drain delay; give it 30 s in all before SIGKILL.
    for i in $(seq 1 300); do
      kill -0 "$egressd_pid" 2>/dev/null || break
      ((i == 10)) && kill -TERM "$egressd_pid" 2>/dev/null
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

scrape() {  # scrape URL FILE: the body of a 200 answer into FILE
  python3 - "$1" "$2" <<'EOF'
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
        ctype = r.headers.get("Content-Type", "")
        if not ctype.startswith("text/plain; version=0.0.4"):
            sys.exit(f"check_metrics: unexpected Content-Type {ctype!r}")
        open(sys.argv[2], "wb").write(r.read())
except (urllib.error.URLError, OSError) as e:  # HTTPError (non-2xx) is a URLError
    sys.exit(f"check_metrics: {e}")
EOF
}

target=$1
if [[ "$target" == http://* || "$target" == https://* ]]; then
  url=$target
else
  bin=$(realpath "$target")
  env -i PATH="$PATH" \
    EGRESSD_LISTEN=127.0.0.1:0 \
    EGRESSD_ADMIN_LISTEN=127.0.0.1:0 \
    EGRESSD_WORKERS=1 \
    EGRESSD_ACCESS_LOG=stdout \
    "$bin" >"$work/stdout" 2>"$work/stderr" &
  egressd_pid=$!
  pattern='listening on [0-9.]+:[0-9]+ \(admin\)'
  deadline=$((SECONDS + 20))
  until grep -qE "$pattern" "$work/stderr"; do
    if ! kill -0 "$egressd_pid" 2>/dev/null || ((SECONDS >= deadline)); then
      echo "check_metrics: egressd did not report 'listening on ... (admin)'" >&2
      tail -n 20 "$work/stderr" >&2 || true
      exit 1
    fi
    sleep 0.1
  done
  port=$(grep -oE "$pattern" "$work/stderr" | head -n1 | sed -E 's/.*:([0-9]+) \(admin\)/\1/')
  url="http://127.0.0.1:$port/metrics"
fi

if ! scrape "$url" "$work/metrics"; then
  echo "check_metrics: scraping $url failed" >&2
  exit 1
fi
if [[ ! -s "$work/metrics" ]]; then
  echo "check_metrics: $url returned an empty body" >&2
  exit 1
fi

# promtool prints lint findings and exits 3, or exits 1 on a syntax error; either fails here.
if ! promtool check metrics <"$work/metrics" >"$work/promtool.out" 2>&1; then
  echo "check_metrics: promtool check metrics failed on $url:" >&2
  cat "$work/promtool.out" >&2
  exit 1
fi
if [[ -s "$work/promtool.out" ]]; then
  # Findings printed with a zero exit status still count.
  echo "check_metrics: promtool check metrics reported on $url:" >&2
  cat "$work/promtool.out" >&2
  exit 1
fi
echo "check_metrics: $url: $(grep -c '^# TYPE ' "$work/metrics") metric families, promtool clean"
