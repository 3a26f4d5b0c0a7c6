"""TLS proxy listener (issue 8): HTTPS to the proxy (`curl --proxy https://...`), client
certificates (mTLS) and identity rules, certificate reload on SIGHUP with a tunnel open, PROXY
protocol before the handshake, and the handshake's failure modes, each counted by reason.

Certificates are made at test time (TestCA): a CA, a server certificate, client certificates
with CN/SAN identities, a client certificate from another CA and an expired one."""

import contextlib
import os
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
import unittest
import urllib.request
from pathlib import Path

from egressd_harness import (IO_TIMEOUT, ConnectionClosed, EchoOrigin, HttpOrigin,
                             ProxyTestCase, RawClient, ServerHalfCloseOrigin, TestCA, clean_env,
                             payload, run_curl, sha256, wait_until)

PP2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def pp2_header(src: str, dst: str, sport: int, dport: int) -> bytes:
    addrs = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return PP2_SIG + bytes([0x21, 0x11]) + struct.pack("!H", len(addrs)) + addrs


CERT_EXPIRY = "egressd_tls_certificate_expiry_timestamp_seconds"


def metric(text: str, name: str, labels: str = "") -> float:
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == name or (labels and key.startswith(name + "{") and labels in key):
            return float(value)
    return 0.0


