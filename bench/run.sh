#!/usr/bin/env bash
# egressd against Squid, tinyproxy and Apache Traffic Server, side by side on loopback.
#
#   bench/run.sh            full run (about 8 minutes on 2 cores, plus building egressd)
#   bench/run.sh --quick    smaller sizes and shorter phases (about 2 minutes)
#
# Options:
#   --quick              256 MiB transfers, 1 x 3 s rate phases, 1000 idle tunnels
#   --only LIST          comma list out of: direct,relay,floor,egressd,squid,tinyproxy,
#                        trafficserver,tls (floor: bench/minrelay.cpp, line 4 only)
#                        (tls: line 8, CONNECT throughput over a TLS proxy listener, for direct,
#                        egressd and squid among the columns listed; `--only tls` alone: line 8
#                        only, for direct, egressd and squid)
#   --out NAME           write bench/results/NAME.{md,json,tsv} (default: latest for a full run of
#                        everything, partial otherwise; latest is refused for a partial run)
#   --no-install         do not apt-get anything (fail if a tool is missing)
# Environment:
#   EGRESSD_BIN=PATH     use this egressd binary instead of building one
#   BENCH_PORT_BASE=N    first of the loopback ports used (default 18400; N..N+20)
#   BENCH_KEEP=1         keep the temp dir (configs, proxy logs) for inspection
#
# Everything listens on and talks to 127.0.0.1 only. Results of a full run of every column:
# bench/results/latest.{md,json,tsv}; of --quick or --only runs: bench/results/partial.* (or
# --out NAME).
# See bench/README.md for what each line measures.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")

QUICK=0
ALL_COLUMNS="direct,relay,floor,egressd,squid,tinyproxy,trafficserver,tls"
ONLY=$ALL_COLUMNS
OUT_NAME=""
INSTALL=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --only) ONLY=$2; shift ;;
    --out) OUT_NAME=$2; shift ;;
    --no-install) INSTALL=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -z "$OUT_NAME" ] || [[ "$OUT_NAME" =~ ^[A-Za-z0-9._-]+$ ]] ||
  { echo "run.sh: --out takes a plain file name stem" >&2; exit 2; }
# The columns to measure, and whether line 8 (TLS) is: `tls` is a toggle, not a column. With no
# column named (`--only tls`), only line 8 runs, for the columns that have it.
TLS=0
COLUMNS=""
for item in ${ONLY//,/ }; do
  case "$item" in
    tls) TLS=1 ;;
    direct|relay|floor|egressd|squid|tinyproxy|trafficserver) COLUMNS+="$item," ;;
    *) echo "run.sh: --only: unknown item $item" >&2; exit 2 ;;
  esac
done
TLS_ONLY=0
if [ -z "$COLUMNS" ]; then TLS_ONLY=1; COLUMNS="direct,egressd,squid,"; fi
TLS_COLUMNS="direct egressd squid"   # the columns with a client-facing TLS port (line 8)

if [ "$QUICK" = 1 ]; then
  BIG_MIB=256; THROUGHPUT_REPS=3; RATE_SECS=3; RATE_REPS=1; IDLE_N=1000; LAT_SECS=3
else
  BIG_MIB=1024; THROUGHPUT_REPS=3; RATE_SECS=5; RATE_REPS=3; IDLE_N=5000; LAT_SECS=5
fi
SMALL_BYTES=100
WRK_CONNS=50
TUNNEL_CONNS=64      # concurrent tunnels the load generator keeps in flight
LAT_RATE=2000        # requests/s for the fixed-load latency phase (moderate for every peer)
LAT_CONNS=16
WORKERS=2            # for every proxy that has the notion

PORT_BASE=${BENCH_PORT_BASE:-18400}
ORIGIN_PORT=$PORT_BASE
SINK_PORT=$((PORT_BASE + 1))
RELAY_PORT=$((PORT_BASE + 2))
FLOOR_PORT=$((PORT_BASE + 4))
declare -A PROXY_PORT=([egressd]=$((PORT_BASE + 10)) [squid]=$((PORT_BASE + 11))
                       [tinyproxy]=$((PORT_BASE + 12)) [trafficserver]=$((PORT_BASE + 13)))
# Line 8: nginx's own TLS port (direct) and the proxies' TLS listeners.
ORIGIN_TLS_PORT=$((PORT_BASE + 3))
declare -A PROXY_TLS_PORT=([egressd]=$((PORT_BASE + 14)) [squid]=$((PORT_BASE + 15)))
ORIGIN="127.0.0.1:$ORIGIN_PORT"
SINK="127.0.0.1:$SINK_PORT"

