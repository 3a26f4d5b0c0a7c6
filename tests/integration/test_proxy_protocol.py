"""PROXY protocol from a load balancer (SPEC section 5): the header's client address is the one
the source gate, the rules, X-Forwarded-For and the access log use; a header is honoured only
from trusted peers; garbage, truncation, an untrusted header or a missing required header close
the connection and nothing reaches the origin; NLB LOCAL health checks work."""

import json
import socket
import struct
import time
import unittest

from egressd_harness import HttpOrigin, ProxyTestCase, SpyOrigin, pp_listener_config

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def v2_header(src: str, sport: int, dst: str, dport: int, vpce: str | None = None,
              crc: bool = True, local: bool = False) -> bytes:
    """A header shaped like an AWS NLB's: IPv4, CRC32C, AWS 0xEA VPC endpoint id, NOOP padding."""
    if local:
        body = b"\x00" * 8  # NLB health checks: LOCAL, AF_UNSPEC, with padding
        return V2_SIG + bytes([0x20, 0x00]) + struct.pack("!H", len(body)) + body
    addrs = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    tlvs = b""
    if vpce is not None:
        v = b"\x01" + vpce.encode()
        tlvs += bytes([0xEA]) + struct.pack("!H", len(v)) + v
    tlvs += bytes([0x04]) + struct.pack("!H", 3) + b"\x00\x00\x00"  # NOOP
    crc_tlv = bytes([0x03]) + struct.pack("!H", 4) + b"\x00\x00\x00\x00" if crc else b""
    payload = addrs + crc_tlv + tlvs
    head = V2_SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(payload))
    if crc:
        whole = head + payload
        value = struct.pack("!I", crc32c(whole))
        payload = addrs + crc_tlv[:3] + value + tlvs
    return head + payload


def get(origin, path="/pp") -> bytes:
    return (f"GET http://{origin.address}{path} HTTP/1.1\r\nHost: {origin.address}\r\n\r\n"
            .encode())


class ProxyProtocolTest(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.http = cls.start_origin(HttpOrigin())
        cls.proxy = cls.start_proxy(
            config=pp_listener_config(),
            env={"EGRESSD_LISTEN": None,
                 "EGRESSD_ALLOW_SOURCES": "127.0.0.0/8,10.0.0.0/8",
                 "EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8",
                 "EGRESSD_CONNECT_PORTS": "1-65535",
                 "EGRESSD_HTTP_PORTS": "1-65535"})

    def test_header_address_is_the_client(self):
        c = self.client()
        c.send(v2_header("10.1.2.3", 40000, "10.0.0.5", 3128, vpce="vpce-08d2bf15fac5001c9")
               + get(self.http, "/pp-client"))
        resp = c.read_response()
        self.assertEqual(resp.status, 200, self.proxy.tail())
        echo = json.loads(resp.body)
        xff = [v for k, v in echo["headers"] if k.lower() == "x-forwarded-for"]
        self.assertEqual(xff, ["10.1.2.3"])
        e = self.proxy.wait_access(lambda e: (e.get("target") or "").endswith("/pp-client"))
        self.assertEqual(e["client_addr"], "10.1.2.3")
        self.assertEqual(e["client_port"], 40000)
        self.assertEqual(e["proxy_addr"], "10.1.2.3")
        self.assertEqual(e["lb_peer"], f"127.0.0.1:{c.local_port}")
        self.assertEqual(e["vpce_id"], "vpce-08d2bf15fac5001c9")

    def test_header_split_across_writes(self):
        c = self.client()
        data = v2_header("10.9.9.9", 1234, "10.0.0.5", 3128) + get(self.http, "/pp-split")
        for i in range(0, len(data), 7):
            c.send(data[i:i + 7])
            time.sleep(0.005)
        resp = c.read_response()
        self.assertEqual(resp.status, 200, self.proxy.tail())
        e = self.proxy.wait_access(lambda e: (e.get("target") or "").endswith("/pp-split"))
        self.assertEqual(e["client_addr"], "10.9.9.9")

    def test_source_gate_applies_to_the_header_address(self):
        c = self.client()
        c.send(v2_header("203.0.113.9", 1, "10.0.0.5", 3128) + get(self.http, "/pp-denied"))
        resp = c.read_response()
        self.assertEqual(resp.status, 403)
        self.assertIn("http_request_denied", resp.proxy_status)

    def test_v1_header(self):
        c = self.client()
        c.send(b"PROXY TCP4 10.7.7.7 10.0.0.5 5555 3128\r\n" + get(self.http, "/pp-v1"))
        resp = c.read_response()
        self.assertEqual(resp.status, 200, self.proxy.tail())
        e = self.proxy.wait_access(lambda e: (e.get("target") or "").endswith("/pp-v1"))
        self.assertEqual(e["client_addr"], "10.7.7.7")

    def test_local_health_check_uses_the_real_peer(self):
        c = self.client()
        c.send(v2_header("", 0, "", 0, local=True) + get(self.http, "/pp-local"))
        resp = c.read_response()
        self.assertEqual(resp.status, 200, self.proxy.tail())
        e = self.proxy.wait_access(lambda e: (e.get("target") or "").endswith("/pp-local"))
        self.assertEqual(e["client_addr"], "127.0.0.1")
        self.assertIsNone(e["lb_peer"])


class ProxyProtocolRejectTest(ProxyTestCase):
    """Every bad case closes the connection without a response and the spy sees nothing."""

    @classmethod
    def setUpClass(cls):
        cls.spy = cls.start_origin(SpyOrigin())
        cls.proxy = cls.start_proxy(
            config=pp_listener_config(),
            env={"EGRESSD_LISTEN": None,
                 "EGRESSD_ALLOW_SOURCES": "127.0.0.0/8,10.0.0.0/8",
                 "EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8",
                 "EGRESSD_HTTP_PORTS": "1-65535"})

    def rejected(self, data: bytes, source=None, error=None):
        before = self.spy.connections
        c = self.client(source=source)
        c.send(data)
        closed, extra = c.wait_closed(15)
        self.assertTrue(closed, "connection left open")
        self.assertEqual(extra, b"", "egressd answered a bad PROXY header")
        time.sleep(0.3)
        self.assertEqual(self.spy.connections, before, "the origin was contacted")
        if error:
            port = c.local_port
            e = self.proxy.wait_access(lambda e: e.get("client_port") == port)
            self.assertEqual(e["error"], error)

    def test_missing_header(self):
        self.rejected(get(self.spy), error="proxy_header_missing")

    def test_garbage_after_signature(self):
        self.rejected(V2_SIG + b"\x99\x11\x00\x0c" + b"\x00" * 12 + get(self.spy),
                      error="proxy_header_invalid")

    def test_bad_crc(self):
        h = bytearray(v2_header("10.1.2.3", 1, "10.0.0.5", 3128))
        h[-1] ^= 0xFF  # a NOOP TLV value byte: only the checksum can catch it
        self.rejected(bytes(h) + get(self.spy), error="proxy_header_invalid")

    def test_truncated_header_then_close(self):
        before = self.spy.connections
        c = self.client()
        c.send(v2_header("10.1.2.3", 1, "10.0.0.5", 3128)[:20])
        c.shutdown_write()
        closed, extra = c.wait_closed(15)
        self.assertTrue(closed)
        self.assertEqual(extra, b"")
        self.assertEqual(self.spy.connections, before)

    def test_untrusted_peer(self):
        self.rejected(v2_header("10.1.2.3", 1, "10.0.0.5", 3128) + get(self.spy),
                      source="127.0.0.2", error="proxy_header_untrusted")


if __name__ == "__main__":
    unittest.main()
