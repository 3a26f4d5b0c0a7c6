"""Test harness for egressd integration tests (Python 3.11 standard library only).

Everything here runs on loopback: egressd is started on 127.0.0.1 port 0 and every origin binds
127.0.0.1 (or ::1) port 0. Nothing asserts on wall time; timeouts are failure guards only.

Pieces:
- Egressd: start/stop the binary, capture stdout (access log) and stderr (diagnostics) through
  reader threads, discover the listening port from the "listening on HOST:PORT (proxy)" line.
- RawClient / HttpResponse: a byte-level client that reads one HTTP response at a time
  (Content-Length, chunked and close-delimited framing) and detects a close by the peer.
- Origins (each a TcpServer on a background thread): HttpOrigin (plain or TLS), SpyOrigin,
  EchoOrigin, SinkOrigin (reads to EOF, answers a digest), ServerHalfCloseOrigin (sends, shuts
  its write side, keeps reading).
- TestCA: a CA and a server certificate for "localhost"/127.0.0.1 made with the openssl CLI.
"""

from __future__ import annotations

import hashlib
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
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Optional

REPO_ROOT = Path(__file__).resolve().parents[2]
SUPPORT_DIR = Path(__file__).resolve().parent

# Generous guards for a noisy 2-core machine; never used to assert on speed.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 30.0
IO_TIMEOUT = 30.0

ADMIN_RE = re.compile(r"listening on (\S+):(\d+) \(admin\)")
LISTEN_RE = re.compile(r"listening on (\[[0-9A-Fa-f:.]+\]|[0-9.]+):(\d+) \(proxy\)")
FIXED_SPY_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def egressd_bin() -> str:
    """Path of the binary under test: $EGRESSD_BIN, else build/egressd of this repository."""
    path = os.environ.get("EGRESSD_BIN") or str(REPO_ROOT / "build" / "egressd")
    if not os.access(path, os.X_OK):
        raise AssertionError(
            f"egressd binary not found or not executable: {path} (set EGRESSD_BIN)")
    return path


def payload(n: int, seed: str | int = 0) -> bytes:
    """n random-looking bytes, the same for the same (n, seed) on both sides of a test."""
    return random.Random(f"{seed}:{n}").randbytes(n)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_until(pred: Callable[[], object], timeout: float = 15.0, interval: float = 0.02):
    """Polls pred until it returns a truthy value (returned) or timeout passes (returns None)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def clean_env(extra: Optional[dict] = None) -> dict:
    """A minimal environment for child processes: PATH only (no *_proxy variables)."""
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8"}
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


def netns_skip_reason() -> Optional[str]:
    """Why tests that run egressd in a fresh network namespace (unshare --net) cannot run here,
    or None when they can."""
    if os.geteuid() != 0:
        return "needs root for unshare --net"
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    p = subprocess.run(["unshare", "--net", "--", "true"], capture_output=True)
    if p.returncode != 0:
        return f"unshare --net does not work here: {p.stderr.decode().strip()}"
    return None


def pp_listener_config(mode: str = "required", trusted: str = "127.0.0.1/32") -> str:
    """The start of a config whose one listener (127.0.0.1, port 0) takes PROXY protocol headers
    from `trusted`; start the proxy with env EGRESSD_LISTEN=None so the file's listener counts."""
    return ("version: 1\nlisteners:\n  - address: \"127.0.0.1:0\"\n"
            f"    proxy_protocol: {mode}\n    trusted_proxies: [{trusted}]\n")


