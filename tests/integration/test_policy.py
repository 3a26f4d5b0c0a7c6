"""Access policy: source gate, port gates (checked before DNS and before the destination check),
special-destination denial, TRACE, loop detection, rejected target forms, DNS and connect
failures, and the cloud-metadata addresses inside an isolated network namespace."""

import json
import socket
import subprocess
import sys
import time
import unittest

from egressd_harness import (SUPPORT_DIR, EchoOrigin, ProxyTestCase, SpyOrigin, clean_env,
                             egressd_bin, netns_skip_reason, unused_port)

# How long a negative check ("the origin received nothing") waits after egressd has answered,
# to catch a connection egressd might still open. Not a timing assertion.
SETTLE = 0.3


def connect_req(target: str, extra: str = "") -> bytes:
    return f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n".encode()


def get_req(url: str, extra: str = "", method: str = "GET") -> bytes:
    host = url.split("/")[2]
    return f"{method} {url} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def have_ipv6_loopback() -> bool:
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


class PolicyTestBase(ProxyTestCase):
    def assertNothingReached(self, spy: SpyOrigin, before: int = 0):
        time.sleep(SETTLE)
        self.assertEqual(spy.connections, before,
                         f"the origin was contacted: {spy.received()[before:]!r}")

    def denied(self, data: bytes, status: int, error: str, method="GET", source=None,
               close=None):
        resp, c = self.exchange(data, method=method, source=source)
        self.assertProxyError(resp, status, error)
        if close or (close is None and (method == "CONNECT" or status == 400)):
            self.assertClosedByProxy(c)
        return resp


class PolicyTest(PolicyTestBase):
    """Loopback re-allowed as a destination, every port allowed."""

    @classmethod
    def setUpClass(cls):
        cls.spy = cls.start_origin(SpyOrigin())
        cls.proxy = cls.start_proxy(env={
            "EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8,::1/128",
            "EGRESSD_CONNECT_PORTS": "1-65535",
            "EGRESSD_HTTP_PORTS": "1-65535",
        })

    def test_trace_is_405(self):
        before = self.spy.connections
        self.denied(get_req(f"http://{self.spy.address}/", method="TRACE"), 405,
                    "http_request_denied")
        self.assertNothingReached(self.spy, before)

    def test_own_via_is_508(self):
        before = self.spy.connections
        for via in ("1.1 egressd", "1.0 client-proxy, 1.1 egressd", "1.1 egressd, 1.1 other"):
            with self.subTest(via=via):
                self.denied(get_req(f"http://{self.spy.address}/", f"Via: {via}\r\n"), 508,
                            "proxy_loop_detected")
        with self.subTest(via="on CONNECT"):
            self.denied(connect_req(self.spy.address, "Via: 1.1 egressd\r\n"), 508,
                        "proxy_loop_detected", method="CONNECT")
        self.assertNothingReached(self.spy, before)
        # A different proxy's Via is no loop.
        resp, _ = self.exchange(get_req(f"http://{self.spy.address}/", "Via: 1.1 egressd-b\r\n"))
        self.assertEqual(resp.status, 200, resp)

    def test_destination_is_egressd_itself_is_508(self):
        me = f"127.0.0.1:{self.proxy.port}"
        self.denied(connect_req(me), 508, "proxy_loop_detected", method="CONNECT")
        self.denied(get_req(f"http://{me}/"), 508, "proxy_loop_detected", close=False)
        self.denied(connect_req(f"localhost:{self.proxy.port}"), 508, "proxy_loop_detected",
                    method="CONNECT")

    def test_origin_form_is_400(self):
        before = self.spy.connections
        self.denied(f"GET / HTTP/1.1\r\nHost: {self.spy.address}\r\n\r\n".encode(), 400,
                    "http_request_error")
        self.denied(f"OPTIONS * HTTP/1.1\r\nHost: {self.spy.address}\r\n\r\n".encode(), 400,
                    "http_request_error")
        self.assertNothingReached(self.spy, before)

    def test_other_schemes_are_400(self):
        before = self.spy.connections
        for scheme in ("https", "ftp", "ws", "gopher"):
            with self.subTest(scheme=scheme):
                self.denied(get_req(f"{scheme}://{self.spy.address}/"), 400,
                            "http_request_error")
        self.assertNothingReached(self.spy, before)

    def test_refused_port_is_502_connection_refused(self):
        holder, port = unused_port()
        self.addCleanup(holder.close)
        self.denied(connect_req(f"127.0.0.1:{port}"), 502, "connection_refused",
                    method="CONNECT")
        resp, c = self.exchange(get_req(f"http://127.0.0.1:{port}/refused"))
        self.assertProxyError(resp, 502, "connection_refused")
        cport = c.local_port
        e = self.proxy.wait_access(lambda e: e.get("client_port") == cport)
        self.assertEqual(e["status"], 502)
        self.assertEqual(e["target"], f"http://127.0.0.1:{port}/refused")
        self.assertIsInstance(e["error"], str)
        self.assertTrue(e["error"])

    def test_bad_upstream_response_is_502(self):
        # SPEC 4 table: a bad upstream response is a 502 generated by egressd.
        bad = self.origin(SpyOrigin(response=b"NOT-HTTP garbage\r\n\r\n"))
        resp, _ = self.exchange(get_req(f"http://{bad.address}/"))
        self.assertProxyError(resp, 502, None)

    @unittest.skipUnless(have_ipv6_loopback(), "no IPv6 loopback")
    def test_ipv6_literal_allowed_by_exception(self):
        echo = self.origin(EchoOrigin(host="::1"))
        c = self.client()
        c.send(connect_req(f"[::1]:{echo.port}"))
        resp = c.read_head()
        self.assertEqual(resp.status, 200, f"{resp!r}\n{self.proxy.tail()}")
        c.send(b"v6")
        self.assertEqual(c.read_exact(2), b"v6")