wants() { [[ ",$COLUMNS" == *",$1,"* ]]; }
wants_tls() { [ "$TLS" = 1 ] && [[ " $TLS_COLUMNS " == *" $1 "* ]]; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------------------------------------
# Install and build

install_packages() {
  local need=() p
  for p in squid tinyproxy trafficserver socat nginx wrk g++ cmake openssl libssl-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    [ "$INSTALL" = 1 ] || die "missing packages: ${need[*]} (run without --no-install)"
    log "apt-get install ${need[*]}"
    apt-get update -qq
    # policy-rc.d exit 101 keeps the postinst scripts from starting the services at all.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null || {
      [ "$created_policy" = 1 ] && rm -f "$policy"; die "apt-get install failed"; }
    [ "$created_policy" = 1 ] && rm -f "$policy"
  fi
  # Whatever Debian started (on a machine with systemd, or an earlier install) is stopped: the
  # benchmark runs its own instances and wants the CPU to itself.
  local s
  for s in squid trafficserver tinyproxy nginx; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$s" 2>/dev/null; then
      log "stopping the Debian $s service"; systemctl stop "$s" || true
    elif [ -x "/etc/init.d/$s" ] && "/etc/init.d/$s" status >/dev/null 2>&1; then
      log "stopping the Debian $s service"; "/etc/init.d/$s" stop >/dev/null 2>&1 || true
    fi
  done
}

build_egressd() {
  if [ -n "${EGRESSD_BIN:-}" ]; then
    [ -x "$EGRESSD_BIN" ] || die "EGRESSD_BIN=$EGRESSD_BIN is not executable"
    return
  fi
  if [ "$INSTALL" = 1 ] && [ -f "$ROOT/scripts/install-deps.sh" ]; then
    bash "$ROOT/scripts/install-deps.sh" --build-only >&2
  fi
  # A build dir of our own (ignored via bench/.gitignore): reconfiguring the developers' build/
  # to Release with tests off would change what their next ctest runs.
  local dir="$BENCH_DIR/.build/egressd"
  log "building egressd (Release) in bench/.build/egressd"
  if cmake -S "$ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DEGRESSD_BUILD_TESTS=OFF >"$WORK/cmake.log" 2>&1 &&
     cmake --build "$dir" -j"$(nproc)" --target egressd >>"$WORK/cmake.log" 2>&1; then
    EGRESSD_BIN="$dir/egressd"
  else
    tail -20 "$WORK/cmake.log" >&2
    EGRESSD_BIN=""
    EGRESSD_WHY="egressd did not build (cmake log tail above; bench/.build/egressd)"
    log "$EGRESSD_WHY"
  fi
}

# ------------------------------------------------------------------------------------------------
# Process bookkeeping: everything started here is killed by the trap.

STARTED=()
cleanup() {
  local pid
  for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in "${STARTED[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  if [ -n "${WORK:-}" ] && [ -d "$WORK" ]; then
    if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {  # wait_port PORT PID NAME
  local i
  for i in $(seq 1 300); do
    port_open "$1" && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
stop_pid() {  # stop_pid PID [COLUMN]: SIGTERM, then SIGKILL after 5 s; a crash is noted
  local pid=$1 col=${2:-} i rc=0
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || rc=$?
  # 0 or 143 (died of the SIGTERM itself) is a normal stop; 137 means it needed SIGKILL.
  if [ -n "$col" ] && [ "$rc" != 0 ] && [ "$rc" != 143 ]; then
    if [ "$rc" -gt 128 ]; then
      note "$col" "exit status $rc (signal $(kill -l $((rc - 128)) 2>/dev/null || echo $((rc - 128)))) when stopped with SIGTERM"
    else
      note "$col" "exit status $rc when stopped with SIGTERM"
    fi
  fi
}

# ------------------------------------------------------------------------------------------------
# Line 8: a throwaway CA and a server certificate for 127.0.0.1/localhost, ECDSA P-256, made with
# the openssl CLI in the temp dir (gone with it). The one server certificate serves every TLS
# port: nginx's (direct), egressd's TLS listener and Squid's https_port.

make_certs() {
  local d="$WORK/tls"
  mkdir -p "$d"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/ca.key" 2>/dev/null &&
  openssl req -x509 -new -key "$d/ca.key" -sha256 -days 2 -subj "/CN=egressd bench throwaway CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$d/ca.pem" 2>/dev/null &&
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/server.key" 2>/dev/null &&
  openssl req -new -key "$d/server.key" -subj "/CN=127.0.0.1" -out "$d/server.csr" 2>/dev/null &&
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" > "$d/server.ext" &&
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -sha256 -extfile "$d/server.ext" -out "$d/server.pem" 2>/dev/null &&
  openssl verify -CAfile "$d/ca.pem" "$d/server.pem" >/dev/null || die "openssl could not make the certificates"
  # Squid's kids and nginx's workers do not run as root; the key is throwaway.
  chmod 644 "$d/server.key"
  TLS_CA="$d/ca.pem"
}

# ------------------------------------------------------------------------------------------------
# Origin: nginx serving a big and a small object, sendfile on, keep-alive, no access log.

start_origin() {
  mkdir -p "$WORK/www" "$WORK/nginx"
  log "writing the ${BIG_MIB} MiB object"
  dd if=/dev/zero of="$WORK/www/big" bs=1M count="$BIG_MIB" status=none
  head -c "$SMALL_BYTES" /dev/zero | tr '\0' 'x' > "$WORK/www/small"
  cat "$WORK/www/big" > /dev/null   # into the page cache
  local tls_server=""
  # Line 8, direct column: the same files over TLS (no kTLS: nginx encrypts in user space; TLS
  # 1.3 named, as nginx 1.22 leaves it out by default).
  [ "$TLS" = 1 ] && tls_server="  server {
    listen 127.0.0.1:$ORIGIN_TLS_PORT ssl backlog=4096;
    ssl_certificate $WORK/tls/server.pem;
    ssl_certificate_key $WORK/tls/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    root $WORK/www;
  }
"
  cat > "$WORK/nginx/nginx.conf" <<EOF
user root;
worker_processes $WORKERS;
worker_rlimit_nofile 20000;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 300s;
  keepalive_requests 10000000;
  default_type application/octet-stream;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  server {
    listen 127.0.0.1:$ORIGIN_PORT backlog=4096;
    root $WORK/www;
  }
$tls_server}
EOF
  nginx -e "$WORK/nginx/error.log" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' \
    >"$WORK/nginx/stdout.log" 2>&1 &
  STARTED+=($!)
  wait_port "$ORIGIN_PORT" $! || { cat "$WORK/nginx/error.log" >&2; die "nginx did not start"; }
}

