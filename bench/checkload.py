#!/usr/bin/env python3
"""checkload.py — the check load of the memory measurement in bench/dns.sh.

  checkload.py serve PORTFILE
      A loopback HTTP/1.1 server (threaded) answering every GET with 200 "ok": the target of
      the TCP and HTTP checks. Binds 127.0.0.1 port 0 and writes the port to PORTFILE.
  checkload.py load HTTP_ADDR N TARGET_PORT INTERVAL
      Registers N services (mem-NNNN) through PUT /v1/agent/service/register, each with three
      checks run by the agent: TCP and HTTP against 127.0.0.1:TARGET_PORT every INTERVAL, and
      a TTL check (10 m) that this script passes once through PUT /v1/agent/check/pass. Then
      waits (bounded, 120 s) until all 3*N checks are passing in the agent's local state
      (/v1/agent/checks) and in the catalog (/v1/health/state/passing, i.e. anti-entropy
      pushed them). Prints one line: "checks passing local=<n> catalog=<n> after=<s>s".
"""
import http.server
import json
import sys
import time
import urllib.request

TTL = "10m"
WAIT_S = 120


def serve(portfile):
    class Ok(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    srv.daemon_threads = True
    with open(portfile + ".tmp", "w") as f:
        f.write("%d\n" % srv.server_address[1])
    # rename: the waiting script never reads a half-written file
    __import__("os").replace(portfile + ".tmp", portfile)
    srv.serve_forever()


def call(addr, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request("http://%s%s" % (addr, path), data=data, method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200, (path, r.status)
        raw = r.read()
        return json.loads(raw) if raw.strip() else None


def load(addr, n, port, interval):
    target = "127.0.0.1:%d" % port
    for s in range(n):
        name = "mem-%04d" % s
        call(addr, "PUT", "/v1/agent/service/register", {
            "ID": name, "Name": name, "Port": 30000 + s, "Tags": ["bench"],
            "Checks": [
                {"CheckID": name + "-tcp", "Name": "tcp", "TCP": target,
                 "Interval": interval, "Timeout": "1s"},
                {"CheckID": name + "-http", "Name": "http", "HTTP": "http://%s/health" % target,
                 "Interval": interval, "Timeout": "1s"},
                {"CheckID": name + "-ttl", "Name": "ttl", "TTL": TTL},
            ],
        })
    for s in range(n):
        call(addr, "PUT", "/v1/agent/check/pass/mem-%04d-ttl" % s)
    want = 3 * n
    t0 = time.monotonic()
    local = catalog = 0
    while time.monotonic() - t0 < WAIT_S:
        checks = call(addr, "GET", "/v1/agent/checks") or {}
        local = sum(1 for c in checks.values()
                    if c.get("ServiceID", "").startswith("mem-") and c.get("Status") == "passing")
        passing = call(addr, "GET", "/v1/health/state/passing") or []
        catalog = sum(1 for c in passing if c.get("ServiceID", "").startswith("mem-"))
        if local >= want and catalog >= want:
            break
        time.sleep(0.5)
    print("checks passing local=%d catalog=%d after=%.1fs" % (local, catalog, time.monotonic() - t0))
    return 0 if local >= want and catalog >= want else 1


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
        return 0
    if len(sys.argv) == 6 and sys.argv[1] == "load":
        return load(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