def unused_port(host: str = "127.0.0.1") -> tuple[socket.socket, int]:
    """A port nothing listens on: the socket stays bound (not listening) so the port cannot be
    taken by someone else while the caller holds it; a connect to it is refused (RST)."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.bind((host, 0))
    return s, s.getsockname()[1]


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ---------------------------------------------------------------------------------------------
# egressd process
# ---------------------------------------------------------------------------------------------


class Egressd:
    """One egressd process.

    env: EGRESSD_* variables added to the defaults below (a value of None removes a default).
    config: YAML text written to a temp file and passed with --config.
    """

    DEFAULT_ENV = {
        "EGRESSD_LISTEN": "127.0.0.1:0",
        "EGRESSD_ADMIN_LISTEN": "127.0.0.1:0",
        "EGRESSD_WORKERS": "2",
        "EGRESSD_LOG_LEVEL": "debug",
        "EGRESSD_ACCESS_LOG": "stdout",
    }

    def __init__(self, env: Optional[dict] = None, config: Optional[str] = None,
                 args: Iterable[str] = (), binary: Optional[str] = None):
        self.binary = binary or egressd_bin()
        merged = dict(self.DEFAULT_ENV)
        for k, v in (env or {}).items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = str(v)
        self.env = clean_env(merged)
        self.config_text = config
        self.args = list(args)
        self.proc: Optional[subprocess.Popen] = None
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._tmpdir: Optional[str] = None
        self.host: Optional[str] = None
        self.port: Optional[int] = None
        self.returncode: Optional[int] = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> "Egressd":
        cmd = [self.binary]
        text = self.config_text
        if text is None:
            text = "version: 1\n"
        if "drain:" not in text:
            # The production drain delay (5 s) would make every stop() slow; tests that are
            # about draining set their own.
            text += "\ndrain:\n  delay: 100ms\n  timeout: 30s\n"
        self._tmpdir = tempfile.mkdtemp(prefix="egressd-cfg-")
        cfg = os.path.join(self._tmpdir, "egressd.yaml")
        with open(cfg, "w") as f:
            f.write(text)
        cmd += ["--config", cfg]
        cmd += self.args
        self.proc = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for stream, sink in ((self.proc.stdout, self.stdout_lines),
                             (self.proc.stderr, self.stderr_lines)):
            t = threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
            t.start()
            self._threads.append(t)

        def listening():
            for line in self.stderr_lines:
                m = LISTEN_RE.search(line)
                if m:
                    return m
            return None

        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                m = listening()
                if m:
                    break
                if self.proc.poll() is not None and all(not t.is_alive() for t in self._threads):
                    raise AssertionError(
                        f"egressd exited with {self.proc.returncode} before listening:\n"
                        + self.tail())
                left = deadline - time.monotonic()
                if left <= 0:
                    self.proc.kill()
                    self.proc.wait()
                    raise AssertionError("egressd did not report 'listening on ... (proxy)' "
                                         f"within {timeout}s:\n" + self.tail())
                self._cond.wait(min(left, 0.2))
        host = m.group(1)
        self.host = host[1:-1] if host.startswith("[") else host
        self.port = int(m.group(2))
        return self

    def _pump(self, stream, sink: list):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                sink.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def stop(self, check: bool = True, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait for the drain to finish; SIGKILL and fail if it takes over timeout.
        With check, a non-zero exit status fails too (SPEC: drain ends with exit 0)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._join()
                self._cleanup_tmp()
                raise AssertionError(f"egressd did not exit within {timeout}s of SIGTERM:\n"
                                     + self.tail())
        self._join()
        self._cleanup_tmp()
        self.returncode = self.proc.returncode
        if check and self.returncode != 0:
            raise AssertionError(f"egressd exited with status {self.returncode} after SIGTERM:\n"
                                 + self.tail())
        return self.returncode

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._join()
        self._cleanup_tmp()

    def _join(self):
        for t in self._threads:
            t.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except (OSError, AttributeError):
                pass

    def _cleanup_tmp(self):
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop(check=exc[0] is None)

    # -- addresses ------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return hostport(self.host, self.port)

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def client(self, source: Optional[str] = None, timeout: float = IO_TIMEOUT) -> "RawClient":
        """A raw client; its log_mark (taken before it connects) lets wait_access(since=) find
        its entry among entries of earlier connections that had the same port."""
        mark = self.log_mark()
        c = RawClient(self.host, self.port, source=source, timeout=timeout)
        c.log_mark = mark
        return c

    # -- logs -----------------------------------------------------------------------------------

    def admin_address(self) -> str:
        """The admin listener's "host:port" (logged before the proxy's line, so known once
        start() returned)."""
        for line in self.stderr_lines:
            m = ADMIN_RE.search(line)
            if m:
                return f"{m.group(1)}:{m.group(2)}"
        raise AssertionError("no 'listening on ... (admin)' line:\n" + self.tail())

    def metric(self, name: str, **labels: str) -> float:
        """One series' value from a scrape of /metrics (0 when the series is not exported)."""
        with urllib.request.urlopen(f"http://{self.admin_address()}/metrics", timeout=10) as r:
            text = r.read().decode()
        want = {k: str(v) for k, v in labels.items()}
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", line)
            if not m or m.group(1) != name:
                continue
            got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            if all(got.get(k) == v for k, v in want.items()):
                return float(m.group(3))
        return 0.0

    def tail(self, n: int = 40) -> str:
        with self._cond:
            err = self.stderr_lines[-n:]
            out = self.stdout_lines[-10:]
        return ("--- egressd stderr (tail) ---\n" + "\n".join(err)
                + "\n--- egressd stdout (tail) ---\n" + "\n".join(out))

    def log_mark(self) -> int:
        """A position in the access log: entries written after it, for wait_access(since=)."""
        with self._cond:
            return len(self.stdout_lines)

    def access_entries(self, since: int = 0) -> list[dict]:
        """Every access-log line parsed so far (non-JSON stdout lines are skipped); since: only
        those after a log_mark()."""
        out = []
        with self._cond:
            lines = list(self.stdout_lines[since:])
        for line in lines:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def wait_access(self, pred: Callable[[dict], bool], timeout: float = 15.0,
                    since: int = 0) -> dict:
        """The first access-log entry matching pred (after the log_mark() since); fails after
        timeout. Matching on client_port alone needs since: loopback reuses ephemeral ports
        (tcp_tw_reuse), so an earlier connection may have had the same one."""
        found = wait_until(
            lambda: next((e for e in self.access_entries(since) if pred(e)), None), timeout)
        if found is None:
            raise AssertionError("no matching access-log line within "
                                 f"{timeout}s; have:\n" + "\n".join(self.stdout_lines[-20:]))
        return found

    def wait_access_count(self, pred: Callable[[dict], bool], n: int,
                          timeout: float = 15.0, since: int = 0) -> list[dict]:
        got = wait_until(lambda: (lambda l: l if len(l) >= n else None)(
            [e for e in self.access_entries(since) if pred(e)]), timeout)
        if got is None:
            have = [e for e in self.access_entries(since) if pred(e)]
            raise AssertionError(f"expected {n} matching access-log lines, got {len(have)}:\n"
                                 + "\n".join(json.dumps(e) for e in have))
        return got

    def wait_stderr(self, pattern: str, timeout: float = 15.0) -> Optional[str]:
        rx = re.compile(pattern)
        return wait_until(lambda: next((l for l in list(self.stderr_lines) if rx.search(l)),
                                       None), timeout)


