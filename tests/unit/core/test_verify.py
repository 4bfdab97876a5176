"""The health check a port-forward must pass before tests get it."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from testenv import EnvironmentInfo, PortForwardLostError
from testenv._local import free_port
from testenv._portforward import verify
from testenv._stack import Stack
from testenv._tls import client_tls
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


def test_every_http_client_of_a_stack_shares_one_tls_context(flaky_server: int) -> None:
    """Building httpx's context loads the whole CA bundle (tens of ms): once per process."""
    stack = Stack(
        {"auth": _record(flaky_server)}, EnvironmentInfo(mode="local", name="x"), lambda n: ""
    )
    with stack.http_sync("auth") as one, stack.http_sync("auth") as two:
        assert one._transport._pool._ssl_context is two._transport._pool._ssl_context  # type: ignore[attr-defined]
        assert one.get("/").status_code == 503  # a working client, not a stub
    assert client_tls() is client_tls()
    custom = ssl.create_default_context()
    with stack.http_sync("auth", verify=custom) as mine:  # the caller's choice wins
        assert mine._transport._pool._ssl_context is custom  # type: ignore[attr-defined]
