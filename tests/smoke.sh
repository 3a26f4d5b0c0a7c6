#!/usr/bin/env bash
# egressd smoke test: the checks an operator runs against a deployment, with curl only.
#
# usage: tests/smoke.sh PROXY_URL [EXPECTED_EGRESS_IP]
#   PROXY_URL            e.g. http://proxy.internal:3128 (or https://... for a TLS listener)
#   EXPECTED_EGRESS_IP   if given, the IP the egress-check endpoints must report
#
# Environment (all optional):
#   SMOKE_HTTPS_URL        HTTPS endpoint reached through CONNECT     (https://example.com/)
#   SMOKE_HTTP_URL         plain-HTTP endpoint                         (http://example.com/)
#   SMOKE_CACERT           CA bundle for the HTTPS endpoints            (system store)
#   SMOKE_PROXY_CACERT     CA bundle for an https:// PROXY_URL          (system store)
#   SMOKE_EGRESS_URL       HTTPS endpoint answering the caller's IP as text
#                          (https://checkip.amazonaws.com/)
#   SMOKE_EGRESS_HTTP_URL  the same over plain HTTP, checked if set
#   SMOKE_METADATA_URL     a metadata URL that must be refused
#                          (http://169.254.169.254/latest/meta-data/)
#   SMOKE_TIMEOUT          seconds per request (20)
#
# Every request goes through the proxy (--proxy, proxy environment variables and .curlrc are
# ignored), so the denied checks never reach their targets unless the proxy lets them.
# Prints PASS/FAIL per check; exits 1 if any check failed, 2 on bad usage.

set -u

