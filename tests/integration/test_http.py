"""Plain-HTTP forwarding of absolute-form requests: curl GET, keep-alive and pipelining, request
and response framings (Content-Length, chunked, close-delimited), large uploads, HTTP/1.0
clients, hop-by-hop removal and the Via / X-Forwarded-For / Host rewrite, Expect: 100-continue."""

import json
import socket
import tempfile
import threading
import unittest

from egressd_harness import (HttpOrigin, ProxyTestCase, SpyOrigin, TcpServer, parse_head,
                             payload, run_curl, sha256, wait_until)

HOP_BY_HOP = ("x-drop-me", "proxy-connection", "keep-alive",
              "proxy-authorization", "proxy-authenticate", "te", "trailer", "upgrade")


def tokens(values):
    out = []
    for v in values:
        out += [t.strip() for t in v.split(",") if t.strip()]
    return out


def header_values(headers, name):
    return [v for k, v in headers if k.lower() == name.lower()]


class PausingOrigin(TcpServer):
    """Answers a GET with a body of 2 * half bytes (Content-Length), and sends the second half
    only once resume is set."""

    def __init__(self, half: int):
        super().__init__("127.0.0.1")
        self.body = payload(2 * half, "pausing")
        self.half = half
        self.resume = threading.Event()

    def handle(self, conn, peer, index):
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(65536)
            if not chunk:
                return
            head += chunk
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(self.body)
                     + self.body[:self.half])
        self.resume.wait(30)
        conn.sendall(self.body[self.half:])


