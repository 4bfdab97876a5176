"""The library's forwarder on the real cluster, both ways it carries connections: the SPDY
tunnel (kubectl's way, Kubernetes >= 1.31) and a WebSocket per connection (the fallback).
Bodies of several MiB both ways (flow control, frame splitting), many connections one after
the other and at once, each answered in full."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import kr8s.asyncio
import pytest
from e2e_helpers import manifest

from testenv._portforward import PodPortForward, ReadyPods
from testenv.api import REFERENCE_IMAGE_TAG, pod_selector

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("operator_installed")]

PORT = 8080
#: 4 MiB the server sends for GET /big (the test builds the same bytes).
BIG = bytes(range(256)) * 16384
SERVER = f"""
import hashlib, http.server
BIG = bytes(range(256)) * 16384
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.answer(BIG if self.path == "/big" else b"small")
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.answer(hashlib.sha256(body).hexdigest().encode())
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", {PORT}), Handler).serve_forever()
"""


@pytest.fixture(scope="module")
def blob_service(kubectl: str) -> Iterator[tuple[str, str]]:
    """A Ready environment with one service answering large and small bodies:
    (environment name, namespace)."""
    name = f"e2e-pf-{uuid.uuid4().hex[:6]}"
    spec = {
        "ttl": "30m",
        "services": [
            {
                "name": "blob",
                "image": f"testenv/frontend:{REFERENCE_IMAGE_TAG}",
                "port": PORT,
                "command": ["python3", "-c", SERVER],
                "probe": {"tcp": {}},
            }
        ],
    }

    def k(*args: str, stdin: str | None = None) -> None:
        done = subprocess.run(
            [kubectl, *args], input=stdin, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr

    k("apply", "-f", "-", stdin=manifest(name, spec))
    try:
        k("wait", "--for=condition=Ready", f"testenv/{name}", "--timeout=300s")
        yield name, f"testenv-{name}"
    finally:
        k("delete", "testenv", name, "--wait=false", "--ignore-not-found")


@contextlib.asynccontextmanager
async def forwarding(blob_service: tuple[str, str], mode: str) -> AsyncIterator[PodPortForward]:
    """A forward to the service, ``mode`` ``tunnel`` or ``streams`` (in the test's own loop:
    an async fixture may run in another)."""
    name, namespace = blob_service
    api = await kr8s.asyncio.api(kubeconfig=os.environ.get("KUBECONFIG"))
    pods = ReadyPods(api, namespace, pod_selector(name, "blob"))
    await pods.async_ready_pods()
    pf = PodPortForward(api, pods, PORT, tunnel=mode == "tunnel")
    await pf.start()
    try:
        yield pf
    finally:
        await pf.stop()


MODES = pytest.mark.parametrize("mode", ["tunnel", "streams"])


def fresh_client(port: int) -> httpx.AsyncClient:
    """A client that opens a new connection for every request."""
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        limits=httpx.Limits(max_keepalive_connections=0),
        timeout=60,
    )


@MODES
async def test_large_bodies_both_ways(blob_service: tuple[str, str], mode: str) -> None:
    async with (
        forwarding(blob_service, mode) as forward,
        fresh_client(forward.local_port) as client,
    ):
        for _ in range(2):
            assert (await client.get("/big")).content == BIG
        upload = os.urandom(3 * 1024 * 1024)
        answer = await client.post("/", content=upload)
        assert answer.text == hashlib.sha256(upload).hexdigest()
        assert forward.mode == mode  # this cluster has the tunnel: it was used


@MODES
async def test_many_connections_in_a_row_and_at_once(
    blob_service: tuple[str, str], mode: str
) -> None:
    async with (
        forwarding(blob_service, mode) as forward,
        fresh_client(forward.local_port) as client,
    ):
        for _ in range(40):
            assert (await client.get("/small")).content == b"small"

        async def one() -> bytes:
            async with fresh_client(forward.local_port) as own:
                return (await own.get("/big")).content

        bodies = await asyncio.gather(*(one() for _ in range(8)))
        assert all(body == BIG for body in bodies)
