"""CONNECT tunnels: byte-exactness, early bytes, half-close both ways, TLS end to end through
curl, the access-log line, the egress bind address, and the tunnel idle timeout."""

import os
import threading
import time
import unittest

from egressd_harness import (EchoOrigin, HttpOrigin, ProxyTestCase,
                             ServerHalfCloseOrigin, SinkOrigin, TestCA, payload, run_curl,
                             sha256, wait_until)

EGRESS_BIND = "127.0.0.5"
CONNECT_OK_STATUS_LINE = b"HTTP/1.1 200 "


class ConnectTest(ProxyTestCase):
    """Every tunnel test runs over the splice relay here and over the copy relay in
    ConnectCopyTest below: both paths must pass the same tests."""

    SPLICE = True
    RELAY = "splice"

    @classmethod
    def setUpClass(cls):
        cls.ca = TestCA()
        cls.addClassCleanup(cls.ca.cleanup)
        cls.tls = cls.start_origin(HttpOrigin(ssl_context=cls.ca.server_context()))
        splice = "true" if cls.SPLICE else "false"
        cls.proxy = cls.start_proxy(config=f"version: 1\nrelay:\n  splice: {splice}\n", env={
            "EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8,::1/128",
            "EGRESSD_CONNECT_PORTS": "1-65535",
            "EGRESSD_HTTP_PORTS": "1-65535",
            "EGRESSD_EGRESS_BIND": EGRESS_BIND,
        })

    def open_tunnel(self, origin, early: bytes = b"", proxy=None):
        """CONNECT to origin; returns the client positioned after the 200 head."""
        c = self.client(proxy)
        c.send(f"CONNECT {origin.address} HTTP/1.1\r\nHost: {origin.address}\r\n\r\n".encode()
               + early)
        resp = c.read_head()
        self.assertEqual(resp.status, 200, f"{resp!r}\n{(proxy or self.proxy).tail()}")
        self.assertTrue(resp.raw_head.startswith(CONNECT_OK_STATUS_LINE), resp.raw_head)
        # SPEC 4: a 2xx to CONNECT carries no body headers.
        self.assertIsNone(resp.header("Content-Length"), resp.raw_head)
        self.assertIsNone(resp.header("Transfer-Encoding"), resp.raw_head)
        return c

    def test_bytes_of_an_open_tunnel_are_counted_while_it_runs(self):
        """egressd_bytes_total follows a long tunnel while it is open (the worker's
        once-a-second sweep), not only when it ends, and counts every byte exactly once."""
        splice = "true" if self.SPLICE else "false"
        proxy = self.start_proxy(config=f"version: 1\nrelay:\n  splice: {splice}\n", env={
            "EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8", "EGRESSD_CONNECT_PORTS": "1-65535"})
        echo = self.origin(EchoOrigin())

        def moved():
            return (proxy.metric("egressd_bytes_total", direction="client_to_upstream"),
                    proxy.metric("egressd_bytes_total", direction="upstream_to_client"))

        self.assertEqual(moved(), (0.0, 0.0))
        c = self.open_tunnel(echo, proxy=proxy)
        data = payload(1 << 20, "live")
        c.send(data)
        self.assertEqual(sha256(c.read_exact(len(data))), sha256(data))
        n = float(len(data))
        self.assertTrue(wait_until(lambda: moved() == (n, n), 15),
                        f"an open tunnel's bytes are not in the metric: {moved()}")
        # Still open; more bytes, then the end: the total is each byte once.
        c.send(b"tail")
        self.assertEqual(c.read_exact(4), b"tail")
        c.close()
        e = proxy.wait_access(lambda e: e["method"] == "CONNECT")
        self.assertEqual((e["bytes_in"], e["bytes_out"]), (len(data) + 4, len(data) + 4))
        self.assertEqual(moved(), (n + 4, n + 4))
        time.sleep(1.5)  # a sweep after the end adds nothing
        self.assertEqual(moved(), (n + 4, n + 4))

    def test_bidirectional_8mib_byte_exact(self):
        echo = self.origin(EchoOrigin())
        c = self.open_tunnel(echo)
        data = os.urandom(8 * 1024 * 1024)
        send_error = []

        def sender():
            try:
                view = memoryview(data)
                for i in range(0, len(data), 200_003):  # odd-sized writes
                    c.send(view[i:i + 200_003])
                c.shutdown_write()
            except OSError as e:
                send_error.append(e)

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        # Read while the sender is still writing: both directions carry 8 MiB at once.
        got = c.read_exact(len(data))
        t.join(60)
        self.assertFalse(t.is_alive(), "sender stuck")
        self.assertEqual(send_error, [])
        self.assertEqual(sha256(got), sha256(data), "tunnel corrupted the echoed stream")
        closed, extra = c.wait_closed(20)
        self.assertTrue(closed, "origin's FIN after the client's FIN did not reach the client")
        self.assertEqual(extra, b"")
        self.assertTrue(echo.wait_connections(1))
        with echo.lock:
            echo.lock.wait_for(lambda: 0 in echo.received, 15)
            self.assertEqual(echo.received.get(0), (len(data), sha256(data)))

    def test_early_bytes_sent_with_connect_header_come_first(self):
        echo = self.origin(EchoOrigin())
        early = b"EARLY:" + payload(3000, "early") + b":END"
        c = self.open_tunnel(echo, early=early)
        later = b"LATER:" + payload(5000, "later")
        c.send(later)
        got = c.read_exact(len(early) + len(later))
        self.assertEqual(got[:len(early)], early, "early bytes not relayed first/intact")
        self.assertEqual(got[len(early):], later)

    def test_early_bytes_then_immediate_half_close(self):
        # CONNECT head + payload in one send(), FIN right after, before the 200 arrives: the
        # origin must still get exactly the payload and then EOF, and its answer must come back.
        sink = self.origin(SinkOrigin())
        c = self.client()
        early = payload(70_000, "early-fin")
        c.send(f"CONNECT {sink.address} HTTP/1.1\r\nHost: {sink.address}\r\n\r\n".encode()
               + early)
        c.shutdown_write()
        resp = c.read_head()
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(sink.wait_result(0), (len(early), sha256(early)))
        self.assertEqual(c.read_until_close(), sha256(early).encode())

    def test_half_close_client_to_origin(self):
        sink = self.origin(SinkOrigin())
        c = self.open_tunnel(sink)
        data = payload(1024 * 1024 + 17, "c2o")
        c.send(data)
        c.shutdown_write()
        res = sink.wait_result(0, timeout=20)
        self.assertIsNotNone(res, "origin never saw EOF after the client's shutdown(SHUT_WR)")
        self.assertEqual(res, (len(data), sha256(data)))
        # The origin answers after the client's FIN: the other direction must still be open.
        self.assertEqual(c.read_until_close(), sha256(data).encode())
        self.assertFalse(c.reset, "tunnel ended with a reset instead of a FIN")

    def test_half_close_origin_to_client(self):
        origin = self.origin(ServerHalfCloseOrigin(512 * 1024))
        c = self.open_tunnel(origin)
        got = c.read_until_close()  # ends at the origin's FIN, relayed as our EOF
        self.assertFalse(c.reset, "origin's FIN arrived as a reset")
        self.assertEqual(sha256(got), sha256(origin.payload))
        # After the origin's FIN the client->origin direction must still carry bytes.
        late = payload(200_000, "after-origin-fin")
        c.send(late)
        c.shutdown_write()
        res = origin.wait_result(0, timeout=20)
        self.assertIsNotNone(res, "origin did not see the client's bytes and FIN")
        self.assertEqual(sha256(res), sha256(late))

    def test_curl_https_through_tunnel_verifies_certificate(self):
        url = f"https://localhost:{self.tls.port}/bytes/150000"
        p = run_curl(["--proxy", self.proxy.url, "--cacert", self.ca.ca_cert, "-o", "-", url])
        self.assertEqual(p.returncode, 0, p.stderr.decode() + self.proxy.tail())
        self.assertEqual(sha256(p.stdout), sha256(payload(150000, "bytes")))
        # Without the test CA curl must refuse the origin's certificate: the tunnel is
        # end-to-end, egressd does not terminate TLS.
        p = run_curl(["--proxy", self.proxy.url, "-o", "/dev/null", url])
        self.assertEqual(p.returncode, 60, p.stderr.decode())
        # And egressd logged the tunnel by name.
        e = self.proxy.wait_access(lambda e: e.get("method") == "CONNECT"
                                   and e.get("target") == f"localhost:{self.tls.port}")
        self.assertEqual(e["status"], 200)
        self.assertEqual(e["upstream_addr"], f"127.0.0.1:{self.tls.port}")

    def test_access_log_for_tunnel(self):
        sink = self.origin(SinkOrigin())
        c = self.open_tunnel(sink)
        sent = payload(123_457, "log")
        c.send(sent)
        c.shutdown_write()
        reply = c.read_until_close()
        self.assertEqual(reply, sha256(sent).encode())
        port = c.local_port
        e = self.proxy.wait_access(lambda e: e.get("client_port") == port, since=c.log_mark)
        self.assertEqual(e["method"], "CONNECT")
        self.assertEqual(e["target"], sink.address)
        self.assertEqual(e["status"], 200)
        self.assertEqual(e["client_addr"], "127.0.0.1")
        self.assertEqual(e["bytes_in"], len(sent), e)      # client -> origin payload
        self.assertEqual(e["bytes_out"], len(reply), e)    # origin -> client payload
        self.assertEqual(e["upstream_addr"], sink.address)
        self.assertEqual(e["egress_addr"], EGRESS_BIND)
        self.assertEqual(e["relay"], self.RELAY, e)
        self.assertIsNone(e["error"], e)
        self.assertIsNone(e["proxy_addr"])
        self.assertIsNone(e["lb_peer"])
        self.assertIsNone(e["vpce_id"])
        self.assertIsInstance(e["conn_id"], int)
        self.assertIsInstance(e["duration_ms"], (int, float))
        self.assertGreaterEqual(e["duration_ms"], 0)
        self.assertRegex(e["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
        for key in ("client_addr", "client_port", "proxy_addr", "lb_peer", "method", "target",
                    "status", "rule", "bytes_in", "bytes_out", "duration_ms", "upstream_addr",
                    "egress_addr", "error", "vpce_id", "time", "conn_id"):
            self.assertIn(key, e)

    def test_egress_bind_address(self):
        echo = self.origin(EchoOrigin())
        c = self.open_tunnel(echo)
        c.send(b"ping")
        self.assertEqual(c.read_exact(4), b"ping")
        self.assertEqual(echo.peers[0][0], EGRESS_BIND)
        # Plain HTTP forwarding uses the same source address.
        http = self.origin(HttpOrigin())
        h = self.client()
        h.send(f"GET http://{http.address}/ip HTTP/1.1\r\nHost: {http.address}\r\n\r\n".encode())
        resp = h.read_response()
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.body.strip(), EGRESS_BIND.encode())


class ConnectCopyTest(ConnectTest):
    SPLICE = False
    RELAY = "copy"


class TunnelIdleTimeoutTest(ProxyTestCase):
    IDLE = "3s"

    @classmethod
    def setUpClass(cls):
        cls.proxy = cls.start_proxy(
            config=f"version: 1\ntimeouts:\n  tunnel_idle: {cls.IDLE}\n",
            env={"EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8",
                 "EGRESSD_CONNECT_PORTS": "1-65535"})

    def open_tunnel(self, origin):
        c = self.client()
        c.send(f"CONNECT {origin.address} HTTP/1.1\r\nHost: {origin.address}\r\n\r\n".encode())
        resp = c.read_head()
        self.assertEqual(resp.status, 200, resp)
        return c

    def test_idle_tunnel_is_closed(self):
        echo = self.origin(EchoOrigin())
        c = self.open_tunnel(echo)
        c.send(b"hello")
        self.assertEqual(c.read_exact(5), b"hello")
        # Now stay silent: the tunnel must be closed by the idle timeout (guard: 30 s).
        closed, extra = c.wait_closed(30)
        self.assertTrue(closed, "idle tunnel was not closed")
        self.assertEqual(extra, b"")
        # The upstream side is closed too.
        with echo.lock:
            self.assertTrue(echo.lock.wait_for(lambda: echo.eof.get(0), 15),
                            "upstream connection of the idle tunnel left open")
        port = c.local_port
        e = self.proxy.wait_access(lambda e: e.get("client_port") == port, since=c.log_mark)
        self.assertEqual(e["method"], "CONNECT")
        self.assertEqual(e["status"], 200)
        self.assertEqual(e["bytes_in"], 5)
        self.assertEqual(e["bytes_out"], 5)

    def test_active_tunnel_outlives_idle_timeout(self):
        # The idle timeout counts silence, not tunnel age: a byte every 0.2 s for 8 s (well
        # past the 3 s idle timeout) must keep the tunnel open.
        echo = self.origin(EchoOrigin())
        c = self.open_tunnel(echo)
        end = time.monotonic() + 8
        n = 0
        while time.monotonic() < end:
            c.send(b"x")
            self.assertEqual(c.read_exact(1), b"x", f"tunnel died after {n} echoes")
            n += 1
            time.sleep(0.2)
        c.send(b"done")
        self.assertEqual(c.read_exact(4), b"done")


if __name__ == "__main__":
    unittest.main()
