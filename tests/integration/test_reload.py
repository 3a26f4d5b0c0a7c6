"""Reload (SPEC section 2/3, issue 4): SIGHUP and a change to a watched source-list file swap the
whole config atomically. New connections use the new rules, an open tunnel is untouched, an
invalid config is rejected with a clear log line and the old one stays, and --check-config shows
the rule list as it will be evaluated (file CIDRs merged in)."""

import os
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.request

from egressd_harness import EchoOrigin, HttpOrigin, ProxyTestCase, clean_env, egressd_bin


def connect_req(authority: str) -> bytes:
    return f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode()


def metric_value(text: str, name: str, labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def base_config(rules: str, extra: str = "") -> str:
    return ("version: 1\n"
            "gates:\n  sources: [127.0.0.0/8]\n  connect_ports: [1-65535]\n"
            "  http_ports: [1-65535]\n"
            "destinations:\n  allow: [127.0.0.1/32]\n"
            + extra + rules)


def write_atomically(path: str, text: str):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


class ReloadTest(ProxyTestCase):
    """One egressd whose config file the tests rewrite; they run in name order."""

    @classmethod
    def setUpClass(cls):
        cls.echo = cls.start_origin(EchoOrigin())
        cls.http = cls.start_origin(HttpOrigin())
        cls.dir = tempfile.mkdtemp(prefix="egressd-reload-")
        cls.clients = os.path.join(cls.dir, "clients.txt")
        # Only 127.0.0.2 may use the allow rule at first.
        write_atomically(cls.clients, "# security service ranges\n127.0.0.2/32\n")
        cls.allow_all = base_config("rules:\n  - name: all\n    action: allow\n")
        cls.proxy = cls.start_proxy(config=cls.allow_all)
        cls.cfg_path = os.path.join(cls.proxy._tmpdir, "egressd.yaml")
        cls.admin = "http://" + cls.proxy.admin_address()

    @classmethod
    def tearDownClass(cls):
        for name in os.listdir(cls.dir):
            os.unlink(os.path.join(cls.dir, name))
        os.rmdir(cls.dir)

    def scrape(self) -> str:
        with urllib.request.urlopen(self.admin + "/metrics", timeout=10) as r:
            return r.read().decode()

    def reload_with(self, text: str, expect: str = "config reloaded"):
        """Writes the config, sends SIGHUP, waits for the outcome line after this point."""
        before = len(self.proxy.stderr_lines)
        write_atomically(self.cfg_path, text)
        self.proxy.proc.send_signal(signal.SIGHUP)

        def seen():
            return any(expect in line for line in self.proxy.stderr_lines[before:])
        deadline = time.monotonic() + 15
        while not seen() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertTrue(seen(), f"no '{expect}' after SIGHUP:\n" + self.proxy.tail())

    def connect_status(self, source=None) -> int:
        c = self.client(source=source)
        c.send(connect_req(f"127.0.0.1:{self.echo.port}"))
        return c.read_head().status

    def test_1_sighup_new_rules_apply_and_open_tunnel_survives(self):
        self.reload_with(self.allow_all)
        tunnel = self.client()
        tunnel.send(connect_req(f"127.0.0.1:{self.echo.port}"))
        self.assertEqual(tunnel.read_head().status, 200)
        tunnel.send(b"before")
        self.assertEqual(tunnel.read_exact(6), b"before")

        self.reload_with(base_config("rules:\n  - name: nothing\n    action: deny\n"))
        c = self.client()
        c.send(connect_req(f"127.0.0.1:{self.echo.port}"))
        resp = c.read_response("CONNECT")
        self.assertProxyError(resp, 403, "http_request_denied")
        entry = self.proxy.wait_access(lambda e: e["status"] == 403 and e["rule"] == "nothing")
        self.assertEqual(entry["method"], "CONNECT")

        # The tunnel opened under the old rules still carries bytes both ways.
        tunnel.send(b"after the reload")
        self.assertEqual(tunnel.read_exact(16), b"after the reload")
        tunnel.close()
        self.reload_with(self.allow_all)
        self.assertEqual(self.connect_status(), 200)

    def test_2_invalid_config_is_rejected_and_old_rules_stay(self):
        self.reload_with(self.allow_all)
        failures = metric_value(self.scrape(), "egressd_config_reloads_total", 'result="failure"')
        self.reload_with(base_config("rules:\n  - action: permit\n"),
                         expect="config reload rejected")
        line = self.proxy.wait_stderr(r"rules\[0\]\.action: must be allow or deny")
        self.assertIsNotNone(line, "the error names the key and the problem:\n"
                             + self.proxy.tail())
        self.assertEqual(self.connect_status(), 200, "the previous rules stay in force")
        text = self.scrape()
        self.assertEqual(metric_value(text, "egressd_config_reloads_total", 'result="failure"'),
                         failures + 1)
        self.assertIn("\negressd_config_last_reload_successful 0\n", text)
        self.reload_with(self.allow_all)
        self.assertIn("\negressd_config_last_reload_successful 1\n", self.scrape())

    def test_3_source_list_file_change_reloads_without_a_signal(self):
        rules = ("rules:\n  - name: clients\n    action: allow\n"
                 f"    sources_file: {self.clients}\n")
        self.reload_with(base_config(rules))
        self.assertEqual(self.connect_status(source="127.0.0.2"), 200)
        self.assertEqual(self.connect_status(source="127.0.0.1"), 403)

        before = len(self.proxy.stderr_lines)
        write_atomically(self.clients, "127.0.0.2/32\n127.0.0.1  # added\n")

        def reloaded():
            return any("config reloaded" in l for l in self.proxy.stderr_lines[before:])
        deadline = time.monotonic() + 20
        while not reloaded() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertTrue(reloaded(), "no reload after the file changed:\n" + self.proxy.tail())
        self.assertTrue(any(f"reloading config ({self.clients} changed)" in l
                            for l in self.proxy.stderr_lines[before:]), self.proxy.tail())
        self.assertEqual(self.connect_status(source="127.0.0.1"), 200)

        # A broken list is rejected like a broken config: the last good list stays.
        before = len(self.proxy.stderr_lines)
        write_atomically(self.clients, "127.0.0.2/32\nnot-an-address\n")
        deadline = time.monotonic() + 20
        while (not any("config reload rejected" in l for l in self.proxy.stderr_lines[before:])
               and time.monotonic() < deadline):
            time.sleep(0.05)
        self.assertIsNotNone(self.proxy.wait_stderr(r"clients\.txt:2: rules\[0\]\.sources_file"),
                             self.proxy.tail())
        self.assertEqual(self.connect_status(source="127.0.0.1"), 200)

        # And a fixed list is picked up again.
        before = len(self.proxy.stderr_lines)
        write_atomically(self.clients, "127.0.0.2/32\n")
        deadline = time.monotonic() + 20
        while (not any("config reloaded" in l for l in self.proxy.stderr_lines[before:])
               and time.monotonic() < deadline):
            time.sleep(0.05)
        self.assertEqual(self.connect_status(source="127.0.0.1"), 403)
        self.assertEqual(self.connect_status(source="127.0.0.2"), 200)


class CheckConfigTest(unittest.TestCase):
    def test_check_config_prints_the_rules_as_evaluated(self):
        with tempfile.TemporaryDirectory() as d:
            ranges = os.path.join(d, "ranges.txt")
            with open(ranges, "w") as f:
                f.write("# Zscaler\n198.51.100.0/24\n\n2001:db8::/32 # v6\n")
            cfg = os.path.join(d, "egressd.yaml")
            with open(cfg, "w") as f:
                f.write("version: 1\nrules:\n  - name: zscaler\n    action: allow\n"
                        f"    sources: [203.0.113.0/24]\n    sources_file: {ranges}\n"
                        "  - name: shadow\n    action: deny\n    domains: ['*.dropbox.com']\n"
                        "    report_only: true\n")
            out = subprocess.run([egressd_bin(), "--check-config", "--config", cfg],
                                 env=clean_env(), capture_output=True, text=True, timeout=30)
            self.assertEqual(out.returncode, 0, out.stderr)
            text = out.stdout
            self.assertIn('"203.0.113.0/24", "198.51.100.0/24", "2001:db8::/32"', text)
            self.assertIn(f'sources_file: "{ranges}"', text)
            self.assertIn("report_only: true", text)
            self.assertLess(text.index('name: "zscaler"'), text.index('name: "shadow"'))

            with open(ranges, "a") as f:
                f.write("300.1.1.1/32\n")
            out = subprocess.run([egressd_bin(), "--check-config", "--config", cfg],
                                 env=clean_env(), capture_output=True, text=True, timeout=30)
            self.assertEqual(out.returncode, 2)
            self.assertIn(f"{ranges}:5: rules[0].sources_file: invalid CIDR '300.1.1.1/32'",
                          out.stderr)


if __name__ == "__main__":
    unittest.main()
