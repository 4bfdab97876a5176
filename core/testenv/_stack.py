"""``Stack``: a running environment's services and secrets, whatever the spec.

The generic front door (the pytest plugin's ``testenv`` fixture): URLs, addresses and clients
for every port of every service, connection strings of presets, generated secrets. The
typed clients of the reference services (``real_services``) are the specialised door.

Secrets are read from the cluster when asked for and never stored in discovery files,
reports or logs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from ._context import EnvironmentInfo
from ._errors import ConfigurationError, ServiceNotFoundError
from ._tls import client_tls
from .api import DiscoveryRecord, PortRecord

SecretReader = Callable[[str], str]


class Stack:
    """Where each service of a running environment is, from this process.

    ``url(service, port=None)``, ``address(...)``, ``http(service)`` (an httpx client),
    ``ws(service, path)`` (a websockets connection), ``dsn(service)`` (a preset's connection
    URL with its password), ``secret(name)``, and ``records``.
    """

    def __init__(
        self,
        records: Mapping[str, DiscoveryRecord],
        environment: EnvironmentInfo,
        read_secret: SecretReader,
    ) -> None:
        self.records: dict[str, DiscoveryRecord] = dict(records)
        self.environment = environment
        self._read_secret = read_secret

    def __repr__(self) -> str:
        return f"Stack({self.environment.name!r}, services={sorted(self.records)})"

    @property
    def services(self) -> list[str]:
        return sorted(self.records)

    def record(self, service: str) -> DiscoveryRecord:
        try:
            return self.records[service]
        except KeyError:
            raise ServiceNotFoundError(
                f"no service {service!r} in environment {self.environment.name}; it has: "
                f"{', '.join(self.services) or 'none'}"
            ) from None

    def port(self, service: str, port: str | None = None) -> PortRecord:
        record = self.record(service)
        try:
            return record.port_named(port)
        except KeyError:
            names = ", ".join(p.name for p in record.ports)
            raise ServiceNotFoundError(
                f"service {service!r} has no port {port!r}; its ports: {names}"
            ) from None

    def address(self, service: str, port: str | None = None) -> tuple[str, int]:
        """``(host, port)`` of a port (the first one by default)."""
        return self.record(service).host, self.port(service, port).port

    def url(self, service: str, port: str | None = None) -> str:
        """``http://host:port`` of an HTTP port, a preset's URL (without its password) for its
        port, else ``tcp://host:port``."""
        found = self.port(service, port)
        return found.url or "tcp://{}:{}".format(*self.address(service, port))

    def http(self, service: str, port: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        """An httpx client with the port's URL as ``base_url`` (``async with`` it)."""
        kwargs.setdefault("verify", client_tls())
        return httpx.AsyncClient(base_url=self._http_url(service, port), **kwargs)

    def http_sync(self, service: str, port: str | None = None, **kwargs: Any) -> httpx.Client:
        """A blocking httpx client with the port's URL as ``base_url`` (``with`` it)."""
        kwargs.setdefault("verify", client_tls())
        return httpx.Client(base_url=self._http_url(service, port), **kwargs)

    def _http_url(self, service: str, port: str | None) -> str:
        found = self.port(service, port)
        if found.protocol != "http" or not found.url:
            raise ConfigurationError(
                f"port {found.name!r} of service {service!r} is not an HTTP port "
                f"({found.protocol}): use address() or dsn()"
            )
        return found.url

    def ws(self, service: str, path: str | None = None, port: str | None = None) -> Any:
        """A websockets connection (``async with stack.ws("backend", "/ws") as ws``) to
        ``path``: by default the service's declared ``websocketPath``."""
        from websockets.asyncio.client import connect

        record = self.record(service)
        if path is None:
            if record.ws_url is None:
                raise ConfigurationError(
                    f"service {service!r} declares no websocketPath: give ws() a path"
                )
            return connect(record.ws_url)
        base = urlsplit(self._http_url(service, port))
        return connect(urlunsplit(("ws", base.netloc, path, "", "")))

    def secret(self, name: str) -> str:
        """The value of a generated secret (``spec.secrets``, or ``<service>-password`` of a
        preset)."""
        return self._read_secret(name)

    def dsn(self, service: str) -> str:
        """A preset's connection URL, password included (``postgresql://app:…@host:port/app``,
        ``redis://:…@host:port``)."""
        record = self.record(service)
        if record.url is None or record.password_secret is None:
            raise ConfigurationError(
                f"service {service!r} is not a preset (postgres, redis): it has no dsn; "
                "use url() or address()"
            )
        password = quote(self.secret(record.password_secret), safe="")
        parts = urlsplit(record.url)
        user = quote(record.username or "", safe="")
        netloc = f"{user}:{password}@{parts.hostname}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
