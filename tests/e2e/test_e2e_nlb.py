"""End-to-end rehearsal of the production path, on loopback, with real components.

    curl / raw clients            HAProxy (NLB stand-in)           egressd x2              origin
    127.0.0.20 (allowed)  --->  127.0.0.10:<lb>  --send-proxy-v2-->  127.0.0.11:<a>  --->  127.0.0.50
    127.0.0.30 (denied)         source 127.0.0.9, roundrobin,        127.0.0.12:<b>        (HTTP + HTTPS,
                                httpchk GET /readyz on the admin     egress.bind           admits only
                                ports, retries + redispatch          127.0.0.42 (the EIP)  127.0.0.42)

- HAProxy from Debian in TCP mode stands in for the AWS NLB: PROXY protocol v2 to the targets
  (and on the health checks, as an NLB does), health checks on each egressd's admin /readyz.
- Two egressd processes, proxy_protocol required, trusted_proxies = HAProxy's source address
  only, gates.sources = the allowed client only (the source gate sees the PROXY header's
  address, i.e. the real client), an allow rule for the SaaS name, egress.bind = 127.0.0.42.
- A stub DNS server (tests/support/dns_stub.py) on 127.0.0.53 answers app.saas.test and
  other.saas.test with 127.0.0.50, so clients use names as they do in production.
- The origin admits only connections from 127.0.0.42 (others get 403 over HTTP, a bare close
  over TLS) and answers /ip with the source address it saw. Its certificate (DNS:app.saas.test,
  IP:127.0.0.50) comes from a CA made with openssl at test time.

Checks: HTTPS through CONNECT and plain HTTP succeed through HAProxy and the origin sees
127.0.0.42; both instances take traffic; the denied client gets 403 and egressd logs its real
address from the PROXY header with HAProxy as lb_peer; a client cannot bypass HAProxy or forge a
PROXY header; a name without an allow rule is denied; X-Authenticated-User is logged and not
forwarded; a rolling restart (SIGTERM one instance, start it again, then the other) under a
load loop of curl and raw requests loses no request without any retry by HAProxy (an NLB does
not retry), HAProxy takes each instance out because /readyz answered 503, and tunnels open
across the drain keep working; SIGKILL of one instance leaves new requests served by the other
(HAProxy's retries/redispatch until its checks mark the instance down, then directly).

Run: tests/e2e/run_e2e.sh [EGRESSD_BINARY], or
     cd tests/e2e && EGRESSD_BIN=... PYTHONPATH=../support python3 -m unittest -v test_e2e_nlb

Nothing here asserts on wall time: every timeout is a failure guard. Phases wait for events
(HAProxy's view of a server through its stats socket, a process exit, a listener refusing
connections, a number of completed requests), never for a fixed sleep.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
from typing import Callable, Optional

from dns_stub import DnsStub
from egressd_harness import (ConnectionClosed, Egressd, HttpOrigin, RawClient, TestCA,
                             clean_env, run_curl, wait_until)

# --- addresses (all loopback) -----------------------------------------------------------------
LB_IP = "127.0.0.10"          # HAProxy frontend: the NLB's listener
LB_SOURCE = "127.0.0.9"       # HAProxy's source address towards egressd (the NLB's private IP)
INSTANCE_IPS = {"a": "127.0.0.11", "b": "127.0.0.12"}
EGRESS_IP = "127.0.0.42"      # egress.bind: the stand-in Elastic IP
ORIGIN_IP = "127.0.0.50"
DNS_IP = "127.0.0.53"
ALLOWED_CLIENT = "127.0.0.20"
DENIED_CLIENT = "127.0.0.30"
SAAS_NAME = "app.saas.test"   # allowed by the access rule
OTHER_NAME = "other.saas.test"  # resolves to the same origin, no rule allows it

# --- timing knobs (detection must be well inside drain.delay; none is asserted on) ----------
CHECK_INTER = "200ms"         # HAProxy health-check interval
CHECK_FALL = 2                # failed checks before a server is DOWN
CHECK_RISE = 2                # passed checks before it is UP again
DRAIN_DELAY = "3s"            # egressd keeps accepting this long after SIGTERM (>> 2 x 200 ms)
DRAIN_TIMEOUT = "20s"         # in-flight guard; the tests end their tunnels long before

GUARD = 30.0                  # generic failure guard for one wait (seconds)
CURL_MAX_TIME = "20"


def tools_missing() -> list[str]:
    return [t for t in ("haproxy", "curl", "openssl") if shutil.which(t) is None]


def pick_port(ip: str, used: set[int]) -> int:
    """A TCP port free on ip, below the ephemeral range (32768+) so that no other process's
    outgoing connection or port-0 bind takes it while an instance restarts on it."""
    rnd = random.Random()
    for _ in range(500):
        port = rnd.randrange(20000, 32000)
        if port in used:
            continue
        s = socket.socket()
        try:
            s.bind((ip, port))
        except OSError:
            continue
        finally:
            s.close()
        used.add(port)
        return port
    raise AssertionError(f"no free port on {ip}")


# ---------------------------------------------------------------------------------------------
# TLS material for the origin: DNS:app.saas.test and IP:127.0.0.50
# ---------------------------------------------------------------------------------------------


def origin_ca() -> TestCA:
    """A CA made at test time and the origin's certificate for both SaaS names and its IP."""
    return TestCA(names=(SAAS_NAME, OTHER_NAME), ips=(ORIGIN_IP,), cn="egressd e2e test CA")


