"""Several allowed addresses for one name (RFC 8305 Happy Eyeballs): a black-holed address
(SYNs dropped, the connect never answers) must not cost the whole connect timeout when another
address works. The black hole is a loopback listener whose accept queue is full, so the kernel
drops further SYNs; nothing leaves the machine.

With a sequential connect these tests fail with 504 (the connect timeout is 6 s and the black
hole comes first); with Happy Eyeballs the next address joins after 250 ms and wins."""

import socket
import unittest

from dns_stub import DnsStub
from egressd_harness import EchoOrigin, ProxyTestCase, same_port


def black_hole(lst: socket.socket) -> list[socket.socket]:
    """Makes a bound socket a listener that never accepts, with its queue filled: SYNs to it
    are dropped. Returns the sockets to keep open."""
    host, port = lst.getsockname()[:2]
    lst.listen(0)
    held = [lst]
    # Fill the accept queue (a backlog of 0 still takes one connection).
    for _ in range(2):
        c = socket.socket(lst.family, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            c.connect((host, port))
        except BlockingIOError:
            pass
        held.append(c)
    return held


def connect_req(authority: str) -> bytes:
    return f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode()


class HappyEyeballsTest(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.dns = DnsStub().start()
        cls.addClassCleanup(cls.dns.stop)
        cls.proxy = cls.start_proxy(config=(
            "version: 1\n"
            f"dns:\n  servers: [\"{cls.dns.address}\"]\n"
            "gates:\n  connect_ports: [\"1-65535\"]\n"
            "destinations:\n  allow: [127.0.0.0/8, \"::1/128\"]\n"
            "timeouts:\n  connect: 6s\n"))

    def hole(self, host: str, port: int):
        lst = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.addCleanup(lst.close)
        lst.bind((host, port))
        for s in black_hole(lst):
            self.addCleanup(s.close)

    def origin_beside_hole(self, origin_host: str, hole_host: str) -> EchoOrigin:
        """An origin and, on the same port number at hole_host, a black hole (same_port tries
        other ports while that one is taken there)."""
        origin, lst = same_port(lambda: EchoOrigin(origin_host), hole_host)
        self.addCleanup(lst.close)
        for s in black_hole(lst):
            self.addCleanup(s.close)
        return self.origin(origin)

    def tunnel(self, name: str, port: int, origin: EchoOrigin):
        c = self.client()
        c.send(connect_req(f"{name}:{port}"))
        resp = c.read_head()
        self.assertEqual(resp.status, 200, f"{resp!r}\n{self.proxy.tail()}")
        c.send(b"eyeballs")
        self.assertEqual(c.read_exact(8), b"eyeballs")
        c.close()
        self.assertTrue(origin.wait_connections(1))
        return self.proxy.wait_access(lambda e: e["target"] == f"{name}:{port}")

    def test_same_family_black_hole_first(self):
        origin = self.origin_beside_hole("127.0.0.1", "127.0.0.9")
        self.dns.set_answers("v4.he.test", ["127.0.0.9", "127.0.0.1"])
        e = self.tunnel("v4.he.test", origin.port, origin)
        self.assertEqual(e["upstream_addr"], f"127.0.0.1:{origin.port}")

    def test_v6_black_hole_v4_works(self):
        origin = self.origin_beside_hole("127.0.0.1", "::1")
        self.dns.set_answers("v6hole.he.test", ["::1", "127.0.0.1"])
        e = self.tunnel("v6hole.he.test", origin.port, origin)
        self.assertEqual(e["upstream_addr"], f"127.0.0.1:{origin.port}")

    def test_v4_black_hole_v6_works(self):
        origin = self.origin_beside_hole("::1", "127.0.0.1")
        self.dns.set_answers("v4hole.he.test", ["127.0.0.1", "::1"])
        e = self.tunnel("v4hole.he.test", origin.port, origin)
        self.assertEqual(e["upstream_addr"], f"[::1]:{origin.port}")

    def test_all_black_holes_time_out(self):
        # Control: when no address answers, the overall connect deadline still applies (504).
        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        self.addCleanup(held.close)
        self.hole("127.0.0.10", port)
        self.hole("127.0.0.11", port)
        self.dns.set_answers("nothing.he.test", ["127.0.0.10", "127.0.0.11"])
        resp, _ = self.exchange(connect_req(f"nothing.he.test:{port}"), "CONNECT")
        self.assertProxyError(resp, 504, "connection_timeout")

    def test_refused_first_address_moves_on_at_once(self):
        origin = self.origin(EchoOrigin("127.0.0.1"))
        # 127.0.0.12 has no listener on the port: refused, the next address starts at once.
        self.dns.set_answers("refused.he.test", ["127.0.0.12", "127.0.0.1"])
        e = self.tunnel("refused.he.test", origin.port, origin)
        self.assertEqual(e["upstream_addr"], f"127.0.0.1:{origin.port}")


if __name__ == "__main__":
    unittest.main()
