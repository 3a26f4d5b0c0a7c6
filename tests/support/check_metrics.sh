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
trap 'rm -rf "$work"' EXIT

target=$1
url=$target
[[ "$target" == http://* || "$target" == https://* ]] || url="egressd $target (started on loopback)"
"$(dirname "$0")/scrape_egressd.sh" "$target" "$work/metrics"
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