# ---------------------------------------------------------------------------------------------
# raw client
# ---------------------------------------------------------------------------------------------


class ConnectionClosed(Exception):
    """The peer closed (or reset) the connection before a complete message arrived."""

    def __init__(self, msg: str, partial: bytes = b""):
        super().__init__(f"{msg} (received so far: {partial[:300]!r})")
        self.partial = partial


class HttpResponse:
    def __init__(self, version: str, status: int, reason: str, headers: list[tuple[str, str]],
                 raw_head: bytes):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.raw_head = raw_head
        self.body = b""
        self.chunked = False
        self.close_delimited = False
        self.interim: list["HttpResponse"] = []

    def header(self, name: str) -> Optional[str]:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def has_token(self, name: str, token: str) -> bool:
        toks = []
        for v in self.header_all(name):
            toks += [t.strip().lower() for t in v.split(",")]
        return token.lower() in toks

    @property
    def proxy_status(self) -> Optional[str]:
        return self.header("Proxy-Status")

    @property
    def proxy_error(self) -> Optional[str]:
        ps = self.proxy_status
        if ps is None:
            return None
        m = re.search(r"(?:^|;)\s*error=\"?([A-Za-z0-9_]+)\"?", ps)
        return m.group(1) if m else None

    def __repr__(self):
        return (f"<HttpResponse {self.version} {self.status} {self.reason!r} "
                f"headers={self.headers!r} body={self.body[:200]!r}>")


def parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    """Splits a message head (without the final CRLF CRLF) into start line and header list."""
    lines = head.split(b"\r\n")
    start = lines[0].decode("latin-1")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(b":")
        headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return start, headers


