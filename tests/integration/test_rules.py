"""Access rules and the DNS-dependent destination checks, through real sockets.

Every egressd here resolves names with a DnsStub (tests/support/dns_stub.py) on 127.0.0.1, never
with the system resolver, and every address any answer holds is a loopback address, except in
NetnsDnsAnswersTest, which runs inside its own network namespace (unshare --net, only lo).

- RulesTest: ordered rules, first match wins, default deny; domains (exact, *.suffix, case, the
  trailing dot); destination CIDRs; port lists and ranges; method classes; source CIDRs; the
  access log's rule field; names no rule can allow are never looked up.
- DestinationTest: no rules, the destination policy on every resolved address: forbidden
  addresses first in the answer are skipped, names with only forbidden addresses (IPv4-mapped
  AAAA included) are refused without a connection, answer order, failover, TCP answers.
- EgressBindTest: `bind` on an allow rule and the global egress.bind, seen by the origin.
- DnsFailureTest, DnsCoalesceTest: NXDOMAIN, NODATA, SERVFAIL, REFUSED, timeout; the negative
  cache; concurrent lookups of one name coalesced.
- Header*Test: X-Forwarded-For replace / delete / off and Via off (append and Via on are covered
  by test_http.py).

No wall-time assertion anywhere; timeouts are failure guards only.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import unittest
import urllib.request
from typing import Optional

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))

from dns_stub import QTYPE_A, DnsStub  # noqa: E402
from egressd_harness import (SUPPORT_DIR, Egressd, HttpOrigin, ProxyTestCase,  # noqa: E402
                             RawClient, SpyOrigin, TcpServer, clean_env, egressd_bin,
                             netns_skip_reason, same_port)

# After a refusal, how long to keep watching an origin that must not be contacted. egressd
# decides before it answers, so this only guards against a connection opened after the answer;
# it is never a timing assertion.
SETTLE = 0.2


def connect_req(target: str, extra: str = "") -> bytes:
    return f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n".encode()


def get_req(url: str, extra: str = "", method: str = "GET") -> bytes:
    host = url.split("/")[2]
    return f"{method} {url} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


def header_values(headers, name):
    return [v for k, v in headers if k.lower() == name.lower()]


def port_of(c: RawClient) -> int:
    """The client's local port, remembered so that it is still known after c is closed."""
    if not hasattr(c, "saved_port"):
        c.saved_port = c.local_port
    return c.saved_port


def have_ipv6_loopback() -> bool:
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


def yaml_config(dns: DnsStub, *, allow=("127.0.0.1/32",), rules=None, extra: str = "",
                dns_extra: str = "", timeouts: str = "") -> str:
    """A config text: the stub as the only DNS server, every port open at the gates (the rules
    are under test, not the gates), loopback destinations re-allowed as given."""
    text = ("version: 1\n"
            f"dns:\n  servers: [\"{dns.address}\"]\n{dns_extra}"
            f"destinations:\n  allow: {json.dumps(list(allow))}\n"
            "gates:\n  connect_ports: [\"1-65535\"]\n  http_ports: [\"1-65535\"]\n")
    if rules is not None:
        text += f"rules: {json.dumps(rules)}\n"
    if timeouts:
        text += f"timeouts:\n{timeouts}"
    return text + extra


class RulesTestBase(ProxyTestCase):
    dns: DnsStub = None

    @classmethod
    def start_dns(cls) -> DnsStub:
        stub = DnsStub().start()
        cls.addClassCleanup(stub.stop)
        return stub

    # -- requests -------------------------------------------------------------------------------

    def get(self, host: str, port: int, path: str = "/ip", source: Optional[str] = None,
            extra: str = "", proxy: Optional[Egressd] = None):
        """A plain-HTTP request through egressd: (response, client)."""
        return self.exchange(get_req(f"http://{host}:{port}{path}", extra), source=source,
                             proxy=proxy)

    def tunnel(self, target: str, source: Optional[str] = None):
        """CONNECT target; on 200, one GET /ip through the tunnel. (CONNECT response, client,
        body of the inner response or None)."""
        c = self.client(source=source)
        c.send(connect_req(target))
        resp = c.read_response("CONNECT")
        if resp.status != 200:
            return resp, c, None
        c.send(b"GET /ip HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n")
        return resp, c, c.read_response().body

    def log_of(self, c: RawClient, source: str = "127.0.0.1") -> dict:
        """The access-log line of the request made on client c. Closes c first: after a response
        of its own egressd reads what the client still sends (lingering close) until the client
        closes or 2 s pass, and writes the line after that; a tunnel's line comes at its end."""
        port = port_of(c)
        c.close()
        return self.proxy.wait_access(lambda e: e.get("client_port") == port
                                      and e.get("client_addr") == source)

    # -- assertions -----------------------------------------------------------------------------

    def assertOk(self, resp, body: Optional[bytes] = None):
        self.assertEqual(resp.status, 200, f"{resp!r}\n{self.proxy.tail(15)}")
        self.assertIsNone(resp.proxy_status, resp)
        if body is not None:
            self.assertEqual(resp.body, body)

    def assertRefused(self, resp, c: RawClient, status: int, error: str):
        """An egressd error response, Connection: close, then the connection closed."""
        self.assertProxyError(resp, status, error)
        self.assertIn("close", (resp.header("Connection") or "").lower(), resp)
        self.assertClosedByProxy(c)
        port_of(c)
        c.close()  # ends egressd's lingering close at once

    def assertNoConnection(self, *servers: TcpServer):
        time.sleep(SETTLE)
        for s in servers:
            self.assertEqual(s.connections, 0, f"{s.host}:{s.port} was contacted")


