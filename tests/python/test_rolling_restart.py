"""Scale-out as users run it: a real load balancer (HAProxy with active health checks, nginx
with passive ones) in front of two tensord instances on loopback, under load, while each
instance in turn gets SIGTERM, exits and starts again. Pass: zero failed client requests.

TENSORD_RESTART_ROUNDS (default 1) repeats the restart of both instances (scripts/rolling-restart
runs more rounds)."""

import http.client
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import Daemon, free_port, start

DRAIN_DELAY_S = 2
CLIENTS = 8
ROUNDS = int(os.environ.get("TENSORD_RESTART_ROUNDS", "1"))


def haproxy_config(port, backends):
    servers = "\n".join(f"    server t{i} {b} check" for i, b in enumerate(backends))
    return f"""
global
    maxconn 1000
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    # A request that meets a closing server is sent again, to the other one.
    retries 3
    retry-on conn-failure empty-response response-timeout
    option redispatch
frontend api
    bind 127.0.0.1:{port}
    default_backend tensord
backend tensord
    balance roundrobin
    option httpchk GET /v2/health/ready
    http-check expect status 200
    default-server inter 200ms fall 1 rise 1
{servers}
"""


def nginx_config(port, backends, prefix):
    servers = "\n".join(f"        server {b} max_fails=1 fail_timeout=1s;" for b in backends)
    return f"""
daemon off;
master_process off;
error_log {prefix}/error.log;
pid {prefix}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix};
    proxy_temp_path {prefix};
    upstream tensord {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://tensord;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Passive health checks: a refused connection or a 503 moves the request on,
            # POSTs included (an infer request has no side effects).
            proxy_next_upstream error timeout http_503 non_idempotent;
        }}
    }}
}}
"""


def start_balancer(kind, port, backends, tmp_path):
    if shutil.which(kind) is None:
        pytest.fail(f"{kind} is not installed (scripts/test installs it)")
    if kind == "haproxy":
        (tmp_path / "haproxy.cfg").write_text(haproxy_config(port, backends))
        cmd = ["haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg")]
    else:
        (tmp_path / "nginx.conf").write_text(nginx_config(port, backends, tmp_path))
        cmd = ["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")]
    return start(cmd, port, "/v2/health/ready", timeout=10,
                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


class Load:
    """Clients on keep-alive connections to the balancer, each checking every answer."""

    def __init__(self, port):
        self.port = port
        self.ok = 0
        self.failures = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, args=(i,)) for i in range(CLIENTS)]
        for t in self.threads:
            t.start()

    def client(self, index):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        n = 0
        while not self.stop.is_set():
            n += 1
            values = [index, n, -1.5]
            body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "FP32",
                                           "data": values}]})
            try:
                conn.request("POST", "/v2/models/identity/infer", body)
                r = conn.getresponse()
                data = r.read()
                got = json.loads(data)["outputs"][0]["data"] if r.status == 200 else None
                if got != values:
                    raise AssertionError(f"{r.status}: {data[:200]!r}")
                with self.lock:
                    self.ok += 1
            except Exception as e:  # every failure counts, whatever its kind
                with self.lock:
                    self.failures.append(f"client {index}: {type(e).__name__}: {e}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()


def requests_served(url):
    with urllib.request.urlopen(f"http://{url}/metrics") as r:
        for line in r.read().decode().splitlines():
            if line.startswith('nv_inference_request_success{model="identity"'):
                return int(line.split()[-1])
    return 0


@pytest.mark.parametrize("balancer", ["haproxy", "nginx"])
def test_rolling_restart_behind_a_load_balancer_loses_no_request(balancer, tmp_path):
    flags = ("--threads", "1", "--drain-delay", str(DRAIN_DELAY_S))
    instances = [Daemon(*flags), Daemon(*flags)]
    port = free_port()
    lb = start_balancer(balancer, port, [d.url for d in instances], tmp_path)
    load = Load(port)
    try:
        time.sleep(1)
        for _ in range(ROUNDS):
            for i, old in enumerate(instances):
                log = old.stop()  # SIGTERM; returns once it has exited (0, no panic)
                assert "draining" in log
                instances[i] = Daemon(*flags, port=old.port)
                time.sleep(1)  # the balancer's checks see it back
        time.sleep(2)  # nginx retries a failed server after fail_timeout (1 s)
    finally:
        load.finish()
        lb.terminate()
        lb.wait(timeout=10)
    print(f"\n{balancer}: {load.ok} requests ok, {len(load.failures)} failed, "
          f"{2 * ROUNDS} restarts")
    assert load.failures == [], f"{len(load.failures)} failed, {load.ok} ok: {load.failures[:5]}"
    assert load.ok > 100
    # Both restarted instances took traffic.
    assert all(requests_served(d.url) > 0 for d in instances)
    for d in instances:
        d.stop()