if [[ $# -lt 1 || $# -gt 2 || "$1" == -* ]]; then
  sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
  exit 2
fi

PROXY_URL=$1
EXPECTED_EGRESS_IP=${2:-}
HTTPS_URL=${SMOKE_HTTPS_URL:-https://example.com/}
HTTP_URL=${SMOKE_HTTP_URL:-http://example.com/}
CACERT=${SMOKE_CACERT:-}
PROXY_CACERT=${SMOKE_PROXY_CACERT:-}
EGRESS_URL=${SMOKE_EGRESS_URL:-https://checkip.amazonaws.com/}
EGRESS_HTTP_URL=${SMOKE_EGRESS_HTTP_URL:-}
METADATA_URL=${SMOKE_METADATA_URL:-http://169.254.169.254/latest/meta-data/}
TIMEOUT=${SMOKE_TIMEOUT:-20}

# Never let curl bypass the proxy.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

failures=0
pass() { printf 'PASS  %s\n' "$1"; }
fail() {
  printf 'FAIL  %s: %s\n' "$1" "$2"
  failures=$((failures + 1))
}

# pcurl ARGS...: curl through the proxy; headers (the proxy's CONNECT answer included) go to
# $tmp/headers, the body to $tmp/body, stderr to $tmp/err; prints
# "<exit code> <http_code> <http_connect>".
pcurl() {
  local args=(-q -sS --noproxy '' --proxy "$PROXY_URL" --max-time "$TIMEOUT"
              -D "$tmp/headers" -o "$tmp/body")
  [[ -n "$CACERT" ]] && args+=(--cacert "$CACERT")
  [[ -n "$PROXY_CACERT" ]] && args+=(--proxy-cacert "$PROXY_CACERT")
  : >"$tmp/headers" >"$tmp/body"
  local out rc
  out=$(curl "${args[@]}" -w '%{http_code} %{http_connect}' "$@" 2>"$tmp/err")
  rc=$?
  printf '%s %s\n' "$rc" "$out"
}

# host_of URL: the host part (brackets kept for IPv6).
host_of() {
  printf '%s' "$1" | sed -E 's#^[A-Za-z][A-Za-z0-9+.-]*://([^@/]*@)?(\[[^]]*\]|[^/:?#]*).*#\2#'
}

err_detail() { tr '\n' ' ' <"$tmp/err" | cut -c1-200; }

proxy_status() { grep -i '^proxy-status:' "$tmp/headers" | tail -n1 | tr -d '\r'; }

# 1. HTTPS through a CONNECT tunnel, certificate verified end to end.
read -r rc code connect < <(pcurl "$HTTPS_URL")
if [[ $rc -eq 0 && $connect == 200 && $code =~ ^[23] ]]; then
  pass "CONNECT $HTTPS_URL -> tunnel 200, origin $code"
else
  fail "CONNECT $HTTPS_URL" "curl exit $rc, CONNECT $connect, origin $code; $(err_detail)"
fi

# 2. Plain HTTP forwarding.
read -r rc code connect < <(pcurl "$HTTP_URL")
if [[ $rc -eq 0 && $code =~ ^[23] ]]; then
  pass "GET $HTTP_URL -> $code"
else
  fail "GET $HTTP_URL" "curl exit $rc, status $code; $(err_detail)"
fi

# 3. CONNECT to port 25 must be refused by the port gate (before any DNS lookup or connect).
smtp_url="https://$(host_of "$HTTPS_URL"):25/"
read -r rc code connect < <(pcurl "$smtp_url")
ps=$(proxy_status)
if [[ $connect == 403 && $ps == *error=http_request_denied* ]]; then
  pass "CONNECT port 25 -> 403 ($ps)"
else
  fail "CONNECT port 25 ($smtp_url)" \
    "expected 403 http_request_denied, got CONNECT $connect (curl exit $rc, ${ps:-no Proxy-Status}); $(err_detail)"
fi

# 4. The cloud metadata service must be refused, over plain HTTP and through CONNECT.
read -r rc code connect < <(pcurl "$METADATA_URL")
ps=$(proxy_status)
if [[ $code == 403 && $ps =~ error=(destination_ip_prohibited|http_request_denied) ]]; then
  pass "GET $METADATA_URL -> 403 ($ps)"
else
  fail "GET $METADATA_URL" "expected 403, got $code (curl exit $rc, ${ps:-no Proxy-Status})"
fi
read -r rc code connect < <(pcurl "https://$(host_of "$METADATA_URL")/")
ps=$(proxy_status)
if [[ $connect == 403 && $ps =~ error=(destination_ip_prohibited|http_request_denied) ]]; then
  pass "CONNECT $(host_of "$METADATA_URL"):443 -> 403 ($ps)"
else
  fail "CONNECT $(host_of "$METADATA_URL"):443" \
    "expected 403, got CONNECT $connect (curl exit $rc, ${ps:-no Proxy-Status})"
fi

# 5. Egress IP, as the outside world sees it.
check_egress() {
  local name=$1 url=$2 ip
  read -r rc code connect < <(pcurl "$url")
  ip=$(tr -d ' \r\n' <"$tmp/body")
  if [[ $rc -ne 0 || ! $code =~ ^2 ]]; then
    fail "$name" "curl exit $rc, status $code; $(err_detail)"
  elif [[ $ip == "$EXPECTED_EGRESS_IP" ]]; then
    pass "$name: $ip"
  else
    fail "$name" "expected $EXPECTED_EGRESS_IP, seen $ip"
  fi
}
if [[ -n "$EXPECTED_EGRESS_IP" ]]; then
  check_egress "egress IP via CONNECT ($EGRESS_URL)" "$EGRESS_URL"
  if [[ -n "$EGRESS_HTTP_URL" ]]; then
    check_egress "egress IP via HTTP ($EGRESS_HTTP_URL)" "$EGRESS_HTTP_URL"
  fi
else
  printf 'SKIP  egress IP check (no EXPECTED_EGRESS_IP given)\n'
fi

if [[ $failures -gt 0 ]]; then
  printf '%d check(s) failed\n' "$failures"
  exit 1
fi
printf 'all checks passed\n'
exit 0