# ---------------------------------------------------------------------------------------------
# rules
# ---------------------------------------------------------------------------------------------


class RulesTest(RulesTestBase):
    """Loopback re-allowed, every port open at the gates; the rules decide. Every name the stub
    knows resolves to loopback; names are registered even when a rule must refuse them, so a
    refusal can only come from the rules."""

    @classmethod
    def setUpClass(cls):
        cls.dns = cls.start_dns()
        cls.origin1, cls.spy3, cls.spy4 = same_port(
            HttpOrigin, lambda: SpyOrigin(host="127.0.0.3"), lambda: SpyOrigin(host="127.0.0.4"))
        for s in (cls.origin1, cls.spy3, cls.spy4):
            cls.start_origin(s)
        cls.P = cls.origin1.port
        cls.range_origin = cls.start_origin(HttpOrigin())  # its port is in the rule's range
        cls.Q = cls.range_origin.port
        while True:  # a listening port outside every port the rules name
            spy = SpyOrigin()
            if spy.port != cls.P and not cls.Q - 1 <= spy.port <= cls.Q:
                break
            spy.sock.close()
        cls.port_spy = cls.start_origin(spy)
        cls.R = cls.port_spy.port
        for name in ("exact.test", "sub.exact.test", "xexact.test", "api.wild.test",
                     "deep.api.wild.test", "wild.test", "badwild.test", "wild.test.evil.test",
                     "blocked.wild.test", "tunnel.test", "plain.test", "ports.test",
                     "src.test", "unlisted.test", "in.dst.test"):
            cls.dns.set_answers(name, ["127.0.0.1"])
        cls.dns.set_answers("out.dst.test", ["127.0.0.3"])
        cls.dns.set_answers("other.dst.test", ["127.0.0.4"])
        cls.dns.set_answers("three-first.dst.test", ["127.0.0.3", "127.0.0.1"])
        cls.dns.set_answers("one-first.dst.test", ["127.0.0.1", "127.0.0.3"])
        rules = [
            {"name": "deny-blocked", "action": "deny", "domains": ["blocked.wild.test"]},
            {"name": "allow-exact", "action": "allow", "domains": ["exact.test"]},
            {"name": "allow-wild", "action": "allow", "domains": ["*.wild.test"]},
            # Matches what the two rules above allow: never reached for those names.
            {"name": "shadowed-deny", "action": "deny",
             "domains": ["*.wild.test", "exact.test"]},
            {"name": "connect-only", "action": "allow", "domains": ["tunnel.test"],
             "methods": ["connect"]},
            {"name": "http-only", "action": "allow", "domains": ["plain.test"],
             "methods": ["http"]},
            {"name": "port-list", "action": "allow", "domains": ["ports.test"],
             "ports": [cls.P, f"{cls.Q - 1}-{cls.Q}"]},
            {"name": "local-clients", "action": "allow", "domains": ["src.test"],
             "sources": ["127.0.0.1/32"]},
            {"name": "deny-three", "action": "deny", "domains": ["*.dst.test"],
             "destinations": ["127.0.0.3/32"]},
            {"name": "allow-one", "action": "allow", "domains": ["*.dst.test"],
             "destinations": ["127.0.0.1/32"]},
        ]
        cls.proxy = cls.start_proxy(config=yaml_config(
            cls.dns, allow=["127.0.0.0/8"], rules=rules))

    # -- default deny and ordering ----------------------------------------------------------

    def test_default_deny_when_no_rule_matches(self):
        resp, c = self.get("unlisted.test", self.P)
        self.assertRefused(resp, c, 403, "http_request_denied")
        e = self.log_of(c)
        self.assertEqual((e["status"], e["rule"], e["error"]), (403, None, "rule_denied"), e)
        resp, c = self.exchange(connect_req(f"unlisted.test:{self.P}"), method="CONNECT")
        self.assertRefused(resp, c, 403, "http_request_denied")
        # No rule can allow the name: it is never looked up (DNS is no oracle), nothing reached.
        self.assertEqual(self.dns.count("unlisted.test"), 0)
        n = len(self.origin1.requests)
        self.assertNoConnection(self.port_spy)
        self.assertEqual(len(self.origin1.requests), n)
        # Positive control: a listed name on the same origin passes and is looked up.
        resp, c = self.get("exact.test", self.P)
        self.assertOk(resp, b"127.0.0.1\n")
        self.assertGreater(self.dns.count("exact.test"), 0)

    def test_ip_literal_matches_no_domain_rule(self):
        # exact.test resolves to 127.0.0.1, but a domain rule never matches an address literal.
        resp, c = self.get("127.0.0.1", self.P)
        self.assertRefused(resp, c, 403, "http_request_denied")
        resp, c = self.exchange(connect_req(f"127.0.0.1:{self.P}"), method="CONNECT")
        self.assertRefused(resp, c, 403, "http_request_denied")

    def test_first_match_wins(self):
        # blocked.wild.test matches deny-blocked (first) and allow-wild (later): denied.
        resp, c = self.get("blocked.wild.test", self.P)
        self.assertRefused(resp, c, 403, "http_request_denied")
        self.assertEqual(self.log_of(c)["error"], "rule_denied")
        resp, c, _ = self.tunnel(f"blocked.wild.test:{self.P}")
        self.assertRefused(resp, c, 403, "http_request_denied")
        self.assertEqual(self.dns.count("blocked.wild.test"), 0)
        # api.wild.test matches allow-wild and, later, shadowed-deny: allowed by allow-wild.
        resp, c = self.get("api.wild.test", self.P)
        self.assertOk(resp, b"127.0.0.1\n")
        self.assertEqual(self.log_of(c)["rule"], "allow-wild")
        resp, c = self.get("exact.test", self.P)
        self.assertOk(resp)
        self.assertEqual(self.log_of(c)["rule"], "allow-exact")

    def test_access_log_names_the_deny_rule_that_matched(self):
        resp, c = self.get("blocked.wild.test", self.P)
        self.assertEqual(resp.status, 403)
        self.assertEqual(self.log_of(c)["rule"], "deny-blocked")

    # -- domains ----------------------------------------------------------------------------

    def test_exact_domain_case_and_trailing_dot(self):
        for host in ("exact.test", "EXACT.Test", "exact.test.", "Exact.TEST."):
            with self.subTest(host=host):
                resp, c = self.get(host, self.P)
                self.assertOk(resp, b"127.0.0.1\n")
                self.assertEqual(self.log_of(c)["rule"], "allow-exact")
                resp, c, body = self.tunnel(f"{host}:{self.P}")
                self.assertEqual(resp.status, 200, resp)
                self.assertEqual(body, b"127.0.0.1\n")

    def test_exact_domain_does_not_match_other_names(self):
        for host in ("sub.exact.test", "xexact.test"):
            with self.subTest(host=host):
                resp, c = self.get(host, self.P)
                self.assertRefused(resp, c, 403, "http_request_denied")
                self.assertEqual(self.dns.count(host), 0)

    def test_wildcard_matches_names_below_the_suffix(self):
        for host in ("api.wild.test", "deep.api.wild.test", "API.Wild.TEST", "api.wild.test."):
            with self.subTest(host=host):
                resp, c = self.get(host, self.P)
                self.assertOk(resp, b"127.0.0.1\n")
                self.assertEqual(self.log_of(c)["rule"], "allow-wild")
                resp, c, body = self.tunnel(f"{host}:{self.P}")
                self.assertEqual((resp.status, body), (200, b"127.0.0.1\n"), resp)

    def test_wildcard_does_not_match_bare_suffix_or_lookalikes(self):
        for host in ("wild.test", "wild.test.", "badwild.test", "wild.test.evil.test"):
            with self.subTest(host=host):
                resp, c = self.get(host, self.P)
                self.assertRefused(resp, c, 403, "http_request_denied")
                resp, c = self.exchange(connect_req(f"{host}:{self.P}"), method="CONNECT")
                self.assertRefused(resp, c, 403, "http_request_denied")
                self.assertEqual(self.dns.count(host), 0)

    # -- method classes -------------------------------------------------------------------

    def test_method_class_connect_only(self):
        resp, c, body = self.tunnel(f"tunnel.test:{self.P}")
        self.assertEqual((resp.status, body), (200, b"127.0.0.1\n"), resp)
        self.assertEqual(self.log_of(c)["rule"], "connect-only")
        resp, c = self.get("tunnel.test", self.P)
        self.assertRefused(resp, c, 403, "http_request_denied")

    def test_method_class_http_only(self):
        resp, c = self.get("plain.test", self.P)
        self.assertOk(resp, b"127.0.0.1\n")
        self.assertEqual(self.log_of(c)["rule"], "http-only")
        resp, c = self.exchange(connect_req(f"plain.test:{self.P}"), method="CONNECT")
        self.assertRefused(resp, c, 403, "http_request_denied")

    # -- ports ------------------------------------------------------------------------------

    def test_port_list_and_range(self):
        resp, c = self.get("ports.test", self.P)  # listed
        self.assertOk(resp, b"127.0.0.1\n")
        self.assertEqual(self.log_of(c)["rule"], "port-list")
        resp, c = self.get("ports.test", self.Q)  # upper end of the range
        self.assertOk(resp, b"127.0.0.1\n")
        self.assertEqual(self.log_of(c)["rule"], "port-list")
        resp, c, body = self.tunnel(f"ports.test:{self.Q}")
        self.assertEqual((resp.status, body), (200, b"127.0.0.1\n"), resp)
        # Outside both: refused before the lookup, the listener on that port never contacted.
        lookups = self.dns.count("ports.test")
        resp, c = self.get("ports.test", self.R)
        self.assertRefused(resp, c, 403, "http_request_denied")
        resp, c = self.exchange(connect_req(f"ports.test:{self.R}"), method="CONNECT")
        self.assertRefused(resp, c, 403, "http_request_denied")
        self.assertEqual(self.dns.count("ports.test"), lookups)
        self.assertNoConnection(self.port_spy)

    # -- sources ----------------------------------------------------------------------------

    def test_source_cidr(self):
        resp, c = self.get("src.test", self.P, source="127.0.0.1")
        self.assertOk(resp, b"127.0.0.1\n")
        self.assertEqual(self.log_of(c)["rule"], "local-clients")
        lookups = self.dns.count("src.test")
        n = len(self.origin1.requests)
        resp, c = self.get("src.test", self.P, source="127.0.0.2")
        self.assertRefused(resp, c, 403, "http_request_denied")
        e = self.log_of(c, source="127.0.0.2")
        self.assertEqual((e["status"], e["error"]), (403, "rule_denied"), e)
        resp, c, _ = self.tunnel(f"src.test:{self.P}", source="127.0.0.2")
        self.assertRefused(resp, c, 403, "http_request_denied")
        self.assertEqual(self.dns.count("src.test"), lookups)
        time.sleep(SETTLE)
        self.assertEqual(len(self.origin1.requests), n)

    # -- destination CIDRs -------------------------------------------------------------------

    def test_destination_cidr_inside(self):
        resp, c = self.get("in.dst.test", self.P)
        self.assertOk(resp, b"127.0.0.1\n")
        e = self.log_of(c)
        self.assertEqual((e["rule"], e["upstream_addr"]), ("allow-one", f"127.0.0.1:{self.P}"))

    def test_destination_cidr_outside_is_refused_after_lookup(self):
        # Only the address decides here, so the name is looked up, then refused unconnected.
        resp, c = self.get("out.dst.test", self.P)
        self.assertRefused(resp, c, 403, "http_request_denied")
        e = self.log_of(c)
        self.assertEqual((e["rule"], e["error"]), ("deny-three", "rule_denied"), e)
        self.assertGreater(self.dns.count("out.dst.test"), 0)
        resp, c, _ = self.tunnel(f"other.dst.test:{self.P}")  # no rule for 127.0.0.4
        self.assertRefused(resp, c, 403, "http_request_denied")
        self.assertIsNone(self.log_of(c)["rule"])
        self.assertGreater(self.dns.count("other.dst.test"), 0)
        self.assertNoConnection(self.spy3, self.spy4)

    def test_destination_cidr_skips_denied_address(self):
        # 127.0.0.3 (denied by rule) first in the answer: egressd connects to 127.0.0.1 only.
        resp, c = self.get("three-first.dst.test", self.P)
        self.assertOk(resp, b"127.0.0.1\n")
        e = self.log_of(c)
        self.assertEqual((e["rule"], e["upstream_addr"]), ("allow-one", f"127.0.0.1:{self.P}"))
        resp, c, body = self.tunnel(f"three-first.dst.test:{self.P}")
        self.assertEqual((resp.status, body), (200, b"127.0.0.1\n"), resp)
        resp, c = self.get("one-first.dst.test", self.P)
        self.assertOk(resp, b"127.0.0.1\n")
        self.assertNoConnection(self.spy3)

    def test_access_log_names_the_rule_of_the_address_used(self):
        resp, c = self.get("one-first.dst.test", self.P)
        self.assertOk(resp, b"127.0.0.1\n")
        e = self.log_of(c)
        self.assertEqual(e["upstream_addr"], f"127.0.0.1:{self.P}")
        self.assertEqual(e["rule"], "allow-one")


