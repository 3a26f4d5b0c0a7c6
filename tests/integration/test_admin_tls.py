"""The TLS admin listener (issue 8): /metrics, /healthz, /readyz and /status over mTLS, refused
handshakes (no client certificate, one from another CA, an expired one, plain HTTP on the TLS
port) that never disturb other admin connections, a PROXY header before the ClientHello, the
plain health port (admin.health_address: /healthz and /readyz only), readiness during a drain
on both, the admin certificate reloaded on SIGHUP while an open connection keeps working, and a
real Prometheus scraping over mTLS.

Certificates are made at test time with the openssl CLI (TestCA). curl talks to the admin ports
directly (no proxy involved), with a clean environment.
"""

import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import unittest

from egressd_harness import (Egressd, ProxyTestCase, TestCA, clean_env, unused_port,
                             wait_until)

HEALTH_RE = re.compile(r"listening on (\S+):(\d+) \(admin health\)")


def curl(args: list[str], timeout: float = 30.0) -> tuple[int, int, str, str]:
    """curl straight to an admin port: (curl exit code, HTTP status or 0, body, stderr)."""
    p = subprocess.run(["curl", "-q", "--noproxy", "*", "-sS", "--max-time", "15",
                        "-w", "\n%{http_code}", *args],
                       stdin=subprocess.DEVNULL, capture_output=True, env=clean_env(),
                       timeout=timeout)
    out = p.stdout.decode("utf-8", "replace")
    body, _, code = out.rpartition("\n")
    return p.returncode, int(code) if code.isdigit() else 0, body, p.stderr.decode()


def health_address(proxy: Egressd) -> str:
    for line in proxy.stderr_lines:
        m = HEALTH_RE.search(line)
        if m:
            return f"{m.group(1)}:{m.group(2)}"
    raise AssertionError("no 'listening on ... (admin health)' line:\n" + proxy.tail())


def split_hostport(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


def proxy_v2_local() -> bytes:
    """A PROXY v2 LOCAL header, as an NLB sends on its health-check connections."""
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00]) + struct.pack("!H", 0)


class AdminCerts:
    """The admin listener's certificate, key and client CA, in files of their own so a test can
    replace them with another CA's and send SIGHUP."""

    def __init__(self, ca: TestCA):
        self.dir = tempfile.mkdtemp(prefix="egressd-admin-tls-")
        self.cert = os.path.join(self.dir, "admin.pem")
        self.key = os.path.join(self.dir, "admin.key")
        self.client_ca = os.path.join(self.dir, "clients.pem")
        self.install(ca)

    def install(self, ca: TestCA):
        # Written elsewhere and renamed into place: a reload never reads a half-written file.
        for src, dst in ((ca.cert, self.cert), (ca.key, self.key), (ca.ca_cert, self.client_ca)):
            tmp = dst + ".new"
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)

    def config(self, health: bool = True, extra: str = "", crl: str = "") -> str:
        text = ("version: 1\nadmin:\n  address: \"127.0.0.1:0\"\n  tls:\n"
                f"    cert: {self.cert}\n    key: {self.key}\n    client_ca: {self.client_ca}\n")
        if crl:
            text += f"    client_crl: {crl}\n"
        if health:
            text += "  health_address: \"127.0.0.1:0\"\n"
        return text + extra

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class TlsAdminCase(ProxyTestCase):
    """Shared CAs: `ca` signs the admin certificate and the good client certificate; `other` is
    an unrelated CA."""

    @classmethod
    def make_cas(cls):
        cls.ca = TestCA()
        cls.addClassCleanup(cls.ca.cleanup)
        cls.client_cert, cls.client_key = cls.ca.issue("scraper", "prometheus", client=True)
        cls.expired_cert, cls.expired_key = cls.ca.issue("old", "old-scraper", client=True,
                                                         expired=True)
        cls.other = TestCA(cn="other CA")
        cls.addClassCleanup(cls.other.cleanup)
        cls.other_cert, cls.other_key = cls.other.issue("intruder", "prometheus", client=True)
        cls.certs = AdminCerts(cls.ca)
        cls.addClassCleanup(cls.certs.cleanup)

    def mtls(self, path: str, ca: TestCA = None, cert: str = None, key: str = None,
             admin: str = None) -> tuple[int, int, str, str]:
        ca = ca or self.ca
        args = ["--cacert", ca.ca_cert]
        if cert:
            args += ["--cert", cert, "--key", key]
        return curl(args + [f"https://{admin or self.admin}{path}"])

    def good(self, path: str, **kw) -> tuple[int, int, str, str]:
        return self.mtls(path, cert=self.client_cert, key=self.client_key, **kw)

    def assert_refused(self, res: tuple[int, int, str, str]):
        rc, status, body, err = res
        self.assertNotEqual(rc, 0, f"curl succeeded: {status} {body[:200]!r}")
        self.assertEqual(status, 0, f"an HTTP answer came back: {status} {body[:200]!r}")

    def admin_failures(self, reason: str) -> float:
        """egressd_admin_tls_handshake_failures_total{reason}, scraped over mTLS."""
        rc, status, body, err = self.good("/metrics")
        self.assertEqual(status, 200, err)
        m = re.search(r'^egressd_admin_tls_handshake_failures_total\{reason="%s"\} (\S+)$'
                      % reason, body, re.M)
        self.assertIsNotNone(m, f"no {reason} series")
        return float(m.group(1))

    def refused_with_reason(self, cert: str, key: str, reason: str):
        """Refused every time; the log names the reason. Failure lines are rate limited (one a
        second), so the attempt repeats until one of them is logged."""
        def attempt():
            self.assert_refused(self.mtls("/metrics", cert=cert, key=key))
            return self.proxy.wait_stderr(reason, timeout=0.5)
        self.assertTrue(wait_until(attempt, timeout=20, interval=0.2),
                        f"no handshake failure logged with {reason!r}:\n{self.proxy.tail()}")

    def client_context(self, ca: TestCA, cert: str, key: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=ca.ca_cert)
        ctx.load_cert_chain(cert, key)
        return ctx