class RawClient:
    """A TCP client speaking raw bytes, with a read buffer shared by the helpers below."""

    def __init__(self, host: str, port: int, source: Optional[str] = None,
                 timeout: float = IO_TIMEOUT):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False
        self.reset = False
        self.log_mark = 0  # set by Egressd.client()

    @property
    def local_port(self) -> int:
        return self.sock.getsockname()[1]

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def try_send(self, data: bytes) -> bool:
        """sendall that reports instead of raising when the peer has already closed."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self, n: int = 65536) -> bool:
        """Reads more bytes into buf; False at EOF or reset."""
        if self.eof:
            return False
        try:
            data = self.sock.recv(n)
        except ConnectionResetError:
            self.eof = self.reset = True
            return False
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill(min(1 << 20, max(65536, n - len(self.buf)))):
                raise ConnectionClosed(f"closed after {len(self.buf)} of {n} bytes",
                                       bytes(self.buf))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_until(self, delim: bytes, limit: int = 1 << 20) -> bytes:
        """Bytes up to and including delim."""
        start = 0
        while True:
            i = self.buf.find(delim, start)
            if i >= 0:
                out = bytes(self.buf[:i + len(delim)])
                del self.buf[:i + len(delim)]
                return out
            if len(self.buf) > limit:
                raise AssertionError(f"no {delim!r} within {limit} bytes")
            start = max(0, len(self.buf) - len(delim) + 1)
            if not self._fill():
                raise ConnectionClosed(f"closed before {delim!r}", bytes(self.buf))

    def read_until_close(self) -> bytes:
        while self._fill():
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def read_head(self) -> HttpResponse:
        raw = self.read_until(b"\r\n\r\n")
        start, headers = parse_head(raw[:-4])
        parts = start.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise AssertionError(f"bad status line: {start!r}")
        return HttpResponse(parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "",
                            headers, raw)

    def read_response(self, method: str = "GET", skip_interim: bool = True) -> HttpResponse:
        """One complete response. 1xx interim responses are collected in .interim (or returned
        themselves when skip_interim is False)."""
        interim = []
        while True:
            resp = self.read_head()
            if 100 <= resp.status < 200 and resp.status != 101:
                if not skip_interim:
                    return resp
                interim.append(resp)
                continue
            break
        resp.interim = interim
        if (method.upper() == "HEAD" or resp.status in (204, 304)
                or (method.upper() == "CONNECT" and 200 <= resp.status < 300)):
            return resp
        te = ",".join(resp.header_all("Transfer-Encoding")).lower()
        if te:
            if te.replace(" ", "").split(",")[-1] != "chunked":
                raise AssertionError(f"response with Transfer-Encoding {te!r}")
            resp.chunked = True
            resp.body = self.read_chunked_body()
        elif resp.header("Content-Length") is not None:
            resp.body = self.read_exact(int(resp.header("Content-Length")))
        else:
            resp.close_delimited = True
            resp.body = self.read_until_close()
        return resp

    def read_chunked_body(self) -> bytes:
        body = bytearray()
        while True:
            line = self.read_until(b"\r\n", limit=4096)
            size_txt = line[:-2].split(b";")[0].strip()
            if not re.fullmatch(rb"[0-9A-Fa-f]+", size_txt):
                raise AssertionError(f"bad chunk size line from proxy: {line!r}")
            size = int(size_txt, 16)
            if size == 0:
                while self.read_until(b"\r\n", limit=65536) != b"\r\n":
                    pass  # trailer fields
                return bytes(body)
            body += self.read_exact(size)
            crlf = self.read_exact(2)
            if crlf != b"\r\n":
                raise AssertionError(f"chunk data not followed by CRLF: {crlf!r}")

    def wait_closed(self, timeout: float = 15.0) -> tuple[bool, bytes]:
        """(closed, extra): whether the peer closed (FIN or RST) within timeout, and any bytes
        that arrived meanwhile (including what was still buffered)."""
        extra = bytearray(self.buf)
        self.buf.clear()
        if self.eof:
            return True, bytes(extra)
        old = self.sock.gettimeout()
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False, bytes(extra)
                self.sock.settimeout(left)
                try:
                    data = self.sock.recv(65536)
                except socket.timeout:
                    return False, bytes(extra)
                except ConnectionResetError:
                    self.eof = self.reset = True
                    return True, bytes(extra)
                if not data:
                    self.eof = True
                    return True, bytes(extra)
                extra += data
        finally:
            try:
                self.sock.settimeout(old)
            except OSError:
                pass


def exchange(proxy: Egressd, data: bytes, method: str = "GET",
             source: Optional[str] = None) -> tuple[HttpResponse, RawClient]:
    """Opens a client, sends data, reads one response. The caller closes the client."""
    c = proxy.client(source=source)
    try:
        c.send(data)
        return c.read_response(method), c
    except BaseException:
        c.close()
        raise


# ---------------------------------------------------------------------------------------------
# origins
# ---------------------------------------------------------------------------------------------


class TcpServer:
    """Accepts on host:0 in a background thread; one handler thread per connection."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(128)
        self.sock.settimeout(0.25)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Condition()
        self.connections = 0
        self.peers: list[tuple[str, int]] = []
        self.errors: list[str] = []
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._accept_thread: Optional[threading.Thread] = None

    @property
    def address(self) -> str:
        return hostport(self.host, self.port)

    def start(self):
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept_thread.start()
        return self

    def _accept_loop(self):
        while not self._stopping:
            try:
                conn, peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(IO_TIMEOUT)
            with self.lock:
                if self._stopping:
                    conn.close()
                    return
                index = self.connections
                self.connections += 1
                self.peers.append((peer[0], peer[1]))
                self._conns.add(conn)
                self.lock.notify_all()
            t = threading.Thread(target=self._run, args=(conn, peer, index), daemon=True)
            t.start()
            self._threads.append(t)

    def _run(self, conn: socket.socket, peer, index: int):
        try:
            self.handle(conn, peer, index)
        except (OSError, ssl.SSLError, ConnectionClosed):
            pass  # the peer went away; tests check what was recorded
        except Exception as e:  # a bug in the origin itself: surface it
            with self.lock:
                self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            try:
                conn.close()
            except OSError:
                pass
            with self.lock:
                self._conns.discard(conn)
                self.lock.notify_all()

    def handle(self, conn: socket.socket, peer, index: int):
        raise NotImplementedError

    def wait_connections(self, n: int, timeout: float = 15.0) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: self.connections >= n, timeout)

    def stop(self):
        with self.lock:
            self._stopping = True
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            self.sock.close()
        except OSError:
            pass
        if self._accept_thread:
            self._accept_thread.join(5)
        for t in self._threads:
            t.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _move(server: TcpServer, port: int) -> None:
    """Rebinds a TcpServer that has not been started to port on its own host."""
    family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((server.host, port))
        s.listen(128)
    except OSError:
        s.close()
        raise
    s.settimeout(0.25)
    server.sock.close()
    server.sock = s
    server.port = port


