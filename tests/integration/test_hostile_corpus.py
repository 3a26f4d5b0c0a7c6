"""Hostile-input corpus (data-driven): malformed and ambiguous requests sent as raw bytes, and
misbehaving origins' responses, each split at every byte boundary.

The cases live in tests/corpus/requests.json and tests/corpus/responses.json (format:
tests/corpus/README.md); this file only runs them. Nothing here asserts on wall time: the
timeouts are failure guards.

Request side: every case's bytes are sent to egressd once whole and once split at every byte
boundary k: bytes[:k] (TCP_NODELAY), then a wait until egressd has read them (its socket's
receive queue is empty and it received k bytes, seen through sock_diag, as `ss` does), then
bytes[k:] -- so egressd's parser really sees the two parts in two reads. Each
case has its own spy origin (the target of its requests) that records exactly what it receives.
Every split must give the case's outcome: the responses (status and Proxy-Status error type),
then either a close (with nothing after the last response) or a connection that stays usable (a
further request on it is answered), and at the spy: no connection at all ("nothing"), never a
complete request ("no_complete"), or the exact canonical bytes egressd must send (chunked bodies
are compared decoded, since egressd re-chunks them as they arrive).

Response side: one scripted origin answers request /r/<case>/<k> with the case's bytes split at
k (the same wait, on egressd's upstream socket), then closes (FIN), resets (RST) or keeps the
connection. Each split asks for its own host name (a wildcard DNS stub answers 127.0.0.1), so
egressd's upstream pool, keyed by host, never hands one split's connection to another: every
split meets exactly the connection its own bad response left behind. The client checks status,
interim responses, body and headers, and how the exchange ends: the connection stays usable (a
follow-up request on it gets a fresh, correct answer: no leftover bytes of the bad response), a
clean close, or "incomplete": a response cut short must never look complete to the client.

All splits of all cases run concurrently (an asyncio client, bounded concurrency) against one
egressd per side; each case is reported as its own test. Set EGRESSD_CORPUS=<regex> to run only
the matching cases, EGRESSD_CORPUS_DIR to read the JSON files from elsewhere.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import socket
import struct
import sys
import time
import unittest
from pathlib import Path
from typing import Optional

from dns_stub import QTYPE_A, _parse_question
from egressd_harness import REPO_ROOT, Egressd

CORPUS_DIR = Path(os.environ.get("EGRESSD_CORPUS_DIR") or REPO_ROOT / "tests" / "corpus")
PAUSE_GUARD = 2.0      # longest wait for egressd to read the first part of a split
FALLBACK_PAUSE = 0.015  # without sock_diag: a plain pause between the parts instead
CONCURRENCY = 64       # client connections in flight at once
GUARD = 20.0           # failure guard for any single wait (never a timing assertion)
SETTLE = 0.3           # after every client finished: time for a late upstream connection to show

SPY_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
PROBE_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nprobe"
FRESH_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh"

EGRESSD_CONFIG = """version: 1
limits:
  request_line: 256
  header_block: 1KiB
  header_fields: 16
gates:
  connect_ports: ["1-24", "26-65535"]
  http_ports: ["1-65535"]
destinations:
  allow: ["127.0.0.0/8"]