# ------------------------------------------------------------------------------------------------
# The proxies. Each start_X sets PID (the root of its process tree) and PORT.

start_relay() {
  PORT=$RELAY_PORT
  socat -b 1048576 "TCP-LISTEN:$PORT,bind=127.0.0.1,reuseaddr,fork,backlog=4096" "TCP:$ORIGIN" \
    >"$WORK/socat.log" 2>&1 &
  PID=$!
  STARTED+=("$PID")
  wait_port "$PORT" "$PID"
}

# The floor for line 4: the least a CONNECT relay can do per tunnel (bench/minrelay.cpp: raw
# epoll, no policy, no logging, no timeouts), one thread per worker like the proxies.
start_floor() {
  PORT=$FLOOR_PORT
  "$WORK/minrelay" --listen "127.0.0.1:$PORT" --threads "$WORKERS" >"$WORK/minrelay.log" 2>&1 &
  PID=$!
  STARTED+=("$PID")
  wait_port "$PORT" "$PID"
}

EGRESSD_ENV=(EGRESSD_ALLOW_DESTINATIONS=127.0.0.0/8 EGRESSD_CONNECT_PORTS=1-65535
             EGRESSD_HTTP_PORTS=1-65535 EGRESSD_ACCESS_LOG=off EGRESSD_LOG_LEVEL=warn
             "EGRESSD_WORKERS=$WORKERS")
start_egressd() {
  PORT=${PROXY_PORT[egressd]}
  [ -n "$EGRESSD_BIN" ] || return 1
  env EGRESSD_LISTEN="127.0.0.1:$PORT" EGRESSD_ADMIN_LISTEN="127.0.0.1:$((PORT_BASE + 19))" \
    "${EGRESSD_ENV[@]}" "$EGRESSD_BIN" >"$WORK/egressd.log" 2>&1 &
  PID=$!
  STARTED+=("$PID")
  wait_port "$PORT" "$PID" || { tail -20 "$WORK/egressd.log" >&2; return 1; }
}

# Line 8: the same settings, the one listener TLS (a config file: the listener's tls block).
start_egressd_tls() {
  PORT=${PROXY_TLS_PORT[egressd]}
  [ -n "$EGRESSD_BIN" ] || return 1
  cat > "$WORK/egressd-tls.yaml" <<EOF
version: 1
listeners:
  - address: "127.0.0.1:$PORT"
    tls:
      cert: $WORK/tls/server.pem
      key: $WORK/tls/server.key
EOF
  env EGRESSD_ADMIN_LISTEN="127.0.0.1:$((PORT_BASE + 18))" "${EGRESSD_ENV[@]}" \
    "$EGRESSD_BIN" --config "$WORK/egressd-tls.yaml" >"$WORK/egressd-tls.log" 2>&1 &
  PID=$!
  STARTED+=("$PID")
  wait_port "$PORT" "$PID" || { tail -20 "$WORK/egressd-tls.log" >&2; return 1; }
}

SQUID_WORKERS=$WORKERS
write_squid_conf() {  # DIR PORT_LINE
  local dir=$1
  cat > "$dir/squid.conf" <<EOF
$2
workers $SQUID_WORKERS
acl localnet src 127.0.0.0/8
acl all_ports port 1-65535
acl CONNECT method CONNECT
http_access deny !all_ports
http_access allow localnet
http_access deny all
# No cache: nothing stored, nothing served from memory.
cache deny all
cache_mem 0 MB
memory_cache_shared off
# No logging beyond errors.
access_log none
cache_store_log none
cache_log $dir/cache.log
logfile_rotate 0
pid_filename $dir/squid.pid
coredump_dir $dir
max_filedescriptors 20000
client_lifetime 1 hour
read_timeout 15 minutes
shutdown_lifetime 1 seconds
pinger_enable off
icp_port 0
htcp_port 0
netdb_filename none
visible_hostname egressd-bench
cache_effective_user proxy
EOF
}

start_squid() {
  PORT=${PROXY_PORT[squid]}
  squid_up "$WORK/squid" "http_port 127.0.0.1:$PORT" "" workers
}

# Line 8: the same configuration with https_port instead of http_port (Debian's squid is built
# with GnuTLS; https_port as a TLS forward-proxy port works with it).
start_squid_tls() {
  PORT=${PROXY_TLS_PORT[squid]}
  squid_up "$WORK/squid-tls" \
    "https_port 127.0.0.1:$PORT tls-cert=$WORK/tls/server.pem tls-key=$WORK/tls/server.key" \
    "--tls-ca $TLS_CA" tls_workers
}