# ---------------------------------------------------------------------------------------------
# destination policy on resolved addresses
# ---------------------------------------------------------------------------------------------


class DestinationTest(RulesTestBase):
    """No rules; only 127.0.0.1, .7 and .8 re-allowed, so every other loopback address is a
    forbidden destination. Spies listen on forbidden addresses at the origin's port."""

    @classmethod
    def setUpClass(cls):
        cls.dns = cls.start_dns()
        v6 = have_ipv6_loopback()
        servers = same_port(
            HttpOrigin, lambda: HttpOrigin(host="127.0.0.8"),
            lambda: SpyOrigin(host="127.0.0.9"), lambda: SpyOrigin(host="127.0.1.1"),
            "127.0.0.7", *([lambda: SpyOrigin(host="::1")] if v6 else []))
        cls.origin1, cls.origin8, cls.spy9, cls.spy_big, holder = servers[:5]
        cls.addClassCleanup(holder.close)
        cls.spy6 = servers[5] if v6 else None
        cls.spies = [cls.spy9, cls.spy_big] + ([cls.spy6] if v6 else [])
        for s in [cls.origin1, cls.origin8] + cls.spies:
            cls.start_origin(s)
        cls.P = cls.origin1.port
        d = cls.dns
        d.set_answers("forbidden-first.test", ["127.0.0.9", "127.0.0.1"])
        d.set_answers("forbidden-only.test", ["127.0.0.9", "::ffff:127.0.0.9", "::1"])
        d.set_answers("mapped-forbidden.test", ["::ffff:127.0.0.9"])
        d.set_answers("mapped-allowed.test", ["::ffff:127.0.0.1"])
        d.set_answers("order-8-1.test", ["127.0.0.9", "127.0.0.8", "127.0.0.1"])
        d.set_answers("order-1-8.test", ["127.0.0.1", "127.0.0.8"])
        d.set_answers("failover.test", ["127.0.0.7", "127.0.0.1"])
        d.set_answers("self.test", ["127.0.0.1"])
        # 40 A records do not fit in 512 bytes: the answer comes over TCP.
        d.set_answers("big.test", [f"127.0.1.{i}" for i in range(1, 40)] + ["127.0.0.1"])
        cls.proxy = cls.start_proxy(config=yaml_config(
            d, allow=["127.0.0.1/32", "127.0.0.7/32", "127.0.0.8/32"]))

    def test_forbidden_address_first_is_skipped(self):
        resp, c = self.get("forbidden-first.test", self.P)
        self.assertOk(resp, b"127.0.0.1\n")
        self.assertEqual(self.log_of(c)["upstream_addr"], f"127.0.0.1:{self.P}")
        resp, c, body = self.tunnel(f"forbidden-first.test:{self.P}")
        self.assertEqual((resp.status, body), (200, b"127.0.0.1\n"), resp)
        self.assertNoConnection(self.spy9)

    def test_only_forbidden_addresses_refused_without_connection(self):
        for host in ("forbidden-only.test", "mapped-forbidden.test"):
            with self.subTest(host=host):
                resp, c = self.get(host, self.P)
                self.assertRefused(resp, c, 403, "destination_ip_prohibited")
                e = self.log_of(c)
                self.assertEqual((e["error"], e["upstream_addr"]),
                                 ("destination_denied", None), e)
                resp, c = self.exchange(connect_req(f"{host}:{self.P}"), method="CONNECT")
                self.assertRefused(resp, c, 403, "destination_ip_prohibited")
                self.assertGreater(self.dns.count(host), 0)
        self.assertNoConnection(*self.spies)

    def test_ipv4_mapped_answer_is_unmapped(self):
        # Positive control for the above: ::ffff:127.0.0.1 is 127.0.0.1, which is allowed, and
        # egressd connects to it over IPv4.
        resp, c = self.get("mapped-allowed.test", self.P)
        self.assertOk(resp, b"127.0.0.1\n")
        self.assertEqual(self.log_of(c)["upstream_addr"], f"127.0.0.1:{self.P}")

    def test_first_allowed_address_in_answer_order(self):
        n1, n8 = len(self.origin1.requests), len(self.origin8.requests)
        resp, c = self.get("order-8-1.test", self.P)
        self.assertOk(resp)
        self.assertEqual(self.log_of(c)["upstream_addr"], f"127.0.0.8:{self.P}")
        resp, c = self.get("order-1-8.test", self.P)
        self.assertOk(resp)
        self.assertEqual(self.log_of(c)["upstream_addr"], f"127.0.0.1:{self.P}")
        self.assertEqual((len(self.origin1.requests) - n1, len(self.origin8.requests) - n8),
                         (1, 1))
        self.assertNoConnection(self.spy9)

    def test_refused_address_fails_over_to_next_checked_one(self):
        # 127.0.0.7 is allowed but nothing listens there: the next checked address is used.
        resp, c = self.get("failover.test", self.P)
        self.assertOk(resp, b"127.0.0.1\n")
        self.assertEqual(self.log_of(c)["upstream_addr"], f"127.0.0.1:{self.P}")

    def test_answer_over_tcp_every_address_checked(self):
        resp, c = self.get("big.test", self.P)
        self.assertOk(resp, b"127.0.0.1\n")
        self.assertEqual(self.log_of(c)["upstream_addr"], f"127.0.0.1:{self.P}")
        self.assertGreater(self.dns.tcp_queries("big.test"), 0, "the stub never answered on TCP")
        self.assertNoConnection(self.spy_big)

    def test_name_resolving_to_egressd_itself_is_a_loop(self):
        resp, c = self.get("self.test", self.proxy.port)
        self.assertRefused(resp, c, 508, "proxy_loop_detected")
        resp, c = self.exchange(connect_req(f"self.test:{self.proxy.port}"), method="CONNECT")
        self.assertRefused(resp, c, 508, "proxy_loop_detected")