"""
EGRESSD_ENV = {"EGRESSD_ACCESS_LOG": "off", "EGRESSD_LOG_LEVEL": "info", "EGRESSD_WORKERS": "2"}


def report(msg: str) -> None:
    print(f"[corpus] {msg}", file=sys.stderr, flush=True)


def load(name: str) -> list[dict]:
    with open(CORPUS_DIR / name) as f:
        cases = json.load(f)["cases"]
    only = os.environ.get("EGRESSD_CORPUS")
    if only:
        cases = [c for c in cases if re.search(only, c["name"])]
    return cases


# ---------------------------------------------------------------------------------------------
# templates
# ---------------------------------------------------------------------------------------------

MACRO_FILL = re.compile(r"\{fill:(\d+)(?::(\w+))?\}")
MACRO_FILLHEAD = re.compile(r"\{fillhead:(\d+)(?::(\w+))?\}")


def expand(template: str, ctx: dict) -> bytes:
    """A corpus string as bytes: each code point 0-255 is one byte (latin-1), and the macros of
    tests/corpus/README.md are replaced. ctx holds "o" (host:port), "p" (port) and "pads" (the
    lengths that named {fill}/{fillhead} macros chose, for {pad:NAME})."""
    s = template.replace("{o}", ctx["o"]).replace("{p}", ctx["p"])
    s = re.sub(r"\{rep:(\d+):([^}]*)\}", lambda m: m.group(2) * int(m.group(1)), s)
    s = re.sub(r"\{fields:(\d+)\}",
               lambda m: "".join(f"X-F{i}: v\r\n" for i in range(int(m.group(1)))), s)
    s = re.sub(r"\{pad:(\w+)\}", lambda m: "a" * ctx["pads"][m.group(1)], s)
    while (m := MACRO_FILL.search(s)) is not None:
        start = s.rfind("\r\n", 0, m.start())
        start = 0 if start < 0 else start + 2
        end = s.find("\r\n", m.end())
        n = int(m.group(1)) - ((end - start) - len(m.group(0)))
        assert n >= 0, template
        if m.group(2):
            ctx["pads"][m.group(2)] = n
        s = s[:m.start()] + "a" * n + s[m.end():]
    while (m := MACRO_FILLHEAD.search(s)) is not None:
        head_end = s.find("\r\n\r\n", m.end()) + 4
        n = int(m.group(1)) - (head_end - len(m.group(0)))
        assert n >= 0, template
        if m.group(2):
            ctx["pads"][m.group(2)] = n
        s = s[:m.start()] + "a" * n + s[m.end():]
    return s.encode("latin-1")


def split_points(data: bytes) -> list[int]:
    """0 (the whole message in one write) and every byte boundary inside it."""
    return list(range(0, max(1, len(data))))


# ---------------------------------------------------------------------------------------------
# "egressd has read it": the kernel's view of egressd's socket (NETLINK_SOCK_DIAG)
# ---------------------------------------------------------------------------------------------


class SockDiag:
    """Looks up one IPv4 TCP socket by its exact 4-tuple through NETLINK_SOCK_DIAG (what `ss`
    uses) and reports (bytes in its receive queue, bytes it received in all). A split is only
    useful if egressd read the first part before the second arrived: the sender waits until the
    receiving socket got the bytes and its receive queue is empty."""

    NETLINK_SOCK_DIAG = 4
    SOCK_DIAG_BY_FAMILY = 20
    INET_DIAG_INFO = 2

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, self.NETLINK_SOCK_DIAG)
        self.seq = 0
        self.stats = collections.Counter()
        self.unread: list[str] = []  # labels of the splits whose first part was not read alone

    def state(self, sport: int, dport: int) -> Optional[tuple[int, int]]:
        """(unread bytes, bytes received) of the socket 127.0.0.1:sport <-> 127.0.0.1:dport,
        None when there is no such socket."""
        self.seq += 1
        lo = socket.inet_aton("127.0.0.1") + bytes(12)
        sockid = (struct.pack("!HH", sport, dport) + lo + lo
                  + struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF))
        req = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP,
                          1 << (self.INET_DIAG_INFO - 1), 0, 0xFFFFFFFF) + sockid
        self.sock.send(struct.pack("=IHHII", 16 + len(req), self.SOCK_DIAG_BY_FAMILY, 1,
                                   self.seq, 0) + req)
        while True:
            data = self.sock.recv(65536)
            length, mtype, _, seq = struct.unpack("=IHHI", data[:12])
            if seq == self.seq:
                break
        if mtype != self.SOCK_DIAG_BY_FAMILY:
            return None
        msg = data[16:length]
        unread = struct.unpack("=I", msg[56:60])[0]
        pos = 72
        while pos + 4 <= len(msg):
            alen, atype = struct.unpack("=HH", msg[pos:pos + 4])
            if atype == self.INET_DIAG_INFO and alen >= 4 + 136:
                # struct tcp_info: tcpi_bytes_received is the u64 at offset 128
                return unread, struct.unpack("=Q", msg[pos + 4 + 128:pos + 4 + 136])[0]
            pos += (alen + 3) & ~3
        return unread, 0

    @classmethod
    def open(cls) -> Optional["SockDiag"]:
        """None where NETLINK_SOCK_DIAG is not available (splits then fall back to a pause)."""
        try:
            d = cls()
            d.state(1, 1)
            return d
        except OSError as e:
            report(f"sock_diag unavailable ({e}): splits use a {FALLBACK_PAUSE}s pause instead")
            return None

    async def wait_read(self, sport: int, dport: int, total: int, label: str = "") -> None:
        """Until the socket (sport, dport) received `total` bytes and has none unread; counts
        the outcome in stats ("read": seen in two reads; "gone": the socket closed first;
        "unread": not read within PAUSE_GUARD, e.g. egressd is busy with an earlier request
        and reads both parts at once)."""
        deadline = time.monotonic() + PAUSE_GUARD
        while True:
            st = self.state(sport, dport)
            if st is None:
                self.stats["gone"] += 1
                return
            unread, received = st
            if received >= total and unread == 0:
                self.stats["read"] += 1
                return
            if time.monotonic() >= deadline:
                self.stats["unread"] += 1
                self.unread.append(label)
                return
            await asyncio.sleep(0.0005)

    def close(self):
        self.sock.close()


DIAG: Optional[SockDiag] = None


# ---------------------------------------------------------------------------------------------
# HTTP parsing on the test side (strict where egressd's output is concerned)
# ---------------------------------------------------------------------------------------------


def parse_fields(head: bytes) -> tuple[bytes, list[tuple[str, str]]]:
    lines = head.split(b"\r\n")
    fields = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(b":")
        fields.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return lines[0], fields


def field(fields, name: str) -> Optional[str]:
    vals = [v for k, v in fields if k.lower() == name.lower()]
    return ", ".join(vals) if vals else None


def decode_chunked(data: bytes) -> Optional[tuple[bytes, int]]:
    """(decoded body, bytes used) of a chunked body with plain hex sizes, no extensions and no
    trailers (what egressd must send); None when data is not exactly that (or is incomplete)."""
    pos, body = 0, bytearray()
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0 or not re.fullmatch(rb"[0-9a-fA-F]{1,16}", data[pos:eol]):
            return None
        size = int(data[pos:eol], 16)
        pos = eol + 2
        if size == 0:
            if data[pos:pos + 2] != b"\r\n":
                return None
            return bytes(body), pos + 2
        if len(data) < pos + size + 2 or data[pos + size:pos + size + 2] != b"\r\n":
            return None
        body += data[pos:pos + size]
        pos += size + 2


def lenient_chunked_end(data: bytes) -> Optional[int]:
    """Where a chunked body ends for a tolerant reader (extensions and trailers allowed); None if
    it does not end within data."""
    pos = 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return None
        m = re.match(rb"\s*([0-9a-fA-F]+)", data[pos:eol])
        if not m:
            return None
        size = int(m.group(1), 16)
        pos = eol + 2
        if size == 0:
            while True:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    return None
                if eol == pos:
                    return eol + 2
                pos = eol + 2
        pos += size + 2
        if pos > len(data):
            return None


def request_complete(data: bytes) -> bool:
    """Whether data holds at least one complete HTTP request (head and framed body)."""
    i = data.find(b"\r\n\r\n")
    if i < 0:
        return False
    _, fields = parse_fields(data[:i])
    body = data[i + 4:]
    te = field(fields, "Transfer-Encoding")
    if te is not None:
        return "chunked" in te.lower() and lenient_chunked_end(body) is not None
    cl = field(fields, "Content-Length")
    if cl is not None:
        try:
            return len(body) >= int(cl.split(",")[0])
        except ValueError:
            return False
    return True


class Stalled(Exception):
    pass


class Ended(Exception):
    def __init__(self, what: str, partial: bytes, end: str):
        super().__init__(f"{what}: connection ended ({end}) after {bytes(partial)[:200]!r}")


class Response:
    def __init__(self, status: int, start: bytes, fields, raw_head: bytes):
        self.status = status
        self.start = start
        self.fields = fields
        self.raw_head = raw_head
        self.body = b""
        self.complete = True
        self.framing = "none"
        self.interim: list["Response"] = []

    def header(self, name: str) -> Optional[str]:
        return field(self.fields, name)

    @property
    def proxy_error(self) -> Optional[str]:
        ps = self.header("Proxy-Status")
        if ps is None:
            return None
        m = re.search(r"(?:^|;)\s*error=\"?([A-Za-z0-9_]+)", ps)
        return m.group(1) if m else ""

    def summary(self) -> str:
        return (f"{self.start.decode('latin-1')!r} error={self.proxy_error} "
                f"body={self.body[:80]!r} complete={self.complete}")


class Stream:
    """Buffered reads of one client connection; records how it ended (eof or reset)."""

    def __init__(self, reader: asyncio.StreamReader):
        self.reader = reader
        self.buf = bytearray()
        self.raw = bytearray()
        self.end: Optional[str] = None

    async def fill(self) -> bool:
        if self.end:
            return False
        try:
            data = await asyncio.wait_for(self.reader.read(65536), GUARD)
        except asyncio.TimeoutError:
            raise Stalled(f"nothing from egressd for {GUARD:g}s (have {bytes(self.buf)[:200]!r})")
        except (ConnectionResetError, BrokenPipeError):
            self.end = "reset"
            return False
        if not data:
            self.end = "eof"
            return False
        self.buf += data
        self.raw += data
        return True

    async def until(self, delim: bytes) -> Optional[bytes]:
        while True:
            i = self.buf.find(delim)
            if i >= 0:
                out = bytes(self.buf[:i + len(delim)])
                del self.buf[:i + len(delim)]
                return out
            if not await self.fill():
                return None

    async def exact(self, n: int) -> tuple[bytes, bool]:
        while len(self.buf) < n:
            if not await self.fill():
                out = bytes(self.buf)
                self.buf.clear()
                return out, False
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out, True

    async def rest(self) -> bytes:
        while await self.fill():
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    async def read_response(self, method: str = "GET", tunnel: bool = False) -> Response:
        interim = []
        while True:
            head = await self.until(b"\r\n\r\n")
            if head is None:
                raise Ended("before a response head", self.buf, self.end)
            start, fields = parse_fields(head[:-4])
            m = re.match(rb"HTTP/1\.[01] (\d{3})(?: |$)", start)
            if not m:
                raise AssertionError(f"bad status line from egressd: {start!r}")
            resp = Response(int(m.group(1)), start, fields, head)
            if 100 <= resp.status < 200 and resp.status != 101:
                interim.append(resp)
                continue
            break
        resp.interim = interim
        if (method == "HEAD" or resp.status in (204, 304)
                or (tunnel and 200 <= resp.status < 300)):
            return resp
        te = resp.header("Transfer-Encoding")
        cl = resp.header("Content-Length")
        last_coding = te.split(",")[-1].strip().lower() if te is not None else None
        if te is not None and last_coding != "chunked":
            # RFC 9112 6.3: a coding other than chunked last means the body runs to the close;
            # only "chunked" alone or a close-delimited relay of another coding is acceptable.
            if cl is not None:
                raise AssertionError(f"egressd sent Transfer-Encoding {te!r} with Content-Length")
            te = None
        if te is not None:
            resp.framing = "chunked"
            if te.lower() != "chunked":
                raise AssertionError(f"egressd sent Transfer-Encoding {te!r}")
            body = bytearray()
            while True:
                line = await self.until(b"\r\n")
                if line is None:
                    resp.body, resp.complete = bytes(body), False
                    return resp
                if not re.fullmatch(rb"[0-9a-fA-F]{1,16}\r\n", line):
                    raise AssertionError(f"egressd sent a bad chunk size line {line!r}")
                size = int(line[:-2], 16)
                if size == 0:
                    while True:
                        t = await self.until(b"\r\n")
                        if t is None:
                            resp.body, resp.complete = bytes(body), False
                            return resp
                        if t == b"\r\n":
                            resp.body = bytes(body)
                            return resp
                data, ok = await self.exact(size + 2)
                body += data[:size]
                if not ok:
                    resp.body, resp.complete = bytes(body), False
                    return resp
                if data[size:] != b"\r\n":
                    raise AssertionError(f"egressd sent chunk data without CRLF: {data[-8:]!r}")
        elif cl is not None:
            resp.framing = "length"
            resp.body, resp.complete = await self.exact(int(cl))
        else:
            resp.framing = "close"
            resp.body = await self.rest()
            resp.complete = self.end == "eof"   # a reset never ends a close-delimited body
        return resp


async def open_client(port: int):
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), GUARD)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def send_split(writer: asyncio.StreamWriter, data: bytes, k: int,
                     sent_before: int = 0, label: str = "") -> None:
    """bytes[:k], a wait until the peer (egressd) has read them, bytes[k:]; a reset while
    sending is fine (egressd may answer and close before it read everything: the response is
    what the test checks). sent_before: bytes sent earlier on this connection."""
    try:
        if k:
            writer.write(data[:k])
            await writer.drain()
            if DIAG is None:
                await asyncio.sleep(FALLBACK_PAUSE)
            else:
                here = writer.get_extra_info("sockname")
                peer = writer.get_extra_info("peername")
                await DIAG.wait_read(peer[1], here[1], sent_before + k, label)
        writer.write(data[k:])
        await writer.drain()
    except (ConnectionResetError, BrokenPipeError):
        pass


def close_writer(writer: asyncio.StreamWriter) -> None:
    try:
        writer.close()
    except Exception:  # noqa: BLE001 - the transport may already be gone
        pass


class Server:
    """An asyncio TCP server on 127.0.0.1 port 0 whose connection handlers are tracked, so that
    stop() ends every one of them (no task is left for asyncio.run to cancel)."""

    async def start(self):
        self.tasks: set = set()
        self.writers: set = set()
        self.server = await asyncio.start_server(self._run, "127.0.0.1", 0, backlog=512)
        self.port = self.server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        return self

    async def _run(self, reader, writer):
        task = asyncio.current_task()
        self.tasks.add(task)
        self.writers.add(writer)
        try:
            await self.handle(reader, writer)
        except Exception:  # noqa: BLE001 - a peer that went away; what was recorded counts
            pass
        finally:
            self.writers.discard(writer)
            close_writer(writer)
            self.tasks.discard(task)

    async def handle(self, reader, writer):
        raise NotImplementedError

    async def stop(self):
        self.server.close()
        for w in list(self.writers):
            w.transport.abort()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=GUARD)


# ---------------------------------------------------------------------------------------------
# request side
# ---------------------------------------------------------------------------------------------


class Spy(Server):
    """Records each connection's bytes and how it ended. mode "http": answers SPY_RESPONSE
    (Connection: close, then FIN) once a complete request arrived, keeps recording until EOF;
    "raw" (CONNECT destinations): never answers, closes at EOF."""

    def __init__(self, mode: str):
        self.mode = mode
        self.conns: list[dict] = []

    async def handle(self, reader, writer):
        rec = {"data": bytearray(), "end": None}
        self.conns.append(rec)
        responded = False
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    rec["end"] = "eof"
                    break
                rec["data"] += chunk
                if self.mode == "http" and not responded and request_complete(rec["data"]):
                    responded = True
                    writer.write(SPY_RESPONSE)
                    await writer.drain()
                    writer.write_eof()
        except (ConnectionResetError, BrokenPipeError, OSError):
            rec["end"] = "reset"


class Probe(Server):
    """The target of the follow-up request that shows a connection is still open and in sync."""

    async def handle(self, reader, writer):
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            chunk = await reader.read(65536)
            if not chunk:
                return
            buf += chunk
        writer.write(PROBE_RESPONSE)
        await writer.drain()
        writer.write_eof()
        while await reader.read(65536):
            pass


def expected_responses(expect: dict) -> list[tuple]:
    if "responses" in expect:
        return [tuple(r) for r in expect["responses"]]
    return [(expect["status"], expect.get("error"))]


async def run_request_split(case: dict, data: bytes, k: int, proxy_port: int, probe: Probe,
                            sem: asyncio.Semaphore) -> list[str]:
    """One connection: the case's bytes split at k. Returns the problems seen (empty: passed)."""
    expect = case["expect"]
    tunnel = expect.get("tunnel", False)
    async with sem:
        reader, writer = await open_client(proxy_port)
        problems: list[str] = []
        try:
            await send_split(writer, data, k, 0, f"{case['name']} k={k}")
            if case.get("client_half_close"):
                try:
                    writer.write_eof()
                except OSError:
                    pass
            s = Stream(reader)
            for i, (status, error) in enumerate(expected_responses(expect)):
                try:
                    resp = await s.read_response(
                        "CONNECT" if tunnel else "GET", tunnel=tunnel)
                except Ended as e:
                    problems.append(f"response {i + 1}: {e}")
                    return problems
                ok_status = status if isinstance(status, list) else [status]
                if resp.status not in ok_status:
                    problems.append(f"response {i + 1}: status {resp.summary()}, want {status}")
                if error is not None and resp.proxy_error != error:
                    problems.append(f"response {i + 1}: Proxy-Status error {resp.proxy_error!r},"
                                    f" want {error!r} ({resp.summary()})")
                if resp.status == 200 and not tunnel and (resp.body != b"ok"
                                                          or resp.proxy_error is not None):
                    problems.append(f"response {i + 1}: not the origin's answer: "
                                    f"{resp.summary()}")
                if resp.status >= 400 and (resp.proxy_error is None or not resp.body):
                    problems.append(f"response {i + 1}: an error without Proxy-Status or "
                                    f"body: {resp.summary()}")
                if resp.proxy_error is not None and "close" not in (
                        resp.header("Connection") or "").lower():
                    problems.append(f"response {i + 1}: egressd's own response without "
                                    f"Connection: close: {resp.raw_head!r}")
                if not resp.complete:
                    problems.append(f"response {i + 1}: incomplete: {resp.summary()}")
            if tunnel and not case.get("client_half_close"):
                writer.write_eof()
            if expect["close"]:
                extra = await s.rest()
                if extra:
                    problems.append(f"bytes after the last response: {extra[:200]!r}")
            else:
                writer.write(f"GET http://{probe.address}/probe HTTP/1.1\r\nHost: "
                             f"{probe.address}\r\nConnection: close\r\n\r\n".encode())
                await writer.drain()
                try:
                    resp = await s.read_response()
                except Ended as e:
                    problems.append(f"connection not usable after the responses: {e}")
                    return problems
                if resp.status != 200 or resp.body != b"probe":
                    problems.append(f"follow-up request got {resp.summary()} (out of sync)")
        except Stalled as e:
            problems.append(str(e))
        except AssertionError as e:
            problems.append(str(e))
        except (ConnectionResetError, BrokenPipeError) as e:
            problems.append(f"{type(e).__name__} while talking to egressd")
        finally:
            close_writer(writer)
        return problems


