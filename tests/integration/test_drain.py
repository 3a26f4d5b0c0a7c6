"""Graceful drain (SPEC section 6): 50 tunnels and keep-alive clients carry traffic when SIGTERM
arrives; /readyz flips to 503 at once, new connections are still served during drain.delay and
refused after it, idle keep-alive connections are closed, every tunnel keeps relaying until its
client ends it and its bytes arrive intact, and the process exits 0 within the deadline."""

import hashlib
import os
import signal
import socket
import threading
import time
import unittest
import urllib.error
import urllib.request

from egressd_harness import EchoOrigin, HttpOrigin, ProxyTestCase

TUNNELS = 50
DELAY_S = 4


def readyz(admin: str) -> int:
    try:
        with urllib.request.urlopen(admin + "/readyz", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


class DrainTest(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.http = cls.start_origin(HttpOrigin())
        cls.echo = cls.start_origin(EchoOrigin())
        cls.proxy = cls.start_proxy(
            config=f"version: 1\ndrain:\n  delay: {DELAY_S}s\n  timeout: 30s\n",
            env={"EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8",
                 "EGRESSD_CONNECT_PORTS": "1-65535",
                 "EGRESSD_HTTP_PORTS": "1-65535"})
        cls.admin = "http://" + cls.proxy.admin_address()

    def test_drain_under_traffic(self):
        # 50 tunnels, each echoing a stream that continues across the SIGTERM.
        tunnels = []
        for _ in range(TUNNELS):
            c = self.client()
            c.send(f"CONNECT {self.echo.address} HTTP/1.1\r\n\r\n".encode())
            self.assertEqual(c.read_head().status, 200)
            tunnels.append(c)
        # An idle keep-alive client (one request done) and a busy one.
        idle = self.client()
        idle.send(f"GET http://{self.http.address}/bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self.assertEqual(idle.read_response().status, 200)
        busy = self.client()
        self.assertEqual(readyz(self.admin), 200)

        chunks = [os.urandom(20_000) for _ in range(10)]
        expected = hashlib.sha256(b"".join(chunks)).hexdigest()
        results = [None] * TUNNELS
        halfway = threading.Barrier(TUNNELS + 1)

        def run(i, c):
            got = bytearray()
            try:
                for k, chunk in enumerate(chunks):
                    if k == len(chunks) // 2:
                        halfway.wait(30)  # the main thread sends SIGTERM here
                        time.sleep(0.5)
                    c.send(chunk)
                    got += c.read_exact(len(chunk))
                c.shutdown_write()
                closed, _ = c.wait_closed(20)
                results[i] = (hashlib.sha256(bytes(got)).hexdigest(), closed)
            except Exception as e:  # noqa: BLE001 - reported below
                results[i] = (f"error: {e!r}", False)

        threads = [threading.Thread(target=run, args=(i, c), daemon=True)
                   for i, c in enumerate(tunnels)]
        for t in threads:
            t.start()
        halfway.wait(30)
        sent = time.monotonic()
        self.proxy.proc.send_signal(signal.SIGTERM)

        # Readiness flips at once.
        deadline = time.monotonic() + 5
        while readyz(self.admin) != 503 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(readyz(self.admin), 503)

        # The idle keep-alive connection is closed by the drain.
        closed, extra = idle.wait_closed(10)
        self.assertTrue(closed, "idle keep-alive connection left open during drain")

        # During the delay (4 s: ample for these few steps) a new request is still served, with
        # Connection: close.
        busy.send(f"GET http://{self.http.address}/bytes/100 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        r = busy.read_response()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("Connection"), "close")

        # After the delay the listeners are closed: new connections are refused.
        time.sleep(max(0.0, DELAY_S + 1.0 - (time.monotonic() - sent)))
        with self.assertRaises(OSError):
            s = socket.create_connection((self.proxy.host, self.proxy.port), timeout=3)
            s.close()

        for t in threads:
            t.join(60)
        for i, res in enumerate(results):
            with self.subTest(tunnel=i):
                self.assertIsNotNone(res, "tunnel thread did not finish")
                self.assertEqual(res[0], expected, "tunnel bytes corrupted or cut")
                self.assertTrue(res[1], "tunnel not closed after its client finished")

        self.proxy.proc.wait(40)
        self.assertEqual(self.proxy.proc.returncode, 0, self.proxy.tail())


class DrainDeadlineTest(ProxyTestCase):
    """drain.timeout counts from the moment the listeners close, not from SIGTERM: with delay
    and timeout both 2 s, an open tunnel still relays after the listeners closed, and is
    dropped only at the end of the timeout (exit 0)."""

    @classmethod
    def setUpClass(cls):
        cls.echo = cls.start_origin(EchoOrigin())
        cls.proxy = cls.start_proxy(
            config="version: 1\ndrain:\n  delay: 2s\n  timeout: 2s\n",
            env={"EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8",
                 "EGRESSD_CONNECT_PORTS": "1-65535"})

    def test_timeout_starts_when_the_listeners_close(self):
        c = self.client()
        c.send(f"CONNECT 127.0.0.1:{self.echo.port} HTTP/1.1\r\n\r\n".encode())
        self.assertEqual(c.read_head().status, 200)
        self.proxy.proc.send_signal(signal.SIGTERM)

        def refused():
            try:
                socket.create_connection((self.proxy.host, self.proxy.port), timeout=3).close()
                return False
            except OSError:
                return True
        deadline = time.monotonic() + 20
        while not refused() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertTrue(refused(), "listeners never closed")
        # The listeners are closed; the tunnel has drain.timeout (2 s) from now.
        c.send(b"still here")
        self.assertEqual(c.read_exact(10), b"still here")
        closed, _ = c.wait_closed(20)
        self.assertTrue(closed, "the tunnel was never dropped at the drain deadline")
        self.assertEqual(self.proxy.proc.wait(20), 0)
        self.assertIsNotNone(self.proxy.wait_stderr(r"drain timeout: dropping 1 connection"))


if __name__ == "__main__":
    unittest.main()