def same_port(first_factory, *others) -> tuple:
    """Servers (not started) all listening on one port, each on its own host: a name's
    addresses share the port of the request, so a spy on a forbidden address must listen on the
    allowed origin's port. others: factories of servers, or host strings for a bound socket that
    does not listen (a connect to it is refused). Retries when the port is taken elsewhere."""
    for _ in range(30):
        first = first_factory()
        made = []
        try:
            for o in others:
                if isinstance(o, str):
                    s = socket.socket(socket.AF_INET6 if ":" in o else socket.AF_INET)
                    made.append(s)
                    s.bind((o, first.port))
                else:
                    srv = o()
                    made.append(srv.sock)
                    _move(srv, first.port)
                    made[-1] = srv
            return (first, *made)
        except OSError:
            first.sock.close()
            for m in made:
                (m.sock if isinstance(m, TcpServer) else m).close()
    raise AssertionError("no port free on every host")


class SpyOrigin(TcpServer):
    """Records the exact bytes received on each connection. With respond, answers
    FIXED_SPY_RESPONSE once per connection as soon as a complete head (CRLF CRLF) arrived."""

    def __init__(self, respond: bool = True, response: bytes = FIXED_SPY_RESPONSE,
                 host: str = "127.0.0.1"):
        super().__init__(host)
        self.respond = respond
        self.response = response
        self.data: list[bytearray] = []
        self.closed: list[bool] = []

    def handle(self, conn, peer, index):
        with self.lock:
            self.data.append(bytearray())
            self.closed.append(False)
        buf = self.data[index]
        responded = False
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                with self.lock:
                    buf += chunk
                    self.lock.notify_all()
                if self.respond and not responded and b"\r\n\r\n" in buf:
                    conn.sendall(self.response)
                    responded = True
                    # Answer once and say so (Connection: close + FIN), so a proxy never
                    # reuses this connection; keep reading to record anything sent after.
                    try:
                        conn.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
        finally:
            with self.lock:
                self.closed[index] = True
                self.lock.notify_all()

    def received(self) -> list[bytes]:
        with self.lock:
            return [bytes(b) for b in self.data]

    def total_bytes(self) -> int:
        with self.lock:
            return sum(len(b) for b in self.data)

    def wait_data(self, pred: Callable[[list[bytes]], bool], timeout: float = 15.0) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: pred([bytes(b) for b in self.data]), timeout)


class EchoOrigin(TcpServer):
    """Echoes every byte; at EOF from the peer shuts its own write side. Records per connection
    how many bytes it read and their SHA-256."""

    def __init__(self, host: str = "127.0.0.1"):
        super().__init__(host)
        self.received: dict[int, tuple[int, str]] = {}
        self.eof: dict[int, bool] = {}

    def handle(self, conn, peer, index):
        h = hashlib.sha256()
        n = 0
        with self.lock:
            self.eof[index] = False
        while True:
            chunk = conn.recv(262144)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
            conn.sendall(chunk)
        with self.lock:
            self.received[index] = (n, h.hexdigest())
            self.eof[index] = True
            self.lock.notify_all()
        conn.shutdown(socket.SHUT_WR)


class SinkOrigin(TcpServer):
    """Reads until EOF, then answers the SHA-256 hex (64 bytes) of what it read and closes."""

    def __init__(self, host: str = "127.0.0.1"):
        super().__init__(host)
        self.results: dict[int, tuple[int, str]] = {}

    def handle(self, conn, peer, index):
        h = hashlib.sha256()
        n = 0
        while True:
            chunk = conn.recv(262144)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
        digest = h.hexdigest()
        with self.lock:
            self.results[index] = (n, digest)
            self.lock.notify_all()
        conn.sendall(digest.encode())
        conn.shutdown(socket.SHUT_WR)

    def wait_result(self, index: int = 0, timeout: float = 15.0) -> Optional[tuple[int, str]]:
        with self.lock:
            self.lock.wait_for(lambda: index in self.results, timeout)
            return self.results.get(index)


class ServerHalfCloseOrigin(TcpServer):
    """Sends a payload, shuts down its write side, then keeps reading until EOF and records
    what it read (the tunnel must still carry client->origin bytes after the origin's FIN)."""

    def __init__(self, size: int, host: str = "127.0.0.1"):
        super().__init__(host)
        self.payload = payload(size, "server-half-close")
        self.results: dict[int, bytes] = {}

    def handle(self, conn, peer, index):
        conn.sendall(self.payload)
        conn.shutdown(socket.SHUT_WR)
        got = bytearray()
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            got += chunk
        with self.lock:
            self.results[index] = bytes(got)
            self.lock.notify_all()

    def wait_result(self, index: int = 0, timeout: float = 15.0) -> Optional[bytes]:
        with self.lock:
            self.lock.wait_for(lambda: index in self.results, timeout)
            return self.results.get(index)