def spy_key(data: bytes, want):
    """A comparable form of one upstream connection's bytes, following the expectation's kind."""
    if isinstance(want, dict):  # head exact, then a strictly re-chunked body
        head = want["head"]
        if data.startswith(head):
            dec = decode_chunked(data[len(head):])
            if dec is not None and dec[1] == len(data) - len(head):
                return ("chunked", head, dec[0])
    return ("raw", data)


async def check_spy(case: dict, spy: Spy, ctx: dict, splits: int) -> list[str]:
    want = case["expect"]["spy"]
    if want == "nothing":
        if spy.conns:
            return [f"the origin got {len(spy.conns)} connection(s), e.g. "
                    f"{bytes(spy.conns[0]['data'])[:300]!r}"]
        return []
    deadline = time.monotonic() + GUARD
    while any(c["end"] is None for c in spy.conns) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    open_conns = [bytes(c["data"])[:200] for c in spy.conns if c["end"] is None]
    if open_conns:
        return [f"{len(open_conns)} upstream connection(s) left open, e.g. {open_conns[0]!r}"]
    if want == "no_complete":
        bad = [bytes(c["data"]) for c in spy.conns if request_complete(bytes(c["data"]))]
        if bad:
            return [f"{len(bad)} upstream connection(s) carried a complete request, e.g. "
                    f"{bad[0][:400]!r}"]
        return []
    expected = []
    for w in want:
        if isinstance(w, dict):
            h = expand(w["head"], ctx)
            exp = {"head": h, "chunked_body": expand(w["chunked_body"], ctx)}
            expected.append((exp, ("chunked", h, exp["chunked_body"])))
        else:
            b = expand(w, ctx)
            expected.append((None, ("raw", b)))
    want_counts = collections.Counter()
    for _, key in expected:
        want_counts[key] += splits
    got = collections.Counter()
    for c in spy.conns:
        data = bytes(c["data"])
        key = ("raw", data)
        for exp, _ in expected:
            if exp is not None:
                key = spy_key(data, exp)
                if key[0] == "chunked":
                    break
        got[key] += 1
    if got == want_counts:
        return []
    missing = want_counts - got
    extra = got - want_counts
    out = [f"upstream bytes differ ({sum(got.values())} connections, want "
           f"{sum(want_counts.values())})"]
    for key, n in list(extra.items())[:3]:
        out.append(f"  unexpected x{n}: {key[1:]!r}"[:700])
    for key, n in list(missing.items())[:3]:
        out.append(f"  missing x{n}: {key[1:]!r}"[:700])
    return out