class GateTest(PolicyTestBase):
    """EGRESSD_ALLOW_SOURCES=127.0.0.1/32 and one port per gate."""

    @classmethod
    def setUpClass(cls):
        cls.spy_c = cls.start_origin(SpyOrigin())  # its port is the only CONNECT port
        cls.spy_h = cls.start_origin(SpyOrigin())  # its port is the only HTTP port
        cls.proxy = cls.start_proxy(env={
            "EGRESSD_ALLOW_SOURCES": "127.0.0.1/32",
            "EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8",
            "EGRESSD_CONNECT_PORTS": str(cls.spy_c.port),
            "EGRESSD_HTTP_PORTS": str(cls.spy_h.port),
        })

    def test_allowed_source_positive_control(self):
        c = self.client(source="127.0.0.1")
        c.send(connect_req(self.spy_c.address))
        resp = c.read_head()
        self.assertEqual(resp.status, 200, f"{resp!r}\n{self.proxy.tail()}")
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(c.read_response().body, b"ok")
        resp, _ = self.exchange(get_req(f"http://{self.spy_h.address}/"), source="127.0.0.1")
        self.assertEqual(resp.status, 200, resp)
        self.assertEqual(resp.body, b"ok")

    def test_denied_source(self):
        bc, bh = self.spy_c.connections, self.spy_h.connections
        self.denied(connect_req(self.spy_c.address), 403, "http_request_denied",
                    method="CONNECT", source="127.0.0.2")
        self.denied(get_req(f"http://{self.spy_h.address}/"), 403, "http_request_denied",
                    source="127.0.0.2", close=True)
        self.assertNothingReached(self.spy_c, bc)
        self.assertNothingReached(self.spy_h, bh)
        e = self.proxy.wait_access(lambda e: e.get("client_addr") == "127.0.0.2"
                                   and e.get("status") == 403)
        self.assertIsNotNone(e["error"])

    def test_denied_connect_port(self):
        bh = self.spy_h.connections
        # spy_h listens, but its port is only in the HTTP gate.
        self.denied(connect_req(self.spy_h.address), 403, "http_request_denied",
                    method="CONNECT")
        self.denied(connect_req("127.0.0.1:443"), 403, "http_request_denied", method="CONNECT")
        self.assertNothingReached(self.spy_h, bh)

    def test_denied_http_port(self):
        bc = self.spy_c.connections
        self.denied(get_req(f"http://{self.spy_c.address}/"), 403, "http_request_denied",
                    close=False)
        self.denied(get_req("http://127.0.0.1/"), 403, "http_request_denied", close=False)
        self.assertNothingReached(self.spy_c, bc)