squid_up() {  # DIR PORT_LINE LOADGEN_TLS_ARGS INFO_KEY; PORT set by the caller
  local dir=$1 port_line=$2 tls_args=$3 key=$4
  mkdir -p "$dir"
  chown proxy:proxy "$dir"
  # SMP Squid keeps its IPC sockets in /run/squid (compiled in); Debian creates it at boot only.
  mkdir -p /run/squid && chown proxy:proxy /run/squid
  for SQUID_WORKERS in $WORKERS 1; do
    write_squid_conf "$dir" "$port_line"
    squid -f "$dir/squid.conf" --foreground >"$dir/stdout.log" 2>&1 &
    PID=$!
    STARTED+=("$PID")
    # shellcheck disable=SC2086  # tls_args: zero or two words
    if wait_port "$PORT" "$PID" && sleep 1 && kill -0 "$PID" 2>/dev/null &&
       "$LG" fetch --target "127.0.0.1:$PORT" --origin "$ORIGIN" --path /small --via forward \
         $tls_args >/dev/null 2>&1; then
      if [ "$SQUID_WORKERS" != "$WORKERS" ]; then
        note squid "${port_line%% *} ran with workers 1: workers $WORKERS failed here ($(grep -m1 -iE 'fatal|error' \
          "$dir/cache.log" | tr '\t' ' ' | cut -c1-160))"
      fi
      info squid "$key" "$SQUID_WORKERS"
      return 0
    fi
    log "squid (${port_line%% *}) with workers $SQUID_WORKERS failed: $(grep -m3 -iE 'fatal|error' "$dir/cache.log" | tr '\n' ' ')"
    stop_pid "$PID"
    cp "$dir/cache.log" "$dir/cache.log.workers$SQUID_WORKERS" 2>/dev/null || true
  done
  return 1
}

start_tinyproxy() {
  PORT=${PROXY_PORT[tinyproxy]}
  mkdir -p "$WORK/tinyproxy"
  chown nobody:nogroup "$WORK/tinyproxy"
  # No ConnectPort line: tinyproxy then allows CONNECT to every port. MaxClients covers the idle
  # tunnels plus the load generator's connections.
  cat > "$WORK/tinyproxy/tinyproxy.conf" <<EOF
User nobody
Group nogroup
Port $PORT
Listen 127.0.0.1
Timeout 900
MaxClients $((IDLE_N + 1000))
Allow 127.0.0.0/8
LogFile "$WORK/tinyproxy/tinyproxy.log"
LogLevel Critical
PidFile "$WORK/tinyproxy/tinyproxy.pid"
EOF
  tinyproxy -d -c "$WORK/tinyproxy/tinyproxy.conf" >"$WORK/tinyproxy/stdout.log" 2>&1 &
  PID=$!
  STARTED+=("$PID")
  wait_port "$PORT" "$PID" || { tail "$WORK/tinyproxy/stdout.log" >&2; return 1; }
  info tinyproxy workers "one thread per connection (no worker setting)"
}

start_trafficserver() {
  PORT=${PROXY_PORT[trafficserver]}
  local d="$WORK/ats"
  mkdir -p "$d/etc" "$d/run" "$d/log" "$d/cache"
  # A runroot of our own: configs, logs and runtime files in the temp dir, binaries from Debian.
  cat > "$d/runroot.yaml" <<EOF
prefix: /usr
exec_prefix: /usr
bindir: /usr/bin
sbindir: /usr/sbin
includedir: /usr/include
libdir: /usr/lib/trafficserver
libexecdir: /usr/lib/trafficserver/modules
sysconfdir: $d/etc
datadir: $d/cache
localstatedir: $d/run
runtimedir: $d/run
logdir: $d/log
cachedir: $d/cache
EOF
  cp -r /etc/trafficserver/body_factory "$d/etc/"
  local f
  for f in remap.config plugin.config storage.config hosting.config volume.config parent.config \
           cache.config splitdns.config socks.config ssl_multicert.config sni.yaml strategies.yaml \
           logging.yaml; do
    : > "$d/etc/$f"
  done
  # Threads as Debian configures them (autoconfig, scale 1.0, limit 2 = one per core here). No
  # cache (and no storage: "Cache Disabled"), no logging, plain forward proxy, CONNECT anywhere.
  cat > "$d/etc/records.config" <<EOF
CONFIG proxy.config.exec_thread.autoconfig INT 1
CONFIG proxy.config.exec_thread.autoconfig.scale FLOAT 1.0
CONFIG proxy.config.exec_thread.limit INT $WORKERS
CONFIG proxy.config.accept_threads INT 1
CONFIG proxy.config.task_threads INT 2
CONFIG proxy.config.http.server_ports STRING $PORT:ipv4:ip-in=127.0.0.1
CONFIG proxy.config.http.connect_ports STRING 1-65535
CONFIG proxy.config.http.cache.http INT 0
CONFIG proxy.config.http.wait_for_cache INT 0
CONFIG proxy.config.reverse_proxy.enabled INT 0
CONFIG proxy.config.url_remap.remap_required INT 0
CONFIG proxy.config.log.logging_enabled INT 0
CONFIG proxy.config.net.connections_throttle INT 30000
CONFIG proxy.config.net.max_connections_in INT 30000
CONFIG proxy.config.http.transaction_no_activity_timeout_in INT 900
CONFIG proxy.config.http.transaction_no_activity_timeout_out INT 900
CONFIG proxy.config.http.keep_alive_no_activity_timeout_in INT 300
CONFIG proxy.config.http.keep_alive_no_activity_timeout_out INT 300
CONFIG proxy.config.admin.user_id STRING #-1
EOF
  cat > "$d/etc/ip_allow.yaml" <<'EOF'
ip_allow:
  - apply: in
    ip_addrs: 127.0.0.0/8
    action: allow
    methods: ALL
  - apply: out
    ip_addrs: 127.0.0.0/8
    action: allow
    methods: ALL
EOF
  TS_RUNROOT="$d/runroot.yaml" traffic_server >"$d/stdout.log" 2>&1 &
  PID=$!
  STARTED+=("$PID")
  wait_port "$PORT" "$PID" || { tail "$d/log/diags.log" >&2; return 1; }
  info trafficserver workers "$(cat /proc/"$PID"/task/*/comm 2>/dev/null | grep -c 'ET_NET') ET_NET threads (Debian's autoconfig: scale 1.0, limit $WORKERS)"
}