class AdminTlsTest(TlsAdminCase):
    @classmethod
    def setUpClass(cls):
        cls.make_cas()
        # Loopback destinations and every port allowed: only the self-check can refuse the
        # health port as a destination.
        cls.proxy = cls.start_proxy(config=cls.certs.config(), env={
            "EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8", "EGRESSD_HTTP_PORTS": "1-65535"})
        cls.admin = cls.proxy.admin_address()
        cls.health = health_address(cls.proxy)

    def test_metrics_health_and_status_over_mtls(self):
        rc, status, body, err = self.good("/metrics")
        self.assertEqual((rc, status), (0, 200), err)
        self.assertIn("egressd_requests_total", body)
        # The admin certificate's expiry, to alert on before it lapses.
        expiry = [line.rpartition(" ")[2] for line in body.splitlines() if line.startswith(
            'egressd_tls_certificate_expiry_timestamp_seconds{listener="admin"}')]
        self.assertEqual([float(v) for v in expiry], [TestCA.not_after(self.certs.cert)])
        self.assertEqual(self.good("/healthz")[1:3], (200, "ok\n"))
        self.assertEqual(self.good("/readyz")[1:3], (200, "ready\n"))
        self.assertEqual(self.good("/nope")[1], 404)
        rc, status, body, err = self.good("/status")
        self.assertEqual(status, 200, err)
        # The status page names the admin listener with its scheme, and the health port.
        self.assertIn(f"https://{self.admin}", body)
        self.assertIn(f"http://{self.health}", body)

    def test_no_client_certificate_is_refused(self):
        before = self.admin_failures("no_client_cert")
        self.assert_refused(self.mtls("/metrics"))
        self.assert_refused(self.mtls("/healthz"))
        # Counted by reason (the handshake is counted just after curl gave up: wait for it).
        self.assertTrue(wait_until(lambda: self.admin_failures("no_client_cert") == before + 2,
                                   15), self.admin_failures("no_client_cert") - before)

    def test_client_certificate_from_another_ca_is_refused(self):
        self.refused_with_reason(self.other_cert, self.other_key,
                                 r"admin: TLS handshake with .* failed: .*"
                                 r"(unable to get local issuer|certificate verify failed)")

    def test_expired_client_certificate_is_refused(self):
        before = self.admin_failures("cert_expired")
        self.refused_with_reason(self.expired_cert, self.expired_key,
                                 r"admin: TLS handshake with .* failed: .*certificate has expired")
        self.assertTrue(wait_until(lambda: self.admin_failures("cert_expired") > before, 15))

    def test_plain_http_on_the_tls_port_gets_no_answer(self):
        rc, status, body, err = curl([f"http://{self.admin}/healthz"])
        self.assertNotEqual(rc, 0)
        self.assertEqual(status, 0, body)
        rc, status, body, err = curl([f"http://{self.admin}/metrics"])
        self.assertEqual(status, 0, body)
        # ... and the listener still serves TLS.
        self.assertEqual(self.good("/healthz")[1], 200)

    def test_stalled_and_broken_handshakes_do_not_block_other_connections(self):
        host, port = split_hostport(self.admin)
        stalled = socket.create_connection((host, port), timeout=10)
        self.addCleanup(stalled.close)
        half = socket.create_connection((host, port), timeout=10)
        self.addCleanup(half.close)
        half.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, then nothing
        garbage = socket.create_connection((host, port), timeout=10)
        self.addCleanup(garbage.close)
        garbage.sendall(b"\x16\x03\x03\x00\x05hello" * 3)
        for _ in range(3):
            self.assertEqual(self.good("/healthz")[1], 200)
        # The garbage connection is closed by the server, without a crash.
        garbage.settimeout(10)
        try:
            while garbage.recv(4096):
                pass
        except ConnectionResetError:
            pass
        self.assertIsNone(self.proxy.proc.poll())

    def test_proxy_header_before_the_client_hello(self):
        # The PROXY header and the ClientHello in one segment: what follows the header in the
        # server's read must reach the handshake.
        host, port = split_hostport(self.admin)
        ctx = self.client_context(self.ca, self.client_cert, self.client_key)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing, server_hostname=host)
        sock = socket.create_connection((host, port), timeout=10)
        self.addCleanup(sock.close)
        first = True

        def pump(op):
            nonlocal first
            while True:
                try:
                    result = op()
                except ssl.SSLWantReadError:
                    result = None
                out = outgoing.read()
                if out:
                    sock.sendall((proxy_v2_local() if first else b"") + out)
                    first = False
                if result is not None:
                    return result
                data = sock.recv(65536)
                if not data:
                    raise AssertionError("server closed the connection\n" + self.proxy.tail())
                incoming.write(data)

        pump(lambda: tls.do_handshake() or True)
        tls.write(b"GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        got = b""
        while b"\r\n\r\nok\n" not in got:
            got += pump(lambda: tls.read(4096))
        self.assertTrue(got.startswith(b"HTTP/1.1 200 "), got)

    def test_health_port_serves_only_health(self):
        base = f"http://{self.health}"
        self.assertEqual(curl([base + "/healthz"])[1:3], (200, "ok\n"))
        self.assertEqual(curl([base + "/readyz"])[1:3], (200, "ready\n"))
        self.assertEqual(curl([base + "/metrics"])[1], 404)
        self.assertEqual(curl([base + "/status"])[1], 404)
        self.assertEqual(curl([base + "/"])[1], 404)
        # `egressd probe` (the container HEALTHCHECK) works against the health port.
        p = subprocess.run([self.proxy.binary, "probe", base + "/readyz"], capture_output=True,
                           env=clean_env(), timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        p = subprocess.run([self.proxy.binary, "probe", f"https://{self.admin}/readyz"],
                           capture_output=True, env=clean_env(), timeout=30)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"health_address", p.stderr)

    def test_probe_without_url_reads_the_admin_settings(self):
        """`egressd probe` with no URL (the image's HEALTHCHECK) finds readiness where the config
        and the environment put it: the health port when the admin listener is TLS."""
        d = tempfile.mkdtemp(prefix="egressd-probe-")
        self.addCleanup(shutil.rmtree, d, True)

        def probe(config_text=None, **env):
            e = clean_env(env)
            if config_text is not None:
                path = os.path.join(d, "probe.yaml")
                with open(path, "w") as f:
                    f.write(config_text)
                e["EGRESSD_CONFIG"] = path
            return subprocess.run([self.proxy.binary, "probe"], capture_output=True, env=e,
                                  timeout=30)

        tls = (f"version: 1\nadmin:\n  address: \"{self.admin}\"\n  tls:\n"
               f"    cert: {self.certs.cert}\n    key: {self.certs.key}\n"
               f"    client_ca: {self.certs.client_ca}\n")
        p = probe(tls + f"  health_address: \"{self.health}\"\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(f"http://{self.health}/readyz".encode(), p.stdout)
        # TLS admin and no health port: a clear refusal, not a handshake against mTLS.
        p = probe(tls)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"admin.health_address", p.stderr)
        # No config file: the defaults with the environment's admin address (here the plain
        # health port, which serves /readyz).
        p = probe(EGRESSD_ADMIN_LISTEN=self.health)
        self.assertEqual(p.returncode, 0, p.stderr)
        # Nothing listening there: unhealthy.
        held, port = unused_port()
        self.addCleanup(held.close)
        p = probe(EGRESSD_ADMIN_LISTEN=f"127.0.0.1:{port}")
        self.assertEqual(p.returncode, 1)
        # A broken config is reported, and unhealthy.
        p = probe("version: 1\nadmin:\n  adress: x\n")
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"adress", p.stderr)

    def test_health_port_is_no_proxy_destination(self):
        c = self.client()
        c.send(f"GET http://{self.health}/healthz HTTP/1.1\r\nHost: {self.health}\r\n\r\n"
               .encode())
        resp = c.read_response()
        # Our own endpoint as a destination is a loop (SPEC section 5): 508, like the proxy's
        # and the admin listener's addresses.
        self.assertEqual(resp.status, 508, resp)
        self.assertEqual(resp.proxy_error, "proxy_loop_detected", resp)


