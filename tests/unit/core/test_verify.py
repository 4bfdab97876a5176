"""The health check a port-forward must pass before tests get it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from testenv import PortForwardLostError
from testenv._local import free_port
from testenv._portforward import verify
from testenv.api import DiscoveryRecord, ServiceSpec


def _record(port: int) -> DiscoveryRecord:
    return DiscoveryRecord.for_service(ServiceSpec(name="auth", image="x"), "127.0.0.1", port)


@pytest.fixture
def flaky_server() -> Iterator[int]:
    """Answers 503 twice (a service still starting), then 200."""
    answers = iter([503, 503])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(next(answers, 200))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


async def test_verify_retries_until_healthy(flaky_server: int) -> None:
    result = await verify(_record(flaky_server), seconds=10)
    assert result["ok"] is True and result["status_code"] == 200


async def test_verify_gives_up_with_a_typed_error() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(PortForwardLostError, match=r"'auth'.*ConnectError"):
        await verify(_record(port), seconds=0.5)