class TlsClient(RawClient):
    """RawClient over TLS (ssl.SSLObject on memory BIOs), so every RawClient reader works on the
    decrypted stream. prefix: raw bytes sent in the same segment as the ClientHello (a PROXY
    header). shutdown_write sends close_notify and a FIN (a TLS half-close)."""

    def __init__(self, host: str, port: int, ctx: ssl.SSLContext, prefix: bytes = b"",
                 server_hostname: str = "localhost", timeout: float = IO_TIMEOUT):
        super().__init__(host, port, timeout=timeout)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)
        self._prefix = prefix
        self.handshake()

    def _flush(self):
        data = self.outgoing.read()
        if self._prefix:
            data, self._prefix = self._prefix + data, b""
        if data:
            self.sock.sendall(data)

    def _recv_raw(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
            self.reset = True
        if not data:
            self.incoming.write_eof()
            return False
        self.incoming.write(data)
        return True

    def handshake(self):
        while True:
            try:
                self.tls.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                if not self._recv_raw():
                    raise ConnectionClosed("closed during the TLS handshake")

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        for i in range(0, len(view), 1 << 20):
            self.tls.write(view[i:i + (1 << 20)])
            self._flush()

    def shutdown_write(self) -> None:
        try:
            self.tls.unwrap()  # close_notify; the peer's answer is not awaited
        except ssl.SSLWantReadError:
            pass
        self._flush()
        self.sock.shutdown(socket.SHUT_WR)

    def _fill(self, n: int = 65536) -> bool:
        if self.eof:
            return False
        while True:
            try:
                data = self.tls.read(n)
            except ssl.SSLWantReadError:
                self._recv_raw()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                data = b""
            except ssl.SSLError:
                self.reset = True
                data = b""
            if not data:
                self.eof = True
                return False
            self.buf += data
            return True

    def exchange_full_duplex(self, data: bytes, piece: int) -> bytes:
        """Sends data in pieces while reading what comes back, on one thread (an SSLObject is
        not thread-safe); returns len(data) received bytes."""
        pending = bytearray()
        sent = 0
        self.sock.setblocking(False)
        try:
            while len(self.buf) < len(data):
                if sent < len(data) and len(pending) < (1 << 20):
                    self.tls.write(data[sent:sent + piece])
                    sent = min(len(data), sent + piece)
                    pending += self.outgoing.read()
                _, writable, _ = select.select([], [self.sock] if pending else [], [], 0)
                readable, _, _ = select.select([self.sock], [], [], 0 if pending else 10)
                if writable:
                    try:
                        n = self.sock.send(pending)
                        del pending[:n]
                    except BlockingIOError:
                        pass
                if readable:
                    chunk = self.sock.recv(1 << 20)
                    if not chunk:
                        raise ConnectionClosed("closed mid-exchange", bytes(self.buf))
                    self.incoming.write(chunk)
                    while True:
                        try:
                            self.buf += self.tls.read(1 << 20)
                        except ssl.SSLWantReadError:
                            break
                elif not pending and not writable and sent >= len(data):
                    raise AssertionError("stalled: nothing to send and nothing arrived in 10 s")
        finally:
            self.sock.setblocking(True)
            self.sock.settimeout(self.timeout)
        out = bytes(self.buf[:len(data)])
        del self.buf[:len(data)]
        return out

    def wait_closed(self, timeout: float = 15.0) -> tuple[bool, bytes]:
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            extra = self.read_until_close()
            return True, extra
        except socket.timeout:
            return False, bytes(self.buf)
        finally:
            self.sock.settimeout(old)


class TlsBase(ProxyTestCase):
    """One egressd with a TLS listener; subclasses set CLIENT_CA and RULES."""

    CLIENT_CA = False
    RULES = ""

    @classmethod
    def setUpClass(cls):
        cls.ca = TestCA()
        cls.addClassCleanup(cls.ca.cleanup)
        cls.other_ca = TestCA(cn="another CA")
        cls.addClassCleanup(cls.other_ca.cleanup)
        # The served files are copies, so a reload test can replace them.
        cls.dir = cls.ca.dir
        cls.cert = os.path.join(cls.dir, "served.pem")
        cls.key = os.path.join(cls.dir, "served.key")
        shutil.copy(cls.ca.cert, cls.cert)
        shutil.copy(cls.ca.key, cls.key)
        client_ca = f"      client_ca: {cls.ca.ca_cert}\n" if cls.CLIENT_CA else ""
        client_ca += cls.extra_tls()
        cls.https_origin = cls.start_origin(HttpOrigin(ssl_context=cls.ca.server_context()))
        cls.http_origin = cls.start_origin(HttpOrigin())
        cls.proxy = cls.start_proxy(config=(
            "version: 1\n"
            "listeners:\n"
            "  - address: 127.0.0.1:0\n"
            "    proxy_protocol: optional\n"
            "    trusted_proxies: [127.0.0.0/8]\n"
            "    tls:\n"
            f"      cert: {cls.cert}\n"
            f"      key: {cls.key}\n" + client_ca +
            "gates:\n  sources: [127.0.0.0/8, 10.0.0.0/8]\n  connect_ports: [1-65535]\n"
            "  http_ports: [1-65535]\n"
            "destinations:\n  allow: [127.0.0.0/8]\n"
            "timeouts:\n  tls_handshake: 1s\n" + cls.RULES))

    @classmethod
    def extra_tls(cls) -> str:
        """More lines for the listener's tls block (run before egressd starts)."""
        return ""

    def sighup(self, expect: str) -> bool:
        """Sends SIGHUP; true once a new stderr line matching expect appeared."""
        seen = sum(1 for line in list(self.proxy.stderr_lines) if expect in line)
        self.proxy.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if sum(1 for line in list(self.proxy.stderr_lines) if expect in line) > seen:
                return True
            time.sleep(0.02)
        return False

    def scrape(self) -> str:
        url = f"http://{self.proxy.admin_address()}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.read().decode()

    def failures(self, reason: str) -> float:
        return metric(self.scrape(), "egressd_tls_handshake_failures_total", f'reason="{reason}"')

    def expect_refused(self, cert, reason: str):
        before = self.failures(reason)
        r = self.curl(f"http://127.0.0.1:{self.http_origin.port}/bytes/10", "-o", "/dev/null",
                      cert=cert)
        self.assertNotEqual(r.returncode, 0, "request served without a valid client cert")
        deadline = time.monotonic() + 10
        while self.failures(reason) < before + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.failures(reason), before + 1, self.proxy.tail())

    def context(self, cert=None) -> ssl.SSLContext:
        return self.ca.client_context(cert)

    def tls_client(self, cert=None, prefix=b"", ctx=None) -> TlsClient:
        c = TlsClient(self.proxy.host, self.proxy.port, ctx or self.context(cert), prefix)
        self.addCleanup(c.close)
        return c

    def curl(self, url: str, *extra: str, cert=None):
        args = ["--proxy", f"https://localhost:{self.proxy.port}", "--proxy-cacert",
                self.ca.ca_cert]
        if cert:
            args += ["--proxy-cert", cert[0], "--proxy-key", cert[1]]
        return run_curl(args + ["--cacert", self.ca.ca_cert, *extra, url])

    def open_tunnel(self, origin, cert=None, prefix=b"") -> TlsClient:
        c = self.tls_client(cert, prefix)
        c.send(f"CONNECT {origin.address} HTTP/1.1\r\nHost: {origin.address}\r\n\r\n".encode())
        resp = c.read_head()
        self.assertEqual(resp.status, 200, f"{resp!r}\n{self.proxy.tail()}")
        return c