class DefaultDestinationTest(PolicyTestBase):
    """No EGRESSD_ALLOW_DESTINATIONS: loopback and the other special ranges are denied."""

    @classmethod
    def setUpClass(cls):
        cls.spy = cls.start_origin(SpyOrigin())
        cls.holder, cls.other_port = unused_port()
        cls.addClassCleanup(cls.holder.close)
        cls.proxy = cls.start_proxy(env={
            "EGRESSD_CONNECT_PORTS": f"443,{cls.spy.port}",
            "EGRESSD_HTTP_PORTS": f"80,{cls.spy.port}",
        })

    def test_loopback_denied_connect_and_http(self):
        self.denied(connect_req(self.spy.address), 403, "destination_ip_prohibited",
                    method="CONNECT")
        self.denied(get_req(f"http://{self.spy.address}/"), 403, "destination_ip_prohibited",
                    close=False)
        self.assertNothingReached(self.spy)

    def test_loopback_spellings_denied(self):
        p = self.spy.port
        for host in ("localhost", "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]",
                     "127.1.2.3", "0.0.0.0"):
            with self.subTest(host=host, kind="CONNECT"):
                self.denied(connect_req(f"{host}:{p}"), 403, "destination_ip_prohibited",
                            method="CONNECT")
            with self.subTest(host=host, kind="GET"):
                self.denied(get_req(f"http://{host}:{p}/"), 403, "destination_ip_prohibited",
                            close=False)
        # Numeric forms inet_aton() accepts: rejected as a bad host or denied after lookup.
        for host in ("2130706433", "127.1", "0x7f000001", "0177.0.0.1", "0x7f.0.0.1",
                     "017700000001", "127.0.1", "0x7f.1"):
            with self.subTest(host=host):
                resp, _ = self.exchange(connect_req(f"{host}:{p}"), method="CONNECT")
                self.assertIn(resp.status, (400, 403), resp)
        self.assertNothingReached(self.spy)

    def test_port_gate_before_destination_check(self):
        # Loopback is denied as a destination, but the port is checked first.
        self.denied(connect_req(f"127.0.0.1:{self.other_port}"), 403, "http_request_denied",
                    method="CONNECT")
        self.denied(get_req(f"http://127.0.0.1:{self.other_port}/"), 403,
                    "http_request_denied", close=False)

    def test_port_gate_before_dns(self):
        # A name that cannot resolve: a 502 dns_error here would mean DNS ran before the gate.
        self.denied(connect_req("nonexistent.invalid:25"), 403, "http_request_denied",
                    method="CONNECT")
        self.denied(get_req("http://nonexistent.invalid:25/"), 403, "http_request_denied",
                    close=False)


class MetadataNetnsTest(unittest.TestCase):
    """Default policy inside a network namespace holding only lo: the metadata addresses must be
    refused by egressd (nothing could be reached anyway, so a bug cannot leak)."""

    def test_metadata_addresses_denied(self):
        reason = netns_skip_reason()
        if reason:
            self.skipTest(reason)
        env = clean_env({"PYTHONDONTWRITEBYTECODE": "1"})
        p = subprocess.run(["unshare", "--net", "--", sys.executable,
                            str(SUPPORT_DIR / "netns_probe.py"), egressd_bin()],
                           capture_output=True, env=env, timeout=180)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        out = json.loads(p.stdout.decode().strip().splitlines()[-1])
        diag = "\n".join(out.get("stderr_tail", []))
        results = {r["name"]: r for r in out["results"]}
        self.assertEqual(len(results), 10)
        for name, r in results.items():
            with self.subTest(probe=name, target=r["target"]):
                self.assertNotIn("exception", r, f"{r}\n{diag}")
                # Name lookups fail inside the namespace (no route to any resolver), so an
                # unknown host is tested here: the query can never leave the machine.
                want = (502, "dns_error") if "dns" in name else (403, "destination_ip_prohibited")
                self.assertEqual((r["status"], r["error"]), want, f"{r}\n{diag}")
                if r["method"] == "CONNECT":
                    self.assertTrue(r["closed"], f"denied CONNECT left open: {r}")
        self.assertEqual(out["egressd_rc"], 0, out.get("stop_error", diag))


if __name__ == "__main__":
    unittest.main()