# ---------------------------------------------------------------------------------------------
# egress source address
# ---------------------------------------------------------------------------------------------


class EgressBindTest(RulesTestBase):
    """egress.bind 127.0.0.6 for everything, 127.0.0.5 from a rule's bind. One worker, so the
    upstream connection pool is one."""

    @classmethod
    def setUpClass(cls):
        cls.dns = cls.start_dns()
        cls.origin = cls.start_origin(HttpOrigin())
        cls.P = cls.origin.port
        for name in ("bound.test", "free.test", "shared.test"):
            cls.dns.set_answers(name, ["127.0.0.1"])
        rules = [
            {"name": "bind-five", "action": "allow", "domains": ["bound.test"],
             "bind": "127.0.0.5"},
            {"name": "bind-five-for-two", "action": "allow", "domains": ["shared.test"],
             "sources": ["127.0.0.2/32"], "bind": "127.0.0.5"},
            {"name": "the-rest", "action": "allow"},
        ]
        cls.proxy = cls.start_proxy(
            config=yaml_config(cls.dns, rules=rules, extra="egress:\n  bind: \"127.0.0.6\"\n"),
            env={"EGRESSD_WORKERS": "1"})

    def test_rule_bind(self):
        resp, c = self.get("bound.test", self.P)
        self.assertOk(resp, b"127.0.0.5\n")
        e = self.log_of(c)
        self.assertEqual((e["rule"], e["egress_addr"]), ("bind-five", "127.0.0.5"), e)
        resp, c, body = self.tunnel(f"bound.test:{self.P}")
        self.assertEqual((resp.status, body), (200, b"127.0.0.5\n"), resp)
        self.assertEqual(self.log_of(c)["egress_addr"], "127.0.0.5")

    def test_global_egress_bind(self):
        resp, c = self.get("free.test", self.P)
        self.assertOk(resp, b"127.0.0.6\n")
        e = self.log_of(c)
        self.assertEqual((e["rule"], e["egress_addr"]), ("the-rest", "127.0.0.6"), e)
        resp, c, body = self.tunnel(f"127.0.0.1:{self.P}")
        self.assertEqual((resp.status, body), (200, b"127.0.0.6\n"), resp)

    def test_pooled_connection_not_reused_across_egress_addresses(self):
        # Same name, port and address; the source picks the egress address. A keep-alive
        # upstream connection from 127.0.0.5 must never carry a request meant to leave from .6.
        for src, want in (("127.0.0.2", b"127.0.0.5\n"), ("127.0.0.1", b"127.0.0.6\n"),
                          ("127.0.0.2", b"127.0.0.5\n"), ("127.0.0.1", b"127.0.0.6\n")):
            with self.subTest(source=src):
                resp, c = self.get("shared.test", self.P, source=src)
                self.assertOk(resp, want)


