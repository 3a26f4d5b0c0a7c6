"""The admin status page (GET /status): plain HTML with the version, uptime, config checksum,
last reload result, listeners, the open connections oldest first (age, client, target, bytes)
and the counters of /metrics; fetched during traffic, and rendered by headless Chromium (when
installed) to a screenshot kept as a test artifact."""

import hashlib
import html
import os
import re
import shutil
import signal
import subprocess
import tempfile
import unittest
import urllib.request

from egressd_harness import REPO_ROOT, EchoOrigin, ProxyTestCase, wait_until

ARTIFACTS = os.environ.get("EGRESSD_TEST_ARTIFACTS") or str(REPO_ROOT / "build" / "artifacts")


def fetch(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


class StatusPageTest(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.echo = cls.start_origin(EchoOrigin())
        cls.proxy = cls.start_proxy(
            config="version: 1\n",
            env={"EGRESSD_ALLOW_DESTINATIONS": "127.0.0.1/32",
                 "EGRESSD_CONNECT_PORTS": str(cls.echo.port)})
        cls.url = f"http://{cls.proxy.admin_address()}/status"

    def tunnel(self, tag: bytes):
        c = self.client()
        c.send(f"CONNECT 127.0.0.1:{self.echo.port} HTTP/1.1\r\n\r\n".encode())
        self.assertEqual(c.read_head().status, 200)
        c.send(tag)
        self.assertEqual(c.read_exact(len(tag)), tag)
        return c

    def test_page_during_traffic(self):
        first = self.tunnel(b"first-tunnel-bytes")  # 18 bytes each way
        # The second tunnel must be younger: wait until the page shows the first one aged.
        wait_until(lambda: "tunnel" in fetch(self.url)[2], timeout=10)
        second = self.tunnel(b"2nd")
        status, ctype, page = fetch(self.url)
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("text/html"), ctype)
        self.assertNotIn("<script", page.lower(), "no JavaScript")
        self.assertIn("egressd 0.1.0", page)
        self.assertIn("2 tunnels", page)
        metrics = fetch(f"http://{self.proxy.admin_address()}/metrics")[2]
        self.assertIn("\negressd_tunnels_active 2\n", metrics)
        # Connections table: both tunnels, oldest first, with client, target and live bytes.
        rows = re.findall(r"<tr><td class=\"n\">(\d+)</td><td class=\"n\">[^<]*</td>"
                          r"<td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>"
                          r"<td class=\"n\">(\d+)</td><td class=\"n\">(\d+)</td></tr>", page)
        tunnels = [r for r in rows if r[2] == "tunnel"]
        self.assertEqual(len(tunnels), 2, page)
        self.assertEqual([int(t[5]) for t in tunnels], [18, 3], "oldest first, live bytes")
        self.assertEqual(tunnels[0][1], f"127.0.0.1:{first.local_port}")
        self.assertEqual(tunnels[0][4], f"127.0.0.1:{self.echo.port}")
        # The same counters as /metrics.
        self.assertIn("<td>egressd_connections_accepted_total</td>", page)
        self.assertIn("<td>process_open_fds</td>", page)
        # The checksum is of the effective config, which --check-config prints.
        m = re.search(r"<td>config sha256 \(effective\)</td><td>([0-9a-f]{64})</td>", page)
        self.assertIsNotNone(m, page[:2000])
        self.assertIn("<td>last reload</td><td>never</td>", page)
        first.close()
        second.close()
        self.assertTrue(wait_until(lambda: "\negressd_tunnels_active 0\n" in fetch(
            f"http://{self.proxy.admin_address()}/metrics")[2]), "tunnels_active back to 0")

        # A reload shows up, with its result.
        self.proxy.proc.send_signal(signal.SIGHUP)
        self.assertIsNotNone(self.proxy.wait_stderr("config reloaded"))
        page = fetch(self.url)[2]
        self.assertRegex(page, r"<td>last reload</td><td>success at \d{4}-\d\d-\d\dT")
        self.assertEqual(wait_until(lambda: "0 tunnels" in fetch(self.url)[2], timeout=15),
                         True)

    @unittest.skipUnless(chromium(), "chromium is not installed")
    def test_renders_in_headless_chromium(self):
        keep = self.tunnel(b"screenshot")
        os.makedirs(ARTIFACTS, exist_ok=True)
        shot = os.path.join(ARTIFACTS, "status.png")
        if os.path.exists(shot):
            os.unlink(shot)
        with tempfile.TemporaryDirectory() as profile:
            # --dump-dom proves the page parses and renders; --screenshot is the artifact.
            dom = subprocess.run(
                [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                 f"--user-data-dir={profile}", "--dump-dom", self.url],
                capture_output=True, text=True, timeout=120)
            self.assertEqual(dom.returncode, 0, dom.stderr[-2000:])
            self.assertIn("<h1>egressd 0.1.0</h1>", dom.stdout)
            self.assertIn(f"127.0.0.1:{self.echo.port}", dom.stdout)
            out = subprocess.run(
                [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 f"--user-data-dir={profile}", "--window-size=1280,900",
                 f"--screenshot={shot}", self.url],
                capture_output=True, text=True, timeout=120)
            self.assertEqual(out.returncode, 0, out.stderr[-2000:])
        with open(shot, "rb") as f:
            png = f.read()
        self.assertTrue(png.startswith(b"\x89PNG\r\n\x1a\n"), "not a PNG")
        # A blank page compresses to almost nothing; text and tables do not.
        self.assertGreater(len(png), 20000, f"screenshot suspiciously small: {len(png)} bytes")
        print(f"\n[status] screenshot {shot} ({len(png)} bytes, "
              f"sha256 {hashlib.sha256(png).hexdigest()[:12]})")
        keep.close()


if __name__ == "__main__":
    unittest.main()