class HttpsProxyTest(TlsBase):
    """A TLS listener without client certificates: the proxy behaves exactly as on plain TCP."""

    def test_curl_connect_and_plain_http_through_https_proxy(self):
        before = metric(self.scrape(), "egressd_tls_handshakes_total")
        # CONNECT: TLS to the proxy, and the origin's TLS inside the tunnel.
        r = self.curl(f"https://localhost:{self.https_origin.port}/bytes/70000", "-o", "-")
        self.assertEqual(r.returncode, 0, r.stderr.decode() + self.proxy.tail())
        self.assertEqual(sha256(r.stdout), sha256(payload(70000, "bytes")))
        e = self.proxy.wait_access(lambda e: e["method"] == "CONNECT")
        self.assertEqual(e["relay"], "tls_copy")
        self.assertEqual(e["status"], 200)
        # Plain HTTP forwarded over the TLS connection to the proxy.
        r = self.curl(f"http://127.0.0.1:{self.http_origin.port}/bytes/5000", "-o", "-")
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        self.assertEqual(r.stdout, payload(5000, "bytes"))
        text = self.scrape()
        self.assertGreaterEqual(metric(text, "egressd_tls_handshakes_total"), before + 2)
        self.assertGreaterEqual(metric(text, "egressd_relays_total", 'mode="tls_copy"'), 1)

    def test_keepalive_requests_on_one_tls_connection(self):
        c = self.tls_client()
        for i in range(3):
            c.send(f"GET http://127.0.0.1:{self.http_origin.port}/bytes/{1000 + i} HTTP/1.1\r\n"
                   f"Host: 127.0.0.1:{self.http_origin.port}\r\n\r\n".encode())
            resp = c.read_response()
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.body, payload(1000 + i, "bytes"))

    def test_large_upload_and_download_byte_exact(self):
        # 24 MiB each way through the tunnel at once (echo), in odd-sized writes.
        echo = self.origin(EchoOrigin())
        c = self.open_tunnel(echo)
        data = os.urandom(24 * 1024 * 1024)
        got = c.exchange_full_duplex(data, 300_007)
        self.assertEqual(sha256(got), sha256(data))
        # Client half-close: close_notify reaches the origin as a FIN, the origin's FIN comes
        # back as close_notify.
        c.shutdown_write()
        closed, extra = c.wait_closed(20)
        self.assertTrue(closed)
        self.assertEqual(extra, b"")
        e = self.proxy.wait_access(lambda e: e["method"] == "CONNECT" and
                                   e["target"] == echo.address)
        self.assertEqual(e["bytes_in"], len(data))
        self.assertEqual(e["bytes_out"], len(data))
        self.assertIsNone(e["error"])

    def test_origin_half_close_reaches_client_while_client_keeps_sending(self):
        origin = self.origin(ServerHalfCloseOrigin(200_000))
        c = self.open_tunnel(origin)
        got = c.read_until_close()  # the origin's FIN arrives as close_notify
        self.assertFalse(c.reset, "origin's FIN arrived as a reset or a TLS error")
        self.assertEqual(sha256(got), sha256(origin.payload))
        # The client can still send after the proxy's close_notify: the tunnel is half open.
        more = os.urandom(100_000)
        c.send(more)
        c.shutdown_write()
        result = origin.wait_result(0, timeout=20)
        self.assertIsNotNone(result, self.proxy.tail())
        self.assertEqual(sha256(result), sha256(more))

    def test_proxy_v2_header_before_tls_in_one_segment(self):
        # The NLB's PROXY header and the ClientHello in one segment: the bytes after the header
        # must reach the TLS handshake.
        hdr = pp2_header("10.9.8.7", "127.0.0.1", 4242, self.proxy.port)
        c = self.tls_client(prefix=hdr)
        c.send(f"GET http://127.0.0.1:{self.http_origin.port}/bytes/10 HTTP/1.1\r\n"
               f"Host: x\r\n\r\n".encode())
        self.assertEqual(c.read_response().status, 200)
        e = self.proxy.wait_access(lambda e: e.get("proxy_addr") == "10.9.8.7")
        self.assertEqual(e["client_addr"], "10.9.8.7")
        self.assertEqual(e["client_port"], 4242)

    def test_proxy_v2_header_then_tls_in_separate_segments(self):
        raw = socket.create_connection((self.proxy.host, self.proxy.port))
        raw.sendall(pp2_header("10.1.2.3", "127.0.0.1", 5151, self.proxy.port))
        time.sleep(0.2)
        ctx = self.context()
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(f"GET http://127.0.0.1:{self.http_origin.port}/bytes/10 HTTP/1.1\r\n"
                      "Host: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:200])
        self.proxy.wait_access(lambda e: e.get("proxy_addr") == "10.1.2.3")

    def test_plain_http_to_tls_port_gets_a_readable_400(self):
        before = metric(self.scrape(), "egressd_tls_handshake_failures_total", 'reason="not_tls"')
        c = self.client()
        c.send(b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = c.read_response()
        self.assertEqual(resp.status, 400)
        self.assertIn(b"https://", resp.body)
        self.assertTrue(c.wait_closed(5)[0])
        self.assertEqual(metric(self.scrape(), "egressd_tls_handshake_failures_total",
                                'reason="not_tls"'), before + 1)

    def test_garbage_handshake_is_a_protocol_failure(self):
        before = metric(self.scrape(), "egressd_tls_handshake_failures_total",
                        'reason="protocol"')
        c = self.client()
        # A TLS record header announcing a ClientHello, then nonsense.
        c.send(b"\x16\x03\x01\x00\x20" + b"\x01\x00\x00\x1c" + b"\xff" * 28)
        self.assertTrue(c.wait_closed(5)[0])
        self.assertEqual(metric(self.scrape(), "egressd_tls_handshake_failures_total",
                                'reason="protocol"'), before + 1)

    def test_tls_1_1_client_is_refused(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx.set_ciphers("ALL:@SECLEVEL=0")
        except (ValueError, ssl.SSLError) as e:
            self.skipTest(f"this Python/OpenSSL cannot offer TLS 1.1: {e}")
        with self.assertRaises((ssl.SSLError, ConnectionClosed, OSError)):
            TlsClient(self.proxy.host, self.proxy.port, ctx).close()

    def test_client_renegotiation_is_refused(self):
        # openssl s_client renegotiates when a line is "R" (TLS 1.2; TLS 1.3 has none).
        script = "R\n"
        p = subprocess.Popen(["openssl", "s_client", "-connect",
                              f"{self.proxy.host}:{self.proxy.port}", "-tls1_2", "-CAfile",
                              self.ca.ca_cert, "-servername", "localhost"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, env=clean_env())
        try:
            out, _ = p.communicate(script.encode(), timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
        text = out.decode(errors="replace")
        self.assertIn("RENEGOTIATING", text)
        self.assertIn("no renegotiation", text, text[-2000:])

    def test_stalled_handshake_times_out_without_disturbing_others(self):
        before = metric(self.scrape(), "egressd_tls_handshake_failures_total",
                        'reason="timeout"')
        stalled = self.client()
        stalled.send(b"\x16\x03\x01")  # three bytes of a record header, then nothing
        # Meanwhile a normal client is served.
        r = self.curl(f"http://127.0.0.1:{self.http_origin.port}/bytes/100", "-o", "-")
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        start = time.monotonic()
        closed, _ = stalled.wait_closed(10)
        self.assertTrue(closed)
        self.assertLess(time.monotonic() - start, 9)
        self.assertEqual(metric(self.scrape(), "egressd_tls_handshake_failures_total",
                                'reason="timeout"'), before + 1)

    def test_certificate_reload_on_sighup_keeps_open_tunnel(self):
        echo = self.origin(EchoOrigin())
        tunnel = self.open_tunnel(echo)
        tunnel.send(b"before")
        self.assertEqual(tunnel.read_exact(6), b"before")
        expiry = 'listener="127.0.0.1:'  # the configured address (port 0 here)
        self.assertEqual(metric(self.scrape(), CERT_EXPIRY, expiry),
                         TestCA.not_after(self.cert))
        # Serve a certificate from another CA: new clients trusting only the old CA fail,
        # clients trusting the new one succeed; the open tunnel goes on.
        new_cert, new_key = self.other_ca.issue("reloaded", "localhost",
                                                ["DNS:localhost", "IP:127.0.0.1"], days=30)
        shutil.copy(new_cert, self.cert + ".tmp")
        shutil.copy(new_key, self.key + ".tmp")
        os.rename(self.key + ".tmp", self.key)
        os.rename(self.cert + ".tmp", self.cert)
        self.assertTrue(self.sighup("config reloaded"), self.proxy.tail())
        try:
            with self.assertRaises(ssl.SSLCertVerificationError):
                self.tls_client()
            new_ctx = ssl.create_default_context(cafile=self.other_ca.ca_cert)
            c = self.tls_client(ctx=new_ctx)
            c.send(f"GET http://127.0.0.1:{self.http_origin.port}/bytes/10 HTTP/1.1\r\n"
                   "Host: x\r\n\r\n".encode())
            self.assertEqual(c.read_response().status, 200)
            tunnel.send(b"after")
            self.assertEqual(tunnel.read_exact(5), b"after")
            # The expiry gauge follows the certificate now served (28 days later than before).
            self.assertEqual(metric(self.scrape(), CERT_EXPIRY, expiry),
                             TestCA.not_after(new_cert))
        finally:
            shutil.copy(self.ca.cert, self.cert)
            shutil.copy(self.ca.key, self.key)
            self.assertTrue(self.sighup("config reloaded"), self.proxy.tail())

    def test_reload_with_a_broken_key_keeps_the_old_certificate(self):
        with open(self.key) as f:
            good = f.read()
        try:
            with open(self.key, "w") as f:
                f.write("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
            self.assertTrue(self.sighup("config reload rejected"), self.proxy.tail())
            self.assertTrue(self.proxy.wait_stderr("cannot load the private key"))
            c = self.tls_client()  # still served with the old certificate and key
            c.send(f"GET http://127.0.0.1:{self.http_origin.port}/bytes/10 HTTP/1.1\r\n"
                   "Host: x\r\n\r\n".encode())
            self.assertEqual(c.read_response().status, 200)
        finally:
            with open(self.key, "w") as f:
                f.write(good)
            self.assertTrue(self.sighup("config reloaded"), self.proxy.tail())


class MutualTlsTest(TlsBase):
    """client_ca set: a certificate is required, and its identity feeds the rules."""

    CLIENT_CA = True
    RULES = ("rules:\n"
             "  - name: tenant-a\n    action: allow\n"
             "    client_identities: ['spiffe://corp.example/egress/a*']\n"
             "  - name: tenant-b-denied\n    action: deny\n"
             "    client_identities: [tenant-b]\n"
             "  - name: others\n    action: allow\n")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.alice = cls.ca.issue("alice", "tenant-a", ["URI:spiffe://corp.example/egress/a1",
                                                       "DNS:a.clients.example"], client=True)
        cls.bob = cls.ca.issue("bob", "tenant-b", client=True)
        cls.carol = cls.ca.issue("carol", "tenant-c", client=True)
        cls.mallory = cls.other_ca.issue("mallory", "tenant-a",
                                         ["URI:spiffe://corp.example/egress/a1"], client=True)
        cls.expired = cls.ca.issue("expired", "tenant-a", client=True, expired=True)

    def test_identity_rules_allow_one_and_deny_another(self):
        url = f"http://127.0.0.1:{self.http_origin.port}/bytes/64"
        r = self.curl(url, "-o", "-", cert=self.alice)
        self.assertEqual(r.returncode, 0, r.stderr.decode() + self.proxy.tail())
        e = self.proxy.wait_access(lambda e: e["client_identity"] and
                                   e["client_identity"].startswith("tenant-a"))
        self.assertEqual(e["rule"], "tenant-a")
        self.assertEqual(e["client_identity"],
                         "tenant-a,spiffe://corp.example/egress/a1,a.clients.example")
        r = self.curl(url, "-o", "/dev/null", "-w", "%{http_code}", cert=self.bob)
        self.assertEqual(r.stdout, b"403", r.stderr.decode())
        e = self.proxy.wait_access(lambda e: e["client_identity"] == "tenant-b")
        self.assertEqual(e["rule"], "tenant-b-denied")
        self.assertEqual(e["error"], "rule_denied")
        # An identity no rule names falls through to the catch-all.
        r = self.curl(url, "-o", "/dev/null", "-w", "%{http_code}", cert=self.carol)
        self.assertEqual(r.stdout, b"200")
        text = self.scrape()
        self.assertGreaterEqual(metric(text, "egressd_client_identity_matches_total",
                                       'rule="tenant-a"'), 1)
        self.assertGreaterEqual(metric(text, "egressd_client_identity_matches_total",
                                       'rule="tenant-b-denied"'), 1)
        self.assertNotIn("tenant-b\"", "\n".join(
            line for line in text.splitlines() if "identity_matches" in line and "rule=" in line
            and 'rule="tenant-b-denied"' not in line))

    def test_identity_rule_over_connect(self):
        r = self.curl(f"https://localhost:{self.https_origin.port}/bytes/3000", "-o", "-",
                      cert=self.alice)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        self.assertEqual(r.stdout, payload(3000, "bytes"))
        r = self.curl(f"https://localhost:{self.https_origin.port}/bytes/3000", "-o", "-",
                      cert=self.bob)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"403", r.stderr)

    def test_missing_client_certificate_is_refused(self):
        self.expect_refused(None, "no_client_cert")

    def test_certificate_from_another_ca_is_refused(self):
        self.expect_refused(self.mallory, "cert_untrusted")

    def test_expired_certificate_is_refused(self):
        self.expect_refused(self.expired, "cert_expired")

    def test_refused_handshakes_reach_no_origin(self):
        origin = self.origin(HttpOrigin())
        for cert in (None, self.mallory, self.expired):
            self.curl(f"http://127.0.0.1:{origin.port}/x", "-o", "/dev/null", cert=cert)
        self.assertFalse(origin.wait_requests(1, timeout=1))
        # And a good client still is served right after.
        r = self.curl(f"http://127.0.0.1:{origin.port}/bytes/5", "-o", "-", cert=self.carol)
        self.assertEqual(r.returncode, 0, r.stderr.decode())


class ClientCrlTest(TlsBase):
    """client_ca + client_crl: revoked certificates are refused, the CRL follows its file."""

    CLIENT_CA = True

    @classmethod
    def extra_tls(cls) -> str:
        cls.alice = cls.ca.issue("alice", "tenant-a", client=True)
        cls.bob = cls.ca.issue("bob", "tenant-b", client=True)
        cls.mallory = cls.ca.issue("mallory", "tenant-m", client=True)
        cls.dave = cls.ca.issue("dave", "tenant-d", client=True)  # revoked by one test only
        cls.ca.revoke(cls.mallory[0])
        cls.crl = os.path.join(cls.dir, "served.crl")
        cls.ca.crl(cls.crl)
        return f"      client_crl: {cls.crl}\n"

    def replace_crl(self, write):
        """Writes a new CRL with write(path) and moves it over the served one; true once
        egressd reloaded because the file changed (no SIGHUP)."""
        seen = sum(1 for line in list(self.proxy.stderr_lines) if "config reloaded" in line)
        before = len(self.proxy.stderr_lines)
        write(self.crl + ".new")
        os.rename(self.crl + ".new", self.crl)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if sum(1 for line in list(self.proxy.stderr_lines)
                   if "config reloaded" in line) > seen:
                return any(f"reloading config ({self.crl} changed)" in line
                           for line in list(self.proxy.stderr_lines)[before:])
            time.sleep(0.02)
        return False

    def served(self, cert) -> bool:
        r = self.curl(f"http://127.0.0.1:{self.http_origin.port}/bytes/10", "-o", "/dev/null",
                      "-w", "%{http_code}", cert=cert)
        return r.returncode == 0 and r.stdout == b"200"

    def test_revoked_certificate_is_refused_others_are_served(self):
        self.assertTrue(self.served(self.alice), self.proxy.tail())
        self.expect_refused(self.mallory, "cert_revoked")
        # Handshake failure lines are rate limited (one a second per reason): try until one of
        # this test's own attempts is logged.
        before = len(self.proxy.stderr_lines)

        def logged():
            self.served(self.mallory)
            return any("certificate revoked" in line
                       for line in list(self.proxy.stderr_lines)[before:])
        self.assertTrue(wait_until(logged, 20, 0.3), self.proxy.tail())
        self.assertTrue(self.served(self.bob))
        # The gauge shows when the CRL is due (alerting before it expires).
        self.assertEqual(self.proxy.metric("egressd_tls_client_crl_next_update_timestamp_seconds",
                                           listener="127.0.0.1:0"),
                         TestCA.crl_next_update(self.crl))

    @contextlib.contextmanager
    def serving_crl(self, write):
        """Serves the CRL write(path) makes (picked up without a signal), then the original."""
        with open(self.crl, "rb") as f:
            good = f.read()
        self.assertTrue(self.replace_crl(write), self.proxy.tail())
        try:
            yield
        finally:
            self.assertTrue(self.replace_crl(lambda p: Path(p).write_bytes(good)),
                            self.proxy.tail())

    def test_a_new_crl_file_is_picked_up_without_a_signal(self):
        self.ca.revoke(self.dave[0])
        with self.serving_crl(lambda p: self.ca.crl(p, hours=48)):
            self.expect_refused(self.dave, "cert_revoked")
            self.assertTrue(self.served(self.alice))
            self.assertEqual(
                self.proxy.metric("egressd_tls_client_crl_next_update_timestamp_seconds",
                                  listener="127.0.0.1:0"),
                TestCA.crl_next_update(self.crl))
        self.assertTrue(self.served(self.dave))  # the original CRL lists mallory only

    def test_expired_crl_refuses_every_certificate_as_crl_unusable(self):
        with self.serving_crl(lambda p: self.ca.crl(p, expired=True)):
            self.expect_refused(self.alice, "crl_unusable")
            self.assertTrue(self.proxy.wait_stderr("CRL has expired"), self.proxy.tail())
        self.assertTrue(self.served(self.alice))

    def test_a_broken_crl_file_keeps_the_previous_one(self):
        with open(self.crl, "rb") as f:
            good = f.read()
        rejected = sum(1 for line in list(self.proxy.stderr_lines)
                       if "config reload rejected" in line)
        try:
            with open(self.crl + ".new", "w") as f:
                f.write("-----BEGIN X509 CRL-----\nbm90IGEgQ1JM\n-----END X509 CRL-----\n")
            os.rename(self.crl + ".new", self.crl)
            self.assertTrue(wait_until(lambda: sum(
                1 for line in list(self.proxy.stderr_lines)
                if "config reload rejected" in line) > rejected), self.proxy.tail())
            self.assertTrue(self.proxy.wait_stderr("cannot load the client CRL file"))
            # The previous CRL still applies: mallory refused, alice served.
            self.expect_refused(self.mallory, "cert_revoked")
            self.assertTrue(self.served(self.alice))
        finally:
            self.assertTrue(self.replace_crl(lambda p: Path(p).write_bytes(good)),
                            self.proxy.tail())


class TlsEnvironmentTest(ProxyTestCase):
    """EGRESSD_TLS_CERT/KEY/CLIENT_CA make the EGRESSD_LISTEN listeners speak TLS."""

    def test_env_variables_enable_tls_and_client_ca(self):
        ca = TestCA()
        self.addCleanup(ca.cleanup)
        origin = self.origin(HttpOrigin())
        proxy = self.start_proxy(env={
            "EGRESSD_TLS_CERT": ca.cert, "EGRESSD_TLS_KEY": ca.key,
            "EGRESSD_TLS_CLIENT_CA": ca.ca_cert,
            "EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8", "EGRESSD_HTTP_PORTS": "1-65535"})
        self.addCleanup(proxy.stop)
        client = ca.issue("envclient", "env-client", client=True)
        base = ["--proxy", f"https://localhost:{proxy.port}", "--proxy-cacert", ca.ca_cert]
        url = f"http://127.0.0.1:{origin.port}/bytes/20"
        r = run_curl(base + ["--proxy-cert", client[0], "--proxy-key", client[1], url])
        self.assertEqual(r.returncode, 0, r.stderr.decode() + proxy.tail())
        self.assertEqual(r.stdout, payload(20, "bytes"))
        r = run_curl(base + [url])
        self.assertNotEqual(r.returncode, 0)

    def test_env_client_crl_is_enforced_and_watched(self):
        ca = TestCA()
        self.addCleanup(ca.cleanup)
        origin = self.origin(HttpOrigin())
        alice = ca.issue("envalice", "env-alice", client=True)
        eve = ca.issue("enveve", "env-eve", client=True)
        ca.revoke(eve[0])
        crl = ca.crl(os.path.join(ca.dir, "env.crl"))
        proxy = self.start_proxy(env={
            "EGRESSD_TLS_CERT": ca.cert, "EGRESSD_TLS_KEY": ca.key,
            "EGRESSD_TLS_CLIENT_CA": ca.ca_cert, "EGRESSD_TLS_CLIENT_CRL": crl,
            "EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8", "EGRESSD_HTTP_PORTS": "1-65535"})
        self.addCleanup(proxy.stop)
        base = ["--proxy", f"https://localhost:{proxy.port}", "--proxy-cacert", ca.ca_cert,
                "-o", "/dev/null", "-w", "%{http_code}",
                f"http://127.0.0.1:{origin.port}/bytes/20"]

        def status(cert) -> bytes:
            return run_curl(base + ["--proxy-cert", cert[0], "--proxy-key", cert[1]]).stdout

        self.assertEqual(status(alice), b"200", proxy.tail())
        self.assertNotEqual(status(eve), b"200")
        # A new CRL that lists alice too is picked up without a signal.
        before = len(proxy.stderr_lines)
        ca.revoke(alice[0])
        ca.crl(crl + ".new")
        os.rename(crl + ".new", crl)
        self.assertTrue(wait_until(lambda: any(
            f"reloading config ({crl} changed)" in line
            for line in list(proxy.stderr_lines)[before:]), 20), proxy.tail())
        self.assertTrue(wait_until(lambda: status(alice) != b"200", 10), proxy.tail())


if __name__ == "__main__":
    unittest.main()
