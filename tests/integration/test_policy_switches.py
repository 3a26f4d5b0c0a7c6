"""Policy switches for rolling egressd out behind a security service (issue 4): report-only deny
rules, the raw-IP target switch, rules on the NLB's VPC endpoint id, X-Authenticated-User in the
access log (and never forwarded), and egressd's own admin listener refused as a destination."""

import re
import socket
import struct
import unittest
import urllib.request

from egressd_harness import (EchoOrigin, HttpOrigin, ProxyTestCase, SpyOrigin,
                             pp_listener_config, wait_until)
from test_proxy_protocol import v2_header


def connect_req(authority: str, extra: str = "") -> bytes:
    return f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{extra}\r\n".encode()


def get_req(authority: str, path: str = "/", extra: str = "") -> bytes:
    return (f"GET http://{authority}{path} HTTP/1.1\r\nHost: {authority}\r\n{extra}"
            "Connection: close\r\n\r\n").encode()


def admin_url(proxy) -> str:
    return "http://" + proxy.admin_address()


def scrape(proxy) -> str:
    with urllib.request.urlopen(admin_url(proxy) + "/metrics", timeout=10) as r:
        return r.read().decode()


GATES = ("gates:\n  sources: [127.0.0.0/8]\n  connect_ports: [1-65535]\n"
         "  http_ports: [1-65535]\n")