async def run_request_corpus(cases: list[dict], proxy_port: int) -> dict[str, dict]:
    sem = asyncio.Semaphore(CONCURRENCY)
    probe = await Probe().start()
    prepared = []
    for case in cases:
        spy = await Spy(case.get("spy_mode", "http")).start()
        ctx = {"o": spy.address, "p": str(spy.port), "pads": {}}
        data = expand(case["request"], ctx)
        prepared.append((case, spy, ctx, data, split_points(data)))
    jobs, owners = [], []
    for case, spy, ctx, data, ks in prepared:
        for k in ks:
            jobs.append(run_request_split(case, data, k, proxy_port, probe, sem))
            owners.append((case["name"], k))
    outcomes = await asyncio.gather(*jobs, return_exceptions=True)
    await asyncio.sleep(SETTLE)
    results = {}
    for case, spy, ctx, data, ks in prepared:
        results[case["name"]] = {"splits": {}, "spy": [], "data": data, "n": len(ks)}
    for (name, k), out in zip(owners, outcomes):
        if isinstance(out, BaseException):
            out = [f"client raised {type(out).__name__}: {out}"]
        if out:
            results[name]["splits"][k] = out
    for case, spy, ctx, data, ks in prepared:
        results[case["name"]]["spy"] = await check_spy(case, spy, ctx, len(ks))
        await spy.stop()
    await probe.stop()
    return results