# ------------------------------------------------------------------------------------------------
# Results: one line per figure, "column<TAB>metric<TAB>value", turned into the table at the end.

record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$RESULTS"; }
note() { printf '%s\tnote\t%s\n' "$1" "$2" >> "$RESULTS"; log "note: $1: $2"; }
info() { printf '%s\tinfo_%s\t%s\n' "$1" "$2" "$3" >> "$RESULTS"; }
field() {  # field KEY LINE: the value of KEY=... in a loadgen output line
  local kv
  for kv in $2; do [ "${kv%%=*}" = "$1" ] && { echo "${kv#*=}"; return; }; done
  echo ""
}
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
calc() { awk "BEGIN {printf \"%.6f\", $1}"; }
cpu_now() { if [ -n "$MPID" ]; then field cpu_s "$("$LG" proc "$MPID")"; else echo 0; fi; }
rss_now() { field rss_kb "$("$LG" proc "$MPID")"; }

# Throughput of one large GET. via: direct (origin or relay), connect (tunnel), forward (plain).
# Extra arguments go to loadgen (line 8: --tls-ca CA.pem), and line 8 also records the load
# generator's own CPU per GiB (decryption is not free: it must stay below the proxy's).
phase_throughput() {  # COLUMN VIA TARGET METRIC_PREFIX [LOADGEN_ARGS...]
  local col=$1 via=$2 target=$3 prefix=$4 r out c0 c1 rates=() cpu=0 bytes=0 ccpu=0 ccpus=()
  shift 4
  for r in $(seq 1 "$THROUGHPUT_REPS"); do
    c0=$(cpu_now)
    out=$("$LG" fetch --target "$target" --origin "$ORIGIN" --path /big --via "$via" "$@") ||
      { note "$col" "$prefix throughput run $r failed"; return 0; }
    sleep 0.2  # let a forking relay reap its child, so its CPU lands in cutime
    c1=$(cpu_now)
    rates+=("$(field gbps "$out")")
    cpu=$(calc "$cpu + $c1 - $c0")
    bytes=$(calc "$bytes + $(field bytes "$out")")
    ccpu=$(calc "$ccpu + $(field client_cpu_s "$out")")
    ccpus+=("$(field client_cpu_s "$out")")
  done
  record "$col" "${prefix}_gbps" "$(median "${rates[@]}")"
  [ -n "$MPID" ] && record "$col" "${prefix}_cpu_s_per_gib" "$(calc "$cpu / ($bytes / 1073741824)")"
  if [ "$prefix" = tls_tunnel ]; then
    record "$col" "${prefix}_client_cpu_s_per_gib" "$(calc "$ccpu / ($bytes / 1073741824)")"
    info "$col" tls "$(field tls "$out") $(field cipher "$out")"
    log "  $prefix: ${rates[*]} GB/s; proxy CPU $(calc "$cpu") s, loadgen CPU ${ccpus[*]} s for $(calc "$bytes / 1073741824") GiB ($(field tls "$out") $(field cipher "$out"))"
  else
    log "  $prefix: ${rates[*]} GB/s"
  fi
  return 0
}