class _ConnReader:
    """Buffered reads on a server-side connection."""

    def __init__(self, conn: socket.socket):
        self.conn = conn
        self.buf = bytearray()

    def fill(self) -> bool:
        chunk = self.conn.recv(262144)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def until(self, delim: bytes, limit: int = 1 << 20) -> Optional[bytes]:
        start = 0
        while True:
            i = self.buf.find(delim, start)
            if i >= 0:
                out = bytes(self.buf[:i + len(delim)])
                del self.buf[:i + len(delim)]
                return out
            if len(self.buf) > limit:
                raise ValueError("line too long")
            start = max(0, len(self.buf) - len(delim) + 1)
            if not self.fill():
                if self.buf:
                    raise ConnectionClosed("eof inside message", bytes(self.buf))
                return None

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self.fill():
                raise ConnectionClosed("eof inside body", bytes(self.buf))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


class HttpOrigin(TcpServer):
    """A small HTTP/1.1 origin with keep-alive (plain, or TLS with ssl_context).

    Routes:
      /bytes/N    N deterministic bytes (payload(N, "bytes")), Content-Length
      /chunked/N  the same bytes as a chunked response (varied chunk sizes)
      /close/N    the same bytes, no Content-Length, then close
      /ip         the peer IP as text
      anything else: JSON echo of the request (method, target, version, headers, body digest)
    Every request is recorded in .requests with its peer and connection index.
    """

    def __init__(self, host: str = "127.0.0.1", ssl_context: Optional[ssl.SSLContext] = None):
        super().__init__(host)
        self.ssl_context = ssl_context
        self.requests: list[dict] = []

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context else "http"

    def handle(self, conn, peer, index):
        if self.ssl_context is None:
            return self._serve(conn, peer, index)
        with self.ssl_context.wrap_socket(conn, server_side=True) as tls:
            return self._serve(tls, peer, index)

    def _serve(self, conn, peer, index):
        r = _ConnReader(conn)
        while True:
            head = r.until(b"\r\n\r\n", limit=256 * 1024)
            if head is None:
                return
            start, headers = parse_head(head[:-4])
            method, target, version = start.split(" ", 2)
            hmap: dict[str, list[str]] = {}
            for k, v in headers:
                hmap.setdefault(k.lower(), []).append(v)
            if "100-continue" in ",".join(hmap.get("expect", [])).lower():
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            body, body_raw = b"", b""
            te = ",".join(hmap.get("transfer-encoding", [])).lower()
            if te:
                body, body_raw = self._read_chunked(r)
            elif "content-length" in hmap:
                body = body_raw = r.exact(int(hmap["content-length"][0]))
            conn_tokens = [t.strip().lower() for t in ",".join(hmap.get("connection", []))
                           .split(",")]
            if version == "HTTP/1.1":
                keep = "close" not in conn_tokens
            else:
                keep = "keep-alive" in conn_tokens
            rec = {"method": method, "target": target, "version": version, "headers": headers,
                   "body": body, "body_raw": body_raw, "head_raw": head, "peer": peer[0],
                   "peer_port": peer[1], "conn": index}
            with self.lock:
                self.requests.append(rec)
                self.lock.notify_all()
            keep = self._respond(conn, rec, keep)
            if not keep:
                conn.shutdown(socket.SHUT_WR)
                return

    @staticmethod
    def _read_chunked(r: _ConnReader) -> tuple[bytes, bytes]:
        body = bytearray()
        raw = bytearray()
        while True:
            line = r.until(b"\r\n", limit=65536)
            if line is None:
                raise ConnectionClosed("eof in chunked body")
            raw += line
            size = int(line[:-2].split(b";")[0].strip(), 16)
            if size == 0:
                while True:
                    t = r.until(b"\r\n", limit=65536)
                    if t is None:
                        raise ConnectionClosed("eof in trailers")
                    raw += t
                    if t == b"\r\n":
                        return bytes(body), bytes(raw)
            data = r.exact(size + 2)
            raw += data
            body += data[:-2]

    def _respond(self, conn, rec: dict, keep: bool) -> bool:
        path = rec["target"].split("?")[0]
        head_only = rec["method"] == "HEAD"  # same head as GET, no body
        conn_hdr = b"" if keep else b"Connection: close\r\n"

        def send(head: bytes, body: bytes = b""):
            conn.sendall(head if head_only else head + body)

        m = re.fullmatch(r"/(bytes|chunked|close)/(\d+)", path)
        if m:
            kind, n = m.group(1), int(m.group(2))
            data = payload(n, "bytes")
            if kind == "bytes":
                send(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     + b"Content-Length: %d\r\n" % n + conn_hdr + b"\r\n", data)
                return keep
            if kind == "chunked":
                body = bytearray()
                sizes = [1, 7, 100, 4096, 65536, 3]
                i = pos = 0
                while pos < n:
                    k = min(sizes[i % len(sizes)], n - pos)
                    body += b"%x\r\n" % k + data[pos:pos + k] + b"\r\n"
                    pos += k
                    i += 1
                body += b"0\r\n\r\n"
                send(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n" + conn_hdr + b"\r\n", bytes(body))
                return keep
            # close-delimited: no framing header at all, the end of the body is our FIN
            send(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                 b"Connection: close\r\n\r\n", data)
            return False
        if path == "/ip":
            body = rec["peer"].encode() + b"\n"
            send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                 + b"Content-Length: %d\r\n" % len(body) + conn_hdr + b"\r\n", body)
            return keep
        info = {
            "method": rec["method"], "target": rec["target"], "version": rec["version"],
            "headers": rec["headers"], "body_len": len(rec["body"]),
            "body_sha256": sha256(rec["body"]),
            "body": rec["body"].decode("latin-1") if len(rec["body"]) <= 65536 else None,
            "peer": rec["peer"], "conn": rec["conn"],
        }
        body = json.dumps(info).encode()
        send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
             + b"Content-Length: %d\r\n" % len(body) + conn_hdr + b"\r\n", body)
        return keep

    def wait_requests(self, n: int, timeout: float = 15.0) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: len(self.requests) >= n, timeout)