# ---------------------------------------------------------------------------------------------
# response side
# ---------------------------------------------------------------------------------------------


class WildcardDns(asyncio.DatagramProtocol):
    """Answers every A question with 127.0.0.1 (and every other type with an empty NOERROR):
    each response-side split uses its own name, so egressd's upstream pool (keyed by address,
    port and host) never hands one split's connection to another and every split's follow-up
    meets exactly the connection its own bad response left behind. The UDP socket is bound before
    egressd starts (its address goes into dns.servers)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]

    async def start(self):
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=self.sock)
        return self

    def datagram_received(self, msg, peer):
        q = _parse_question(msg)
        if q is None:
            return
        qid, flags, question, name, qtype, qclass = q
        answers = b""
        n = 0
        if qtype == QTYPE_A and qclass == 1:
            answers = struct.pack("!HHHIH", 0xC00C, QTYPE_A, 1, 300, 4) + bytes([127, 0, 0, 1])
            n = 1
        out_flags = 0x8000 | (flags & 0x7800) | 0x0400 | (flags & 0x0100) | 0x0080
        self.transport.sendto(struct.pack("!HHHHHH", qid, out_flags, 1, n, 0, 0) + question
                              + answers, peer)

    def close(self):
        if getattr(self, "transport", None):
            self.transport.close()
        else:
            self.sock.close()


def split_host(idx: int, k: int) -> str:
    return f"s{k}.r{idx}.corpus.test"


class ScriptedOrigin(Server):
    """Answers GET/HEAD /r/<case index>/<k> with the case's bytes split at k, then does the
    case's "after" (fin: shut the write side and read to EOF; rst: reset; keep: read the next
    request on the same connection). /followup gets FRESH_RESPONSE (keep-alive) on any
    connection."""

    def __init__(self, cases: list[dict], scripts: list[bytes]):
        self.cases = cases
        self.scripts = scripts
        self.done: dict[tuple[int, int], asyncio.Event] = collections.defaultdict(asyncio.Event)

    async def handle(self, reader, writer):
        buf = bytearray()
        sent = 0
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buf += chunk
            i = buf.index(b"\r\n\r\n")
            start = bytes(buf[:buf.index(b"\r\n")])
            del buf[:i + 4]
            target = start.split(b" ")[1].decode("latin-1")
            if target == "/followup":
                writer.write(FRESH_RESPONSE)
                sent += len(FRESH_RESPONSE)
                await writer.drain()
                continue
            m = re.fullmatch(r"/r/(\d+)/(\d+)", target)
            if not m:
                raise AssertionError(f"unexpected request {start!r}")
            idx, k = int(m.group(1)), int(m.group(2))
            script = self.scripts[idx]
            await send_split(writer, script, k, sent, f"{self.cases[idx]['name']} k={k}")
            sent += len(script)
            while writer.transport.get_write_buffer_size():
                await asyncio.sleep(0.005)
            self.done[(idx, k)].set()
            after = self.cases[idx]["after"]
            if after == "fin":
                writer.write_eof()
                while await reader.read(65536):
                    pass
                return
            if after == "rst":
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
                return


async def run_response_split(idx: int, case: dict, k: int, proxy_port: int,
                             origin: ScriptedOrigin, sem: asyncio.Semaphore) -> list[str]:
    expect = case["expect"]
    method = case.get("method", "GET")
    version = case.get("version", "HTTP/1.1")
    o = f"{split_host(idx, k)}:{origin.port}"
    async with sem:
        reader, writer = await open_client(proxy_port)
        problems: list[str] = []
        try:
            writer.write(f"{method} http://{o}/r/{idx}/{k} {version}\r\nHost: {o}\r\n\r\n"
                         .encode())
            await writer.drain()
            s = Stream(reader)
            try:
                resp = await s.read_response(method)
            except Ended as e:
                return [str(e)]
            want = expect["status"] if isinstance(expect["status"], list) else [expect["status"]]
            if resp.status not in want:
                problems.append(f"status: {resp.summary()}, want {expect['status']}")
            err = expect.get("error")
            errs = err if isinstance(err, list) else [err]
            if resp.proxy_error not in errs:
                problems.append(f"Proxy-Status error {resp.proxy_error!r}, want {err!r}")
            if resp.proxy_error is not None and "close" not in (
                    resp.header("Connection") or "").lower():
                problems.append(f"egressd's own response without Connection: close: "
                                f"{resp.raw_head!r}")
            if "interim" in expect and len(resp.interim) != expect["interim"]:
                problems.append(f"{len(resp.interim)} interim responses, want {expect['interim']}")
            for name, value in expect.get("headers", {}).items():
                if resp.header(name) != value:
                    problems.append(f"{name}: {resp.header(name)!r}, want {value!r}")
            for name in expect.get("absent", []):
                if resp.header(name) is not None:
                    problems.append(f"hop-by-hop or stale field relayed: {name}: "
                                    f"{resp.header(name)}")
            end = expect["end"]
            if end == "incomplete":
                if resp.complete:
                    problems.append(f"a cut response looks complete to the client "
                                    f"({resp.framing}, ended by {s.end}): {resp.summary()}")
                elif s.end is None:
                    extra = await s.rest()
                    problems.append(f"connection left open after a cut response ({extra[:100]!r})")
                return problems
            if not resp.complete:
                problems.append(f"incomplete response ({resp.framing}, {s.end}): {resp.summary()}")
                return problems
            if "body" in expect and resp.body != expand(expect["body"], {"o": o, "p": "",
                                                                           "pads": {}}):
                problems.append(f"body {resp.body[:120]!r}, want {expect['body'][:120]!r}")
            for text in expect.get("raw_absent", []):
                if text.encode("latin-1") in s.raw:
                    problems.append(f"{text!r} reached the client: {bytes(s.raw)[:300]!r}")
            if end == "close":
                extra = await s.rest()
                if extra:
                    problems.append(f"bytes after the response: {extra[:200]!r}")
            elif end == "keepalive":
                # Wait until the origin has sent all of its bytes (so any leftover is already in
                # egressd's socket), then a follow-up on the same client connection must get a
                # fresh, complete answer.
                try:
                    await asyncio.wait_for(origin.done[(idx, k)].wait(), GUARD)
                except asyncio.TimeoutError:
                    problems.append("the origin never finished sending")
                    return problems
                writer.write(f"GET http://{o}/followup HTTP/1.1\r\nHost: {o}\r\n\r\n".encode())
                await writer.drain()
                try:
                    f = await s.read_response()
                except Ended as e:
                    problems.append(f"keep-alive connection unusable: {e}")
                    return problems
                if f.status != 200 or f.body != b"fresh":
                    problems.append(f"follow-up request got {f.summary()} instead of 'fresh' "
                                    "(leftover bytes of the bad response?)")
        except Stalled as e:
            problems.append(str(e))
        except AssertionError as e:
            problems.append(str(e))
        except (ConnectionResetError, BrokenPipeError) as e:
            problems.append(f"{type(e).__name__} while talking to egressd")
        finally:
            close_writer(writer)
        return problems


async def run_response_corpus(cases: list[dict], all_cases: list[dict],
                              proxy_port: int, dns: WildcardDns) -> dict[str, dict]:
    await dns.start()
    sem = asyncio.Semaphore(CONCURRENCY)
    scripts = [expand(c["origin"], {"o": "", "p": "", "pads": {}}) for c in all_cases]
    origin = await ScriptedOrigin(all_cases, scripts).start()
    index = {c["name"]: i for i, c in enumerate(all_cases)}
    jobs, owners = [], []
    results = {}
    for case in cases:
        idx = index[case["name"]]
        ks = split_points(scripts[idx])
        results[case["name"]] = {"splits": {}, "spy": [], "data": scripts[idx], "n": len(ks)}
        for k in ks:
            jobs.append(run_response_split(idx, case, k, proxy_port, origin, sem))
            owners.append((case["name"], k))
    outcomes = await asyncio.gather(*jobs, return_exceptions=True)
    for (name, k), out in zip(owners, outcomes):
        if isinstance(out, BaseException):
            out = [f"client raised {type(out).__name__}: {out}"]
        if out:
            results[name]["splits"][k] = out
    await origin.stop()
    dns.close()
    return results


# ---------------------------------------------------------------------------------------------
# unittest glue
# ---------------------------------------------------------------------------------------------


def describe_failures(name: str, res: dict) -> Optional[str]:
    lines = []
    if res["splits"]:
        lines.append(f"{len(res['splits'])} of {res['n']} splits failed "
                     f"(k = bytes in the first write, 0 = one write):")
        data = res["data"]
        for k in sorted(res["splits"])[:6]:
            lines.append(f"  k={k} ({data[max(0, k - 12):k]!r} | {data[k:k + 12]!r}): "
                         + "; ".join(res["splits"][k]))
    lines += res["spy"]
    return "\n".join(lines) if lines else None


class CorpusBase(unittest.TestCase):
    proxy: Egressd = None
    results: dict = None
    CASES_FILE = ""

    @classmethod
    def run_corpus(cls, runner, config: str = EGRESSD_CONFIG) -> None:
        cls.proxy = Egressd(config=config, env=EGRESSD_ENV)
        cls.proxy.start()
        cls.addClassCleanup(cls.proxy.stop)
        global DIAG
        DIAG = SockDiag.open()
        t0 = time.monotonic()
        try:
            cls.results = asyncio.run(runner())
        finally:
            if DIAG is not None:
                DIAG.close()
        elapsed = time.monotonic() - t0
        conns = sum(r["n"] for r in cls.results.values())
        cls.split_stats = dict(DIAG.stats) if DIAG is not None else None
        report(f"{cls.CASES_FILE}: {len(cls.results)} cases, {conns} client connections "
               f"(every split) in {elapsed:.1f}s; first parts read by egressd alone: "
               f"{cls.split_stats}"
               + (f"; not read within {PAUSE_GUARD:g}s: {DIAG.unread[:5]}" if DIAG and DIAG.unread
                  else ""))

    def check(self, name: str, bug: Optional[dict] = None, want_bug: bool = False):
        """Fails on the case's problems. With a known bug: want_bug=False looks only at problems
        that do not match the bug's signature (they must not exist: the rest of the case still
        holds), want_bug=True only at those that do (the expected failure)."""
        if self.proxy.proc.poll() is not None:
            self.fail(f"egressd exited with {self.proxy.proc.returncode}\n" + self.proxy.tail())
        res = self.results[name]
        if bug is not None:
            rx = re.compile(bug["signature"])
            keep = (lambda p: rx.search(p) is not None) if want_bug else \
                (lambda p: rx.search(p) is None)
            splits = {k: [p for p in ps if keep(p)] for k, ps in res["splits"].items()}
            res = dict(res, splits={k: ps for k, ps in splits.items() if ps},
                       spy=[p for p in res["spy"] if keep(p)])
        msg = describe_failures(name, res)
        if msg:
            self.fail(msg)


def add_case_tests(cls, cases: list[dict], prefix: str) -> None:
    for case in cases:
        bug = case.get("known_bug")

        def test(self, name=case["name"], bug=bug):
            self.check(name, bug, False)
        test.__doc__ = f"{case['name']}: {case.get('ref', '')}"
        setattr(cls, f"test_{prefix}_{case['name']}", test)
        if bug:
            # A known egressd bug (the case's known_bug.text): the problems matching its
            # signature must not exist, and today they do.
            def bug_test(self, name=case["name"], bug=bug):
                self.check(name, bug, True)
            bug_test.__doc__ = f"{case['name']} (known bug): {bug['text']}"
            setattr(cls, f"test_{prefix}_{case['name']}_known_bug",
                    unittest.expectedFailure(bug_test))


REQUEST_CASES = load("requests.json")
RESPONSE_CASES = load("responses.json")
with open(CORPUS_DIR / "responses.json") as _f:
    ALL_RESPONSE_CASES = json.load(_f)["cases"]


class RequestCorpusTest(CorpusBase):
    CASES_FILE = "requests.json"

    @classmethod
    def setUpClass(cls):
        cls.run_corpus(lambda: run_request_corpus(REQUEST_CASES, cls.proxy.port))

    def test_corpus_is_well_formed(self):
        names = [c["name"] for c in REQUEST_CASES]
        self.assertEqual(len(names), len(set(names)), "duplicate case names")
        for c in REQUEST_CASES:
            self.assertTrue(c.get("ref"), f"{c['name']}: no source/reference")
            e = c["expect"]
            self.assertIn("close", e, c["name"])
            self.assertTrue(e["spy"] in ("nothing", "no_complete") or isinstance(e["spy"], list),
                            c["name"])
        if not os.environ.get("EGRESSD_CORPUS"):
            self.assertGreaterEqual(len(names), 60)

    def test_splits_reached_egressd_as_two_reads(self):
        """The method itself: egressd read the first part of (nearly) every split on its own
        before the second part was sent (PAUSE_GUARD per split is a failure guard only)."""
        st = self.split_stats
        if st is None:
            self.skipTest("NETLINK_SOCK_DIAG unavailable: splits used a plain pause")
        total = sum(st.values())
        self.assertGreaterEqual(st.get("read", 0), 0.9 * total, st)


class ResponseCorpusTest(CorpusBase):
    CASES_FILE = "responses.json"

    @classmethod
    def setUpClass(cls):
        dns = WildcardDns()
        cls.run_corpus(lambda: run_response_corpus(RESPONSE_CASES, ALL_RESPONSE_CASES,
                                                   cls.proxy.port, dns),
                       EGRESSD_CONFIG + f'dns:\n  servers: ["{dns.address}"]\n')

    def test_corpus_is_well_formed(self):
        names = [c["name"] for c in RESPONSE_CASES]
        self.assertEqual(len(names), len(set(names)), "duplicate case names")
        for c in RESPONSE_CASES:
            self.assertTrue(c.get("ref"), f"{c['name']}: no source/reference")
            self.assertIn(c["after"], ("keep", "fin", "rst"), c["name"])
            self.assertIn(c["expect"]["end"], ("keepalive", "close", "incomplete"), c["name"])

    def test_splits_reached_egressd_as_two_reads(self):
        st = self.split_stats
        if st is None:
            self.skipTest("NETLINK_SOCK_DIAG unavailable: splits used a plain pause")
        self.assertGreaterEqual(st.get("read", 0), 0.9 * sum(st.values()), st)


add_case_tests(RequestCorpusTest, REQUEST_CASES, "req")
add_case_tests(ResponseCorpusTest, RESPONSE_CASES, "resp")


if __name__ == "__main__":
    unittest.main()
