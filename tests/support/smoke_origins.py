"""Local origins for tests/support/run_smoke.sh: an HTTPS origin (test CA made at start) and a
plain-HTTP origin, both on 127.0.0.1 port 0, both serving /ip (the caller's IP as text). Prints
their URLs as one JSON line on stdout, then serves until SIGTERM/SIGINT."""

import json
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from egressd_harness import HttpOrigin, TestCA  # noqa: E402


def main() -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ca = TestCA()
    tls = HttpOrigin(ssl_context=ca.server_context()).start()
    http = HttpOrigin().start()
    try:
        print(json.dumps({
            "cacert": ca.ca_cert,
            "tls_port": tls.port,
            "http_port": http.port,
            "https_url": f"https://localhost:{tls.port}/bytes/1000",
            "https_ip_url": f"https://localhost:{tls.port}/ip",
            "http_url": f"http://127.0.0.1:{http.port}/bytes/1000",
            "http_ip_url": f"http://127.0.0.1:{http.port}/ip",
        }), flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        tls.stop()
        http.stop()
        ca.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
