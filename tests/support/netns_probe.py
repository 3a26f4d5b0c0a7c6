"""Run inside a fresh network namespace (unshare --net): bring lo up, start egressd with its
default destination policy, send requests for the cloud metadata addresses, print the results
as one JSON object on stdout. Nothing can leave the namespace: it has only a loopback interface.

usage: unshare --net -- python3 netns_probe.py EGRESSD_BIN
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from egressd_harness import ConnectionClosed, Egressd  # noqa: E402

PROBES = [
    ("connect_metadata", "CONNECT", "169.254.169.254:443"),
    ("http_metadata", "GET", "http://169.254.169.254/latest/meta-data/"),
    ("connect_mapped_metadata", "CONNECT", "[::ffff:169.254.169.254]:443"),
    ("connect_mapped_hex_metadata", "CONNECT", "[::ffff:a9fe:a9fe]:443"),
    ("http_mapped_metadata", "GET", "http://[::ffff:169.254.169.254]/latest/meta-data/"),
    ("connect_ecs_metadata", "CONNECT", "169.254.170.2:443"),
    ("http_ecs_metadata", "GET", "http://169.254.170.2/v2/credentials"),
    ("http_ipv6_imds", "GET", "http://[fd00:ec2::254]/latest/meta-data/"),
    # Unknown names: the resolver is unreachable from this namespace -> 502 dns_error.
    ("connect_dns_unknown", "CONNECT", "nonexistent.invalid:443"),
    ("http_dns_unknown", "GET", "http://nonexistent.invalid/"),
]


def request_bytes(method: str, target: str) -> bytes:
    if method == "CONNECT":
        return f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode()
    host = target.split("/")[2]
    return f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    proxy = Egressd(binary=sys.argv[1], env={
        "EGRESSD_CONNECT_PORTS": "443",
        "EGRESSD_HTTP_PORTS": "80",
        "EGRESSD_WORKERS": "1",
    })
    out = {"results": []}
    proxy.start()
    try:
        for name, method, target in PROBES:
            r = {"name": name, "method": method, "target": target}
            c = proxy.client(timeout=20)
            try:
                c.send(request_bytes(method, target))
                resp = c.read_response(method)
                r.update(status=resp.status, proxy_status=resp.proxy_status,
                         error=resp.proxy_error, body=resp.body.decode("latin-1")[:200])
                if method == "CONNECT":
                    r["closed"] = c.wait_closed(10)[0]
            except (ConnectionClosed, OSError) as e:
                r["exception"] = f"{type(e).__name__}: {e}"
            finally:
                c.close()
            out["results"].append(r)
    finally:
        try:
            out["egressd_rc"] = proxy.stop(check=False)
        except AssertionError as e:
            out["egressd_rc"] = None
            out["stop_error"] = str(e)
        out["stderr_tail"] = proxy.stderr_lines[-30:]
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