# ---------------------------------------------------------------------------------------------
# the origin: admits only the egress address
# ---------------------------------------------------------------------------------------------


class EgressOnlyOrigin(HttpOrigin):
    """HttpOrigin on 127.0.0.50 that serves only connections from EGRESS_IP. Any other peer gets
    a 403 and a close (plain HTTP) or a close before the TLS handshake (HTTPS), and is recorded
    in .refused. /ip answers the peer address it saw."""

    def __init__(self, ssl_context: Optional[ssl.SSLContext] = None):
        super().__init__(host=ORIGIN_IP, ssl_context=ssl_context)
        self.refused: list[tuple[str, int]] = []

    def handle(self, conn, peer, index):
        if peer[0] != EGRESS_IP:
            with self.lock:
                self.refused.append((peer[0], peer[1]))
                self.lock.notify_all()
            if self.ssl_context is None:
                body = b"source address not allowed\n"
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
                             + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                             + body)
            return  # TcpServer closes the connection
        return super().handle(conn, peer, index)

    def request_count(self) -> int:
        with self.lock:
            return len(self.requests)


# ---------------------------------------------------------------------------------------------
# HAProxy
# ---------------------------------------------------------------------------------------------


class Haproxy:
    """haproxy -db with a config file; stats socket for the servers' states; output in a file."""

    def __init__(self, directory: str, port: int, servers: dict[str, tuple[str, int, int]]):
        self.dir = directory
        self.port = port
        self.sock_path = os.path.join(directory, "haproxy.sock")
        self.cfg_path = os.path.join(directory, "haproxy.cfg")
        self.log_path = os.path.join(directory, "haproxy.log")
        lines = []
        for name, (ip, port_, admin) in servers.items():
            lines.append(f"  server {name} {ip}:{port_} check port {admin}")
        server_lines = "\n".join(lines)
        # The settings an operator would use in front of egressd; docs/deployment.md explains
        # them next to their NLB equivalents.
        self.config = f"""global
  log stderr format raw local0 info
  stats socket {self.sock_path} mode 600 level admin
  maxconn 2000

defaults
  mode tcp
  log global
  option tcplog
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout check 1s
  # A refused or failed connect to a target is retried, each retry on another server
  # (redispatch 1), so a target that died before the checks noticed costs no request.
  retries 3
  option redispatch 1

frontend nlb
  bind {LB_IP}:{port}
  default_backend egressd

backend egressd
  balance roundrobin
  # Connections to egressd and the health checks leave from one address: the one egressd
  # trusts to send PROXY headers (trusted_proxies).
  source {LB_SOURCE}
  # Health check: HTTP GET /readyz on each target's admin port (the 'port' on the server line);
  # 200 = in service, 503 (draining) = out. PROXY v2 on checks too, as an NLB sends it.
  option httpchk GET /readyz
  http-check expect status 200
  default-server send-proxy-v2 check-send-proxy inter {CHECK_INTER} fastinter {CHECK_INTER} downinter {CHECK_INTER} fall {CHECK_FALL} rise {CHECK_RISE}
{server_lines}
"""
        with open(self.cfg_path, "w") as f:
            f.write(self.config)
        self.proc: Optional[subprocess.Popen] = None
        self._log = None

    def start(self):
        check = subprocess.run(["haproxy", "-c", "-f", self.cfg_path], capture_output=True,
                               env=clean_env(), timeout=30)
        if check.returncode != 0:
            raise AssertionError("haproxy -c rejected the config:\n"
                                 + check.stdout.decode() + check.stderr.decode())
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", self.cfg_path],
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=clean_env())
        ok = wait_until(lambda: self.proc.poll() is not None or self._stats_ok(), GUARD)
        if not ok or self.proc.poll() is not None:
            raise AssertionError("haproxy did not start:\n" + self.log())
        return self

    def _stats_ok(self) -> bool:
        try:
            self.command("show info")
            return True
        except OSError:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log:
            self._log.close()
            self._log = None

    def command(self, cmd: str) -> str:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(self.sock_path)
            s.sendall(cmd.encode() + b"\n")
            out = bytearray()
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
            return out.decode("utf-8", "replace")
        finally:
            s.close()

    def stat_rows(self) -> dict[str, dict[str, str]]:
        """svname -> row of 'show stat' for backend egressd (its servers and BACKEND)."""
        text = self.command("show stat")
        rows = [l for l in text.splitlines() if l.strip()]
        if not rows or not rows[0].startswith("# "):
            raise AssertionError(f"unexpected 'show stat' output: {text[:300]!r}")
        header = rows[0][2:].split(",")
        out = {}
        for line in rows[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == "egressd":
                out[row["svname"]] = row
        return out

    def server_states(self) -> dict[str, dict[str, str]]:
        return {k: v for k, v in self.stat_rows().items() if k != "BACKEND"}

    def connect_errors(self) -> dict[str, int]:
        """Backend totals of failed connects to targets, retries and redispatches."""
        row = self.stat_rows()["BACKEND"]
        return {k: int(row.get(k) or 0) for k in ("econ", "wretr", "wredis")}

    def status(self, server: str) -> str:
        try:
            return self.server_states()[server]["status"]
        except (OSError, KeyError):
            return "?"

    def wait_status(self, server: str, status: str, timeout: float = GUARD) -> None:
        if not wait_until(lambda: self.status(server) == status, timeout, 0.05):
            raise AssertionError(f"HAProxy did not report server {server} {status} within "
                                 f"{timeout}s (now {self.status(server)!r}):\n"
                                 + self.describe())

    def describe(self) -> str:
        try:
            st = self.server_states()
            view = "\n".join(f"  {k}: status={v.get('status')} check={v.get('check_status')} "
                             f"desc={v.get('last_chk')}" for k, v in st.items())
        except (OSError, AssertionError) as e:
            view = f"  (stats unavailable: {e})"
        return "HAProxy servers:\n" + view + "\n--- haproxy log (tail) ---\n" + self.log()

    def log(self, n: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
        except OSError:
            return ""

    def log_text(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


# ---------------------------------------------------------------------------------------------
# egressd instances
# ---------------------------------------------------------------------------------------------


class Instance:
    """One egressd target at a fixed address (so HAProxy's config does not change across a
    restart). Every process ever started is kept in .history for the access-log checks."""

    def __init__(self, name: str, ip: str, port: int, admin_port: int, config: str):
        self.name = name
        self.ip = ip
        self.port = port
        self.admin_port = admin_port
        self.config = config
        self.proc: Optional[Egressd] = None
        self.history: list[Egressd] = []

    def start(self) -> Egressd:
        p = Egressd(env={"EGRESSD_LISTEN": None, "EGRESSD_ADMIN_LISTEN": None},
                    config=self.config)
        p.start()
        self.proc = p
        self.history.append(p)
        return p

    def alive(self) -> bool:
        return self.proc is not None and self.proc.proc.poll() is None

    def sigterm(self) -> None:
        self.proc.proc.send_signal(signal.SIGTERM)

    def readyz(self) -> int:
        url = f"http://{self.ip}:{self.admin_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def listener_refuses(self) -> bool:
        """True once the proxy listener is closed (a connect is refused). A connect that is
        accepted is closed again at once (egressd logs a missing PROXY header; harmless)."""
        s = socket.socket()
        s.settimeout(2)
        try:
            s.bind((LB_SOURCE, 0))
            s.connect((self.ip, self.port))
            return False
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        finally:
            s.close()

    def access_entries(self) -> list[dict]:
        out = []
        for p in self.history:
            out += p.access_entries()
        return out

    def tail(self) -> str:
        return "\n".join(f"=== egressd {self.name} #{i} ===\n{p.tail(25)}"
                         for i, p in enumerate(self.history))


# ---------------------------------------------------------------------------------------------
# load: clients through HAProxy, recording every outcome
# ---------------------------------------------------------------------------------------------


class Load:
    """Worker threads issuing requests through HAProxy one after another until stopped.

    Kinds: curl over CONNECT (HTTPS), curl plain HTTP, raw plain HTTP with one request per
    connection, raw CONNECT + TLS (Python ssl), and a keep-alive raw client that behaves as
    HTTP clients must (RFC 9112 9.3.1): a request on a reused connection that the server closed
    before any response byte is retried on a new connection (counted, not a failure).

    pause()/resume() hold the workers between requests (waiting for in-flight ones to finish)
    so a test can act on a quiet load balancer."""

    KINDS = ("curl_https", "curl_http", "raw_http", "raw_connect_tls", "raw_keepalive")

    def __init__(self, test: "E2ENlbTest"):
        self.t = test
        self.cv = threading.Condition()
        self.ok = 0
        self.ok_by_kind = {k: 0 for k in self.KINDS}
        self.failures: list[str] = []
        self.keepalive_retries = 0
        self.running = True
        self.paused = False
        self.in_flight = 0
        self.threads = [threading.Thread(target=self._loop, args=(k,), daemon=True)
                        for k in self.KINDS]

    def start(self) -> "Load":
        for th in self.threads:
            th.start()
        return self

    # -- control ----------------------------------------------------------------------------

    def stop(self) -> None:
        with self.cv:
            self.running = False
            self.paused = False
            self.cv.notify_all()
        for th in self.threads:
            th.join(GUARD + 30)
            if th.is_alive():
                raise AssertionError("a load thread did not stop")

    def pause(self) -> None:
        with self.cv:
            self.paused = True
            if not self.cv.wait_for(lambda: self.in_flight == 0, GUARD + 30):
                raise AssertionError("load did not pause")

    def resume(self) -> None:
        with self.cv:
            self.paused = False
            self.cv.notify_all()

    def completed(self) -> int:
        with self.cv:
            return self.ok + len(self.failures)

    def wait_more(self, n: int, what: str) -> None:
        """Waits until n more requests completed (successfully or not) than now."""
        target = self.completed() + n
        with self.cv:
            if not self.cv.wait_for(lambda: self.ok + len(self.failures) >= target, 90):
                raise AssertionError(f"load made no progress ({what}): "
                                     f"{self.ok + len(self.failures)} of {target}")

    # -- workers ----------------------------------------------------------------------------

    def _begin(self) -> bool:
        with self.cv:
            self.cv.wait_for(lambda: not self.paused or not self.running)
            if not self.running:
                return False
            self.in_flight += 1
            return True

    def _end(self, kind: str, error: Optional[str]) -> None:
        with self.cv:
            self.in_flight -= 1
            if error is None:
                self.ok += 1
                self.ok_by_kind[kind] += 1
            else:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {kind}: {error}")
            self.cv.notify_all()

    def _loop(self, kind: str) -> None:
        ka = None  # the keep-alive client's connection
        n = 0
        while self._begin():
            n += 1
            try:
                if kind == "raw_keepalive":
                    ka, err = self._keepalive(ka, n)
                else:
                    err = getattr(self, "_" + kind)(n)
            except Exception as e:  # noqa: BLE001 - every failure is a lost request
                err = f"{type(e).__name__}: {e}"
            self._end(kind, err)
        if ka is not None:
            ka.close()

    def _curl_https(self, n: int) -> Optional[str]:
        return self.t.curl_check(ALLOWED_CLIENT, self.t.https_url(f"/ip?load=https-{n}"))

    def _curl_http(self, n: int) -> Optional[str]:
        return self.t.curl_check(ALLOWED_CLIENT, self.t.http_url(f"/ip?load=http-{n}"))

    def _raw_http(self, n: int) -> Optional[str]:
        with RawClient(LB_IP, self.t.lb_port, source=ALLOWED_CLIENT, timeout=GUARD) as c:
            c.send(self.t.http_request(f"/ip?load=raw-{n}", keep_alive=False))
            resp = c.read_response()
        if resp.status != 200 or resp.body != EGRESS_IP.encode() + b"\n":
            return f"status {resp.status}, body {resp.body[:200]!r}"
        return None

    def _raw_connect_tls(self, n: int) -> Optional[str]:
        c = RawClient(LB_IP, self.t.lb_port, source=ALLOWED_CLIENT, timeout=GUARD)
        try:
            c.send(f"CONNECT {SAAS_NAME}:{self.t.https_origin.port} HTTP/1.1\r\n"
                   f"Host: {SAAS_NAME}:{self.t.https_origin.port}\r\n\r\n".encode())
            head = c.read_head()
            if head.status != 200:
                return f"CONNECT answered {head.status}"
            with self.t.ca.client_context().wrap_socket(
                    c.sock, server_hostname=SAAS_NAME) as tls:
                tls.sendall(f"GET /ip?load=tls-{n} HTTP/1.1\r\nHost: {SAAS_NAME}\r\n"
                            "Connection: close\r\n\r\n".encode())
                data = bytearray()
                while True:
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            if not data.startswith(b"HTTP/1.1 200 ") or not data.endswith(
                    b"\r\n\r\n" + EGRESS_IP.encode() + b"\n"):
                return f"tunnelled response {bytes(data[:300])!r}"
            return None
        finally:
            c.close()

    def _keepalive(self, ka: Optional[RawClient], n: int):
        """One request on the kept connection; (connection to keep or None, error)."""
        for attempt in (0, 1):
            reused = ka is not None
            if ka is None:
                ka = RawClient(LB_IP, self.t.lb_port, source=ALLOWED_CLIENT, timeout=GUARD)
            try:
                ka.send(self.t.http_request(f"/ip?load=ka-{n}", keep_alive=True))
                resp = ka.read_response()
            except (ConnectionClosed, BrokenPipeError, ConnectionResetError) as e:
                ka.close()
                ka = None
                partial = getattr(e, "partial", b"")
                if reused and not partial and attempt == 0:
                    # Closed before any byte of a response: safe to retry (idempotent GET).
                    with self.cv:
                        self.keepalive_retries += 1
                    continue
                return None, f"{type(e).__name__}: {e} (reused connection: {reused})"
            if resp.status != 200 or resp.body != EGRESS_IP.encode() + b"\n":
                ka.close()
                return None, f"status {resp.status}, body {resp.body[:200]!r}"
            if resp.has_token("Connection", "close"):
                ka.close()  # draining egressd says so; the next request opens a new one
                ka = None
            return ka, None
        return None, "unreachable"


class Tunnel:
    """A CONNECT + TLS session through HAProxy carrying keep-alive HTTPS requests on request."""

    def __init__(self, test: "E2ENlbTest"):
        self.t = test
        self.raw = RawClient(LB_IP, test.lb_port, source=ALLOWED_CLIENT, timeout=GUARD)
        self.client_port = self.raw.local_port
        self.raw.send(f"CONNECT {SAAS_NAME}:{test.https_origin.port} HTTP/1.1\r\n"
                      f"Host: {SAAS_NAME}:{test.https_origin.port}\r\n\r\n".encode())
        head = self.raw.read_head()
        if head.status != 200:
            raise AssertionError(f"tunnel CONNECT answered {head.status}")
        self.tls = test.ca.client_context().wrap_socket(self.raw.sock,
                                                        server_hostname=SAAS_NAME)
        self.buf = bytearray()
        self.requests = 0

    def request(self) -> None:
        """One GET /ip on the tunnel; raises on any error or wrong answer."""
        self.tls.sendall(f"GET /ip?tunnel={self.client_port}-{self.requests} HTTP/1.1\r\n"
                         f"Host: {SAAS_NAME}\r\n\r\n".encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.tls.recv(65536)
            if not chunk:
                raise ConnectionClosed("tunnel closed", bytes(self.buf))
            self.buf += chunk
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if not head.startswith(b"HTTP/1.1 200 ") or not m:
            raise AssertionError(f"tunnel response head {head!r}")
        n = int(m.group(1))
        while len(rest) < n:
            chunk = self.tls.recv(65536)
            if not chunk:
                raise ConnectionClosed("tunnel closed in body", rest)
            rest += chunk
        body, self.buf = rest[:n], bytearray(rest[n:])
        if body != EGRESS_IP.encode() + b"\n":
            raise AssertionError(f"tunnel body {body!r}")
        self.requests += 1

    def close(self) -> None:
        try:
            self.tls.close()
        except OSError:
            pass
        self.raw.close()


# ---------------------------------------------------------------------------------------------
# the test
# ---------------------------------------------------------------------------------------------


@unittest.skipIf(tools_missing(), f"missing tools: {tools_missing()}")
class E2ENlbTest(unittest.TestCase):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="egressd-e2e-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.ca = origin_ca()
        cls.addClassCleanup(cls.ca.cleanup)

        cls.http_origin = EgressOnlyOrigin().start()
        cls.addClassCleanup(cls.http_origin.stop)
        cls.https_origin = EgressOnlyOrigin(ssl_context=cls.ca.server_context()).start()
        cls.addClassCleanup(cls.https_origin.stop)

        cls.dns = DnsStub(host=DNS_IP).start()
        cls.addClassCleanup(cls.dns.stop)
        cls.dns.set_answers(SAAS_NAME, [ORIGIN_IP], ttl=300)
        cls.dns.set_answers(OTHER_NAME, [ORIGIN_IP], ttl=300)

        used: set[int] = set()
        cls.lb_port = pick_port(LB_IP, used)
        cls.instances: dict[str, Instance] = {}
        for name, ip in INSTANCE_IPS.items():
            port, admin = pick_port(ip, used), pick_port(ip, used)
            cls.instances[name] = Instance(name, ip, port, admin, cls.egressd_config(ip, port,
                                                                                     admin))
        cls.addClassCleanup(cls._stop_instances)
        for inst in cls.instances.values():
            inst.start()

        cls.haproxy = Haproxy(cls.tmp, cls.lb_port,
                              {n: (i.ip, i.port, i.admin_port)
                               for n, i in cls.instances.items()})
        cls.addClassCleanup(cls.haproxy.stop)
        cls.haproxy.start()
        for name in cls.instances:
            cls.haproxy.wait_status(name, "UP")

    @classmethod
    def egressd_config(cls, ip: str, port: int, admin: int) -> str:
        return f"""version: 1
workers: 2
listeners:
  - address: "{ip}:{port}"
    proxy_protocol: required
    trusted_proxies: ["{LB_SOURCE}/32"]
admin:
  address: "{ip}:{admin}"
gates:
  sources: ["{ALLOWED_CLIENT}/32"]
  connect_ports: [{cls.https_origin.port}]
  http_ports: [{cls.http_origin.port}]
destinations:
  allow: ["{ORIGIN_IP}/32"]
rules:
  - name: saas
    action: allow
    domains: ["{SAAS_NAME}"]
egress:
  bind: "{EGRESS_IP}"
dns:
  servers: ["{cls.dns.address}"]
log:
  level: info
  format: json
  access: stdout
drain:
  delay: {DRAIN_DELAY}
  timeout: {DRAIN_TIMEOUT}
"""

    @classmethod
    def _stop_instances(cls):
        # Both drains at once (each waits drain.delay), then collect them.
        for inst in cls.instances.values():
            if inst.alive():
                inst.sigterm()
        for inst in cls.instances.values():
            if inst.proc is not None:
                inst.proc.stop(check=False)

    def setUp(self):
        # Every test starts from both targets running and in service, whatever the previous
        # test did to them.
        for inst in self.instances.values():
            if not inst.alive():
                if inst.proc is not None:
                    inst.proc.kill()
                inst.start()
        for name in self.instances:
            self.haproxy.wait_status(name, "UP")

    # -- helpers ----------------------------------------------------------------------------

    @property
    def lb_url(self) -> str:
        return f"http://{LB_IP}:{self.lb_port}"

    def https_url(self, path: str) -> str:
        return f"https://{SAAS_NAME}:{self.https_origin.port}{path}"

    def http_url(self, path: str) -> str:
        return f"http://{SAAS_NAME}:{self.http_origin.port}{path}"

    def http_request(self, path: str, keep_alive: bool) -> bytes:
        """An absolute-form GET to the plain-HTTP origin, as a client of the proxy sends it."""
        close = "" if keep_alive else "Connection: close\r\n"
        return (f"GET {self.http_url(path)} HTTP/1.1\r\n"
                f"Host: {SAAS_NAME}:{self.http_origin.port}\r\n{close}\r\n").encode()

    def curl(self, source: str, url: str, *extra: str) -> tuple[int, str, int, int, bytes, str]:
        """(curl exit, http_code, http_connect, local_port, body, stderr) of one request
        through HAProxy, curl bound to source."""
        p = run_curl(["--interface", source, "-x", self.lb_url, "--max-time", CURL_MAX_TIME,
                      "--cacert", self.ca.ca_cert,
                      "-w", "\n%{http_code} %{http_connect} %{local_port}", *extra, url],
                     timeout=60)
        body, _, tail = p.stdout.rpartition(b"\n")
        parts = tail.decode().split()
        code, connect, lport = (parts + ["0", "0", "0"])[:3]
        return p.returncode, code, int(connect), int(lport), body, p.stderr.decode()

    def curl_check(self, source: str, url: str) -> Optional[str]:
        """None when the request succeeded and the origin saw the egress IP, else why not."""
        rc, code, connect, _, body, err = self.curl(source, url)
        if rc != 0 or code != "200" or body != EGRESS_IP.encode() + b"\n":
            return f"curl exit {rc}, status {code}, CONNECT {connect}, body {body[:200]!r}, {err}"
        return None

    def access_entries(self) -> list[tuple[str, dict]]:
        return [(n, e) for n, i in self.instances.items() for e in i.access_entries()]

    def wait_access(self, pred: Callable[[dict], bool], what: str) -> tuple[str, dict]:
        found = wait_until(lambda: next(((n, e) for n, e in self.access_entries() if pred(e)),
                                        None), GUARD)
        if found is None:
            self.fail(f"no access-log line for {what}\n" + self.diagnostics())
        return found

    def diagnostics(self) -> str:
        return ("\n".join(i.tail() for i in self.instances.values()) + "\n"
                + self.haproxy.describe())

    def assertThroughLb(self, entry: dict, client: str, port: int):
        self.assertEqual(entry["client_addr"], client, entry)
        self.assertEqual(entry["proxy_addr"], client, entry)
        self.assertEqual(entry["client_port"], port, entry)
        self.assertIsNotNone(entry["lb_peer"], entry)
        self.assertEqual(entry["lb_peer"].rpartition(":")[0], LB_SOURCE, entry)

    # -- basic path -------------------------------------------------------------------------

    def test_10_https_connect_through_nlb(self):
        rc, code, connect, lport, body, err = self.curl(ALLOWED_CLIENT, self.https_url("/ip"))
        self.assertEqual((rc, connect, code), (0, 200, "200"), err + self.diagnostics())
        self.assertEqual(body, EGRESS_IP.encode() + b"\n", "the origin saw another source")
        name, e = self.wait_access(lambda e: e.get("method") == "CONNECT"
                                   and e.get("client_port") == lport, "the CONNECT")
        self.assertThroughLb(e, ALLOWED_CLIENT, lport)
        self.assertEqual(e["status"], 200, e)
        self.assertEqual(e["target"], f"{SAAS_NAME}:{self.https_origin.port}", e)
        self.assertEqual(e["rule"], "saas", e)
        self.assertEqual(e["egress_addr"], EGRESS_IP, e)
        self.assertEqual(e["upstream_addr"], f"{ORIGIN_IP}:{self.https_origin.port}", e)
        self.assertIn(e["relay"], ("splice", "copy", "copy_fallback"), e)

    def test_11_plain_http_through_nlb(self):
        tag = f"plain-{os.getpid()}"
        rc, code, _, lport, body, err = self.curl(ALLOWED_CLIENT, self.http_url(f"/echo?{tag}"))
        self.assertEqual((rc, code), (0, "200"), err + self.diagnostics())
        echo = json.loads(body)
        self.assertEqual(echo["peer"], EGRESS_IP, "the origin saw another source")
        headers = [(k.lower(), v) for k, v in echo["headers"]]
        # The real client, from the PROXY v2 header, not HAProxy's address.
        self.assertEqual([v for k, v in headers if k == "x-forwarded-for"], [ALLOWED_CLIENT])
        self.assertEqual([v for k, v in headers if k == "via"], ["1.1 egressd"])
        name, e = self.wait_access(lambda e: (e.get("target") or "").endswith(tag),
                                   "the plain-HTTP request")
        self.assertThroughLb(e, ALLOWED_CLIENT, lport)
        self.assertEqual((e["method"], e["status"], e["egress_addr"]),
                         ("GET", 200, EGRESS_IP), e)

    def test_12_both_targets_take_traffic(self):
        ports = []
        for i in range(6):
            rc, code, _, lport, body, err = self.curl(ALLOWED_CLIENT,
                                                      self.http_url(f"/ip?rr={i}"))
            self.assertEqual((rc, code), (0, "200"), err)
            ports.append(lport)
        served = {}
        for p in ports:
            name, _ = self.wait_access(lambda e, p=p: e.get("client_port") == p
                                       and "?rr=" in (e.get("target") or ""), f"port {p}")
            served[name] = served.get(name, 0) + 1
        self.assertEqual(set(served), set(self.instances),
                         f"round robin over both targets expected, got {served}")

    def test_13_origin_admits_only_the_egress_address(self):
        # Control: the success above depends on egress.bind. A direct request from another
        # local address is refused by the origin itself.
        before = len(self.http_origin.refused)
        with RawClient(ORIGIN_IP, self.http_origin.port, source=ALLOWED_CLIENT) as c:
            c.send(f"GET /ip HTTP/1.1\r\nHost: {SAAS_NAME}\r\n\r\n".encode())
            self.assertEqual(c.read_response().status, 403)
        self.assertEqual(len(self.http_origin.refused), before + 1)
        raw = socket.create_connection((ORIGIN_IP, self.https_origin.port), timeout=GUARD,
                                       source_address=(ALLOWED_CLIENT, 0))
        with self.assertRaises((ssl.SSLError, OSError)):
            with self.ca.client_context().wrap_socket(raw, server_hostname=SAAS_NAME) as tls:
                tls.sendall(b"GET /ip HTTP/1.1\r\nHost: x\r\n\r\n")
                if not tls.recv(100):
                    raise ConnectionResetError("closed")
        raw.close()

    def test_14_authenticated_user_logged_not_forwarded(self):
        # What Zscaler's "Insert X-Authenticated-User" (and similar) sends: logged as user, on
        # plain HTTP and on CONNECT, never passed on to the origin.
        tag = f"xau-{os.getpid()}"
        rc, code, _, lport, body, err = self.curl(
            ALLOWED_CLIENT, self.http_url(f"/echo?{tag}"),
            "-H", "X-Authenticated-User: alice@example.com")
        self.assertEqual((rc, code), (0, "200"), err)
        names = [k.lower() for k, _ in json.loads(body)["headers"]]
        self.assertNotIn("x-authenticated-user", names)
        _, e = self.wait_access(lambda e: (e.get("target") or "").endswith(tag), "the GET")
        self.assertEqual(e["user"], "alice@example.com", e)
        rc, code, connect, lport, body, err = self.curl(
            ALLOWED_CLIENT, self.https_url("/ip"),
            "--proxy-header", "X-Authenticated-User: bob@example.com")
        self.assertEqual((rc, connect), (0, 200), err)
        _, e = self.wait_access(lambda e: e.get("method") == "CONNECT"
                                and e.get("client_port") == lport, "the CONNECT")
        self.assertEqual(e["user"], "bob@example.com", e)

    # -- denials ----------------------------------------------------------------------------

    def test_20_denied_client_gets_403_with_its_real_address_logged(self):
        served_before = (self.http_origin.request_count(), self.https_origin.request_count(),
                         len(self.http_origin.refused), len(self.https_origin.refused))
        rc, code, _, lport, body, err = self.curl(DENIED_CLIENT,
                                                  self.http_url("/ip?denied-plain"), "-i")
        self.assertEqual(code, "403", err + self.diagnostics())
        self.assertRegex(body.decode("latin-1"),
                         r"(?im)^proxy-status:\s*egressd;\s*error=http_request_denied")
        name, e = self.wait_access(lambda e: e.get("client_port") == lport
                                   and e.get("client_addr") == DENIED_CLIENT, "the denied GET")
        self.assertThroughLb(e, DENIED_CLIENT, lport)
        self.assertEqual((e["status"], e["error"]), (403, "source_denied"), e)
        self.assertIsNone(e["egress_addr"], e)

        rc, code, connect, lport, body, err = self.curl(DENIED_CLIENT,
                                                        self.https_url("/ip?denied-tls"))
        self.assertNotEqual(rc, 0)
        self.assertEqual(connect, 403, err)
        name, e = self.wait_access(lambda e: e.get("client_port") == lport
                                   and e.get("method") == "CONNECT", "the denied CONNECT")
        self.assertThroughLb(e, DENIED_CLIENT, lport)
        self.assertEqual((e["status"], e["error"]), (403, "source_denied"), e)
        # Nothing reached the origin, not even a connection it would have refused.
        self.assertEqual((self.http_origin.request_count(), self.https_origin.request_count(),
                          len(self.http_origin.refused), len(self.https_origin.refused)),
                         served_before)

    def test_21_name_without_rule_is_denied(self):
        before = self.https_origin.connections
        rc, code, connect, lport, body, err = self.curl(
            ALLOWED_CLIENT, f"https://{OTHER_NAME}:{self.https_origin.port}/ip")
        self.assertEqual(connect, 403, err)
        name, e = self.wait_access(lambda e: e.get("client_port") == lport
                                   and e.get("method") == "CONNECT", "the rule-denied CONNECT")
        self.assertThroughLb(e, ALLOWED_CLIENT, lport)
        self.assertEqual((e["status"], e["error"]), (403, "rule_denied"), e)
        self.assertEqual(self.https_origin.connections, before)

    def test_22_lb_cannot_be_bypassed(self):
        inst = self.instances["a"]
        # A client talking to a target directly (no PROXY header, untrusted peer) is closed
        # without an answer; so is a forged PROXY v2 header claiming the allowed address.
        with RawClient(inst.ip, inst.port, source=ALLOWED_CLIENT) as c:
            c.try_send(self.http_request("/ip?bypass", keep_alive=False))
            self.assertEqual(c.read_until_close(), b"")
        src = socket.inet_aton(ALLOWED_CLIENT) + socket.inet_aton(inst.ip)
        forged = (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + (12).to_bytes(2, "big")
                  + src + (40000).to_bytes(2, "big") + inst.port.to_bytes(2, "big"))
        with RawClient(inst.ip, inst.port, source=DENIED_CLIENT) as c:
            c.try_send(forged + self.http_request("/ip?forged", keep_alive=False))
            self.assertEqual(c.read_until_close(), b"")
        self.assertFalse(any("bypass" in (e.get("target") or "") or
                             "forged" in (e.get("target") or "")
                             for _, e in self.access_entries()))
        self.assertFalse(any(r["target"].endswith(("bypass", "forged"))
                             for r in self.http_origin.requests))

    # -- rolling restart and failure ----------------------------------------------------------

    def _drain_and_restart(self, load: Load, name: str) -> None:
        inst = self.instances[name]
        other = next(i for n, i in self.instances.items() if n != name)
        # Tunnels opened on a quiet balancer alternate over the two targets (round robin), so
        # some ride through this target's drain.
        load.pause()
        tunnels = [Tunnel(self) for _ in range(4)]
        for t in tunnels:
            t.request()
        load.resume()
        old = inst.proc
        other_before = len(other.access_entries())

        inst.sigterm()
        if not wait_until(lambda: inst.readyz() == 503, GUARD):
            self.fail(f"{name}'s /readyz did not turn 503 after SIGTERM\n" + inst.tail())
        # HAProxy sees the 503 and takes the target out of rotation ...
        self.haproxy.wait_status(name, "DOWN")
        # ... well before the drain delay ends and the listener closes.
        if not wait_until(inst.listener_refuses, GUARD, 0.05):
            self.fail(f"{name}'s listener still accepts after the drain delay\n"
                      + self.diagnostics())
        load.wait_more(10, f"{name} out of rotation")
        # Tunnels opened before the SIGTERM still work after the listener closed.
        for t in tunnels:
            t.request()
            t.request()
            t.close()
        code = old.proc.wait(GUARD)
        old.stop(check=False)
        self.assertEqual(code, 0, f"{name} drain must end with exit 0\n" + inst.tail())
        self.assertFalse(any("drain timeout" in l for l in old.stderr_lines), inst.tail())
        # The other target served the traffic meanwhile.
        self.assertGreater(len(other.access_entries()), other_before)
        tunnel_ports = {t.client_port for t in tunnels}
        self.assertTrue(any(e.get("method") == "CONNECT" and e.get("client_port") in tunnel_ports
                            for e in old.access_entries()),
                        f"no tunnel rode through {name}'s drain (round robin broken?)")

        # Start it again; HAProxy puts it back once /readyz answers 200 (rise checks).
        new = inst.start()
        self.haproxy.wait_status(name, "UP")
        if not wait_until(lambda: len(new.access_entries()) > 0, GUARD):
            self.fail(f"restarted {name} takes no traffic\n" + self.diagnostics())

    def test_80_rolling_restart_loses_no_request(self):
        errors_before = self.haproxy.connect_errors()
        load = Load(self).start()
        try:
            load.wait_more(20, "warm-up")
            self._drain_and_restart(load, "a")
            load.wait_more(10, "after a's restart")
            self._drain_and_restart(load, "b")
            load.wait_more(20, "after b's restart")
        finally:
            load.stop()
        summary = (f"{load.ok} requests ok {load.ok_by_kind}, keep-alive retries "
                   f"{load.keepalive_retries}")
        self.assertEqual(load.failures, [], summary + "\n" + self.diagnostics())
        for kind, n in load.ok_by_kind.items():
            self.assertGreater(n, 0, f"no {kind} request completed: {summary}")
        # Lossless on its own, without HAProxy's retries: no connection was ever sent to a
        # target whose listener had closed (an NLB does not retry a refused connect).
        self.assertEqual(self.haproxy.connect_errors(), errors_before,
                         "HAProxy had to retry connects during the rolling restart: the "
                         "target left rotation after its listener closed\n"
                         + self.haproxy.describe())
        log = self.haproxy.log_text()
        for name in self.instances:
            # HAProxy took each target out because its health check got 503, not because the
            # connection failed.
            self.assertRegex(log, rf"Server egressd/{name} is DOWN, reason: Layer7 wrong "
                                  rf"status, code: 503", self.haproxy.describe())
        print(f"\n  rolling restart: {summary}", flush=True)

    def test_90_sigkill_one_target_other_serves(self):
        victim, survivor = self.instances["b"], self.instances["a"]
        errors_before = self.haproxy.connect_errors()
        load = Load(self).start()
        try:
            load.wait_more(10, "warm-up")
            # Requests in flight at the instant of a SIGKILL are lost with the process (as on
            # any crash); the point here is what happens to the requests that come after it.
            load.pause()
            victim.proc.kill()
            ok_before = load.ok
            survivor_before = len(survivor.access_entries())
            load.resume()
            # Until the checks notice, connects to the dead target are refused and HAProxy
            # retries them on the survivor (retries + redispatch) ...
            load.wait_more(10, "right after the kill")
            self.haproxy.wait_status("b", "DOWN")
            # ... then it is out of rotation and everything goes to the survivor directly.
            load.wait_more(20, "b down")
        finally:
            load.stop()
        self.assertEqual(load.failures, [], self.diagnostics())
        # Every request after the kill went to the survivor: one access-log line each (a
        # line is written when a request or tunnel ends, so wait for the last ones).
        want = load.ok - ok_before
        if not wait_until(lambda: len(survivor.access_entries()) - survivor_before >= want,
                          GUARD):
            self.fail(f"survivor logged {len(survivor.access_entries()) - survivor_before} "
                      f"of {want} requests\n" + self.diagnostics())
        self.assertRegex(self.haproxy.log_text(), r"Server egressd/b is DOWN, reason: Layer4 ",
                         self.haproxy.describe())
        errors = self.haproxy.connect_errors()
        print(f"\n  after SIGKILL: {load.ok} requests ok {load.ok_by_kind}; HAProxy retried "
              f"{errors['wretr'] - errors_before['wretr']} connect(s), redispatched "
              f"{errors['wredis'] - errors_before['wredis']}", flush=True)


if __name__ == "__main__":
    unittest.main()