# ---------------------------------------------------------------------------------------------
# DNS failures and the cache
# ---------------------------------------------------------------------------------------------


class DnsFailureTest(RulesTestBase):
    """One worker (one resolver, one cache); timeouts.dns 500ms; negative_ttl 60s (no entry
    expires during the test)."""

    @classmethod
    def setUpClass(cls):
        cls.dns = cls.start_dns()
        cls.origin = cls.start_origin(HttpOrigin())
        cls.P = cls.origin.port
        cls.proxy = cls.start_proxy(
            config=yaml_config(cls.dns, dns_extra="  negative_ttl: 60s\n",
                               timeouts="  dns: 500ms\n"),
            env={"EGRESSD_WORKERS": "1"})

    def check_failure(self, host: str, status: int, error: str, log_error: str):
        resp, c = self.get(host, self.P)
        self.assertRefused(resp, c, status, error)
        e = self.log_of(c)
        self.assertEqual((e["status"], e["error"], e["upstream_addr"]),
                         (status, log_error, None), e)
        resp, c = self.exchange(connect_req(f"{host}:{self.P}"), method="CONNECT")
        self.assertRefused(resp, c, status, error)

    def test_nxdomain_is_502_and_negatively_cached(self):
        self.dns.set_behaviour("nx.test", DnsStub.NXDOMAIN)
        self.check_failure("nx.test", 502, "dns_error", "dns_error")
        n = self.dns.lookups("nx.test")
        self.assertGreater(n, 0)
        self.check_failure("NX.test.", 502, "dns_error", "dns_error")
        self.assertEqual(self.dns.lookups("nx.test"), n, "NXDOMAIN was not cached")

    def test_nodata_is_502_and_negatively_cached(self):
        self.dns.set_answers("nodata.test", [])  # the name exists, without A or AAAA
        self.check_failure("nodata.test", 502, "dns_error", "dns_error")
        n = self.dns.lookups("nodata.test")
        self.assertGreater(n, 0)
        self.check_failure("nodata.test", 502, "dns_error", "dns_error")
        self.assertEqual(self.dns.lookups("nodata.test"), n, "an empty answer was not cached")

    def test_positive_answer_cached(self):
        # Control for the negative cache: the counters do see a lookup when there is one.
        self.dns.set_answers("cached.test", ["127.0.0.1"], ttl=300)
        resp, _ = self.get("cached.test", self.P)
        self.assertOk(resp, b"127.0.0.1\n")
        n = self.dns.lookups("cached.test")
        self.assertGreater(n, 0)
        resp, _ = self.get("cached.test", self.P)
        self.assertOk(resp, b"127.0.0.1\n")
        self.assertEqual(self.dns.lookups("cached.test"), n)

    def test_servfail_and_refused_are_502_and_not_cached(self):
        for host, how in (("servfail.test", DnsStub.SERVFAIL), ("refused.test", DnsStub.REFUSED)):
            with self.subTest(host=host):
                self.dns.set_answers(host, ["127.0.0.1"])
                self.dns.set_behaviour(host, how)
                self.check_failure(host, 502, "dns_error", "dns_error")
                n = self.dns.lookups(host)
                self.assertGreater(n, 0)
                # Not cached: the next request asks again, and the server now answers.
                self.dns.set_behaviour(host, None)
                resp, _ = self.get(host, self.P)
                self.assertOk(resp, b"127.0.0.1\n")
                self.assertGreater(self.dns.lookups(host), n)

    def test_timeout_is_504_and_not_cached(self):
        self.dns.set_answers("slow.test", ["127.0.0.1"])
        self.dns.set_behaviour("slow.test", DnsStub.TIMEOUT)
        resp, c = self.get("slow.test", self.P)
        self.assertRefused(resp, c, 504, "dns_timeout")
        e = self.log_of(c)
        self.assertEqual((e["status"], e["error"]), (504, "dns_timeout"), e)
        n = self.dns.lookups("slow.test")
        self.assertGreater(n, 0)
        self.dns.set_behaviour("slow.test", None)
        resp, _ = self.get("slow.test", self.P)
        self.assertOk(resp, b"127.0.0.1\n")
        self.assertGreater(self.dns.lookups("slow.test"), n)

    def test_dns_error_on_keepalive_connection_closes_it(self):
        # A good request, then a pipelined pair whose first fails: 502, close, the second request
        # never answered.
        self.dns.set_answers("good.test", ["127.0.0.1"])
        self.dns.set_behaviour("gone.test", DnsStub.NXDOMAIN)
        c = self.client()
        c.send(get_req(f"http://good.test:{self.P}/ip"))
        self.assertOk(c.read_response(), b"127.0.0.1\n")
        c.send(get_req(f"http://gone.test:{self.P}/ip")
               + get_req(f"http://good.test:{self.P}/ip"))
        resp = c.read_response()
        self.assertRefused(resp, c, 502, "dns_error")


