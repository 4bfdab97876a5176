"""Port-forward throughput: the library's in-process forwarder (kr8s) against
`kubectl port-forward` and the official `kubernetes` client's port-forward (behind a small
threaded listener, since that client has none), to the same backend, in the same run.

It starts a default environment with ``testenv.DevLauncher``, opens the other two forwarders
to the same service, then per round and per forwarder (interleaved): requests per second for
``GET /health`` over one keep-alive connection, the same with a new connection per request
(each connection is a new port-forward stream), and the WebSocket round trip of one chat
message. Reports every round's figures (``samples``), their medians and the ratios of the
medians (library / other; above 1 the library is faster for req/s, below 1 for round-trip
time).

    python bench/portforward.py [--rounds 5] [--requests 200] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import select
import socket
import socketserver
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _common import kubectl_path

import testenv


async def requests_per_second(base_url: str, n: int, *, keepalive: bool) -> float:
    limits = httpx.Limits(max_keepalive_connections=1 if keepalive else 0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=10) as client:
        started = time.perf_counter()
        for _ in range(n):
            (await client.get("/health")).raise_for_status()
        return n / (time.perf_counter() - started)


async def ws_round_trip(ws_url: str, n: int) -> float:
    """Median seconds of one chat message and its answer."""
    times = []
    async with testenv.WebSocketTestClient(ws_url) as ws:
        for i in range(n):
            started = time.perf_counter()
            await ws.send_chat(f"ping {i}")
            await ws.receive_until("chat_response")
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def kubectl_forward(namespace: str, service: str, port: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [kubectl_path(), "-n", namespace, "port-forward", f"svc/{service}", f":{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # "Forwarding from 127.0.0.1:40123 -> 8081"
        found = re.search(r"127\.0\.0\.1:(\d+)", line)
        if found:
            return proc, int(found.group(1))
    raise RuntimeError("kubectl port-forward did not start")


class OfficialClientForward:
    """A local listener that opens one port-forward of the official client per connection
    (``kubernetes.stream.portforward``) and pipes bytes both ways."""

    def __init__(self, namespace: str, pod: str, port: int) -> None:
        from kubernetes import client, config
        from kubernetes.stream import portforward

        config.load_kube_config()
        api = client.CoreV1Api()

        class Pipe(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                forward = portforward(
                    api.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port)
                )
                remote = forward.socket(port)
                local: socket.socket = self.request
                try:
                    while True:
                        readable, _, _ = select.select([local, remote], [], [], 30)
                        if not readable:
                            return
                        for sock in readable:
                            data = sock.recv(65536)
                            if not data:
                                return
                            (remote if sock is local else local).sendall(data)
                finally:
                    forward.close()

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Pipe)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    async with testenv.DevLauncher(testenv.LauncherConfig(startup_timeout=300)) as launcher:
        backend = launcher.records["backend"]
        namespace = launcher.environment.namespace or ""
        remote = launcher.result.health["backend"]["remote_port"] if launcher.result else 8081
        auth = await launcher.client_factory.create_auth_client()
        token = await auth.login("test@example.com", "password")
        proc, kport = kubectl_forward(namespace, "backend", int(remote))
        pod = launcher.result.health["backend"]["pod"] if launcher.result else ""
        official = OfficialClientForward(namespace, str(pod), int(remote))
        oport = official.port
        try:
            targets = {
                "library": (backend.base_url, backend.ws_url or ""),
                "kubectl": (f"http://127.0.0.1:{kport}", f"ws://127.0.0.1:{kport}/ws"),
                "official": (f"http://127.0.0.1:{oport}", f"ws://127.0.0.1:{oport}/ws"),
            }
            samples: dict[str, dict[str, list[float]]] = {
                name: {"rps_keepalive": [], "rps_new_connection": [], "ws_rtt_s": []}
                for name in targets
            }
            for _ in range(args.rounds):
                for name, (base, ws) in targets.items():
                    s = samples[name]
                    s["rps_keepalive"].append(
                        await requests_per_second(base, args.requests, keepalive=True)
                    )
                    s["rps_new_connection"].append(
                        await requests_per_second(base, args.requests // 4, keepalive=False)
                    )
                    url = testenv.WebSocketTestClient(f"{ws}?token={token}").url
                    s["ws_rtt_s"].append(await ws_round_trip(url, 50))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            official.close()
    medians = {name: {k: statistics.median(v) for k, v in s.items()} for name, s in samples.items()}
    result: dict[str, Any] = {
        "rounds": args.rounds,
        "requests": args.requests,
        "samples": {
            {"kubectl": "kubectl_port_forward", "official": "official_client"}.get(name, name): s
            for name, s in samples.items()
        },
        "library": medians["library"],
        "kubectl_port_forward": medians["kubectl"],
        "official_client": medians["official"],
        "ratio_library_over_kubectl": {
            k: medians["library"][k] / medians["kubectl"][k] for k in medians["library"]
        },
        "ratio_library_over_official_client": {
            k: medians["library"][k] / medians["official"][k] for k in medians["library"]
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    asyncio.run(main())