# Small GETs over 50 keep-alive connections with wrk; the Lua script makes the request line
# absolute-form for proxies (wrk sends wrk.path verbatim) and keeps Host the origin's.
phase_small() {  # COLUMN VIA TARGET
  local col=$1 via=$2 target=$3 script="$WORK/wrk-$2.lua" r out c0 c1 rates=() cpu=0 reqs=0 n errs=0
  if [ "$via" = forward ]; then
    printf 'wrk.path = "http://%s/small"\nwrk.headers["Host"] = "%s"\n' "$ORIGIN" "$ORIGIN" > "$script"
  else
    printf 'wrk.path = "/small"\nwrk.headers["Host"] = "%s"\n' "$ORIGIN" > "$script"
  fi
  for r in $(seq 1 "$RATE_REPS"); do
    c0=$(cpu_now)
    out=$(wrk -t2 -c"$WRK_CONNS" -d"${RATE_SECS}s" -s "$script" "http://$target/" 2>&1) ||
      { note "$col" "wrk failed: $(echo "$out" | tail -1)"; return 0; }
    c1=$(cpu_now)
    if echo "$out" | grep -q 'Non-2xx'; then
      note "$col" "wrk: $(echo "$out" | grep 'Non-2xx' | tr -s ' ')"
    fi
    # tinyproxy closes every client connection after one response; wrk counts that as a socket
    # error and reconnects. Only completed responses count in the rate.
    n=$(echo "$out" | awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}')
    errs=$((errs + ${n:-0}))
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    rates+=("$(echo "$out" | awk '/^Requests\/sec/ {print $2}')")
    cpu=$(calc "$cpu + $c1 - $c0")
    reqs=$((reqs + n))
  done
  record "$col" small_rps "$(median "${rates[@]}")"
  log "  small GETs: ${rates[*]} req/s"
  [ "$errs" -gt 0 ] && note "$col" "wrk: $errs socket errors for $reqs responses (connections closed by the proxy; wrk reconnects, only completed responses count)"
  [ -n "$MPID" ] && [ "$reqs" -gt 0 ] && record "$col" small_cpu_us_per_req "$(calc "$cpu * 1e6 / $reqs")"
  return 0
}

# New tunnels per second: each one CONNECT, 200, one small GET with Connection: close, close.
# For direct and relay the same loop without the CONNECT exchange.
phase_tunnels() {  # COLUMN VIA TARGET
  local col=$1 via=$2 target=$3 r out c0 c1 rates=() cpu=0 done_n=0 failed=0
  for r in $(seq 1 "$RATE_REPS"); do
    c0=$(cpu_now)
    out=$("$LG" tunnels --target "$target" --origin "$ORIGIN" --path /small --via "$via" \
          --conns "$TUNNEL_CONNS" --duration "$RATE_SECS") ||
      { note "$col" "new-tunnel phase failed"; return 0; }
    sleep 0.2
    c1=$(cpu_now)
    rates+=("$(field rate "$out")")
    cpu=$(calc "$cpu + $c1 - $c0")
    done_n=$((done_n + $(field completed "$out")))
    failed=$((failed + $(field failed "$out")))
  done
  record "$col" tunnels_per_s "$(median "${rates[@]}")"
  log "  new tunnels: ${rates[*]} /s ($failed failed)"
  [ "$failed" -gt 0 ] && note "$col" "$failed of $((done_n + failed)) new tunnels failed"
  [ -n "$MPID" ] && [ "$done_n" -gt 0 ] && record "$col" tunnel_cpu_us "$(calc "$cpu * 1e6 / $done_n")"
  return 0
}

# RSS of the whole process tree before and after IDLE_N idle tunnels are open and verified.
phase_idle() {  # COLUMN TARGET
  local col=$1 target=$2 before after out established i lgpid
  # Warm up: a burst of tunnels opened and closed, so one-time allocations are not counted.
  "$LG" tunnels --target "$target" --origin "$ORIGIN" --path /small --conns 32 --duration 0.5 \
    >/dev/null || true
  sleep 0.5
  before=$(rss_now)
  # A file per column, emptied before the start: the background job truncates its output only
  # once it runs, and an old READY line must not be read as this one's.
  local status="$WORK/idle-$col.out"
  : > "$status"
  "$LG" idle --target "$target" --sink "$SINK" --count "$IDLE_N" --hold 300 >"$status" 2>&1 &
  lgpid=$!
  for i in $(seq 1 2000); do
    grep -q READY "$status" && break
    kill -0 "$lgpid" 2>/dev/null || break
    sleep 0.1
  done
  sleep 1
  after=$(rss_now)
  out=$(grep READY "$status" || true)
  kill -USR1 "$lgpid" 2>/dev/null || true
  wait "$lgpid" || true
  established=$(field established "$out")
  if [ -z "$established" ] || [ "$established" -eq 0 ]; then
    note "$col" "idle tunnels: none established ($(tail -1 "$status"))"
    return 0
  fi
  [ "$established" -lt "$IDLE_N" ] && note "$col" "only $established of $IDLE_N idle tunnels established"
  record "$col" idle_kb_per_tunnel "$(calc "($after - $before) / $established")"
  log "  idle: $established tunnels, RSS ${before} -> ${after} KB"
  sleep 1  # let the proxy close its side before the next phase
}

