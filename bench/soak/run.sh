#!/usr/bin/env bash
# egressd soak: a bounded mixed load on loopback (CONNECT tunnels, keep-alive GETs, uploads,
# hostile-corpus replay, random client aborts, misbehaving origin, admin scrapes, SIGHUP
# reloads) against one egressd with 2 workers, sampling its fd count, RSS and thread count into
# a CSV, then a summary and a flat / not-flat verdict (exit 0 / 1). See docs/hardening.md.
#
#   bench/soak/run.sh                    10 minutes against build/egressd
#   SOAK_SECONDS=30 bench/soak/run.sh    a short run (the ctest soak_short)
#
# Environment (defaults in brackets):
#   SOAK_SECONDS [600]        load time        SOAK_SAMPLE_SECONDS [10]  sample interval
#   SOAK_CONCURRENCY [32]     client tasks     SOAK_RELOAD_SECONDS [60]  SIGHUP interval
#   EGRESSD_BIN [build/egressd]                SOAK_CSV [$TMPDIR/egressd-soak.csv]
#   SOAK_FD_SLACK [5]         fds allowed above the baseline after the load
#   SOAK_SETTLE_SECONDS [30]  longest wait for the fds to come back after the load
#   SOAK_RSS_SLACK_MB [16]    RSS growth allowed over the load's second half (or 10 %)
#   SOAK_RSS_CHECK [1]        0: report RSS growth without judging it (sanitizer builds)
#   SOAK_SEED [time]          load generator seed   SOAK_KEEP [0]  1: keep the temp dir
# Everything listens on loopback only: egressd on 127.0.0.1, the origin on 127.0.0.2, the echo
# server on 127.0.0.3. Needs python3 (stdlib only).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$(dirname "$here")")
export EGRESSD_BIN=${EGRESSD_BIN:-$root/build/egressd}
# Enough descriptors for the client side (egressd raises its own limit).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 -u "$here/soak.py" "$@"