class AdminClientCrlTest(TlsAdminCase):
    """admin.tls.client_crl: a revoked scraper certificate is refused in the handshake."""

    @classmethod
    def setUpClass(cls):
        cls.make_cas()
        cls.revoked_cert, cls.revoked_key = cls.ca.issue("revoked", "old-prometheus", client=True)
        cls.ca.revoke(cls.revoked_cert)
        crl = cls.ca.crl(os.path.join(cls.certs.dir, "scrapers.crl"))
        cls.proxy = cls.start_proxy(config=cls.certs.config(crl=crl))
        cls.admin = cls.proxy.admin_address()

    def test_revoked_scraper_is_refused_others_scrape(self):
        before = self.admin_failures("cert_revoked")
        self.refused_with_reason(self.revoked_cert, self.revoked_key,
                                 r"admin: TLS handshake with .* failed: .*certificate revoked")
        self.assertTrue(wait_until(lambda: self.admin_failures("cert_revoked") > before, 15))
        rc, status, body, err = self.good("/metrics")
        self.assertEqual(status, 200, err)
        self.assertIn('egressd_tls_client_crl_next_update_timestamp_seconds{listener="admin"}',
                      body)


class AdminTlsDrainTest(TlsAdminCase):
    def test_readiness_turns_503_on_both_ports_during_the_drain(self):
        self.make_cas()
        proxy = Egressd(config=self.certs.config(extra="drain:\n  delay: 5s\n  timeout: 10s\n"))
        proxy.start()
        self.addCleanup(proxy.kill)
        self.admin = proxy.admin_address()
        health = f"http://{health_address(proxy)}/readyz"
        self.assertEqual(self.good("/readyz")[1], 200)
        self.assertEqual(curl([health])[1], 200)
        proxy.proc.send_signal(signal.SIGTERM)
        self.assertTrue(wait_until(lambda: curl([health])[1] == 503, 4, 0.05),
                        "health port /readyz not 503 after SIGTERM\n" + proxy.tail())
        self.assertEqual(self.good("/readyz")[1:3], (503, "draining\n"))
        self.assertEqual(self.good("/healthz")[1], 200)
        # No connection is open: the drain ends by itself after drain.delay, with status 0.
        proxy.proc.wait(30)
        self.assertEqual(proxy.stop(), 0, proxy.tail())