class ReportOnlyTest(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.echo = cls.start_origin(EchoOrigin())
        cls.proxy = cls.start_proxy(config=(
            "version: 1\n" + GATES + "destinations:\n  allow: [127.0.0.1/32]\n"
            "rules:\n"
            "  - name: shadow-block\n    action: deny\n    sources: [127.0.0.1/32]\n"
            "    report_only: true\n"
            "  - name: enforced-block\n    action: deny\n    sources: [127.0.0.3/32]\n"
            "  - name: everyone\n    action: allow\n"))

    def test_report_only_rule_logs_counts_and_allows(self):
        c = self.client()
        c.send(connect_req(f"127.0.0.1:{self.echo.port}"))
        self.assertEqual(c.read_head().status, 200)
        c.send(b"still works")
        self.assertEqual(c.read_exact(11), b"still works")
        c.close()
        e = self.proxy.wait_access(lambda e: e["method"] == "CONNECT"
                                   and e["client_addr"] == "127.0.0.1")
        self.assertEqual(e["would_deny"], "shadow-block")
        self.assertEqual(e["rule"], "everyone")
        self.assertEqual(e["status"], 200)
        self.assertIn('egressd_report_only_matches_total{rule="shadow-block"} 1', scrape(self.proxy))

    def test_not_matching_client_reports_nothing_and_enforced_rule_denies(self):
        c = self.client(source="127.0.0.2")
        c.send(connect_req(f"127.0.0.1:{self.echo.port}"))
        self.assertEqual(c.read_head().status, 200)
        c.close()
        e = self.proxy.wait_access(lambda e: e["client_addr"] == "127.0.0.2")
        self.assertIsNone(e["would_deny"])

        resp, _ = self.exchange(connect_req(f"127.0.0.1:{self.echo.port}"), "CONNECT",
                                source="127.0.0.3")
        self.assertProxyError(resp, 403, "http_request_denied")
        e = self.proxy.wait_access(lambda e: e["client_addr"] == "127.0.0.3")
        self.assertEqual(e["rule"], "enforced-block")


class IpLiteralSwitchTest(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.echo = cls.start_origin(EchoOrigin())
        cls.spy = cls.start_origin(SpyOrigin())
        cls.proxy = cls.start_proxy(config=(
            "version: 1\n" + GATES + "  deny_ip_literals: true\n"
            "destinations:\n  allow: [127.0.0.1/32]\n"))

    def test_raw_ip_targets_are_refused_in_every_spelling(self):
        echo = self.origin(EchoOrigin())
        spy = self.origin(SpyOrigin())
        for host in ("127.0.0.1", "[::1]", "[::ffff:127.0.0.1]"):
            with self.subTest(host=host):
                resp, c = self.exchange(connect_req(f"{host}:{echo.port}"), "CONNECT")
                self.assertProxyError(resp, 403, "destination_ip_prohibited")
                resp, c = self.exchange(get_req(f"{host}:{spy.port}"))
                self.assertProxyError(resp, 403, "destination_ip_prohibited")
        # Non-canonical numeric hosts never get this far: the target parser refuses them (400).
        for host in ("127.1", "2130706433", "0x7f.1", "0x7f000001", "127.0.0.1."):
            with self.subTest(host=host):
                resp, c = self.exchange(connect_req(f"{host}:{echo.port}"), "CONNECT")
                self.assertIn(resp.status, (400, 403), repr(resp))
                resp, c = self.exchange(get_req(f"{host}:{spy.port}"))
                self.assertIn(resp.status, (400, 403), repr(resp))
        self.assertEqual(spy.total_bytes(), 0)
        self.assertEqual(echo.connections, 0)
        e = self.proxy.wait_access(lambda e: e["error"] == "ip_literal_denied")
        self.assertEqual(e["status"], 403)
        # Counted when the response has gone out: poll briefly for the last one.
        self.assertTrue(wait_until(
            lambda: 'egressd_denials_total{reason="ip_literal"} 6' in scrape(self.proxy)),
            scrape(self.proxy))

    def test_names_still_work(self):
        # Positive control: the same origin by name passes the switch.
        c = self.client()
        c.send(connect_req(f"localhost:{self.echo.port}"))
        resp = c.read_head()
        self.assertEqual(resp.status, 200, f"{resp!r}\n{self.proxy.tail()}")
        c.send(b"named")
        self.assertEqual(c.read_exact(5), b"named")


class AuthenticatedUserTest(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.http = cls.start_origin(HttpOrigin())
        cls.echo = cls.start_origin(EchoOrigin())
        cls.proxy = cls.start_proxy(config=(
            "version: 1\n" + GATES + "destinations:\n  allow: [127.0.0.1/32]\n"))

    def test_user_is_logged_and_not_forwarded(self):
        spy = self.origin(SpyOrigin())
        resp, _ = self.exchange(get_req(f"127.0.0.1:{spy.port}", "/u",
                                        "X-Authenticated-User: alice@example.com\r\n"
                                        "X-Other: kept\r\n"))
        self.assertEqual(resp.status, 200)
        self.assertTrue(spy.wait_data(lambda d: d and b"\r\n\r\n" in d[0]))
        sent = spy.received()[0].lower()
        self.assertNotIn(b"x-authenticated-user", sent)
        self.assertNotIn(b"alice", sent)
        self.assertIn(b"x-other: kept", sent)
        e = self.proxy.wait_access(lambda e: e["target"].endswith("/u"))
        self.assertEqual(e["user"], "alice@example.com")

    def test_user_on_connect_and_hostile_value_escaped(self):
        c = self.client()
        c.send(connect_req(f"127.0.0.1:{self.echo.port}",
                           "X-Authenticated-User: bob \"x\" \\y\r\n"))
        self.assertEqual(c.read_head().status, 200)
        c.close()
        e = self.proxy.wait_access(lambda e: e["method"] == "CONNECT" and e["user"])
        self.assertEqual(e["user"], "bob \"x\" \\y")

    def test_no_header_no_user(self):
        resp, _ = self.exchange(get_req(f"127.0.0.1:{self.http.port}", "/anon"))
        self.assertEqual(resp.status, 200)
        e = self.proxy.wait_access(lambda e: e["target"].endswith("/anon"))
        self.assertIsNone(e["user"])


class VpceRuleTest(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.echo = cls.start_origin(EchoOrigin())
        cls.proxy = cls.start_proxy(config=(
            pp_listener_config() +
            "gates:\n  sources: [10.0.0.0/8]\n  connect_ports: [1-65535]\n"
            "destinations:\n  allow: [127.0.0.1/32]\n"
            "rules:\n  - name: our-endpoint\n    action: allow\n"
            "    vpce_ids: [vpce-0a1b2c3d4e5f60718]\n"),
            env={"EGRESSD_LISTEN": None})

    def tunnel_status(self, vpce):
        c = self.client()
        c.send(v2_header("10.1.2.3", 40000, "10.0.0.1", 3128, vpce=vpce)
               + connect_req(f"127.0.0.1:{self.echo.port}"))
        status = c.read_head().status
        c.close()  # a tunnel is logged when it ends
        return status

    def test_rule_matches_the_endpoint_id_from_the_nlb(self):
        self.assertEqual(self.tunnel_status("vpce-0a1b2c3d4e5f60718"), 200)
        e = self.proxy.wait_access(lambda e: e["vpce_id"] == "vpce-0a1b2c3d4e5f60718")
        self.assertEqual(e["rule"], "our-endpoint")
        self.assertEqual(e["client_addr"], "10.1.2.3")

    def test_other_or_no_endpoint_is_denied(self):
        self.assertEqual(self.tunnel_status("vpce-0ffffffffffffffff"), 403)
        self.assertEqual(self.tunnel_status(None), 403)


class AdminIsNoDestinationTest(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.proxy = cls.start_proxy(config=(
            "version: 1\n" + GATES + "destinations:\n  allow: [127.0.0.0/8]\n"))

    def test_admin_address_is_a_loop(self):
        m = re.match(r"http://([\d.]+):(\d+)", admin_url(self.proxy))
        resp, _ = self.exchange(get_req(f"{m.group(1)}:{m.group(2)}", "/metrics"))
        self.assertProxyError(resp, 508, "proxy_loop_detected")
        resp, _ = self.exchange(connect_req(f"{m.group(1)}:{m.group(2)}"), "CONNECT")
        self.assertProxyError(resp, 508, "proxy_loop_detected")


if __name__ == "__main__":
    unittest.main()