# Fixed-rate latency over keep-alive connections. Except for the direct column, the load
# generator sends the same request straight to the origin on every timer tick (--baseline) and
# "added" is the percentile of the per-tick difference, so a stall of the noisy machine that
# delays both cancels out. Each figure is the median over the repetitions.
phase_latency() {  # COLUMN VIA TARGET
  local col=$1 via=$2 target=$3 r out base=1 p50s=() p99s=() a50s=() a99s=() lost=0 retried=0
  [ "$col" = direct ] && base=0
  for r in $(seq 1 "$RATE_REPS"); do
    out=$("$LG" latency --target "$target" --origin "$ORIGIN" --path /small --via "$via" \
          --rate "$LAT_RATE" --conns "$LAT_CONNS" --duration "$LAT_SECS" --baseline "$base") ||
      { note "$col" "latency phase failed"; return 0; }
    p50s+=("$(field p50_us "$out")")
    p99s+=("$(field p99_us "$out")")
    if [ "$base" = 1 ]; then
      a50s+=("$(field added_p50_us "$out")")
      a99s+=("$(field added_p99_us "$out")")
    fi
    lost=$((lost + $(field errors "$out")))
    retried=$((retried + $(field retries "$out")))
  done
  record "$col" lat_p50_us "$(median "${p50s[@]}")"
  record "$col" lat_p99_us "$(median "${p99s[@]}")"
  if [ "$base" = 1 ]; then
    record "$col" lat_added_p50_us "$(median "${a50s[@]}")"
    record "$col" lat_added_p99_us "$(median "${a99s[@]}")"
  fi
  [ "$lost" != 0 ] && note "$col" "latency phase: $lost requests cut off mid-response"
  [ "$retried" != 0 ] && note "$col" "latency phase: $retried requests retried on a new connection after the proxy closed an idle one (no client keep-alive)"
  log "  latency at $LAT_RATE req/s: p50 ${p50s[*]} us, p99 ${p99s[*]} us; added p50 ${a50s[*]:-} p99 ${a99s[*]:-}"
  return 0
}

run_column() {  # COLUMN: lines 1-7 (unless --only tls), then line 8 where the column has it
  [ "$TLS_ONLY" = 1 ] || run_plain_column "$1"
  if wants_tls "$1"; then run_tls_column "$1"; fi
}

# Line 8: CONNECT over a TLS proxy listener (a fresh instance of the proxy with its TLS port),
# then GET /big through the tunnel: the proxy decrypts the client's few bytes and encrypts the
# whole body in user space. direct: the same GET over TLS to nginx itself, no proxy.
run_tls_column() {  # COLUMN
  local col=$1 target via
  log "== $col, TLS listener (line 8)"
  MPID=""
  if [ "$col" = direct ]; then
    target="127.0.0.1:$ORIGIN_TLS_PORT"; via=direct
  else
    if ! "start_${col}_tls"; then
      note "$col" "${EGRESSD_WHY:-TLS listener did not start}; line 8 not measured (see logs with BENCH_KEEP=1)"
      SKIPPED+=" $col-tls"
      return
    fi
    MPID=$PID; target="127.0.0.1:$PORT"; via=connect
  fi
  if ! "$LG" fetch --target "$target" --origin "$ORIGIN" --path /small --via "$via" \
         --tls-ca "$TLS_CA" >/dev/null; then
    note "$col" "smoke request over TLS failed; line 8 not measured"
    SKIPPED+=" $col-tls"
  else
    phase_throughput "$col" "$via" "$target" tls_tunnel --tls-ca "$TLS_CA"
  fi
  if [ -n "$MPID" ]; then
    if ! kill -0 "$MPID" 2>/dev/null; then note "$col" "the TLS instance had exited before the end of line 8"; fi
    stop_pid "$MPID" "$col"
  fi
}

run_plain_column() {  # COLUMN
  local col=$1 target via_tunnel via_plain
  log "== $col"
  MPID=""
  case "$col" in
    direct)
      target=$ORIGIN; via_tunnel=direct; via_plain=direct ;;
    relay)
      start_relay || { note relay "socat did not start"; SKIPPED+=" relay"; return; }
      MPID=$PID; target="127.0.0.1:$PORT"; via_tunnel=direct; via_plain=direct ;;
    floor)
      start_floor || { note floor "minrelay did not start"; SKIPPED+=" floor"; return; }
      MPID=$PID
      phase_tunnels floor connect "127.0.0.1:$PORT"
      stop_pid "$MPID" floor
      return ;;
    *)
      if ! "start_$col"; then
        note "$col" "${EGRESSD_WHY:-did not start} (see logs with BENCH_KEEP=1)"
        SKIPPED+=" $col"
        return
      fi
      MPID=$PID; target="127.0.0.1:$PORT"; via_tunnel=connect; via_plain=forward
      # Smoke: one request each way must work before anything is measured.
      if ! "$LG" fetch --target "$target" --origin "$ORIGIN" --path /small --via connect >/dev/null ||
         ! "$LG" fetch --target "$target" --origin "$ORIGIN" --path /small --via forward >/dev/null; then
        note "$col" "smoke request failed; not measured"
        SKIPPED+=" $col"
        stop_pid "$PID"
        return
      fi ;;
  esac
  if [ "$via_tunnel" = connect ]; then
    phase_idle "$col" "$target"
    phase_throughput "$col" connect "$target" tunnel
    phase_throughput "$col" forward "$target" forward
  else
    # Without a proxy a tunnel and a forward are the same TCP stream: measured once, shown twice.
    phase_throughput "$col" direct "$target" tunnel
    local copy
    copy=$(awk -F'\t' -v c="$col" '$1 == c && $2 ~ /^tunnel_/ {
      sub(/^tunnel_/, "forward_", $2); print $1 "\t" $2 "\t" $3 }' "$RESULTS")
    [ -n "$copy" ] && printf '%s\n' "$copy" >> "$RESULTS"
  fi
  phase_small "$col" "$via_plain" "$target"
  phase_tunnels "$col" "$via_tunnel" "$target"
  phase_latency "$col" "$via_plain" "$target"
  if [ -n "$MPID" ]; then
    info "$col" procs "$(field procs "$("$LG" proc "$MPID")") processes at the end"
    if ! kill -0 "$MPID" 2>/dev/null; then note "$col" "the process had exited before the end of its phases"; fi
    stop_pid "$MPID" "$col"
  fi
}