class AdminTlsReloadTest(TlsAdminCase):
    def test_sighup_installs_a_new_certificate_for_new_connections(self):
        self.make_cas()
        proxy = Egressd(config=self.certs.config(health=False))
        proxy.start()
        self.addCleanup(proxy.kill)
        self.admin = proxy.admin_address()
        host, port = split_hostport(self.admin)

        # A keep-alive connection opened with the first certificate.
        ctx = self.client_context(self.ca, self.client_cert, self.client_key)
        old = ctx.wrap_socket(socket.create_connection((host, port), timeout=10),
                              server_hostname=host)
        self.addCleanup(old.close)

        def ask(conn) -> bytes:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
            got = b""
            while not got.endswith(b"\r\n\r\nok\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    raise AssertionError(f"closed after {got!r}\n" + proxy.tail())
                got += chunk
            return got

        self.assertTrue(ask(old).startswith(b"HTTP/1.1 200 "))

        # Swap in a new CA's server certificate and client CA, then SIGHUP.
        new_ca = TestCA(cn="rotated CA")
        self.addCleanup(new_ca.cleanup)
        new_client = new_ca.issue("scraper2", "prometheus", client=True)
        self.certs.install(new_ca)
        proxy.proc.send_signal(signal.SIGHUP)
        self.assertTrue(proxy.wait_stderr(r"config reloaded"), proxy.tail())

        # New connections: the new server certificate (the old CA no longer verifies it) and
        # only the new CA's clients.
        rc, status, body, err = self.mtls("/healthz", ca=new_ca, cert=new_client[0],
                                          key=new_client[1])
        self.assertEqual((rc, status), (0, 200), err + proxy.tail())
        self.assert_refused(self.good("/healthz"))  # old CA: server certificate not trusted
        self.assert_refused(self.mtls("/healthz", ca=new_ca, cert=self.client_cert,
                                      key=self.client_key))  # old client: not trusted now
        # The connection opened before the reload keeps working with its own session.
        self.assertTrue(ask(old).startswith(b"HTTP/1.1 200 "))

        # A reload with a broken certificate file is rejected and the current one stays.
        with open(self.certs.cert, "w") as f:
            f.write("not a certificate\n")
        proxy.proc.send_signal(signal.SIGHUP)
        self.assertTrue(proxy.wait_stderr(r"config reload rejected"), proxy.tail())
        self.assertEqual(self.mtls("/healthz", ca=new_ca, cert=new_client[0],
                                   key=new_client[1])[1], 200)
        self.assertEqual(proxy.stop(), 0)


try:
    from test_prometheus import PROMETHEUS, Prometheus
except ImportError:  # pragma: no cover - the module sits beside this one
    PROMETHEUS, Prometheus = None, None


@unittest.skipUnless(PROMETHEUS, "prometheus is not installed (Debian package 'prometheus', "
                                 "installed by scripts/install-deps.sh)")
class PrometheusMtlsScrapeTest(TlsAdminCase):
    @classmethod
    def setUpClass(cls):
        cls.make_cas()
        cls.proxy = cls.start_proxy(config=cls.certs.config())
        cls.admin = cls.proxy.admin_address()

    def test_prometheus_scrapes_over_mtls(self):
        prom = Prometheus(
            "  - job_name: egressd-mtls\n"
            "    scheme: https\n"
            "    tls_config:\n"
            f"      ca_file: {self.ca.ca_cert}\n"
            f"      cert_file: {self.client_cert}\n"
            f"      key_file: {self.client_key}\n"
            f"    static_configs:\n      - targets: ['{self.admin}']\n"
            # Without a client certificate the scrape must fail: mTLS is really enforced.
            "  - job_name: egressd-no-cert\n"
            "    scheme: https\n"
            "    tls_config:\n"
            f"      ca_file: {self.ca.ca_cert}\n"
            f"    static_configs:\n      - targets: ['{self.admin}']\n")
        self.addCleanup(prom.cleanup)
        prom.start()
        prom.wait_value('up{job="egressd-mtls"}', 1)
        prom.wait_value('up{job="egressd-no-cert"}', 0)
        prom.wait_value('egressd_draining{job="egressd-mtls"}', 0)
        self.assertEqual(prom.query('egressd_draining{job="egressd-no-cert"}'), [])
        by_job = {t["labels"]["job"]: t for t in prom.targets()}
        self.assertEqual(by_job["egressd-mtls"]["scrapeUrl"], f"https://{self.admin}/metrics")
        self.assertEqual(by_job["egressd-mtls"]["lastError"], "")
        self.assertEqual(by_job["egressd-no-cert"]["health"], "down")
        self.assertEqual(prom.stop(), 0, "prometheus did not exit cleanly:\n" + prom.log_tail())


if __name__ == "__main__":
    unittest.main()
