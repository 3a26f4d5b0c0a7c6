"""The admin listener during traffic: /healthz, /readyz (503 as soon as a drain starts),
/metrics whose counters move with the requests, tunnels and denials egressd handled."""

import re
import signal
import time
import unittest
import urllib.error
import urllib.request

from egressd_harness import EchoOrigin, HttpOrigin, ProxyTestCase


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(text: str, name: str, labels: str = "") -> float:
    """The value of one series, e.g. metric(t, "egressd_requests_total", 'kind="http",outcome="ok"')."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = m.group(2) or ""
        if all(part in got for part in labels.split(",") if part):
            return float(m.group(3))
    raise AssertionError(f"series {name}{{{labels}}} not found")


class AdminTest(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.http = cls.start_origin(HttpOrigin())
        cls.proxy = cls.start_proxy(
            config="version: 1\ndrain:\n  delay: 3s\n  timeout: 10s\n",
            env={"EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8",
                 "EGRESSD_CONNECT_PORTS": "1-65535",
                 "EGRESSD_HTTP_PORTS": "1-65535"})
        cls.admin = "http://" + cls.proxy.admin_address()

    def scrape(self) -> str:
        status, body = fetch(self.admin + "/metrics")
        self.assertEqual(status, 200)
        return body

    def test_1_health_and_counters_move(self):
        self.assertEqual(fetch(self.admin + "/healthz")[0], 200)
        self.assertEqual(fetch(self.admin + "/readyz")[0], 200)
        self.assertEqual(fetch(self.admin + "/nope")[0], 404)
        before = self.scrape()
        ok0 = metric(before, "egressd_requests_total", 'kind="http",outcome="ok"')
        tun0 = metric(before, "egressd_requests_total", 'kind="connect",outcome="ok"')
        den0 = metric(before, "egressd_denials_total", 'reason="port"')

        c = self.client()
        c.send(f"GET http://{self.http.address}/bytes/1000 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self.assertEqual(c.read_response().status, 200)
        echo = self.origin(EchoOrigin())
        t = self.client()
        t.send(f"CONNECT {echo.address} HTTP/1.1\r\n\r\n".encode())
        self.assertEqual(t.read_head().status, 200)
        t.send(b"ping")
        self.assertEqual(t.read_exact(4), b"ping")
        t.shutdown_write()
        t.wait_closed(10)
        self.exchange(b"CONNECT 127.0.0.1:0 HTTP/1.1\r\n\r\n", method="CONNECT")  # port 0: 400
        d = self.client()
        d.send(b"GET http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\n\r\n")
        d.read_response()

        deadline = time.monotonic() + 10
        while True:
            after = self.scrape()
            # Counted when each request is logged, which for an error response is after the
            # lingering close: poll until both have landed.
            done = (metric(after, "egressd_requests_total", 'kind="connect",outcome="ok"')
                    >= tun0 + 1 and
                    metric(after, "egressd_upstream_errors_total", 'kind="refused"') >= 1)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertGreaterEqual(
            metric(after, "egressd_requests_total", 'kind="http",outcome="ok"'), ok0 + 1)
        self.assertGreaterEqual(
            metric(after, "egressd_requests_total", 'kind="connect",outcome="ok"'), tun0 + 1)
        self.assertGreaterEqual(
            metric(after, "egressd_bytes_total", 'direction="upstream_to_client"'), 1004)
        self.assertGreaterEqual(metric(after, "egressd_relays_total", 'mode="splice"'), 1)
        self.assertGreaterEqual(metric(after, "egressd_connections_accepted_total"), 3)
        self.assertGreaterEqual(metric(after, "egressd_upstream_connect_duration_seconds_count"), 2)
        self.assertGreater(metric(after, "process_open_fds"), 0)
        # Port 1 is outside no gate here (1-65535), so that one is a refused connect instead:
        self.assertGreaterEqual(
            metric(after, "egressd_upstream_errors_total", 'kind="refused"'), 1)
        self.assertEqual(metric(after, "egressd_denials_total", 'reason="port"'), den0)

    def test_2_readyz_turns_503_on_sigterm(self):
        self.proxy.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        status = 200
        while time.monotonic() < deadline:
            status, _ = fetch(self.admin + "/readyz")
            if status == 503:
                break
            time.sleep(0.1)
        self.assertEqual(status, 503)
        self.assertEqual(metric(self.scrape(), "egressd_draining"), 1)
        # During drain.delay the proxy still serves (Connection: close).
        c = self.client()
        c.send(f"GET http://{self.http.address}/bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        resp = c.read_response()
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.header("Connection"), "close")
        self.proxy.proc.wait(30)
        self.assertEqual(self.proxy.proc.returncode, 0)


if __name__ == "__main__":
    unittest.main()