# ------------------------------------------------------------------------------------------------

main() {
  [ "$(id -u)" = 0 ] || die "run as root (installs packages, runs proxies as their users)"
  if [ "$OUT_NAME" = latest ] && { [ "$QUICK" = 1 ] || [ "$ONLY" != "$ALL_COLUMNS" ]; }; then
    die "--out latest is only for a full run of every column"
  fi
  WORK=$(mktemp -d /tmp/egressd-bench.XXXXXX)
  chmod 755 "$WORK"
  RESULTS="$WORK/results.tsv"
  : > "$RESULTS"
  local t0=$SECONDS
  install_packages
  ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  [ "$(ulimit -n)" -ge $((2 * IDLE_N + 2000)) ] ||
    log "warning: ulimit -n $(ulimit -n) is low for $IDLE_N idle tunnels"
  local p
  for p in "$ORIGIN_PORT" "$SINK_PORT" "$RELAY_PORT" "${PROXY_PORT[@]}" "$ORIGIN_TLS_PORT" \
           "${PROXY_TLS_PORT[@]}"; do
    port_open "$p" && die "port $p is in use (set BENCH_PORT_BASE)"
  done

  LG="$WORK/loadgen"
  g++ -O2 -std=c++20 -Wall -Wextra -o "$LG" "$BENCH_DIR/loadgen.cpp" -pthread -lssl -lcrypto ||
    die "loadgen did not compile"
  g++ -O2 -std=c++20 -Wall -Wextra -o "$WORK/minrelay" "$BENCH_DIR/minrelay.cpp" -pthread ||
    die "minrelay did not compile"
  EGRESSD_WHY=""
  SKIPPED=""
  if wants egressd; then build_egressd; fi

  info run run "$(date -u '+%Y-%m-%d %H:%M UTC'), $([ "$QUICK" = 1 ] && echo quick || echo full), columns $ONLY"
  if [ -n "${EGRESSD_BIN:-}" ]; then
    info egressd build "$("$EGRESSD_BIN" --version 2>&1 | head -1 | cut -c1-120); tree $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'without commits')$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo ' + local changes')"
  fi
  info run host "$(nproc) cores, $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
  info run sizes "$BIG_MIB MiB x $THROUGHPUT_REPS per throughput line; $RATE_REPS x ${RATE_SECS}s per rate line; $IDLE_N idle tunnels; latency at $LAT_RATE req/s over $LAT_CONNS conns, $RATE_REPS x ${LAT_SECS}s"
  info run versions "squid $(squid -v | sed -n 's/.*Version \([^ ]*\).*/\1/p' | head -1), tinyproxy $(tinyproxy -v 2>&1 | awk '{print $2}'), trafficserver $(traffic_server -V 2>&1 | sed -n 's/.*Traffic Server \([0-9.]*\).*/\1/p' | head -1), nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), socat $(socat -V | sed -n 's/^socat version \([^ ]*\).*/\1/p')"

  if [ "$TLS" = 1 ]; then
    make_certs
    info run tls "line 8: ECDSA P-256 server certificate for 127.0.0.1 from a throwaway CA (openssl $(openssl version | awk '{print $2}')), TLS 1.2+ with each server's default ciphers; client: loadgen with OpenSSL $(openssl version | awk '{print $2}'), body decrypted into a 64 KiB buffer; egressd TLS listener, Squid https_port (squid built with $(squid -v | grep -q -- '--with-openssl' && echo OpenSSL || echo GnuTLS)), direct = nginx ssl (no kTLS); tinyproxy has no TLS listener and Traffic Server's is not set up here: n/a"
  fi
  start_origin
  local col
  for col in direct relay floor egressd squid tinyproxy trafficserver; do
    wants "$col" && run_column "$col"
  done

  # Only a full run of every column replaces latest.*; --quick and --only runs go to partial.*
  # (ignored by git), so a quick check never overwrites the committed table.
  # A column that could not run (egressd did not build, a proxy did not start) makes it partial.
  local name=latest
  if [ "$QUICK" = 1 ] || [ "$ONLY" != "$ALL_COLUMNS" ] || [ -n "$SKIPPED" ]; then name=partial; fi
  if [ -n "$OUT_NAME" ]; then
    if [ "$OUT_NAME" = latest ] && [ "$name" != latest ]; then
      log "a partial run does not replace latest.*: writing partial.* instead"
    else
      name=$OUT_NAME
    fi
  fi
  mkdir -p "$BENCH_DIR/results"
  echo
  "$LG" report "$RESULTS" "$BENCH_DIR/results/$name.md" "$BENCH_DIR/results/$name.json"
  cp "$RESULTS" "$BENCH_DIR/results/$name.tsv"
  log "done in $((SECONDS - t0)) s; bench/results/$name.{md,json,tsv}"
}

main
