#!/usr/bin/env python3
"""egressd soak: a bounded mixed load on loopback, sampling egressd's fds, RSS and threads.

Run through bench/soak/run.sh (the README there lists the settings). Python 3.11 stdlib only.

Processes: this driver (asyncio load generator, sampler, verdict), one origin process (this
file with "origin": an HTTP/1.1 keep-alive origin on 127.0.0.2 with a few misbehaving paths, and
an echo server on 127.0.0.3 for CONNECT tunnels) and egressd itself (2 workers, access log off,
SIGHUP reload every SOAK_RELOAD_SECONDS).

Scenarios, picked at random by each of SOAK_CONCURRENCY client tasks in a loop:
  get        keep-alive connection, 1-10 GETs (Content-Length and chunked bodies up to 64 KiB),
             each status and body length checked
  upload     POST with a Content-Length or chunked body up to 256 KiB, the origin's digest checked
  tunnel     CONNECT to the echo server, 1-5 rounds of up to 64 KiB echoed back exactly,
             sometimes ended with a half-close
  corpus     one case of tests/corpus/requests.json (hostile requests), sent whole; the answer
             is read until egressd closes or goes quiet (not checked: tests do that)
  abort_req  a request cut off at a random byte (FIN or RST), with or without a body
  abort_tun  a tunnel reset (RST) after some bytes went through
  abort_resp a 2 MiB response the client resets (or closes) after a random part
  bad_origin the origin resets mid-body, closes short or answers with a non-HTTP banner
  admin      GET /metrics, /status, /readyz on the admin listener

"errors" are outcomes that are wrong whatever the load: a bad status, a body or echo mismatch,
a refused connection, no answer within the 30 s guard. Aborts are counted separately.

Verdict (exit 1 when any fails):
  fds      after the load stops and clients closed, egressd's fd count without pipes returns to
           the baseline (taken before the load) + SOAK_FD_SLACK (5) within the settle time
  pipes    the pipe fds above the baseline are at most the splice pipe pool's idle cap (2 fds x
           64 pipes x 2 workers): pipes kept for reuse, a bounded cache
  active   egressd_connections_active and egressd_tunnels_active are 0 at the end
  rss      growth of VmRSS over the second half of the load <= max(SOAK_RSS_SLACK_MB (16 MiB),
           10 % of the RSS at mid-load); SOAK_RSS_CHECK=0 skips it (sanitizer builds)
  threads  the thread count at the end equals the baseline
  errors   none
  exit     egressd exits 0 on SIGTERM at the end
"""

from __future__ import annotations

import asyncio
import contextvars
import csv
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HTTP_HOST = "127.0.0.2"
WORKERS = 2
SWEEP_CONNECTIONS = 16  # after the load: enough that every worker accepts some (2^-15 misses)
PIPE_POOL_MAX_IDLE = 64  # relay::pipe_pool's default max_idle, per worker
ECHO_HOST = "127.0.0.3"
GUARD = 30.0


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


# ---------------------------------------------------------------------------------------------
# origin process
# ---------------------------------------------------------------------------------------------

BLOB = bytes(random.Random(7).randbytes(1 << 21))  # 2 MiB of fixed random bytes


async def read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None


def parse_head(head: bytes):
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            return None
        headers.setdefault(name.strip().lower(), value.strip())
    return parts[0], parts[1], headers


async def read_body(reader: asyncio.StreamReader, headers: dict) -> bytes | None:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return bytes(body)
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    n = int(headers.get("content-length", "0") or 0)
    return await reader.readexactly(n) if n else b""


def rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


