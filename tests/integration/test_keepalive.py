"""TCP keepalive on both sides of a tunnel: AWS NAT gateways and NLBs drop a flow after 350 s
without packets, so egressd arms keepalive probes after 240 s on upstream sockets and on its
listeners (accepted sockets inherit them). Checked with `ss`, which shows the armed timer."""

import re
import shutil
import subprocess
import unittest

from egressd_harness import EchoOrigin, ProxyTestCase, wait_until


def socket_timers(port_filter: str) -> list[str]:
    out = subprocess.run(["ss", "-tnoH", "state", "established", port_filter],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return [l for l in out.splitlines() if l.strip()]


@unittest.skipUnless(shutil.which("ss"), "ss (iproute2) is not installed")
class KeepaliveTest(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.echo = cls.start_origin(EchoOrigin())
        cls.proxy = cls.start_proxy(env={"EGRESSD_ALLOW_DESTINATIONS": "127.0.0.1/32",
                                         "EGRESSD_CONNECT_PORTS": str(cls.echo.port)})

    def test_both_sides_of_a_tunnel_have_keepalive_armed(self):
        c = self.client()
        c.send(f"CONNECT 127.0.0.1:{self.echo.port} HTTP/1.1\r\n\r\n".encode())
        self.assertEqual(c.read_head().status, 200)
        c.send(b"x")
        self.assertEqual(c.read_exact(1), b"x")
        # ss shows one timer per socket: a retransmit or delayed-ACK timer ("on") hides the
        # keepalive timer until the exchange settles, so poll for a while.
        def armed():
            # egressd's side of the client connection (source port = the proxy port) and of
            # the upstream connection (destination = the origin; the origin's own side has
            # source = the origin port and is not selected).
            client_side = socket_timers(
                f"( sport = :{self.proxy.port} and dport = :{c.local_port} )")
            upstream_side = socket_timers(f"( dport = :{self.echo.port} )")
            lines = client_side + upstream_side
            if len(client_side) == 1 and upstream_side and \
                    all(re.search(r"timer:\(keepalive,", l) for l in lines):
                return lines
            self.last_seen = lines
            return None
        self.last_seen = []
        lines = wait_until(armed, timeout=15, interval=0.1)
        self.assertIsNotNone(lines, f"keepalive not armed on both sides: {self.last_seen}")
        for line in lines:
            # The timer counts down from 240 s: its value shows minutes ("3min59sec", "4min").
            self.assertRegex(line, r"timer:\(keepalive,[34]min")
        # The test's own client socket has no keepalive: the check can tell the difference.
        ours = socket_timers(f"( sport = :{c.local_port} )")
        self.assertTrue(ours)
        self.assertNotIn("keepalive", ours[0])


if __name__ == "__main__":
    unittest.main()
