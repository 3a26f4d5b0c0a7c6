"""Logs: the Squid native access.log format field by field, the JSON access log (every SPEC 6
field, escaping of hostile bytes), the access log written to a file, and the diagnostic log
level changed by SIGHUP.

test_connect.py already checks the JSON line of a tunnel (bytes, addresses, relay, nulls) and
test_http.py / test_policy.py the basic fields of GET, POST and error lines; this file adds what
they do not: the required key set, named rules, conn_id against the [C<id>] diagnostics, the time
window, escaping, the squid format, file output and the level reload.

Lines are matched by their own client port or a unique URL, never by position. Waits are
bounded failure guards; nothing asserts on wall time.
"""

import datetime
import json
import os
import re
import shutil
import signal
import tempfile
import time
import unittest

from egressd_harness import EchoOrigin, HttpOrigin, ProxyTestCase, unused_port, wait_until

# SPEC 6 lists the fields; conn_id and relay are egressd's additions (README "Access log").
# Lines must carry at least these; a later version may add keys.
JSON_KEYS = {"time", "conn_id", "client_addr", "client_port", "proxy_addr", "lb_peer", "method",
             "target", "status", "rule", "bytes_in", "bytes_out", "duration_ms", "upstream_addr",
             "egress_addr", "error", "vpce_id", "relay"}
RFC3339_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
BODY = 1234  # bytes of the /bytes/N body


def squid_url(raw: bytes) -> str:
    """What egressd's squid format prints for a method or target: a byte that would split or
    corrupt a space-separated field (<= 0x20, >= 0x7f) becomes '_'."""
    return "".join("_" if b <= 0x20 or b >= 0x7f else chr(b) for b in raw) or "-"


def parse_squid(line: str) -> dict:
    """Squid's native access.log format:
    time elapsed remotehost code/status bytes method URL rfc931 peerstatus/peerhost type"""
    f = line.split()
    if len(f) != 10:
        raise AssertionError(f"squid line has {len(f)} fields, not 10: {line!r}")
    code, _, status = f[3].partition("/")
    peerstatus, _, peerhost = f[8].partition("/")
    return {"time": f[0], "elapsed": f[1], "remotehost": f[2], "code": code, "status": status,
            "bytes": f[4], "method": f[5], "url": f[6], "rfc931": f[7],
            "peerstatus": peerstatus, "peerhost": peerhost, "type": f[9]}


# ---------------------------------------------------------------------------------------------
# Squid native format
# ---------------------------------------------------------------------------------------------


