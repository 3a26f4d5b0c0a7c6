"""HAProxy from Debian in TCP mode with send-proxy-v2 in front of egressd, as a real PROXY
protocol peer (issue 4): the client address HAProxy saw is the one egressd uses and logs, and
HAProxy is the logged load-balancer peer."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

from egressd_harness import HttpOrigin, ProxyTestCase, pp_listener_config


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@unittest.skipIf(shutil.which("haproxy") is None and not os.environ.get("CI"),
                 "haproxy not installed (scripts/install-deps.sh installs it)")
class HaproxyProxyProtocolTest(ProxyTestCase):
    @classmethod
    def setUpClass(cls):
        cls.http = cls.start_origin(HttpOrigin())
        cls.proxy = cls.start_proxy(
            config=pp_listener_config(),
            env={"EGRESSD_LISTEN": None,
                 "EGRESSD_ALLOW_DESTINATIONS": "127.0.0.0/8",
                 "EGRESSD_CONNECT_PORTS": "1-65535",
                 "EGRESSD_HTTP_PORTS": "1-65535"})
        cls.tmp = tempfile.mkdtemp(prefix="egressd-haproxy-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.port = free_port()
        cfg = os.path.join(cls.tmp, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(f"""global
  log stderr format raw local0 err
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:{cls.port}
  default_backend be
backend be
  server egressd {cls.proxy.host}:{cls.proxy.port} send-proxy-v2
""")
        cls.haproxy = subprocess.Popen(["haproxy", "-db", "-f", cfg], stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT)
        cls.addClassCleanup(cls._stop_haproxy)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", cls.port), timeout=1).close()
                break
            except OSError:
                if cls.haproxy.poll() is not None:
                    raise AssertionError("haproxy exited: " + cls.haproxy.stdout.read().decode())
                time.sleep(0.1)
        else:
            raise AssertionError("haproxy did not start listening")

    @classmethod
    def _stop_haproxy(cls):
        cls.haproxy.terminate()
        try:
            cls.haproxy.wait(10)
        except subprocess.TimeoutExpired:
            cls.haproxy.kill()
            cls.haproxy.wait()

    def curl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["curl", "-sS", "--noproxy", "", "-q", "--max-time", "20", *args],
                              capture_output=True, env={"PATH": os.environ["PATH"]})

    def test_plain_http_through_haproxy(self):
        p = self.curl("--interface", "127.0.0.9", "-x", f"http://127.0.0.1:{self.port}",
                      f"http://{self.http.address}/via-haproxy")
        self.assertEqual(p.returncode, 0, p.stderr.decode() + self.proxy.tail())
        echo = json.loads(p.stdout)
        xff = [v for k, v in echo["headers"] if k.lower() == "x-forwarded-for"]
        self.assertEqual(xff, ["127.0.0.9"])
        e = self.proxy.wait_access(lambda e: (e.get("target") or "").endswith("/via-haproxy"))
        self.assertEqual(e["client_addr"], "127.0.0.9")
        self.assertEqual(e["proxy_addr"], "127.0.0.9")
        self.assertTrue(e["lb_peer"].startswith("127.0.0.1:"), e)

    def test_connect_through_haproxy(self):
        p = self.curl("--interface", "127.0.0.10", "-p", "-x", f"http://127.0.0.1:{self.port}",
                      f"http://{self.http.address}/bytes/5000")
        self.assertEqual(p.returncode, 0, p.stderr.decode() + self.proxy.tail())
        self.assertEqual(len(p.stdout), 5000)
        e = self.proxy.wait_access(lambda e: e.get("method") == "CONNECT"
                                   and e.get("client_addr") == "127.0.0.10")
        self.assertEqual(e["status"], 200)
        self.assertTrue(e["lb_peer"].startswith("127.0.0.1:"), e)

    def test_direct_client_without_header_is_refused(self):
        p = self.curl("--interface", "127.0.0.9", "-x",
                      f"http://{self.proxy.host}:{self.proxy.port}", f"http://{self.http.address}/")
        self.assertNotEqual(p.returncode, 0, "egressd answered a client that sent no PROXY header")


if __name__ == "__main__":
    unittest.main()