class HttpForwardTest(ProxyTestCase):
    """Bodies of known length over 64 KiB are spliced here and copied in HttpForwardCopyTest:
    both paths must pass the same tests."""

    SPLICE = True

    @classmethod
    def setUpClass(cls):
        cls.http = cls.start_origin(HttpOrigin())
        splice = "true" if cls.SPLICE else "false"
        cls.proxy = cls.start_proxy(config=f"version: 1\nrelay:\n  splice: {splice}\n", env={
            "EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8",
            "EGRESSD_CONNECT_PORTS": "1-65535",
            "EGRESSD_HTTP_PORTS": "1-65535",
        })

    def get(self, c, origin, path, version="HTTP/1.1", extra=""):
        c.send(f"GET http://{origin.address}{path} {version}\r\nHost: {origin.address}\r\n"
               f"{extra}\r\n".encode())
        return c.read_response()

    def echo_json(self, resp):
        self.assertEqual(resp.status, 200, f"{resp!r}\n{self.proxy.tail()}")
        return json.loads(resp.body)

    # -- basic forwarding -----------------------------------------------------------------------

    def test_bytes_of_a_download_are_counted_while_it_runs(self):
        """egressd_bytes_total follows a long response while it streams (the worker's
        once-a-second sweep; a spliced body too), and counts every byte exactly once."""
        splice = "true" if self.SPLICE else "false"
        proxy = self.start_proxy(config=f"version: 1\nrelay:\n  splice: {splice}\n", env={
            "EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8", "EGRESSD_HTTP_PORTS": "1-65535"})
        half = 1 << 20
        origin = self.origin(PausingOrigin(half))
        self.addCleanup(origin.resume.set)

        def down():
            return proxy.metric("egressd_bytes_total", direction="upstream_to_client")

        c = self.client(proxy)
        c.send(f"GET http://{origin.address}/big HTTP/1.1\r\nHost: {origin.address}\r\n\r\n"
               .encode())
        resp = c.read_head()
        self.assertEqual(resp.status, 200)
        first = c.read_exact(half)
        self.assertTrue(wait_until(lambda: down() == half, 15),
                        f"a running download's bytes are not in the metric: {down()}")
        origin.resume.set()
        rest = c.read_exact(half)
        self.assertEqual(sha256(first + rest), sha256(origin.body))
        proxy.wait_access(lambda e: e["target"].endswith("/big"))
        self.assertEqual(down(), 2 * half)

    def test_get_through_curl(self):
        n = 5 * 1024 * 1024
        url = f"http://{self.http.address}/bytes/{n}?curl=1"
        p = run_curl(["-x", self.proxy.url, "-o", "-", url])
        self.assertEqual(p.returncode, 0, p.stderr.decode() + self.proxy.tail())
        self.assertEqual(len(p.stdout), n)
        self.assertEqual(sha256(p.stdout), sha256(payload(n, "bytes")))
        e = self.proxy.wait_access(lambda e: e.get("target") == url)
        self.assertEqual(e["method"], "GET")
        self.assertEqual(e["status"], 200)
        self.assertEqual(e["bytes_out"], n, e)
        self.assertEqual(e["bytes_in"], 0, e)
        self.assertEqual(e["upstream_addr"], self.http.address)
        self.assertEqual(e["client_addr"], "127.0.0.1")
        self.assertIsNone(e["error"])

    def test_origin_sees_origin_form_and_forwarding_headers(self):
        url = f"http://{self.http.address}/echo/curl?a=1&b=2"
        p = run_curl(["-x", self.proxy.url, "-H", "X-Test: yes", url])
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        info = json.loads(p.stdout)
        self.assertEqual(info["method"], "GET")
        self.assertEqual(info["target"], "/echo/curl?a=1&b=2")
        self.assertEqual(info["version"], "HTTP/1.1")
        h = info["headers"]
        self.assertEqual(header_values(h, "Host"), [self.http.address])
        self.assertEqual(header_values(h, "X-Test"), ["yes"])
        self.assertEqual(tokens(header_values(h, "Via")), ["1.1 egressd"])
        self.assertEqual(tokens(header_values(h, "X-Forwarded-For")), ["127.0.0.1"])
        self.assertEqual(header_values(h, "Proxy-Connection"), [])

    def test_other_methods_with_bodies(self):
        c = self.client()
        for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            with self.subTest(method=method):
                body = f"body of {method}".encode() * 3
                c.send(f"{method} http://{self.http.address}/m/{method} HTTP/1.1\r\n"
                       f"Host: {self.http.address}\r\nContent-Length: {len(body)}\r\n\r\n"
                       .encode() + body)
                info = self.echo_json(c.read_response())
                self.assertEqual(info["method"], method)
                self.assertEqual(info["target"], f"/m/{method}")
                self.assertEqual(info["body"], body.decode())

    def test_head_response_has_no_body(self):
        c = self.client()
        c.send(f"HEAD http://{self.http.address}/bytes/1000 HTTP/1.1\r\n"
               f"Host: {self.http.address}\r\n\r\n".encode())
        resp = c.read_response("HEAD")
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.header("Content-Length"), "1000")
        # The next response on the connection must start right away (no body bytes between).
        resp = self.get(c, self.http, "/bytes/10")
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.body, payload(10, "bytes"))

    # -- keep-alive -----------------------------------------------------------------------------

    def test_keepalive_several_requests_one_connection(self):
        origin = self.origin(HttpOrigin())
        c = self.client()
        for i in range(5):
            info = self.echo_json(self.get(c, origin, f"/ka/{i}"))
            self.assertEqual(info["target"], f"/ka/{i}")
        # Three pipelined requests in one write: three responses, in order.
        c.send(b"".join(f"GET http://{origin.address}/pipe/{i} HTTP/1.1\r\n"
                        f"Host: {origin.address}\r\n\r\n".encode() for i in range(3)))
        for i in range(3):
            info = self.echo_json(c.read_response())
            self.assertEqual(info["target"], f"/pipe/{i}")
        self.assertEqual(len(origin.requests), 8)
        port = c.local_port
        entries = self.proxy.wait_access_count(lambda e: e.get("client_port") == port, 8,
                                               since=c.log_mark)
        self.assertEqual(len({e["conn_id"] for e in entries}), 1, entries)
        self.assertEqual([e["status"] for e in entries], [200] * 8)
        closed, _ = c.wait_closed(0.3)
        self.assertFalse(closed, "client connection closed despite keep-alive")

    def test_upstream_connection_reused(self):
        # SPEC 4: keep-alive on both sides. Sequential requests from one client connection to
        # one origin should not each open a new upstream connection.
        origin = self.origin(HttpOrigin())
        c = self.client()
        for i in range(6):
            info = self.echo_json(self.get(c, origin, f"/reuse/{i}"))
            self.assertEqual(info["target"], f"/reuse/{i}")
        conns = [r["conn"] for r in origin.requests]
        self.assertLessEqual(origin.connections, 2,
                             f"{origin.connections} upstream connections for 6 requests; "
                             f"Connection headers seen upstream: "
                             f"{[header_values(r['headers'], 'Connection') for r in origin.requests]}"
                             f" per-request upstream connection: {conns}")

    # -- request bodies -------------------------------------------------------------------------

    def post_chunked(self, c, origin, chunks: list[bytes], ext=False, trailer=b""):
        out = bytearray(f"POST http://{origin.address}/chunked-upload HTTP/1.1\r\n"
                        f"Host: {origin.address}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        for i, ch in enumerate(chunks):
            out += b"%x" % len(ch) + (b";n=%d;q=\"v\"" % i if ext else b"") + b"\r\n"
            out += ch + b"\r\n"
        out += b"0\r\n" + trailer + b"\r\n"
        c.send(bytes(out))
        return c.read_response()

    def check_rechunked(self, origin, body: bytes):
        req = origin.requests[-1]
        self.assertEqual(req["method"], "POST")
        self.assertEqual(req["body"], body)
        h = req["headers"]
        self.assertEqual([v.lower() for v in header_values(h, "Transfer-Encoding")],
                         ["chunked"])
        self.assertEqual(header_values(h, "Content-Length"), [])
        raw = req["body_raw"]
        # Plain hex sizes, no extensions, no trailers.
        pos = 0
        while True:
            eol = raw.index(b"\r\n", pos)
            size_line = raw[pos:eol]
            self.assertRegex(size_line, rb"^[0-9a-fA-F]+$", f"chunk size line {size_line!r}")
            size = int(size_line, 16)
            pos = eol + 2
            if size == 0:
                self.assertEqual(raw[pos:], b"\r\n", "trailers forwarded")
                break
            pos += size + 2

    def test_chunked_request_body_reencoded(self):
        origin = self.origin(HttpOrigin())
        chunks = [payload(n, f"chunk{n}") for n in (1, 10, 4096, 100_000, 3, 70_000)]
        c = self.client()
        info = self.echo_json(self.post_chunked(c, origin, chunks))
        body = b"".join(chunks)
        self.assertEqual(info["body_sha256"], sha256(body))
        self.check_rechunked(origin, body)

    def test_chunk_extensions_and_trailers_are_dropped(self):
        origin = self.origin(HttpOrigin())
        chunks = [b"hello ", b"chunked ", b"world"]
        c = self.client()
        info = self.echo_json(self.post_chunked(c, origin, chunks, ext=True,
                                                trailer=b"X-Trailer: t\r\n"))
        self.assertEqual(info["body"], "hello chunked world")
        self.check_rechunked(origin, b"hello chunked world")

    def test_large_post_content_length(self):
        origin = self.origin(HttpOrigin())
        body = payload(6 * 1024 * 1024, "post")
        c = self.client()
        c.send(f"POST http://{origin.address}/upload HTTP/1.1\r\nHost: {origin.address}\r\n"
               f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n"
               .encode())
        c.send(body)
        info = self.echo_json(c.read_response())
        self.assertEqual(info["body_len"], len(body))
        self.assertEqual(info["body_sha256"], sha256(body))
        h = origin.requests[-1]["headers"]
        self.assertEqual(header_values(h, "Content-Length"), [str(len(body))])
        self.assertEqual(header_values(h, "Transfer-Encoding"), [])
        port = c.local_port
        e = self.proxy.wait_access(lambda e: e.get("client_port") == port, since=c.log_mark)
        self.assertEqual(e["method"], "POST")
        self.assertEqual(e["bytes_in"], len(body), e)

    # -- response framings ----------------------------------------------------------------------

    def test_chunked_response(self):
        c = self.client()
        resp = self.get(c, self.http, "/chunked/300001")
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(sha256(resp.body), sha256(payload(300001, "bytes")))
        # The connection is still usable afterwards.
        resp = self.get(c, self.http, "/bytes/7")
        self.assertEqual(resp.body, payload(7, "bytes"))

    def test_close_delimited_response(self):
        c = self.client()
        resp = self.get(c, self.http, "/close/200003")
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(len(resp.body), 200003, "close-delimited body truncated or padded")
        self.assertEqual(sha256(resp.body), sha256(payload(200003, "bytes")))
        if not resp.close_delimited:
            # Re-framed for the client (chunked): then the connection may carry more requests.
            self.assertTrue(resp.chunked, resp)
            resp = self.get(c, self.http, "/bytes/5")
            self.assertEqual(resp.body, payload(5, "bytes"))

    # -- HTTP/1.0 clients -----------------------------------------------------------------------

    def test_http10_client_gets_close_delimited_or_sized_response_then_close(self):
        c = self.client()
        c.send(f"GET http://{self.http.address}/echo10 HTTP/1.0\r\n\r\n".encode())
        resp = c.read_response()
        info = self.echo_json(resp)
        self.assertEqual(info["target"], "/echo10")
        self.assertEqual(header_values(info["headers"], "Host"), [self.http.address])
        self.assertEqual(tokens(header_values(info["headers"], "Via")), ["1.0 egressd"])
        self.assertFalse(resp.chunked, "chunked response sent to an HTTP/1.0 client")
        closed, extra = c.wait_closed(15)
        self.assertTrue(closed, "HTTP/1.0 connection without keep-alive left open")
        self.assertEqual(extra, b"")

    def test_http10_client_never_receives_chunked(self):
        c = self.client()
        c.send(f"GET http://{self.http.address}/chunked/100000 HTTP/1.0\r\n"
               f"Host: {self.http.address}\r\n\r\n".encode())
        resp = c.read_response()
        self.assertEqual(resp.status, 200, resp)
        self.assertIsNone(resp.header("Transfer-Encoding"), resp)
        self.assertEqual(sha256(resp.body), sha256(payload(100000, "bytes")))

    def test_http10_client_keepalive(self):
        c = self.client()
        resp = self.get(c, self.http, "/ka10", version="HTTP/1.0",
                        extra="Connection: keep-alive\r\n")
        self.echo_json(resp)
        self.assertFalse(resp.chunked)
        if resp.has_token("Connection", "keep-alive"):
            self.assertIsNotNone(resp.header("Content-Length"))
            resp = self.get(c, self.http, "/ka10-2", version="HTTP/1.0",
                            extra="Connection: keep-alive\r\n")
            self.assertEqual(self.echo_json(resp)["target"], "/ka10-2")
        else:
            closed, _ = c.wait_closed(15)
            self.assertTrue(closed, "no keep-alive granted, yet the connection stayed open")

    # -- header rewriting -----------------------------------------------------------------------

    def spy_request(self, headers: str, path="/p/a?q=1"):
        spy = self.origin(SpyOrigin())
        c = self.client()
        c.send(f"GET http://{spy.address}{path} HTTP/1.1\r\n{headers}\r\n"
               .replace("{spy}", spy.address).encode())
        resp = c.read_response()
        self.assertEqual(resp.status, 200, f"{resp!r}\n{self.proxy.tail()}")
        self.assertEqual(resp.body, b"ok")
        data = spy.received()
        self.assertEqual(len(data), 1)
        head = data[0].split(b"\r\n\r\n", 1)[0]
        start, hdrs = parse_head(head)
        return start, hdrs, spy

    def test_hop_by_hop_removed_and_via_xff_added(self):
        start, h, spy = self.spy_request(
            "Host: {spy}\r\n"
            "User-Agent: egressd-test\r\n"
            "Connection: keep-alive, X-Drop-Me, Upgrade\r\n"
            "X-Drop-Me: secret\r\n"
            "Proxy-Connection: keep-alive\r\n"
            "Keep-Alive: timeout=5\r\n"
            "Proxy-Authorization: Basic dXNlcjpwdw==\r\n"
            "Proxy-Authenticate: Basic\r\n"
            "TE: trailers\r\n"
            "Trailer: X-Checksum\r\n"
            "Upgrade: websocket\r\n"
            "X-Keep: kept\r\n"
            "X-Forwarded-For: 192.0.2.1\r\n"
            "Via: 1.0 upstream-proxy\r\n")
        self.assertEqual(start, "GET /p/a?q=1 HTTP/1.1")
        names = [k.lower() for k, _ in h]
        for hop in HOP_BY_HOP:
            self.assertNotIn(hop, names, f"hop-by-hop {hop} forwarded: {h}")
        conn = [t.lower() for t in tokens(header_values(h, "Connection"))]
        self.assertTrue(set(conn) <= {"close", "keep-alive"}, f"Connection forwarded: {conn}")
        self.assertEqual(header_values(h, "Host"), [spy.address])
        self.assertEqual(header_values(h, "X-Keep"), ["kept"])
        self.assertEqual(header_values(h, "User-Agent"), ["egressd-test"])
        self.assertEqual(tokens(header_values(h, "Via")), ["1.0 upstream-proxy", "1.1 egressd"])
        self.assertEqual(tokens(header_values(h, "X-Forwarded-For")), ["192.0.2.1", "127.0.0.1"])

    def test_host_rebuilt_from_uri(self):
        start, h, spy = self.spy_request("Host: other.example.invalid\r\n", path="/h")
        self.assertEqual(start, "GET /h HTTP/1.1")
        self.assertEqual(header_values(h, "Host"), [spy.address])

    def test_empty_path_becomes_slash(self):
        spy = self.origin(SpyOrigin())
        c = self.client()
        c.send(f"GET http://{spy.address} HTTP/1.1\r\nHost: {spy.address}\r\n\r\n".encode())
        resp = c.read_response()
        self.assertEqual(resp.status, 200, resp)
        start, _ = parse_head(spy.received()[0].split(b"\r\n\r\n", 1)[0])
        self.assertEqual(start, "GET / HTTP/1.1")

    # -- Expect: 100-continue -------------------------------------------------------------------

    def test_expect_100_continue_with_curl(self):
        origin = self.origin(HttpOrigin())
        body = payload(3 * 1024 * 1024, "expect")
        with tempfile.NamedTemporaryFile(prefix="egressd-upload-") as f:
            f.write(body)
            f.flush()
            p = run_curl(["-x", self.proxy.url, "-H", "Expect: 100-continue",
                          "-H", "Content-Type: application/octet-stream",
                          "--data-binary", f"@{f.name}", f"http://{origin.address}/expect"])
        self.assertEqual(p.returncode, 0, p.stderr.decode() + self.proxy.tail())
        info = json.loads(p.stdout)
        self.assertEqual(info["body_len"], len(body))
        self.assertEqual(info["body_sha256"], sha256(body))

    def test_expect_100_continue_interim_reaches_client(self):
        # The client waits for 100 Continue before sending the body; egressd must relay the
        # origin's interim response (or answer 100 itself), not wait for the body.
        origin = self.origin(HttpOrigin())
        body = payload(100_000, "expect-raw")
        c = self.client()
        c.send(f"PUT http://{origin.address}/expect-raw HTTP/1.1\r\nHost: {origin.address}\r\n"
               f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        c.sock.settimeout(10)
        try:
            interim = c.read_response(skip_interim=False)
        except socket.timeout:
            self.fail("no 100 Continue within 10 s while the client waits for it")
        c.sock.settimeout(30)
        self.assertEqual(interim.status, 100, interim)
        c.send(body)
        info = self.echo_json(c.read_response())
        self.assertEqual(info["body_sha256"], sha256(body))



class HttpForwardCopyTest(HttpForwardTest):
    SPLICE = False


if __name__ == "__main__":
    unittest.main()