class DnsCoalesceTest(RulesTestBase):
    """One worker, a long DNS timeout: the stub holds a query while a second request for the same
    name arrives."""

    @classmethod
    def setUpClass(cls):
        cls.dns = cls.start_dns()
        cls.origin = cls.start_origin(HttpOrigin())
        cls.P = cls.origin.port
        cls.proxy = cls.start_proxy(config=yaml_config(cls.dns, timeouts="  dns: 20s\n"),
                                    env={"EGRESSD_WORKERS": "1"})
        cls.admin = "http://" + cls.proxy.admin_address()

    def cache_counts(self) -> tuple[float, float]:
        with urllib.request.urlopen(self.admin + "/metrics", timeout=10) as r:
            text = r.read().decode()
        got = {}
        for res in ("hit", "miss"):
            m = re.search(r'^egressd_dns_cache_total\{[^}]*result="%s"[^}]*\}\s+(\S+)' % res,
                          text, re.M)
            self.assertIsNotNone(m, f"no egressd_dns_cache_total{{result={res}}}")
            got[res] = float(m.group(1))
        return got["hit"], got["miss"]

    def test_concurrent_lookups_of_one_name_are_coalesced(self):
        # The verdict does not depend on timing: after both requests, the cache metrics say
        # whether the second one waited for the lookup in flight (a miss) or came after the
        # answer (a hit: inconclusive, tried again with a new name). Two misses and one query
        # mean the second request joined the first one's lookup.
        for attempt in range(4):
            name = f"co{attempt}.test"
            self.dns.set_answers(name, ["127.0.0.1"])
            self.dns.set_behaviour(name, DnsStub.HOLD)
            hit0, miss0 = self.cache_counts()
            a = self.client()
            a.send(get_req(f"http://{name}:{self.P}/ip"))
            self.assertTrue(self.dns.wait_count(name, 1, qtype=QTYPE_A), "no query for " + name)
            b = self.client()
            b.send(get_req(f"http://{name}:{self.P}/ip"))
            # A request egressd answers without DNS, sent after b's: once it is answered, the
            # one worker has very likely read b's request too.
            resp, _ = self.get("127.0.0.2", self.P)
            self.assertEqual(resp.status, 403, resp)
            time.sleep(0.1 * (attempt + 1))
            self.dns.release(name)
            self.assertOk(a.read_response(), b"127.0.0.1\n")
            self.assertOk(b.read_response(), b"127.0.0.1\n")
            hit1, miss1 = self.cache_counts()
            if hit1 - hit0 >= 1:
                continue  # b was read after the answer came: inconclusive
            self.assertEqual(miss1 - miss0, 2)
            self.assertEqual(self.dns.lookups(name, QTYPE_A), 1,
                             "the second request sent its own query")
            return
        self.fail("the second request never overlapped the first lookup")