async def origin_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await read_head(reader)
            if head is None:
                return
            parsed = parse_head(head)
            if parsed is None:
                return
            method, path, headers = parsed
            try:
                body = await read_body(reader, headers)
            except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            close = headers.get("connection", "").lower() == "close"
            conn = b"Connection: close\r\n" if close else b""
            if path.endswith("/close"):
                close = True
                conn = b"Connection: close\r\n"
            m = re.fullmatch(r"/(size|chunked|slow|bad)/(\w+)(?:/(\d+))?", path.split("?")[0])
            kind, arg = (m.group(1), m.group(2)) if m else ("other", "")
            if method == "POST":
                digest = hashlib.sha256(body).hexdigest().encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s"
                             % (len(digest), conn, digest))
            elif kind == "size":
                n = min(int(arg), len(BLOB))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (n, conn))
                writer.write(BLOB[:n] if method != "HEAD" else b"")
            elif kind == "chunked":
                n = min(int(arg), len(BLOB))
                out = bytearray(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n%s\r\n" % conn)
                pos = 0
                while pos < n:
                    step = min(n - pos, 8192)
                    out += b"%x\r\n%s\r\n" % (step, BLOB[pos:pos + step])
                    pos += step
                out += b"0\r\n\r\n"
                writer.write(bytes(out))
            elif kind == "slow":
                await asyncio.sleep(int(arg) / 1000)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n%s\r\nslow" % conn)
            elif kind == "bad" and arg == "reset":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + BLOB[:3000])
                await writer.drain()
                await asyncio.sleep(0.01)
                rst(writer)
                return
            elif kind == "bad" and arg == "short":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + BLOB[:10])
                await writer.drain()
                writer.close()
                return
            elif kind == "bad" and arg == "banner":
                writer.write(b"SSH-2.0-OpenSSH_9.2 not http at all\r\n")
                await writer.drain()
                writer.close()
                return
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                close = True
            await writer.drain()
            if close:
                writer.close()
                return
    except (ConnectionError, OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def origin_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def origin_main() -> None:
    http = await asyncio.start_server(origin_http, HTTP_HOST, 0, backlog=1024, limit=1 << 16)
    echo = await asyncio.start_server(origin_echo, ECHO_HOST, 0, backlog=1024)
    print(http.sockets[0].getsockname()[1], echo.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()


# ---------------------------------------------------------------------------------------------
# egressd process and its numbers
# ---------------------------------------------------------------------------------------------

LISTEN_RE = re.compile(r"listening on ([0-9.]+):(\d+) \((proxy|admin)\)")

CONFIG = f"""version: 1
workers: {WORKERS}
# The limits of the hostile-corpus suite, so its limit cases hit them here too.
limits:
  request_line: 256
  header_block: 1KiB
  header_fields: 16
gates:
  connect_ports: ["1-65535"]
  http_ports: ["1-65535"]
destinations:
  allow: ["127.0.0.0/8"]
upstream:
  # Short, so pooled upstream connections are closed soon after the load stops and the fd
  # count can return to its baseline within the settle time.
  idle_timeout: 3s
drain:
  delay: 100ms
  timeout: 10s
"""


class Egressd:
    def __init__(self, binary: str, workdir: str):
        cfg = os.path.join(workdir, "egressd.yaml")
        with open(cfg, "w") as f:
            f.write(CONFIG)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "EGRESSD_LISTEN": "127.0.0.1:0", "EGRESSD_ADMIN_LISTEN": "127.0.0.1:0",
               "EGRESSD_ACCESS_LOG": "off", "EGRESSD_LOG_LEVEL": "info"}
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS", "LSAN_OPTIONS"):
            if k in os.environ:
                env[k] = os.environ[k]
        self.proc = subprocess.Popen([binary, "--config", cfg], env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.log_path = os.path.join(workdir, "egressd.stderr")
        self.lines: list[str] = []
        self.ports: dict[str, int] = {}
        self.ready = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()
        if not self.ready.wait(30) or "proxy" not in self.ports:
            self.proc.kill()
            raise SystemExit("soak: egressd did not start:\n" + "\n".join(self.lines[-30:]))

    def _pump(self):
        with open(self.log_path, "w") as log:
            for raw in iter(self.proc.stderr.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                log.write(line + "\n")
                if len(self.lines) < 10000:
                    self.lines.append(line)
                m = LISTEN_RE.search(line)
                if m:
                    self.ports[m.group(3)] = int(m.group(2))
                    if "proxy" in self.ports and "admin" in self.ports:
                        self.ready.set()
        self.ready.set()

    def sample(self) -> tuple[int, int, int]:
        pid = self.proc.pid
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        rss = threads = -1
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
        return fds, rss, threads

    def sockets(self) -> list[str]:
        """egressd's TCP sockets as "local -> remote STATE" (from /proc/net/tcp)."""
        inodes = set()
        d = f"/proc/{self.proc.pid}/fd"
        for name in os.listdir(d):
            try:
                target = os.readlink(os.path.join(d, name))
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        states = {"01": "ESTABLISHED", "02": "SYN_SENT", "06": "TIME_WAIT", "07": "CLOSE",
                  "08": "CLOSE_WAIT", "0A": "LISTEN", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
                  "09": "LAST_ACK", "0B": "CLOSING"}

        def addr(hexaddr: str) -> str:
            ip, port = hexaddr.split(":")
            if len(ip) == 8:
                return f"{socket.inet_ntoa(bytes.fromhex(ip)[::-1])}:{int(port, 16)}"
            return f"[v6]:{int(port, 16)}"

        out = []
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as f:
                    next(f)
                    for line in f:
                        p = line.split()
                        if p[9] in inodes:
                            inodes.discard(p[9])
                            out.append(f"{addr(p[1])} -> {addr(p[2])} {states.get(p[3], p[3])}")
            except OSError:
                pass
        out += [f"socket inode {i} (not TCP)" for i in sorted(inodes)]
        return sorted(out)

    def fd_kinds(self) -> dict[str, int]:
        kinds: dict[str, int] = {}
        d = f"/proc/{self.proc.pid}/fd"
        for name in os.listdir(d):
            try:
                target = os.readlink(os.path.join(d, name))
            except OSError:
                continue
            kind = target.split(":")[0] if ":" in target else "file"
            kinds[kind] = kinds.get(kind, 0) + 1
        return kinds


# ---------------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------------

class Stats:
    def __init__(self):
        self.done: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.aborts = 0
        self.examples: list[str] = []

    def ok(self, scenario: str):
        self.done[scenario] = self.done.get(scenario, 0) + 1

    def error(self, scenario: str, what: str):
        self.errors[scenario] = self.errors.get(scenario, 0) + 1
        if len(self.examples) < 20:
            self.examples.append(f"{scenario}: {what}")

    @property
    def total(self) -> int:
        return sum(self.done.values())

    @property
    def total_errors(self) -> int:
        return sum(self.errors.values())


class Failure(Exception):
    pass


async def read_response(reader: asyncio.StreamReader, head_only: bool = False):
    """One response: (status, headers, body). Raises Failure on a malformed or cut response."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        raise Failure(f"closed before a response head ({len(e.partial)} bytes)")
    parsed = head.decode("latin-1").split("\r\n")
    status = int(parsed[0].split(" ")[1])
    headers = {}
    for line in parsed[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    if head_only:
        return status, headers, b""
    try:
        if "chunked" in headers.get("transfer-encoding", ""):
            body = bytearray()
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    break
                body += await reader.readexactly(size)
                await reader.readexactly(2)
            return status, headers, bytes(body)
        if "content-length" in headers:
            return status, headers, await reader.readexactly(int(headers["content-length"]))
        return status, headers, await reader.read(-1)
    except asyncio.IncompleteReadError as e:
        raise Failure(f"response body cut short (status {status}, {len(e.partial)} bytes)")


class Load:
    def __init__(self, proxy_port: int, admin_port: int, http_port: int, echo_port: int,
                 corpus: list[dict], seed: int):
        self.proxy = ("127.0.0.1", proxy_port)
        self.admin = ("127.0.0.1", admin_port)
        self.origin = f"{HTTP_HOST}:{http_port}"
        self.echo = f"{ECHO_HOST}:{echo_port}"
        self.corpus = corpus
        self.stats = Stats()
        self.rng = random.Random(seed)
        self.stop = False
        self.current: contextvars.ContextVar = contextvars.ContextVar("conns")
        self.scenarios = [("get", 30), ("upload", 6), ("tunnel", 20), ("corpus", 14),
                          ("abort_req", 10), ("abort_tun", 8), ("abort_resp", 6),
                          ("bad_origin", 4), ("admin", 2)]

    async def connect(self, addr=None):
        reader, writer = await asyncio.open_connection(*(addr or self.proxy), limit=1 << 20)
        self.current.get().append(writer)
        return reader, writer

    async def client(self, n: int):
        rng = random.Random(self.rng.random())
        names = [s for s, _ in self.scenarios]
        weights = [w for _, w in self.scenarios]
        while not self.stop:
            name = rng.choices(names, weights)[0]
            conns: list[asyncio.StreamWriter] = []
            self.current.set(conns)
            try:
                await asyncio.wait_for(getattr(self, "s_" + name)(rng), GUARD)
                self.stats.ok(name)
            except Failure as e:
                self.stats.error(name, str(e))
            except asyncio.TimeoutError:
                self.stats.error(name, f"no outcome within {GUARD:.0f} s")
            except (ConnectionError, OSError) as e:
                self.stats.error(name, f"{type(e).__name__}: {e}")
            finally:
                for w in conns:  # whatever a scenario left open when it failed
                    if not w.transport.is_closing():
                        w.transport.abort()

    async def s_get(self, rng):
        reader, writer = await self.connect()
        try:
            count = rng.randint(1, 10)
            for i in range(count):
                n = rng.choice([0, 1, 100, 1000, 16384, rng.randint(0, 65536)])
                kind = rng.choice(["size", "size", "chunked"])
                last = i == count - 1 and rng.random() < 0.5
                writer.write(f"GET http://{self.origin}/{kind}/{n} HTTP/1.1\r\nHost: {self.origin}"
                             f"\r\n{'Connection: close' + chr(13) + chr(10) if last else ''}\r\n"
                             .encode())
                status, _, body = await read_response(reader)
                if status != 200 or body != BLOB[:n]:
                    raise Failure(f"GET /{kind}/{n}: status {status}, {len(body)} body bytes")
        finally:
            writer.close()

    async def s_upload(self, rng):
        reader, writer = await self.connect()
        try:
            n = rng.choice([0, 10, 4096, rng.randint(0, 262144)])
            body = BLOB[:n]
            if rng.random() < 0.5:
                writer.write(f"POST http://{self.origin}/up HTTP/1.1\r\nHost: {self.origin}\r\n"
                             f"Content-Length: {n}\r\n\r\n".encode() + body)
            else:
                writer.write(f"POST http://{self.origin}/up HTTP/1.1\r\nHost: {self.origin}\r\n"
                             f"Transfer-Encoding: chunked\r\n\r\n".encode())
                pos = 0
                while pos < n:
                    step = min(n - pos, rng.randint(1, 32768))
                    writer.write(b"%x\r\n%s\r\n" % (step, body[pos:pos + step]))
                    pos += step
                writer.write(b"0\r\n\r\n")
            status, _, got = await read_response(reader)
            if status != 200 or got != hashlib.sha256(body).hexdigest().encode():
                raise Failure(f"POST {n} bytes: status {status}, digest {got[:16]!r}")
        finally:
            writer.close()

    async def open_tunnel(self):
        reader, writer = await self.connect()
        writer.write(f"CONNECT {self.echo} HTTP/1.1\r\nHost: {self.echo}\r\n\r\n".encode())
        status, _, _ = await read_response(reader, head_only=True)
        if status != 200:
            writer.close()
            raise Failure(f"CONNECT {self.echo}: status {status}")
        return reader, writer

    async def s_tunnel(self, rng):
        reader, writer = await self.open_tunnel()
        try:
            for _ in range(rng.randint(1, 5)):
                n = rng.choice([1, 100, 4096, rng.randint(1, 65536)])
                off = rng.randint(0, len(BLOB) - n)
                writer.write(BLOB[off:off + n])
                got = await reader.readexactly(n)
                if got != BLOB[off:off + n]:
                    raise Failure(f"tunnel echo mismatch ({n} bytes)")
            if rng.random() < 0.3:
                writer.write_eof()   # half-close: the echo closes its side, egressd passes it on
                if await reader.read(1) != b"":
                    raise Failure("bytes after the half-close")
        except asyncio.IncompleteReadError as e:
            raise Failure(f"tunnel closed early ({len(e.partial)} bytes)")
        finally:
            writer.close()

    async def s_corpus(self, rng):
        case = rng.choice(self.corpus)
        target = self.echo if case.get("spy_mode") == "raw" else self.origin
        data = expand(case["request"], target)
        reader, writer = await self.connect()
        try:
            writer.write(data)
            if case.get("client_half_close"):
                writer.write_eof()
            while True:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), 1.5)
                except asyncio.TimeoutError:
                    break   # quiet: a case whose connection stays usable, or a tunnel
                if not chunk:
                    break
        except ConnectionResetError:
            pass
        finally:
            writer.transport.abort()

    async def s_abort_req(self, rng):
        reader, writer = await self.connect()
        n = rng.choice([0, 100, 20000])
        req = (f"POST http://{self.origin}/up HTTP/1.1\r\nHost: {self.origin}\r\n"
               f"Content-Length: {n}\r\n\r\n").encode() + BLOB[:n]
        cut = rng.randint(0, len(req) - 1)
        writer.write(req[:cut])
        await writer.drain()
        await asyncio.sleep(rng.choice([0, 0, 0.01, 0.1]))
        self.stats.aborts += 1
        if rng.random() < 0.5:
            rst(writer)
        else:
            writer.close()

    async def s_abort_tun(self, rng):
        reader, writer = await self.open_tunnel()
        n = rng.randint(1, 200000)
        writer.write(BLOB[:n])
        try:
            await asyncio.wait_for(reader.readexactly(rng.randint(0, min(n, 50000))), 5)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass
        self.stats.aborts += 1
        rst(writer)

    async def s_abort_resp(self, rng):
        reader, writer = await self.connect()
        writer.write(f"GET http://{self.origin}/size/{len(BLOB)} HTTP/1.1\r\nHost: {self.origin}"
                     "\r\n\r\n".encode())
        await reader.readuntil(b"\r\n\r\n")
        want = rng.randint(0, 500000)
        while want > 0:
            chunk = await reader.read(min(want, 65536))
            if not chunk:
                raise Failure("response ended before the client aborted it")
            want -= len(chunk)
        self.stats.aborts += 1
        if rng.random() < 0.7:
            rst(writer)
        else:
            writer.close()

    async def s_bad_origin(self, rng):
        what = rng.choice(["reset", "short", "banner"])
        reader, writer = await self.connect()
        try:
            writer.write(f"GET http://{self.origin}/bad/{what} HTTP/1.1\r\nHost: {self.origin}"
                         "\r\n\r\n".encode())
            try:
                status, _, _ = await read_response(reader)
            except Failure:
                return  # cut short and seen as cut short by the client: right
            except ConnectionResetError:
                return
            if status != 502:
                raise Failure(f"/bad/{what}: a complete-looking response (status {status})")
        finally:
            writer.close()

    async def s_admin(self, rng):
        path = rng.choice(["/metrics", "/status", "/readyz", "/healthz"])
        reader, writer = await self.connect(self.admin)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
                         .encode())
            status, _, _ = await read_response(reader)
            if status != 200:
                raise Failure(f"admin {path}: status {status}")
        finally:
            writer.close()


def expand(template: str, origin: str) -> bytes:
    """A corpus request as bytes (tests/corpus/README.md): latin-1 code points, macros."""
    port = origin.rsplit(":", 1)[1]
    s = template.replace("{o}", origin).replace("{p}", port)
    s = re.sub(r"\{rep:(\d+):([^}]*)\}", lambda m: m.group(2) * int(m.group(1)), s)
    s = re.sub(r"\{fields:(\d+)\}",
               lambda m: "".join(f"X-F{i}: v\r\n" for i in range(int(m.group(1)))), s)
    while (m := re.search(r"\{fill:(\d+)(?::\w+)?\}", s)) is not None:
        start = s.rfind("\r\n", 0, m.start())
        start = 0 if start < 0 else start + 2
        end = s.find("\r\n", m.end())
        end = len(s) if end < 0 else end
        n = max(0, int(m.group(1)) - ((end - start) - len(m.group(0))))
        s = s[:m.start()] + "a" * n + s[m.end():]
    while (m := re.search(r"\{fillhead:(\d+)(?::\w+)?\}", s)) is not None:
        head_end = s.find("\r\n\r\n", m.end())
        head_end = len(s) if head_end < 0 else head_end + 4
        n = max(0, int(m.group(1)) - (head_end - len(m.group(0))))
        s = s[:m.start()] + "a" * n + s[m.end():]
    return s.encode("latin-1")


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------

def scrape_active(admin_port: int) -> dict:
    """egressd_connections_active and egressd_tunnels_active from /metrics, summed over labels."""
    with socket.create_connection(("127.0.0.1", admin_port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    text = data.decode("utf-8", "replace")
    out = {}
    for key, metric in (("connections", "egressd_connections_active"),
                        ("tunnels", "egressd_tunnels_active")):
        values = [float(m.group(1)) for m in
                  re.finditer(rf"^{metric}(?:{{[^}}]*}})? (\S+)$", text, re.M)]
        out[key] = int(sum(values)) if values else None
    return out


def series_line(name: str, values: list[int], baseline: int) -> str:
    return (f"  {name:<8} baseline {baseline:>8}  first {values[0]:>8}  last {values[-1]:>8}  "
            f"min {min(values):>8}  max {max(values):>8}")


async def drive() -> int:
    seconds = env_float("SOAK_SECONDS", 600)
    sample_every = env_float("SOAK_SAMPLE_SECONDS", 10)
    concurrency = env_int("SOAK_CONCURRENCY", 32)
    reload_every = env_float("SOAK_RELOAD_SECONDS", 60)
    fd_slack = env_int("SOAK_FD_SLACK", 5)
    settle_max = env_float("SOAK_SETTLE_SECONDS", 30)
    settle_min = env_float("SOAK_SETTLE_MIN_SECONDS", 5)
    rss_slack_kb = env_int("SOAK_RSS_SLACK_MB", 16) * 1024
    rss_check = os.environ.get("SOAK_RSS_CHECK", "1") != "0"
    binary = os.environ.get("EGRESSD_BIN") or str(ROOT / "build" / "egressd")
    csv_path = os.environ.get("SOAK_CSV") or ""
    seed = env_int("SOAK_SEED", int(time.time()))
    corpus_file = ROOT / "tests" / "corpus" / "requests.json"
    with open(corpus_file) as f:
        corpus = json.load(f)["cases"]

    if not os.access(binary, os.X_OK):
        print(f"soak: no egressd binary at {binary} (build it, or set EGRESSD_BIN)")
        return 2
    workdir = tempfile.mkdtemp(prefix="egressd-soak-")
    if not csv_path:
        csv_path = os.path.join(tempfile.gettempdir(), "egressd-soak.csv")
    origin = subprocess.Popen([sys.executable, __file__, "origin"], stdout=subprocess.PIPE,
                              stdin=subprocess.DEVNULL)
    try:
        http_port, echo_port = map(int, origin.stdout.readline().split())
        egressd = Egressd(binary, workdir)
    except BaseException:
        origin.kill()
        raise
    print(f"soak: egressd {binary} (pid {egressd.proc.pid}, 2 workers), proxy "
          f"127.0.0.1:{egressd.ports['proxy']}, admin 127.0.0.1:{egressd.ports['admin']}; "
          f"origin {HTTP_HOST}:{http_port}, echo {ECHO_HOST}:{echo_port}", flush=True)
    print(f"soak: {seconds:.0f} s of load, {concurrency} clients, sample every "
          f"{sample_every:.0f} s, SIGHUP every {reload_every:.0f} s, {len(corpus)} corpus "
          f"cases, seed {seed}; CSV {csv_path}", flush=True)

    load = Load(egressd.ports["proxy"], egressd.ports["admin"], http_port, echo_port, corpus,
                seed)
    rows: list[dict] = []
    t0 = time.monotonic()
    csv_file = open(csv_path, "w", newline="")
    out = csv.writer(csv_file)
    out.writerow(["elapsed_s", "phase", "fds", "rss_kb", "threads", "ops", "errors", "aborts",
                  "reloads"])
    reloads = 0

    def sample(phase: str) -> dict:
        fds, rss, threads = egressd.sample()
        row = {"t": time.monotonic() - t0, "phase": phase, "fds": fds, "rss": rss,
               "threads": threads, "ops": load.stats.total, "errors": load.stats.total_errors,
               "aborts": load.stats.aborts, "reloads": reloads}
        rows.append(row)
        out.writerow([f"{row['t']:.1f}", phase, fds, rss, threads, row["ops"], row["errors"],
                      row["aborts"], reloads])
        csv_file.flush()
        print(f"  t={row['t']:6.1f}s {phase:<8} fds {fds:>5}  rss {rss / 1024:7.1f} MiB  "
              f"threads {threads:>3}  ops {row['ops']:>8}  errors {row['errors']:>4}  "
              f"aborts {row['aborts']:>6}", flush=True)
        return row

    # Baseline: idle, before any traffic (one admin scrape warms nothing that stays open).
    await asyncio.sleep(1)
    base = sample("baseline")
    base_kinds = egressd.fd_kinds()
    base_sockets = egressd.sockets()

    clients = [asyncio.create_task(load.client(i)) for i in range(concurrency)]
    load_start = time.monotonic()
    next_sample = load_start + sample_every
    next_reload = load_start + reload_every
    while (now := time.monotonic()) < load_start + seconds:
        await asyncio.sleep(min(next_sample, next_reload, load_start + seconds) - now)
        now = time.monotonic()
        if now >= next_reload:
            egressd.proc.send_signal(signal.SIGHUP)
            reloads += 1
            next_reload += reload_every
        if now >= next_sample and now < load_start + seconds:
            sample("load")
            next_sample += sample_every
    load.stop = True
    last_load = sample("load")
    await asyncio.wait(clients, timeout=GUARD + 5)
    for c in clients:
        c.cancel()
    load_seconds = time.monotonic() - load_start

    # Settle: every client connection is closed; pooled upstream connections pass their idle
    # timeout (3 s). The pool expires entries lazily (on its next take or put), so after 5 s a
    # sweep of requests the origin answers with "Connection: close" (not pooled) reaches every
    # worker and lets it drop its expired idle connections; then the count must be within the
    # slack and stable for 2 s.
    settle_start = time.monotonic()
    sample("settle")
    base_other = base["fds"] - base_kinds.get("pipe", 0)
    await asyncio.sleep(5)
    held_upstream = [x for x in egressd.sockets() if x not in base_sockets]
    for _ in range(SWEEP_CONNECTIONS):
        try:
            reader, writer = await asyncio.open_connection(*load.proxy)
            writer.write(f"GET http://{load.origin}/size/0/close HTTP/1.1\r\n"
                         f"Host: {load.origin}\r\nConnection: close\r\n\r\n".encode())
            await asyncio.wait_for(read_response(reader), GUARD)
            writer.close()
        except (Failure, OSError, asyncio.TimeoutError) as e:
            load.stats.error("sweep", str(e))
    history: list[int] = []
    while True:
        await asyncio.sleep(1)
        history.append(egressd.sample()[0] - egressd.fd_kinds().get("pipe", 0))
        if os.environ.get("SOAK_DEBUG"):
            print(f"    settle {time.monotonic() - settle_start:5.1f}s: {history[-1]} fds "
                  f"without pipes; {egressd.sockets()}", flush=True)
        waited = time.monotonic() - settle_start
        if waited >= settle_max:
            break
        if (waited >= settle_min and history[-1] <= base_other + fd_slack and len(history) >= 3
                and history[-1] == history[-2] == history[-3]):
            break
    end = sample("end")
    end_sockets = egressd.sockets()
    active = scrape_active(egressd.ports["admin"])
    kinds = egressd.fd_kinds()

    egressd.proc.send_signal(signal.SIGTERM)
    try:
        status = egressd.proc.wait(30)
    except subprocess.TimeoutExpired:
        egressd.proc.kill()
        status = "killed after 30 s"
    origin.kill()
    origin.wait()
    csv_file.close()

    # ---- summary ----
    load_rows = [r for r in rows if r["phase"] == "load"]
    all_rows = [r for r in rows if r["phase"] != "baseline"]
    st = load.stats
    print(f"\n== soak summary: {load_seconds:.0f} s of load, {len(rows)} samples")
    print(series_line("fds", [r["fds"] for r in all_rows], base["fds"]))
    print(series_line("rss_kb", [r["rss"] for r in all_rows], base["rss"]))
    print(series_line("threads", [r["threads"] for r in all_rows], base["threads"]))
    print(f"  operations {st.total} ({st.total / max(load_seconds, 1):.0f}/s): "
          + ", ".join(f"{k} {v}" for k, v in sorted(st.done.items())))
    print(f"  client aborts {st.aborts}; SIGHUP reloads {reloads}; errors {st.total_errors}"
          + (": " + ", ".join(f"{k} {v}" for k, v in sorted(st.errors.items()))
             if st.errors else ""))
    for e in st.examples[:10]:
        print(f"    e.g. {e}")
    print(f"  fds by kind: baseline {base_kinds}, end {kinds}")
    print(f"  sockets held 5 s after the load, before the sweep: {len(held_upstream)} more than "
          f"at the baseline (idle upstream connections the pool had not expired yet)")
    extra = [x for x in end_sockets if x not in base_sockets]
    if extra:
        print(f"  sockets at the end that were not there at the baseline: {extra}")

    verdicts = []
    # Splice pipes a worker keeps for reuse (relay::pipe_pool, at most 64 idle per worker) are
    # a bounded cache, not a leak: they are judged apart from every other descriptor.
    end_pipes, base_pipes = kinds.get("pipe", 0), base_kinds.get("pipe", 0)
    end_other = end["fds"] - end_pipes
    verdicts.append(("fds", end_other <= base_other + fd_slack,
                     f"{end['fds']} at the end, {end_other} without pipes vs {base_other} at the "
                     f"baseline (+{fd_slack} allowed) after the load stopped"))
    pipe_cap = 2 * PIPE_POOL_MAX_IDLE * WORKERS
    verdicts.append(("pipes", end_pipes - base_pipes <= pipe_cap,
                     f"{end_pipes - base_pipes} pipe fds above the baseline: idle splice pipes "
                     f"kept for reuse (bound {pipe_cap}: 64 pipes per worker)"))
    verdicts.append(("active", active == {"connections": 0, "tunnels": 0},
                     f"egressd_connections_active / egressd_tunnels_active at the end: "
                     f"{active.get('connections')} / {active.get('tunnels')}"))
    mid_t = load_start - t0 + load_seconds / 2
    mid = min(load_rows, key=lambda r: abs(r["t"] - mid_t)) if load_rows else last_load
    growth = last_load["rss"] - mid["rss"]
    bound = max(rss_slack_kb, mid["rss"] // 10)
    if rss_check:
        verdicts.append(("rss", growth <= bound,
                         f"second half of the load: {mid['rss']} -> {last_load['rss']} KiB "
                         f"({growth:+d} KiB, bound {bound} KiB)"))
    else:
        print(f"  rss second half: {growth:+d} KiB (not judged: SOAK_RSS_CHECK=0)")
    verdicts.append(("threads", end["threads"] == base["threads"],
                     f"end {end['threads']} vs baseline {base['threads']}, "
                     f"max {max(r['threads'] for r in all_rows)}"))
    verdicts.append(("errors", st.total_errors == 0, f"{st.total_errors} of {st.total}"))
    verdicts.append(("exit", status == 0, f"egressd exit status {status} after SIGTERM"))
    for name, ok, text in verdicts:
        word = "FAIL" if not ok else "flat" if name in ("fds", "pipes", "rss", "threads") else "ok"
        print(f"  {name:<8} {word}: {text}")
    flat = all(ok for _, ok, _ in verdicts)
    print(f"== soak: {'FLAT (no leak seen)' if flat else 'NOT FLAT / FAILED'}")
    if not flat:
        print("  egressd stderr (last 30 lines):")
        for line in egressd.lines[-30:]:
            print("    " + line)
    if flat and os.environ.get("SOAK_KEEP") != "1":
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"  kept {workdir} (config, egressd.stderr)")
    return 0 if flat else 1


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "origin":
        asyncio.run(origin_main())
        return 0
    return asyncio.run(drive())


if __name__ == "__main__":
    sys.exit(main())