# ---------------------------------------------------------------------------------------------
# TLS material
# ---------------------------------------------------------------------------------------------


class TestCA:
    """A CA made with the openssl CLI in a temp dir at test time, with a server certificate for
    `names` (DNS) and `ips` (default DNS:localhost, IP:127.0.0.1); issue() makes more (client
    certificates, expired ones). TestCA(cn=...) makes an unrelated CA for "wrong CA" cases."""

    __test__ = False  # not a unittest class

    def __init__(self, names: Iterable[str] = ("localhost",), ips: Iterable[str] = ("127.0.0.1",),
                 cn: str = "egressd test CA"):
        self.dir = tempfile.mkdtemp(prefix="egressd-ca-")
        d = self.dir
        self.ca_cert = os.path.join(d, "ca.pem")
        self.ca_key = os.path.join(d, "ca.key")
        self._openssl(["req", "-x509", *self._EC, "-keyout", self.ca_key, "-out", self.ca_cert,
                       "-days", "2", "-subj", f"/CN={cn}",
                       "-addext", "basicConstraints=critical,CA:TRUE",
                       "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        names = list(names)
        sans = [f"DNS:{n}" for n in names] + [f"IP:{i}" for i in ips]
        self.cert, self.key = self.issue("server", names[0] if names else "server", sans)

    _EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def issue(self, name: str, cn: str, sans: Iterable[str] = (), client: bool = False,
              expired: bool = False, days: int = 2) -> tuple[str, str]:
        """Signs a certificate (CN=cn, subjectAltName=sans such as "DNS:x", "URI:spiffe://x")
        valid for `days` and returns (cert path, key path). expired: valid only in January
        2020."""
        d = self.dir
        cert, key, csr = (os.path.join(d, f"{name}.{x}") for x in ("pem", "key", "csr"))
        ext = os.path.join(d, f"{name}.ext")
        with open(ext, "w") as f:
            if sans:
                f.write("subjectAltName=" + ",".join(sans) + "\n")
            f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}\n")
        self._openssl(["req", "-new", *self._EC, "-keyout", key, "-out", csr,
                       "-subj", f"/CN={cn}"])
        if not expired:
            self._openssl(["x509", "-req", "-in", csr, "-CA", self.ca_cert, "-CAkey",
                           self.ca_key, "-CAcreateserial", "-out", cert, "-days", str(days),
                           "-sha256", "-extfile", ext])
            return cert, key
        # `openssl x509` cannot backdate; `openssl ca` takes explicit dates.
        self._openssl(["ca", "-batch", "-config", self._ca_config(), "-in", csr, "-out", cert,
                       "-notext", "-cert", self.ca_cert, "-keyfile", self.ca_key, "-extfile", ext,
                       "-startdate", "20200101000000Z", "-enddate", "20200102000000Z"])
        return cert, key

    def _ca_config(self) -> str:
        """An `openssl ca` configuration with its database in the CA's directory."""
        d = self.dir
        cnf = os.path.join(d, "ca.cnf")
        if not os.path.exists(cnf):
            with open(cnf, "w") as f:
                f.write(f"[ca]\ndefault_ca=d\n[d]\ndatabase={d}/index.txt\nnew_certs_dir={d}\n"
                        f"serial={d}/serial\npolicy=p\ndefault_md=sha256\nunique_subject=no\n"
                        f"crlnumber={d}/crlnumber\n[p]\ncommonName=supplied\n")
            Path(d, "index.txt").touch()
            Path(d, "crlnumber").write_text("01\n")
            if not os.path.exists(os.path.join(d, "serial")):
                Path(d, "serial").write_text("1000\n")
        return cnf

    def revoke(self, cert: str):
        """Marks a certificate issued by this CA as revoked in its database (see crl())."""
        self._openssl(["ca", "-batch", "-config", self._ca_config(), "-revoke", cert,
                       "-cert", self.ca_cert, "-keyfile", self.ca_key])

    def crl(self, out: str, expired: bool = False, hours: int = 24) -> str:
        """Writes a PEM CRL listing every certificate revoke()d so far to out, due again in
        `hours`; expired: valid only on 1 January 2020. Returns out."""
        dates = (["-crl_lastupdate", "20200101000000Z", "-crl_nextupdate", "20200102000000Z"]
                 if expired else ["-crlhours", str(hours)])
        self._openssl(["ca", "-batch", "-config", self._ca_config(), "-gencrl", "-out", out,
                       "-cert", self.ca_cert, "-keyfile", self.ca_key, *dates])
        return out

    @staticmethod
    def crl_next_update(crl: str) -> float:
        """The CRL's nextUpdate as Unix time."""
        p = subprocess.run(["openssl", "crl", "-noout", "-nextupdate", "-in", crl],
                           capture_output=True, text=True, check=True)
        return float(ssl.cert_time_to_seconds(p.stdout.strip().split("=", 1)[1]))

    @staticmethod
    def not_after(cert: str) -> float:
        """The certificate's notAfter as Unix time."""
        p = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", cert],
                           capture_output=True, text=True, check=True)
        return float(ssl.cert_time_to_seconds(p.stdout.strip().split("=", 1)[1]))

    @staticmethod
    def _openssl(args):
        p = subprocess.run(["openssl", *args], stdin=subprocess.DEVNULL, capture_output=True,
                           env=clean_env(), timeout=60)
        if p.returncode != 0:
            raise AssertionError(f"openssl {' '.join(args)} failed: {p.stderr.decode()}")

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def client_context(self, cert: Optional[tuple[str, str]] = None) -> ssl.SSLContext:
        """Trusts this CA; cert: a (cert, key) pair from issue() to present."""
        ctx = ssl.create_default_context(cafile=self.ca_cert)
        if cert:
            ctx.load_cert_chain(*cert)
        return ctx

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# curl and unittest helpers
# ---------------------------------------------------------------------------------------------