# ---------------------------------------------------------------------------------------------
# X-Forwarded-For and Via policies (append and via on: test_http.py)
# ---------------------------------------------------------------------------------------------


class HeaderPolicyBase(RulesTestBase):
    HEADERS = ""

    @classmethod
    def setUpClass(cls):
        cls.dns = cls.start_dns()
        cls.origin = cls.start_origin(HttpOrigin())
        cls.proxy = cls.start_proxy(config=yaml_config(
            cls.dns, extra="headers:\n" + cls.HEADERS))

    def seen(self, extra: str = "", source: Optional[str] = None) -> list:
        """The header list the origin received for one request."""
        resp, _ = self.get("127.0.0.1", self.origin.port, path="/echo", extra=extra,
                           source=source)
        self.assertOk(resp)
        return json.loads(resp.body)["headers"]


class HeaderReplaceNoViaTest(HeaderPolicyBase):
    HEADERS = "  x_forwarded_for: replace\n  via: false\n"

    def test_xff_replaced_by_client_address(self):
        h = self.seen("X-Forwarded-For: 192.0.2.1, 198.51.100.2\r\nX-Forwarded-For: 10.9.9.9\r\n",
                      source="127.0.0.2")
        self.assertEqual(header_values(h, "X-Forwarded-For"), ["127.0.0.2"])
        h = self.seen()
        self.assertEqual(header_values(h, "X-Forwarded-For"), ["127.0.0.1"])

    def test_via_off_adds_none_and_passes_received_via(self):
        h = self.seen()
        self.assertEqual(header_values(h, "Via"), [])
        h = self.seen("Via: 1.0 other-proxy\r\n")
        self.assertEqual(header_values(h, "Via"), ["1.0 other-proxy"])

    def test_via_off_disables_via_loop_detection(self):
        # Loop detection by Via comes with adding Via; without it our own name is just a name.
        h = self.seen("Via: 1.1 egressd\r\n")
        self.assertEqual(header_values(h, "Via"), ["1.1 egressd"])


class HeaderDeleteTest(HeaderPolicyBase):
    HEADERS = "  x_forwarded_for: delete\n  via: true\n"

    def test_xff_deleted(self):
        h = self.seen("X-Forwarded-For: 192.0.2.1\r\nx-forwarded-for: 198.51.100.2\r\n")
        self.assertEqual(header_values(h, "X-Forwarded-For"), [])
        self.assertEqual(header_values(h, "Via"), ["1.1 egressd"])  # control: headers policy on
        h = self.seen()
        self.assertEqual(header_values(h, "X-Forwarded-For"), [])


class HeaderOffTest(HeaderPolicyBase):
    HEADERS = "  x_forwarded_for: \"off\"\n"

    def test_xff_passed_through_unchanged(self):
        h = self.seen("X-Forwarded-For: 192.0.2.1, 198.51.100.2\r\nX-Forwarded-For: 10.9.9.9\r\n")
        self.assertEqual(header_values(h, "X-Forwarded-For"),
                         ["192.0.2.1, 198.51.100.2", "10.9.9.9"])
        h = self.seen()
        self.assertEqual(header_values(h, "X-Forwarded-For"), [])
        self.assertEqual(header_values(h, "Via"), ["1.1 egressd"])


