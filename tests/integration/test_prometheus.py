"""A real Prometheus server (Debian package `prometheus`) scrapes egressd's admin /metrics.

egressd runs on loopback with its admin listener on 127.0.0.1 port 0; the test carries known
traffic through it (plain-HTTP GETs to a loopback origin, one tunnel, one port denial), then
starts /usr/bin/prometheus on 127.0.0.1 with a temporary config (scrape every 1 s) and a
temporary TSDB, and asks Prometheus' HTTP API until the stored series hold exactly the values
that traffic implies. A second job scraping a path that 404s must show as down, so the
"up" checks can fail. Every wait is a bounded failure guard; nothing asserts on wall time.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import unittest
import urllib.error
import urllib.parse
import urllib.request

from egressd_harness import (REPO_ROOT, EchoOrigin, HttpOrigin, ProxyTestCase, TestCA,
                             clean_env, unused_port, wait_until)

PROMETHEUS = shutil.which("prometheus") or (
    "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None)
PROM_START_TIMEOUT = 30.0   # failure guards only
PROM_QUERY_TIMEOUT = 20.0   # a 1 s scrape interval lands a new sample well within this
BODY = 1000                 # bytes of each /bytes/N response body

# No proxy for the test's own HTTP calls, whatever the environment says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with _OPENER.open(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def free_port() -> int:
    """A loopback port free right now (for Prometheus, which cannot report an ephemeral one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def documented_metric_names() -> list[tuple[str, str]]:
    """(name, type) of every row of the metric table in docs/metrics.md."""
    rows = []
    text = (REPO_ROOT / "docs" / "metrics.md").read_text()
    for m in re.finditer(r"^\| `([a-z_:]+)` \| (counter|gauge|histogram) \|", text, re.M):
        rows.append((m.group(1), m.group(2)))
    return rows


class Prometheus:
    """One Prometheus server process with its own config, TSDB and log in a temp dir."""

    def __init__(self, scrape_configs: str):
        self.dir = tempfile.mkdtemp(prefix="egressd-prom-")
        self.config = os.path.join(self.dir, "prometheus.yml")
        with open(self.config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "  evaluation_interval: 1s\n"
                    "scrape_configs:\n" + scrape_configs)
        self.log_path = os.path.join(self.dir, "prometheus.log")
        self.proc = None
        self.url = None

    def start(self):
        # Prometheus cannot listen on port 0 and report it: pick a free port, retry on a race.
        for _ in range(5):
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [PROMETHEUS, f"--config.file={self.config}",
                 f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=info"],
                env=clean_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                cwd=self.dir)
            log.close()
            ready = wait_until(lambda: self.proc.poll() is not None
                               or http_get(self.url + "/-/ready")[0] == 200,
                               PROM_START_TIMEOUT, 0.1)
            if ready and self.proc.poll() is None:
                return self
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"prometheus not ready within {PROM_START_TIMEOUT}s:\n"
                                     + self.log_tail())
            if "address already in use" not in self.log_tail():
                raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n"
                                     + self.log_tail())
        raise AssertionError("prometheus: no free port after 5 tries:\n" + self.log_tail())

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("prometheus did not stop within 20s of SIGTERM:\n"
                                     + self.log_tail())
        return self.proc.returncode

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n: int = 30) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "--- prometheus log (tail) ---\n" + "".join(f.readlines()[-n:])
        except OSError:
            return "--- no prometheus log ---"

    def api(self, path: str, **params) -> dict:
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        status, body = http_get(url)
        if status != 200:
            raise AssertionError(f"GET {url}: {status} {body[:300]!r}\n" + self.log_tail())
        doc = json.loads(body)
        if doc.get("status") != "success":
            raise AssertionError(f"GET {url}: {doc}")
        return doc["data"]

    def query(self, expr: str) -> list[tuple[dict, float]]:
        """An instant vector: [(labels, value)]."""
        data = self.api("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def scalar(self, expr: str):
        """The value of a one-element instant vector, None when the result is empty."""
        res = self.query(expr)
        if len(res) > 1:
            raise AssertionError(f"{expr}: {len(res)} series, expected one: {res}")
        return res[0][1] if res else None

    def wait_value(self, expr: str, want: float, timeout: float = PROM_QUERY_TIMEOUT) -> float:
        """Polls expr until its single series equals want; fails with the last value seen."""
        last = []
        got = wait_until(lambda: (last.append(self.scalar(expr)) or last[-1] == want),
                         timeout, 0.25)
        if not got:
            raise AssertionError(f"{expr}: wanted {want}, last value {last[-1] if last else None}"
                                 f" after {timeout}s\n" + self.log_tail())
        return last[-1]

    def targets(self) -> list[dict]:
        return self.api("/api/v1/targets", state="active")["activeTargets"]


@unittest.skipUnless(PROMETHEUS, "prometheus is not installed (Debian package 'prometheus', "
                                 "installed by scripts/install-deps.sh)")
class PrometheusScrapeTest(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.http = cls.start_origin(HttpOrigin())
        cls.echo = cls.start_origin(EchoOrigin())
        cls.closed_holder, cls.closed_port = unused_port()
        cls.addClassCleanup(cls.closed_holder.close)
        # Only the two origins' ports pass the gates: a GET to any other port is a port denial.
        # A report-only rule that matches nothing keeps every request allowed and makes the
        # report-only family export its (zero) series like every other documented family; an
        # identity rule (no TLS listener here, so it never matches) does the same for the
        # identity family. A second listener with TLS (nobody connects to it) exports the
        # certificate expiry, and with a client CA and CRL the CRL's nextUpdate; the first,
        # plain one is the one the tests use.
        cls.ca = TestCA()
        cls.addClassCleanup(shutil.rmtree, cls.ca.dir, True)
        crl = cls.ca.crl(os.path.join(cls.ca.dir, "clients.crl"))
        cls.proxy = cls.start_proxy(config=(
            "version: 1\n"
            "listeners:\n  - address: 127.0.0.1:0\n  - address: 127.0.0.1:0\n"
            f"    tls:\n      cert: {cls.ca.cert}\n      key: {cls.ca.key}\n"
            f"      client_ca: {cls.ca.ca_cert}\n      client_crl: {crl}\n"
            "rules:\n"
            "  - name: shadow\n    action: deny\n    domains: [never.invalid]\n"
            "    report_only: true\n"
            "  - name: tenant\n    action: deny\n    client_identities: [nobody]\n"
            "  - name: everyone\n    action: allow\n"), env={
            "EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8",
            "EGRESSD_HTTP_PORTS": str(cls.http.port),
            "EGRESSD_CONNECT_PORTS": str(cls.echo.port),
            "EGRESSD_LISTEN": None,  # the config's two listeners
        })
        cls.admin = cls.proxy.admin_address()

    # -- traffic --------------------------------------------------------------------------------

    def get_ok(self, n: int):
        """n plain-HTTP GETs of BODY bytes through egressd on one keep-alive connection."""
        c = self.client()
        for i in range(n):
            c.send(f"GET http://{self.http.address}/bytes/{BODY} HTTP/1.1\r\n"
                   f"Host: {self.http.address}\r\n\r\n".encode())
            resp = c.read_response()
            self.assertEqual(resp.status, 200, f"{resp!r}\n{self.proxy.tail()}")
            self.assertEqual(len(resp.body), BODY)

    def tunnel(self):
        c = self.client()
        c.send(f"CONNECT {self.echo.address} HTTP/1.1\r\n\r\n".encode())
        self.assertEqual(c.read_head().status, 200)
        c.send(b"ping")
        self.assertEqual(c.read_exact(4), b"ping")
        c.shutdown_write()
        self.assertTrue(c.wait_closed(10)[0], "tunnel not closed after both FINs")

    def denied(self):
        c = self.client()
        c.send(f"GET http://127.0.0.1:{self.closed_port}/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        resp = c.read_response()
        self.assertEqual(resp.status, 403, resp)

    # -- the test -------------------------------------------------------------------------------

    def test_prometheus_scrapes_egressd(self):
        self.get_ok(3)
        self.tunnel()
        self.denied()
        # Every request is counted when it is logged: wait for the three kinds of lines first.
        self.proxy.wait_access_count(lambda e: e.get("status") in (200, 403), 5)

        prom = Prometheus(
            "  - job_name: egressd\n"
            f"    static_configs:\n      - targets: ['{self.admin}']\n"
            # A target that answers 404: must be reported down, so 'up == 1' can fail.
            "  - job_name: egressd-wrong-path\n"
            "    metrics_path: /no-such-path\n"
            f"    static_configs:\n      - targets: ['{self.admin}']\n")
        self.addCleanup(prom.cleanup)
        prom.start()

        prom.wait_value('up{job="egressd"}', 1)
        prom.wait_value('up{job="egressd-wrong-path"}', 0)
        ok = 'egressd_requests_total{job="egressd",kind="http",outcome="ok"}'
        prom.wait_value(ok, 3)
        # The same scrape holds the rest of the traffic (one scrape is one snapshot).
        q = prom.scalar
        self.assertEqual(q('egressd_requests_total{job="egressd",kind="connect",outcome="ok"}'), 1)
        self.assertEqual(q('egressd_requests_total{job="egressd",kind="http",outcome="denied"}'),
                         1)
        self.assertEqual(q('egressd_denials_total{job="egressd",reason="port"}'), 1)
        self.assertEqual(q('egressd_denials_total{job="egressd",reason="destination"}'), 0)
        self.assertEqual(q('sum(egressd_requests_total{job="egressd"})'), 5)
        self.assertEqual(q('egressd_bytes_total{job="egressd",direction="upstream_to_client"}'),
                         3 * BODY + 4)
        self.assertEqual(q('egressd_bytes_total{job="egressd",direction="client_to_upstream"}'),
                         4)
        self.assertEqual(q('egressd_upstream_connect_duration_seconds_count{job="egressd"}'), 2)
        self.assertEqual(q('egressd_draining{job="egressd"}'), 0)
        self.assertGreater(q('process_open_fds{job="egressd"}'), 0)
        # No series from the wrong-path job: a 404 scrape stores nothing.
        self.assertEqual(prom.query('egressd_requests_total{job="egressd-wrong-path"}'), [])

        # Every documented metric family reached Prometheus under its documented name.
        names = set(prom.api("/api/v1/label/__name__/values", **{"match[]": '{job="egressd"}'}))
        documented = documented_metric_names()
        self.assertGreaterEqual(len(documented), 20, "metric table not found in docs/metrics.md")
        for name, kind in documented:
            want = [name + s for s in ("_bucket", "_sum", "_count")] if kind == "histogram" \
                else [name]
            for w in want:
                self.assertIn(w, names, f"documented metric {w} not scraped by Prometheus")
        egressd_names = {n for n in names if n.startswith(("egressd_", "process_"))}
        documented_names = set()
        for name, kind in documented:
            documented_names.update([name + s for s in ("_bucket", "_sum", "_count")]
                                    if kind == "histogram" else [name])
        self.assertEqual(egressd_names - documented_names, set(),
                         "metrics exported but not documented in docs/metrics.md")

        # Targets API: our target is healthy and was scraped at the admin address.
        by_job = {t["labels"]["job"]: t for t in prom.targets()}
        self.assertEqual(set(by_job), {"egressd", "egressd-wrong-path"}, by_job)
        t = by_job["egressd"]
        self.assertEqual(t["health"], "up", t)
        self.assertEqual(t["lastError"], "", t)
        self.assertEqual(t["scrapeUrl"], f"http://{self.admin}/metrics", t)
        bad = by_job["egressd-wrong-path"]
        self.assertEqual(bad["health"], "down", bad)
        self.assertIn("404", bad["lastError"], bad)

        # Scrapes continue: new traffic shows up in a later sample.
        self.get_ok(2)
        prom.wait_value(ok, 5)

        self.assertEqual(prom.stop(), 0, "prometheus did not exit cleanly:\n" + prom.log_tail())
        self.assertIn("See you next time!", prom.log_tail(5), prom.log_tail())


if __name__ == "__main__":
    unittest.main()
