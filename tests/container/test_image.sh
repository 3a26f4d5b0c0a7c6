#!/usr/bin/env bash
# Builds the image (scripts/build-image.sh), checks its metadata, and runs its entrypoint the way
# a container runtime would: as PID 1 of a new PID namespace, chrooted into the image's root
# filesystem, as the image's user. Then traffic through a CONNECT and a plain request (with a
# PROXY header, as from the NLB), the HEALTHCHECK command, SIGTERM -> drain -> exit 0.
# Needs root (buildah, unshare, chroot). Exit 77 (skip) only when not root.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root"; exit 77; }

tag="localhost/egressd:test"
scripts/build-image.sh "$tag"

fail() { echo "FAIL: $*" >&2; [ -f "${work:-/nonexistent}/stderr" ] && tail -5 "$work/stderr" >&2; exit 1; }
# The image config as JSON (buildah's Go templates have no json function).
buildah inspect --type image "$tag" > "$(dirname "$0")/.image.json"
python3 - "$(dirname "$0")/.image.json" <<'PY' || fail "image metadata"
import json, sys
c = json.load(open(sys.argv[1]))["Docker"]["config"]
problems = []
if c.get("User") != "10001:10001":
    problems.append(f"user is {c.get('User')!r}, want 10001:10001 (non-root)")
if c.get("Entrypoint") != ["/usr/local/bin/egressd"]:
    problems.append(f"entrypoint {c.get('Entrypoint')} is not the exec form")
hc = (c.get("Healthcheck") or {}).get("Test")
if hc != ["CMD", "/usr/local/bin/egressd", "probe"]:
    problems.append(f"healthcheck is {hc}")
if sorted(c.get("ExposedPorts") or {}) != ["3128/tcp", "9090/tcp"]:
    problems.append(f"exposed ports {c.get('ExposedPorts')}")
if "EGRESSD_CONFIG=/etc/egressd/egressd.yaml" not in (c.get("Env") or []):
    problems.append(f"env {c.get('Env')}")