# ---------------------------------------------------------------------------------------------
# non-loopback answers, inside a network namespace
# ---------------------------------------------------------------------------------------------

# (name, answers, expected (status, Proxy-Status error) for GET and CONNECT)
NETNS_CASES = [
    ("ok.test", ["127.0.0.1"], (200, None)),
    ("metadata-then-ok.test", ["169.254.169.254", "127.0.0.1"], (200, None)),
    ("metadata.test", ["169.254.169.254"], (403, "destination_ip_prohibited")),
    ("ecs-metadata.test", ["169.254.170.2"], (403, "destination_ip_prohibited")),
    ("mapped-metadata.test", ["::ffff:169.254.169.254"], (403, "destination_ip_prohibited")),
    ("ipv6-imds.test", ["fd00:ec2::254"], (403, "destination_ip_prohibited")),
    ("private.test", ["10.1.2.3", "172.16.0.1", "192.168.1.1"],
     (403, "destination_ip_prohibited")),
    ("cgnat.test", ["100.64.0.1"], (403, "destination_ip_prohibited")),
    ("zero.test", ["0.0.0.0"], (403, "destination_ip_prohibited")),
    ("nat64.test", ["64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe"], (403, "destination_ip_prohibited")),
    ("nat64-local.test", ["64:ff9b:1::a9fe:a9fe"], (403, "destination_ip_prohibited")),
    ("v4-compatible.test", ["::a9fe:a9fe", "::7f00:1"], (403, "destination_ip_prohibited")),
    ("sixtofour.test", ["2002:7f00:1::1"], (403, "destination_ip_prohibited")),
    ("linklocal6.test", ["fe80::1"], (403, "destination_ip_prohibited")),
]


def netns_probe(binary: str) -> int:
    """Runs inside unshare --net: lo up, a stub, an origin on 127.0.0.1, egressd with only
    127.0.0.1/32 re-allowed; prints the results as one JSON line."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    stub = DnsStub().start()
    origin = HttpOrigin().start()
    for name, answers, _ in NETNS_CASES:
        stub.set_answers(name, answers)
    proxy = Egressd(binary=binary, config=yaml_config(stub), env={"EGRESSD_WORKERS": "1"})
    out = {"results": [], "port": origin.port}
    proxy.start()
    try:
        for name, _, _ in NETNS_CASES:
            for method in ("GET", "CONNECT"):
                r = {"name": name, "method": method}
                target = f"{name}:{origin.port}"
                c = proxy.client(timeout=20)
                try:
                    if method == "GET":
                        c.send(get_req(f"http://{target}/ip"))
                    else:
                        c.send(connect_req(target))
                    resp = c.read_response(method)
                    r.update(status=resp.status, error=resp.proxy_error)
                    if method == "CONNECT" and resp.status == 200:
                        c.send(b"GET /ip HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n")
                        resp = c.read_response()
                    r["body"] = resp.body.decode("latin-1")[:200]
                    if resp.status != 200:
                        r["closed"] = c.wait_closed(10)[0]
                except Exception as e:
                    r["exception"] = f"{type(e).__name__}: {e}"
                finally:
                    c.close()
                out["results"].append(r)
        time.sleep(0.3)
        out["log"] = proxy.access_entries()
    finally:
        try:
            out["egressd_rc"] = proxy.stop(check=False)
        except AssertionError as e:
            out["egressd_rc"] = None
            out["stop_error"] = str(e)
        out["stderr_tail"] = proxy.stderr_lines[-30:]
        origin.stop()
        stub.stop()
        print(json.dumps(out), flush=True)
    return 0


class NetnsDnsAnswersTest(unittest.TestCase):
    """DNS answers holding metadata, private, NAT64, 6to4, ULA and link-local addresses, in a
    namespace with only lo (a bug could not reach anything): every one refused, and a forbidden
    address listed before an allowed one skipped."""

    def test_dns_answers_with_special_addresses(self):
        reason = netns_skip_reason()
        if reason:
            self.skipTest(reason)
        env = clean_env({"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(SUPPORT_DIR)})
        p = subprocess.run(["unshare", "--net", "--", sys.executable, os.path.abspath(__file__),
                            "--netns-probe", egressd_bin()],
                           capture_output=True, env=env, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        out = json.loads(p.stdout.decode().strip().splitlines()[-1])
        diag = "\n".join(out.get("stderr_tail", []))
        results = {(r["name"], r["method"]): r for r in out["results"]}
        self.assertEqual(len(results), 2 * len(NETNS_CASES))
        for name, _, want in NETNS_CASES:
            for method in ("GET", "CONNECT"):
                r = results[(name, method)]
                with self.subTest(name=name, method=method):
                    self.assertNotIn("exception", r, f"{r}\n{diag}")
                    self.assertEqual((r["status"], r["error"]), want, f"{r}\n{diag}")
                    if want[0] == 200:
                        self.assertEqual(r["body"], "127.0.0.1\n", r)
                    else:
                        self.assertTrue(r["closed"], f"refusal left the connection open: {r}")
        port = out["port"]
        for e in out["log"]:
            # Whatever was answered, the only address egressd ever connected to is the origin.
            self.assertIn(e["upstream_addr"], (None, f"127.0.0.1:{port}"), e)
        self.assertEqual(out["egressd_rc"], 0, out.get("stop_error", diag))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--netns-probe":
        sys.exit(netns_probe(sys.argv[2]))
    unittest.main()