class SquidFormatTest(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.http = cls.start_origin(HttpOrigin())
        cls.echo = cls.start_origin(EchoOrigin())
        cls.closed_holder, cls.closed_port = unused_port()
        cls.addClassCleanup(cls.closed_holder.close)
        cls.proxy = cls.start_proxy(
            config="version: 1\nlog:\n  format: squid\n",
            env={"EGRESSD_LOG_FORMAT": None,  # the file decides
                 "EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8",
                 "EGRESSD_HTTP_PORTS": str(cls.http.port),
                 "EGRESSD_CONNECT_PORTS": str(cls.echo.port)})

    def squid_line(self, url: str, timeout: float = 15.0) -> dict:
        """The parsed line whose URL field is url (exactly one such line)."""
        def find():
            hits = [l for l in list(self.proxy.stdout_lines) if url in l.split()[6:7]]
            return hits or None
        hits = wait_until(find, timeout)
        if not hits:
            self.fail(f"no squid line with URL {url!r}:\n" + "\n".join(self.proxy.stdout_lines))
        self.assertEqual(len(hits), 1, hits)
        return parse_squid(hits[0])

    def assertTimeFields(self, f: dict, t0: float, t1: float):
        self.assertRegex(f["time"], r"^\d{10}\.\d{3}$", f)
        # Seconds since the epoch (UTC), within the request's window (1 s of slack for the
        # millisecond rounding and clock granularity; a local-time or ms value is far off).
        self.assertGreaterEqual(float(f["time"]), t0 - 1, f)
        self.assertLessEqual(float(f["time"]), t1 + 1, f)
        self.assertRegex(f["elapsed"], r"^\d+$", f)
        self.assertLessEqual(int(f["elapsed"]), (t1 - t0) * 1000 + 1000, f)

    def get_close(self, url: str) -> tuple[bytes, bytes]:
        """GET url with Connection: close; returns (every byte the client received, body)."""
        c = self.client()
        c.send(f"GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        raw = c.read_until_close()
        c.close()  # ends egressd's lingering close at once, so the line is written now
        head, sep, body = raw.partition(b"\r\n\r\n")
        self.assertTrue(sep, raw[:300])
        return raw, body

    def test_get(self):
        url = f"http://{self.http.address}/bytes/{BODY}?squid-get"
        t0 = time.time()
        raw, body = self.get_close(url)
        self.assertTrue(raw.startswith(b"HTTP/1.1 200 "), raw[:200])
        self.assertEqual(len(body), BODY)
        f = self.squid_line(url)
        t1 = time.time()
        self.assertTimeFields(f, t0, t1)
        self.assertEqual(f["remotehost"], "127.0.0.1")
        self.assertEqual((f["code"], f["status"]), ("TCP_MISS", "200"), f)
        # Squid's %<st counts headers too; egressd counts the payload (see the expected
        # failure below). Either way it is one of these two numbers, nothing else.
        self.assertIn(f["bytes"], (str(BODY), str(len(raw))), f)
        self.assertEqual(f["method"], "GET")
        self.assertEqual(f["url"], url)
        self.assertEqual(f["rfc931"], "-")
        self.assertEqual((f["peerstatus"], f["peerhost"]), ("HIER_DIRECT", "127.0.0.1"), f)
        self.assertIn(f["type"], ("-", "application/octet-stream"), f)

    def test_connect(self):
        c = self.client()
        t0 = time.time()
        c.send(f"CONNECT {self.echo.address} HTTP/1.1\r\nHost: {self.echo.address}\r\n\r\n"
               .encode())
        self.assertEqual(c.read_head().status, 200)
        c.send(b"hello")
        self.assertEqual(c.read_exact(5), b"hello")
        c.shutdown_write()
        self.assertTrue(c.wait_closed(10)[0], "tunnel not closed after both FINs")
        f = self.squid_line(self.echo.address)
        t1 = time.time()
        self.assertTimeFields(f, t0, t1)
        self.assertEqual(f["remotehost"], "127.0.0.1")
        self.assertEqual((f["code"], f["status"]), ("TCP_TUNNEL", "200"), f)
        # The whole reply: egressd's "200 Connection established" head and the tunnel bytes.
        established = b"HTTP/1.1 200 Connection established\r\n\r\n"
        self.assertEqual(f["bytes"], str(len(established) + 5), f)
        self.assertEqual(f["method"], "CONNECT")
        self.assertEqual(f["url"], self.echo.address)
        self.assertEqual(f["rfc931"], "-")
        self.assertEqual((f["peerstatus"], f["peerhost"]), ("HIER_DIRECT", "127.0.0.1"), f)
        self.assertEqual(f["type"], "-")

    def test_denied(self):
        url = f"http://127.0.0.1:{self.closed_port}/squid-denied"
        t0 = time.time()
        raw, _ = self.get_close(url)
        self.assertTrue(raw.startswith(b"HTTP/1.1 403 "), raw[:200])
        f = self.squid_line(url)
        t1 = time.time()
        self.assertTimeFields(f, t0, t1)
        self.assertEqual(f["remotehost"], "127.0.0.1")
        self.assertEqual((f["code"], f["status"]), ("TCP_DENIED", "403"), f)
        self.assertEqual(f["bytes"], str(len(raw)), f)
        self.assertEqual(f["method"], "GET")
        self.assertEqual(f["url"], url)
        self.assertEqual(f["rfc931"], "-")
        self.assertEqual((f["peerstatus"], f["peerhost"]), ("HIER_NONE", "-"), f)
        self.assertEqual(f["type"], "text/plain")  # egressd's own error body

    def test_hostile_bytes_keep_ten_fields(self):
        a = self.http.address
        H2 = b"\x01\x1b[31m\x7f\x80\xff\x00x"  # control, ESC sequence, DEL, non-ASCII, NUL
        cases = [  # (request bytes, method field, URL field; None = only a prefix is known)
            (f'GET http://{a}/h1-"q\'\\b HTTP/1.1\r\nHost: x\r\n\r\n'.encode(),
             "GET", f'http://{a}/h1-"q\'\\b'),
            (b"GET http://" + a.encode() + b"/h2-" + H2 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
             "GET", f"http://{a}/h2-" + squid_url(H2)),
            (f"GET http://{a}/h3-\tx HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
             "GET", f"http://{a}/h3-_x"),
            (f"GET http://{a}/h4- x HTTP/1.1\r\nHost: x\r\n\r\n".encode(), "GET", None),
            (f'G"E\\\x01T http://{a}/h5 HTTP/1.1\r\nHost: x\r\n\r\n'.encode(),
             'G"E\\_T', f"http://{a}/h5"),
            (b'CONNECT "h6\\\x02:443 HTTP/1.1\r\n\r\n', "CONNECT", '"h6\\_:443'),
        ]
        n0 = len(self.proxy.stdout_lines)
        for req, _, _ in cases:
            c = self.client()
            c.send(req)
            c.read_response()
            c.close()
        # One more, unremarkable, so every line has a known count to reach.
        self.get_close(f"http://{a}/bytes/1?h-end")
        self.squid_line(f"http://{a}/bytes/1?h-end")
        got = wait_until(lambda: len(self.proxy.stdout_lines) >= n0 + len(cases) + 1, 15)
        self.assertTrue(got, "\n".join(self.proxy.stdout_lines[n0:]))
        # Let any stray extra line land, then check every line written so far.
        time.sleep(0.3)
        lines = list(self.proxy.stdout_lines)[n0:]
        self.assertEqual(len(lines), len(cases) + 1, "\n".join(map(repr, lines)))
        parsed = []
        for line in lines:
            self.assertIsNone(CONTROL.search(line), repr(line))
            self.assertTrue(line.isascii(), repr(line))
            parsed.append(parse_squid(line))  # exactly 10 fields
        for i, (req, method, url) in enumerate(cases, 1):
            with self.subTest(case=i):
                marker = f"/h{i}" if i != 6 else '"h6'
                hits = [f for f in parsed if marker in f["url"]]
                self.assertEqual(len(hits), 1, parsed)
                f = hits[0]
                self.assertEqual(f["method"], method)
                if url is not None:
                    self.assertEqual(f["url"], url)
                self.assertEqual(f["remotehost"], "127.0.0.1")
                self.assertRegex(f["bytes"], r"^\d+$")
                self.assertEqual(f["rfc931"], "-")
                if i == 6:  # the malformed CONNECT: see test_malformed_connect_is_none_not_tunnel
                    self.assertIn((f["code"], f["status"]), (("NONE", "400"),
                                                             ("TCP_TUNNEL", "400")), f)
        # A connection that sends garbage and goes away is logged with placeholders, not empty
        # fields.
        c = self.client()
        port = c.local_port
        c.send(b"\x01\x02 garbage")
        c.shutdown_write()
        c.wait_closed(10)
        got = wait_until(lambda: len(self.proxy.stdout_lines) >= n0 + len(cases) + 2, 15)
        self.assertTrue(got, f"no line for the garbage connection (port {port})")
        empty = [f for f in map(parse_squid, list(self.proxy.stdout_lines)[n0:])
                 if f["method"] == "-"]
        self.assertEqual(len(empty), 1, empty)
        self.assertEqual((empty[0]["code"], empty[0]["status"], empty[0]["url"],
                          empty[0]["peerstatus"], empty[0]["peerhost"]),
                         ("NONE", "000", "-", "HIER_NONE", "-"), empty[0])

    # -- known differences from Squid ----------------------------------------------------------

    def test_bytes_field_counts_headers_like_squid(self):
        url = f"http://{self.http.address}/bytes/{BODY}?squid-bytes"
        raw, _ = self.get_close(url)
        self.assertEqual(self.squid_line(url)["bytes"], str(len(raw)))

    def test_type_field_is_the_reply_content_type(self):
        url = f"http://{self.http.address}/bytes/{BODY}?squid-type"
        raw, _ = self.get_close(url)
        self.assertIn(b"\r\nContent-Type: application/octet-stream\r\n", raw)
        self.assertEqual(self.squid_line(url)["type"], "application/octet-stream")

    def test_malformed_connect_is_none_not_tunnel(self):
        c = self.client()
        c.send(b"CONNECT 127.0.0.1:0 HTTP/1.1\r\n\r\n")
        self.assertEqual(c.read_response("CONNECT").status, 400)
        c.close()
        f = self.squid_line("127.0.0.1:0")
        self.assertEqual((f["code"], f["status"]), ("NONE", "400"), f)


# ---------------------------------------------------------------------------------------------
# JSON format
# ---------------------------------------------------------------------------------------------


class JsonFormatTest(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.http = cls.start_origin(HttpOrigin())
        cls.echo = cls.start_origin(EchoOrigin())
        cls.holders = [unused_port() for _ in range(2)]
        for h, _ in cls.holders:
            cls.addClassCleanup(h.close)
        cls.dest_port, cls.rest_port = (p for _, p in cls.holders)
        # dest_port: denied by deny-dest, decided on the resolved address (after DNS);
        # rest_port: denied by deny-rest, which needs no address (decided before DNS).
        cls.proxy = cls.start_proxy(
            config=("version: 1\n"
                    "rules:\n"
                    "  - name: lo-origins\n"
                    "    action: allow\n"
                    f"    ports: [{cls.http.port}, {cls.echo.port}]\n"
                    "  - name: deny-dest\n"
                    "    action: deny\n"
                    "    destinations: [127.0.0.0/8]\n"
                    f"    ports: [{cls.dest_port}]\n"
                    "  - name: allow-dest-port\n"
                    "    action: allow\n"
                    f"    ports: [{cls.dest_port}]\n"
                    "  - name: deny-rest\n"
                    "    action: deny\n"),
            env={"EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8",
                 "EGRESSD_HTTP_PORTS": "1-65535",
                 "EGRESSD_CONNECT_PORTS": "1-65535"})

    def raw_line(self, port: int) -> str:
        """The raw stdout line of the access entry of client port `port`."""
        self.proxy.wait_access(lambda e: e.get("client_port") == port)
        return next(l for l in self.proxy.stdout_lines if f'"client_port":{port},' in l)

    def assertCommon(self, e: dict, port: int, t0: float, t1: float):
        self.assertLessEqual(JSON_KEYS, set(e), e)
        self.assertRegex(e["time"], RFC3339_MS_UTC)
        ts = datetime.datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        self.assertGreaterEqual(ts, t0 - 1, e)
        self.assertLessEqual(ts, t1 + 1, e)
        self.assertIs(type(e["conn_id"]), int)
        self.assertEqual(e["client_addr"], "127.0.0.1")
        self.assertEqual(e["client_port"], port)
        self.assertIsNone(e["proxy_addr"])  # no PROXY header on this listener
        self.assertIsNone(e["lb_peer"])
        self.assertIsNone(e["vpce_id"])
        for k in ("status", "bytes_in", "bytes_out"):
            self.assertIs(type(e[k]), int, k)
        self.assertIn(type(e["duration_ms"]), (int, float))
        self.assertGreaterEqual(e["duration_ms"], 0)
        self.assertLessEqual(e["duration_ms"], (t1 - t0) * 1000 + 1000)
        # The diagnostics carry the same id: "[C<id>] METHOD TARGET -> ..." (debug level).
        line = self.proxy.wait_stderr(
            r"\[C%d\] %s %s -> " % (e["conn_id"], re.escape(e["method"] or ""),
                                    re.escape(e["target"] or "")), 10)
        self.assertIsNotNone(line, f"no [C{e['conn_id']}] diagnostic line\n" + self.proxy.tail())

    def test_get_fields(self):
        url = f"http://{self.http.address}/bytes/{BODY}?json-get"
        c = self.client()
        t0 = time.time()
        c.send(f"GET {url} HTTP/1.1\r\nHost: {self.http.address}\r\n\r\n".encode())
        resp = c.read_response()
        self.assertEqual(resp.status, 200, resp)
        port = c.local_port
        e = self.proxy.wait_access(lambda e: e.get("client_port") == port, since=c.log_mark)
        t1 = time.time()
        self.assertCommon(e, port, t0, t1)
        self.assertEqual(e["method"], "GET")
        self.assertEqual(e["target"], url)
        self.assertEqual(e["status"], 200)
        self.assertEqual(e["rule"], "lo-origins")
        self.assertEqual(e["bytes_in"], 0)
        self.assertEqual(e["bytes_out"], BODY)
        self.assertEqual(e["upstream_addr"], self.http.address)
        self.assertEqual(e["egress_addr"], "127.0.0.1")
        self.assertIsNone(e["error"])
        self.assertIsNone(e["relay"])  # plain HTTP has no tunnel relay

    def test_connect_fields(self):
        c = self.client()
        t0 = time.time()
        c.send(f"CONNECT {self.echo.address} HTTP/1.1\r\n\r\n".encode())
        self.assertEqual(c.read_head().status, 200)
        c.send(b"0123456")
        self.assertEqual(c.read_exact(7), b"0123456")
        c.shutdown_write()
        self.assertTrue(c.wait_closed(10)[0])
        port = c.local_port
        e = self.proxy.wait_access(lambda e: e.get("client_port") == port, since=c.log_mark)
        t1 = time.time()
        self.assertCommon(e, port, t0, t1)
        self.assertEqual(e["method"], "CONNECT")
        self.assertEqual(e["target"], self.echo.address)
        self.assertEqual(e["status"], 200)
        self.assertEqual(e["rule"], "lo-origins")
        self.assertEqual((e["bytes_in"], e["bytes_out"]), (7, 7))
        self.assertEqual(e["upstream_addr"], self.echo.address)
        self.assertEqual(e["egress_addr"], "127.0.0.1")
        self.assertIsNone(e["error"])
        self.assertIn(e["relay"], ("splice", "copy", "copy_fallback"))

    def rule_denied(self, port: int, tag: str) -> dict:
        url = f"http://127.0.0.1:{port}/{tag}"
        c = self.client()
        t0 = time.time()
        c.send(f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self.assertEqual(c.read_response().status, 403)
        cport = c.local_port
        c.close()
        e = self.proxy.wait_access(lambda e: e.get("client_port") == cport)
        t1 = time.time()
        self.assertCommon(e, cport, t0, t1)
        self.assertEqual((e["method"], e["target"], e["status"]), ("GET", url, 403))
        self.assertEqual(e["error"], "rule_denied")
        self.assertEqual((e["bytes_in"], e["bytes_out"]), (0, 0))
        self.assertIsNone(e["upstream_addr"])
        self.assertIsNone(e["egress_addr"])
        self.assertIsNone(e["relay"])
        self.assertIn(type(e["rule"]), (str, type(None)))
        return e

    def test_rule_denied_fields(self):
        e = self.rule_denied(self.dest_port, "json-denied-dest")
        self.assertEqual(e["rule"], "deny-dest")

    def test_rule_named_when_denied_before_dns(self):
        e = self.rule_denied(self.rest_port, "json-denied-rest")
        self.assertEqual(e["rule"], "deny-rest")

    def test_hostile_target_is_escaped(self):
        a = self.http.address.encode()
        cases = [  # (method, target bytes, expected status)
            (b"GET", b"http://" + a + b'/j1-"q"\\b\\\\\\u0041\'{}`', 200),
            (b"GET",
             b"http://" + a + b"/j2-\x00\x01\x08\x09\x0b\x0c\x1b[2J\x1f\x7f\x80\xc3\xa9\xff", 400),
            (b'G"\\\x01T', b"http://" + a + b"/j3", 400),
            (b"CONNECT", b'"j4\\\x1b:443', 400),
        ]
        for method, target, status in cases:
            with self.subTest(target=target):
                c = self.client()
                c.send(method + b" " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                self.assertEqual(c.read_response().status, status)
                port = c.local_port
                c.close()  # ends the lingering close after an error: the line is written now
                line = self.raw_line(port)
                # One line of printable ASCII: nothing raw that a terminal or a line-based
                # shipper could misread.
                self.assertTrue(line.isascii(), repr(line))
                self.assertIsNone(CONTROL.search(line), repr(line))
                e = json.loads(line)
                self.assertLessEqual(JSON_KEYS, set(e))
                # Lossless: each byte is one code point (bytes >= 0x7f as \u00XX).
                self.assertEqual(e["method"].encode("latin-1"), method)
                self.assertEqual(e["target"].encode("latin-1"), target)
                self.assertEqual(e["status"], status)


# ---------------------------------------------------------------------------------------------
# Access log to a file
# ---------------------------------------------------------------------------------------------


class AccessLogFileTest(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.http = cls.start_origin(HttpOrigin())
        cls.dir = tempfile.mkdtemp(prefix="egressd-accesslog-")
        cls.path = os.path.join(cls.dir, "access.log")
        with open(cls.path, "w") as f:
            f.write("earlier line\n")  # opened for append: must survive
        cls.addClassCleanup(shutil.rmtree, cls.dir, True)
        cls.proxy = cls.start_proxy(
            config=f"version: 1\nlog:\n  access: {cls.path}\n",
            env={"EGRESSD_ACCESS_LOG": None,  # the file decides
                 "EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8",
                 "EGRESSD_HTTP_PORTS": str(cls.http.port)})

    def file_lines(self) -> list[str]:
        with open(self.path) as f:
            return f.read().splitlines()

    def test_lines_go_to_the_file(self):
        ports = []
        for i in range(3):
            c = self.client()
            c.send(f"GET http://{self.http.address}/bytes/10?file-{i} HTTP/1.1\r\n"
                   f"Host: x\r\n\r\n".encode())
            self.assertEqual(c.read_response().status, 200)
            ports.append(c.local_port)
        got = wait_until(lambda: len(self.file_lines()) >= 4, 15)
        self.assertTrue(got, f"access log file has {self.file_lines()!r}")
        lines = self.file_lines()
        self.assertEqual(lines[0], "earlier line")
        entries = [json.loads(l) for l in lines[1:]]
        self.assertEqual(sorted(e["client_port"] for e in entries), sorted(ports))
        for e in entries:
            self.assertLessEqual(JSON_KEYS, set(e))
            self.assertEqual((e["method"], e["status"], e["bytes_out"]), ("GET", 200, 10))
        # Nothing on stdout: the access log went to the file only.
        self.assertEqual(self.proxy.access_entries(), [])

    def request(self, tag: str):
        c = self.client()
        c.send(f"GET http://{self.http.address}/bytes/10?{tag} HTTP/1.1\r\nHost: x\r\n\r\n"
               .encode())
        self.assertEqual(c.read_response().status, 200)
        c.close()

    def test_rotation_by_rename_and_sighup(self):
        # logrotate without copytruncate: move the file away, SIGHUP; egressd opens the path
        # again and the next lines go to the new file, none is lost or split.
        self.request("before")
        self.assertTrue(wait_until(lambda: any("?before" in l for l in self.file_lines()), 15))
        rotated = self.path + ".1"
        os.rename(self.path, rotated)
        self.request("between")  # still the old (renamed) file until the signal
        seen = len([l for l in self.proxy.stderr_lines if "config reload" in l])
        self.proxy.proc.send_signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: len(
            [l for l in self.proxy.stderr_lines if "config reload" in l]) > seen, 15))
        self.request("after")
        self.assertTrue(wait_until(lambda: os.path.exists(self.path) and
                                   any("?after" in l for l in self.file_lines()), 15),
                        self.proxy.tail())
        with open(rotated) as f:
            old = f.read()
        self.assertIn("?between", old)
        self.assertNotIn("?after", old)
        new = self.file_lines()
        self.assertEqual(len(new), 1, new)
        json.loads(new[0])
        self.assertEqual(os.stat(self.path).st_mode & 0o777, 0o640)


# ---------------------------------------------------------------------------------------------
# Diagnostic log level, reloaded by SIGHUP
# ---------------------------------------------------------------------------------------------

LEVEL_CONFIG = "version: 1\nlog:\n  level: {level}\ndrain:\n  delay: 100ms\n  timeout: 30s\n"


class LogLevelReloadTest(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.http = cls.start_origin(HttpOrigin())
        cls.refused_holder, cls.refused_port = unused_port()
        cls.addClassCleanup(cls.refused_holder.close)
        cls.proxy = cls.start_proxy(
            config=LEVEL_CONFIG.format(level="info"),
            # The environment is re-read on SIGHUP too and would override the file.
            env={"EGRESSD_LOG_LEVEL": None,
                 "EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8",
                 "EGRESSD_HTTP_PORTS": "1-65535"})
        # The harness writes the config to <its temp dir>/egressd.yaml; SIGHUP re-reads it.
        cls.config_path = os.path.join(cls.proxy._tmpdir, "egressd.yaml")
        assert os.path.exists(cls.config_path), cls.config_path

    def reload(self, level: str, expect: str = "config reloaded"):
        before = sum(expect in l for l in list(self.proxy.stderr_lines))
        with open(self.config_path, "w") as f:
            f.write(LEVEL_CONFIG.format(level=level))
        self.proxy.proc.send_signal(signal.SIGHUP)
        got = wait_until(lambda: sum(expect in l for l in list(self.proxy.stderr_lines))
                         > before, 15)
        self.assertTrue(got, f"no {expect!r} after SIGHUP\n" + self.proxy.tail())

    def probe(self, tag: str) -> tuple[int, bool]:
        """On one connection: a GET that succeeds, then a GET to a refused port. The success
        writes its debug line "[C<id>] GET <url> -> ..." (if debug is on) before the session
        reads the second request, whose 502 is logged at info level by the same session
        afterwards: once that info line is on stderr, the debug line would be before it.
        Returns (conn_id, whether the debug line is there)."""
        ok_url = f"http://{self.http.address}/bytes/3?{tag}"
        c = self.client()
        c.send(f"GET {ok_url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self.assertEqual(c.read_response().status, 200)
        # The info line about a refused origin is rate-limited to one a second per error kind
        # (RepeatedErrorLogTest): let the previous probe's interval pass.
        time.sleep(1.05)
        c.send(f"GET http://127.0.0.1:{self.refused_port}/{tag}-sync HTTP/1.1\r\nHost: x\r\n"
               f"\r\n".encode())
        self.assertEqual(c.read_response().status, 502)
        c.close()
        sync = self.proxy.wait_stderr(
            r" info \[C\d+\] GET http://127\.0\.0\.1:%d/%s-sync: " % (self.refused_port, tag),
            15)
        self.assertIsNotNone(sync, "no info line for the refused request\n" + self.proxy.tail())
        conn_id = int(re.search(r"\[C(\d+)\]", sync).group(1))
        e = self.proxy.wait_access(lambda e: e.get("target") == ok_url)
        self.assertEqual(e["conn_id"], conn_id)
        rx = re.compile(r" debug \[C%d\] GET %s -> %s status=200 error=-$"
                        % (conn_id, re.escape(ok_url), re.escape(self.http.address)))
        return conn_id, any(rx.search(l) for l in list(self.proxy.stderr_lines))

    def debug_lines(self) -> list[str]:
        return [l for l in list(self.proxy.stderr_lines) if " debug " in l]

    def test_level_follows_sighup(self):
        # info: no debug line at all.
        _, seen = self.probe("info-1")
        self.assertFalse(seen, self.proxy.tail())
        self.assertEqual(self.debug_lines(), [])

        self.reload("debug")
        cid, seen = self.probe("debug-1")
        self.assertTrue(seen, f"no debug line for [C{cid}] after reload to debug\n"
                        + self.proxy.tail())

        # An invalid config is rejected and the level stays debug.
        self.reload("loud", expect="config reload rejected")
        cid, seen = self.probe("debug-2")
        self.assertTrue(seen, f"level lost after a rejected reload\n" + self.proxy.tail())

        self.reload("info")
        n_debug = len(self.debug_lines())
        _, seen = self.probe("info-2")
        self.assertFalse(seen, self.proxy.tail())
        self.assertEqual(len(self.debug_lines()), n_debug, "debug lines after reload to info")


class DiagnosticEscapeTest(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.http = cls.start_origin(HttpOrigin())
        cls.proxy = cls.start_proxy(env={"EGRESSD_LOG_LEVEL": "debug",
                                         "EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8",
                                         "EGRESSD_HTTP_PORTS": str(cls.http.port)})

    def hostile_diag_line(self) -> str:
        """The "[C<id>] GET ..." debug line of a request whose target holds ESC, \\x01, DEL."""
        c = self.client()
        c.send(b"GET http://" + self.http.address.encode()
               + b"/diag-\x1b[2J\x01\x7f HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(c.read_response().status, 400)
        port = c.local_port
        c.close()
        e = self.proxy.wait_access(lambda e: e.get("client_port") == port, since=c.log_mark)
        line = self.proxy.wait_stderr(r" debug \[C%d\] GET http://%s/diag-"
                                      % (e["conn_id"], re.escape(self.http.address)), 10)
        self.assertIsNotNone(line, self.proxy.tail())
        return line

    def test_diagnostic_line_is_tagged(self):
        line = self.hostile_diag_line()
        self.assertRegex(line, r"status=400 error=bad_request$")

    def test_diagnostics_escape_client_bytes(self):
        line = self.hostile_diag_line()
        self.assertIsNone(CONTROL.search(line), repr(line))


if __name__ == "__main__":
    unittest.main()


class RepeatedErrorLogTest(ProxyTestCase):
    """An origin outage fails every request the same way: the info line about it is written at
    most once a second per error kind, and the next one says how many were held back."""

    @classmethod
    def setUpClass(cls):
        cls.closed_holder, cls.closed_port = unused_port()
        cls.addClassCleanup(cls.closed_holder.close)
        cls.proxy = cls.start_proxy(
            config="version: 1\nlog:\n  level: info\n",
            env={"EGRESSD_LOG_LEVEL": None,
                 "EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8",
                 "EGRESSD_HTTP_PORTS": str(cls.closed_port)})

    def refused(self, n: int):
        url = f"http://127.0.0.1:{self.closed_port}/down"
        for _ in range(n):
            c = self.client()
            c.send(f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            self.assertEqual(c.read_response().status, 502)
            c.close()

    def test_outage_lines_are_rate_limited(self):
        burst = 60
        self.refused(burst)
        self.assertIsNotNone(wait_until(
            lambda: len([e for e in self.proxy.access_entries()
                         if e["error"] == "connect_refused"]) >= burst))
        time.sleep(1.1)  # the next interval: one more line may go through
        self.refused(1)
        self.assertIsNotNone(wait_until(
            lambda: any("since the last report" in l for l in self.proxy.stderr_lines)),
            "no line reporting the held-back count:\n" + self.proxy.tail())
        lines = [l for l in self.proxy.stderr_lines if "connect_refused" in l]
        # Every failure is still in the access log and the metrics; stderr gets a handful.
        self.assertLess(len(lines), burst // 2, "\n".join(lines))
        held = [int(m.group(1)) for l in lines
                for m in [re.search(r"\[(\d+) more connect_refused", l)] if m]
        self.assertTrue(held, lines)
        self.assertEqual(sum(held) + len(lines), burst + 1,
                         "every failure is either a line or counted in the next one")
