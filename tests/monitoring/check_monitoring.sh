#!/usr/bin/env bash
# Validates the monitoring files against a live egressd:
#   deploy/grafana/egressd.json        Grafana dashboard
#   deploy/prometheus/alerts.yml       Prometheus alerting rules
#   tests/monitoring/alerts_test.yml   their unit tests
#
# Starts egressd (EGRESSD_BIN, default <repo>/build/egressd) on
# loopback with a config that has one report_only rule and a TLS listener (so every documented
# family, the per-rule egressd_report_only_matches_total and the certificate expiry included, is
# exported), scrapes /metrics, stops it,
# and runs check_monitoring.py: the dashboard's structure and requested topics, every PromQL
# expression of the dashboard (as recording rules, Grafana variables substituted) and of the
# alert rules parsed by promtool, every metric name, label and label value checked against the
# scrape, `promtool check rules`, `promtool test rules` with a firing and a silent case per alert.
#
# usage: [EGRESSD_BIN=path/to/egressd] tests/monitoring/check_monitoring.sh
#        [--dashboard FILE] [--alerts FILE] [--tests FILE]     (defaults: the repo's files)
# Exit: 0 clean; 1 a problem (each printed); 2 usage; 77 promtool missing (apt-get install
# prometheus), CTest's SKIP_RETURN_CODE convention.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
dashboard="$repo/deploy/grafana/egressd.json"
alerts="$repo/deploy/prometheus/alerts.yml"
tests="$here/alerts_test.yml"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dashboard) dashboard=$2; shift 2 ;;
    --alerts) alerts=$2; shift 2 ;;
    --tests) tests=$2; shift 2 ;;
    *) echo "usage: $0 [--dashboard FILE] [--alerts FILE] [--tests FILE]" >&2; exit 2 ;;
  esac
done

if ! command -v promtool >/dev/null 2>&1; then
  echo "check_monitoring: SKIP: promtool not found (apt-get install prometheus)" >&2
  exit 77
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo "check_monitoring: FAIL: python3 not found" >&2
  exit 1
fi
bin="${EGRESSD_BIN:-$repo/build/egressd}"
if [[ ! -x "$bin" ]]; then
  echo "check_monitoring: FAIL: EGRESSD_BIN=$bin is not an executable (build egressd first)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A report_only rule makes egressd export egressd_report_only_matches_total{rule}; its domain
# never resolves and nothing is proxied.
# A TLS listener (a throwaway self-signed certificate) makes it export
# egressd_tls_certificate_expiry_timestamp_seconds{listener}, and a client CRL (issued by the
# same certificate, used as the client CA) egressd_tls_client_crl_next_update_timestamp_seconds.
# EGRESSD_LISTEN moves its address to port 0 and keeps its TLS settings.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -keyout "$work/tls.key" -out "$work/tls.pem" >/dev/null 2>&1 ||
  { echo "check_monitoring: FAIL: openssl could not make a test certificate" >&2; exit 1; }
: >"$work/index.txt"
echo 01 >"$work/crlnumber"
printf '[ca]\ndefault_ca=d\n[d]\ndatabase=%s/index.txt\ncrlnumber=%s/crlnumber\ndefault_md=sha256\n' \
  "$work" "$work" >"$work/ca.cnf"
openssl ca -batch -config "$work/ca.cnf" -gencrl -cert "$work/tls.pem" -keyfile "$work/tls.key" \
  -crlhours 24 -out "$work/tls.crl" >/dev/null 2>&1 ||
  { echo "check_monitoring: FAIL: openssl could not make a test CRL" >&2; exit 1; }
cat >"$work/egressd.yaml" <<EOF
version: 1
listeners:
  - address: 127.0.0.1:0
    tls:
      cert: $work/tls.pem
      key: $work/tls.key
      client_ca: $work/tls.pem
      client_crl: $work/tls.crl
rules:
  - name: monitoring-check
    action: deny
    domains: ["report-only.invalid"]
    report_only: true
EOF
"$repo/tests/support/scrape_egressd.sh" "$bin" "$work/metrics" "$work/egressd.yaml" ||
  { echo "check_monitoring: FAIL: no scrape of egressd" >&2; exit 1; }

python3 "$here/check_monitoring.py" --metrics "$work/metrics" --dashboard "$dashboard" \
  --alerts "$alerts" --tests "$tests" --workdir "$work"