for p in problems:
    print("FAIL:", p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY
rm -f "$(dirname "$0")/.image.json"
echo "ok: metadata (non-root user, exec-form entrypoint, healthcheck probe, ports, config)"

ctr="$(buildah from --pull=never "$tag")"
root="$(buildah mount "$ctr")"
work="$(mktemp -d)"
pid=""
egressd_pid=""
cleanup() {
  # egressd is the namespace's init: killing it ends everything inside.
  [ -n "$egressd_pid" ] && kill -9 "$egressd_pid" 2>/dev/null || true
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  [ -n "${origin_pid:-}" ] && kill "$origin_pid" 2>/dev/null || true
  umount "$root/proc" 2>/dev/null || true
  buildah umount "$ctr" >/dev/null 2>&1 || true
  buildah rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# The runtime user is not Debian's `proxy` (uid 13) and the image has no compiler or curl.
grep -q '^egressd:x:10001:10001:' "$root/etc/passwd" || fail "no egressd user (uid 10001)"
for tool in curl wget gcc g++ cmake; do
  [ ! -e "$root/usr/bin/$tool" ] || fail "runtime image contains $tool"
done
echo "ok: runtime user egressd (10001), no build tools or curl in the image"

# --- an origin on loopback ------------------------------------------------------------------
python3 -m http.server 0 --bind 127.0.0.1 --directory "$work" > "$work/origin.log" 2>&1 &
origin_pid=$!
echo "hello from the origin" > "$work/hello.txt"
for _ in $(seq 100); do
  port="$(sed -n 's/.*port \([0-9]*\).*/\1/p' "$work/origin.log" | head -1)"
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || fail "origin did not start"

# --- run the entrypoint as PID 1 -------------------------------------------------------------
# The image's own config (/etc/egressd/egressd.yaml) with the overrides an operator sets in a
# task definition: trusted load balancer, clients, and here loopback destinations and ports.
read -r proxy_port admin_port < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  EGRESSD_CONFIG=/etc/egressd/egressd.yaml \
  EGRESSD_LISTEN="127.0.0.1:$proxy_port" EGRESSD_ADMIN_LISTEN="127.0.0.1:$admin_port" \
  EGRESSD_TRUSTED_PROXIES=127.0.0.0/8 EGRESSD_ALLOW_SOURCES=127.0.0.1/32 \
  EGRESSD_ALLOW_DESTINATIONS=127.0.0.1/32 \
  EGRESSD_CONNECT_PORTS="$port" EGRESSD_HTTP_PORTS="$port" \
  unshare --pid --fork --mount sh -c \
  "mount -t proc proc '$root/proc' && exec chroot --userspec=10001:10001 '$root' \
   /usr/local/bin/egressd" > "$work/stdout" 2> "$work/stderr" &
pid=$!
for _ in $(seq 200); do
  grep -q "listening on 127.0.0.1:$proxy_port (proxy)" "$work/stderr" && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/stderr"; fail "egressd exited at start"; }
  sleep 0.05
done
grep -q "listening on 127.0.0.1:$proxy_port (proxy)" "$work/stderr" || fail "not listening"
# unshare forks the namespace's first process, which execs chroot and then egressd.
egressd_pid="$(ps -o pid= --ppid "$pid" | tr -d ' ' | head -1 || true)"
nspid="$(awk '/^NSpid:/ {print $NF}' "/proc/$egressd_pid/status")"
[ -n "$egressd_pid" ] || fail "cannot find the egressd process"
[ "$nspid" = "1" ] || fail "egressd is PID $nspid in its namespace, not 1"
uid="$(awk '/^Uid:/ {print $2}' "/proc/$egressd_pid/status")"
[ "$uid" = "10001" ] || fail "egressd runs as uid $uid"
echo "ok: egressd is PID 1 of its PID namespace, uid $uid"

# The HEALTHCHECK command, run inside the image root as the container runtime would: with the
# container's environment, from which it finds the admin port.
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin EGRESSD_CONFIG=/etc/egressd/egressd.yaml \
  EGRESSD_ADMIN_LISTEN="127.0.0.1:$admin_port" \
  chroot --userspec=10001:10001 "$root" /usr/local/bin/egressd probe ||
  fail "health check failed while serving"

# Traffic as from the NLB: curl sends a PROXY (v1) header first, naming its own address.
proxy="http://127.0.0.1:$proxy_port"
body="$(curl -sS --fail --max-time 20 --haproxy-protocol -x "$proxy" \
  "http://127.0.0.1:$port/hello.txt")" || fail "plain request failed"
[ "$body" = "hello from the origin" ] || fail "plain request body '$body'"
# Without a PROXY header the image's listener (proxy_protocol: required) closes the connection.
code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 20 -x "$proxy" \
  "http://127.0.0.1:$port/hello.txt" || true)"
[ "$code" = "000" ] || [ "$code" = "400" ] || fail "request without PROXY header got $code"
echo "ok: plain HTTP through the image"
# CONNECT: curl would send its PROXY header inside the tunnel, so a few lines of Python play
# the load balancer (v1 header) and the client.
python3 - "$proxy_port" "$port" <<'PY' || fail "CONNECT tunnel failed"
import socket, sys
proxy_port, origin_port = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", proxy_port), timeout=20)
s.sendall(f"PROXY TCP4 127.0.0.1 127.0.0.1 40000 {proxy_port}\r\n"
          f"CONNECT 127.0.0.1:{origin_port} HTTP/1.1\r\nHost: 127.0.0.1:{origin_port}\r\n\r\n"
          .encode())
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(4096)
    if not chunk:
        sys.exit(f"closed before the CONNECT response: {head!r}")
    head += chunk
if not head.startswith(b"HTTP/1.1 200"):
    sys.exit(f"CONNECT answered {head!r}")
s.sendall(b"GET /hello.txt HTTP/1.0\r\nHost: x\r\n\r\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
if not data.endswith(b"hello from the origin\n"):
    sys.exit(f"tunnel carried {data[-200:]!r}")
PY
echo "ok: CONNECT tunnel through the image"
grep -q '"method":"CONNECT"' "$work/stdout" || fail "no access log line for the tunnel"

# --- SIGTERM: readiness flips, the process drains and exits 0 ---------------------------------
kill -TERM "$egressd_pid"
if chroot --userspec=10001:10001 "$root" /usr/local/bin/egressd probe \
     "http://127.0.0.1:$admin_port/readyz" 2>/dev/null; then
  fail "health check still passes while draining"
fi
set +e
wait "$pid"
rc=$?
set -e
pid=""
egressd_pid=""
[ "$rc" -eq 0 ] || { tail -20 "$work/stderr"; fail "exit status $rc after SIGTERM"; }
grep -q "egressd stopped" "$work/stderr" || fail "no 'egressd stopped' line"
echo "ok: SIGTERM drained and exited 0"