def run_curl(args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    """curl with a clean environment (no proxy variables, no .curlrc); args must include
    --proxy/-x so that curl itself only ever connects to egressd."""
    assert any(a in ("-x", "--proxy") or a.startswith("--proxy=") for a in args), args
    return subprocess.run(["curl", "-q", "--noproxy", "", "-sS", *args],
                          stdin=subprocess.DEVNULL, capture_output=True, env=clean_env(),
                          timeout=timeout)


class ProxyTestCase(unittest.TestCase):
    """Assertions shared by the integration tests."""

    proxy: Egressd = None  # set by subclasses

    @classmethod
    def start_proxy(cls, env: Optional[dict] = None, config: Optional[str] = None) -> Egressd:
        p = Egressd(env=env, config=config)
        p.start()
        cls.addClassCleanup(p.stop)
        return p

    @classmethod
    def start_origin(cls, origin: TcpServer) -> TcpServer:
        origin.start()
        cls.addClassCleanup(origin.stop)
        return origin

    def origin(self, origin: TcpServer) -> TcpServer:
        """Starts an origin for one test."""
        origin.start()
        self.addCleanup(origin.stop)
        return origin

    def client(self, proxy: Optional[Egressd] = None, source: Optional[str] = None) -> RawClient:
        c = (proxy or self.proxy).client(source=source)
        self.addCleanup(c.close)
        return c

    def exchange(self, data: bytes, method: str = "GET", proxy: Optional[Egressd] = None,
                 source: Optional[str] = None) -> tuple[HttpResponse, RawClient]:
        c = self.client(proxy, source)
        c.send(data)
        try:
            return c.read_response(method), c
        except ConnectionClosed as e:
            self.fail(f"no response to {data[:200]!r}: {e}\n"
                      + (proxy or self.proxy).tail())

    def assertProxyError(self, resp: HttpResponse, status, error: Optional[str],
                         proxy: Optional[Egressd] = None):
        """An egressd-generated error: status (an int, or a tuple of acceptable ones),
        Proxy-Status naming egressd with error=<type>, a short plain-text body."""
        ctx = f"\nresponse: {resp!r}\n" + (proxy or self.proxy).tail(15)
        if isinstance(status, tuple):
            self.assertIn(resp.status, status, "status" + ctx)
        else:
            self.assertEqual(resp.status, status, "status" + ctx)
        ps = resp.proxy_status
        self.assertIsNotNone(ps, "missing Proxy-Status" + ctx)
        self.assertRegex(ps, r"^\s*egressd\s*(;|$)", "Proxy-Status must name egressd" + ctx)
        if error is not None:
            self.assertEqual(resp.proxy_error, error, "Proxy-Status error type" + ctx)
        self.assertTrue(resp.body.strip(), "error response must carry a plain-text body" + ctx)
        ctype = (resp.header("Content-Type") or "").lower()
        self.assertTrue(ctype.startswith("text/plain"), "Content-Type text/plain" + ctx)

    def assertClosedByProxy(self, c: RawClient, timeout: float = 15.0, allow_extra=False):
        closed, extra = c.wait_closed(timeout)
        self.assertTrue(closed, f"egressd did not close the connection within {timeout}s")
        if not allow_extra:
            self.assertEqual(extra, b"", "unexpected bytes after the response")
