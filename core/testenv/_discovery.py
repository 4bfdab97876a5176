"""Service discovery: where each service of the environment is reachable from the tests.

The plugin writes one ``DiscoveryRecord`` per service into ``.service_discovery/<service>.json``
(local ``127.0.0.1`` addresses: port-forwards in real mode, processes in local mode) so that
tools outside pytest can find the services too; :class:`ServiceDiscovery` reads them back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ._errors import ServiceNotFoundError
from .api import DiscoveryRecord

DEFAULT_DISCOVERY_DIR = Path(".service_discovery")
DISCOVERY_ENV = "TESTENV_DISCOVERY_DIR"


@dataclass(frozen=True)
class ServiceInfo:
    """How to reach one service from the test process."""

    port: int
    health_url: str
    base_url: str
    ws_url: str | None = None
    name: str = ""
    host: str = "localhost"

    @classmethod
    def from_record(cls, record: DiscoveryRecord) -> ServiceInfo:
        return cls(
            port=record.port,
            health_url=record.health_url or "",
            base_url=record.base_url or record.url or f"tcp://{record.host}:{record.port}",
            ws_url=record.ws_url,
            name=record.name,
            host=record.host,
        )


class ServiceDiscovery:
    """Reads service endpoints from discovery files (or from records held in memory).

    ``ServiceDiscovery()`` reads ``$TESTENV_DISCOVERY_DIR/<service>.json`` (set by the plugin)
    or else ``.service_discovery/<service>.json`` relative to the current directory; the
    ``real_services`` fixture passes the records it published directly.
    """

    def __init__(
        self,
        discovery_dir: Path | None = None,
        records: Mapping[str, DiscoveryRecord] | None = None,
    ) -> None:
        if discovery_dir is None:
            # The plugin exports where it wrote the files (per xdist worker, absolute).
            discovery_dir = Path(os.environ.get(DISCOVERY_ENV) or DEFAULT_DISCOVERY_DIR)
        self.discovery_dir = discovery_dir
        self._records = dict(records or {})

    def _set_records(self, records: Mapping[str, DiscoveryRecord]) -> None:
        """Hold ``records`` in memory (the launcher does, once its services run)."""
        self._records = dict(records)

    def services(self) -> list[str]:
        """Names of the known services."""
        if self._records:
            return sorted(self._records)
        if not self.discovery_dir.is_dir():
            return []
        return sorted(p.stem for p in self.discovery_dir.glob("*.json"))

    def get_record(self, service: str) -> DiscoveryRecord:
        if service in self._records:
            return self._records[service]
        info_file = self.discovery_dir / f"{service}.json"
        try:
            data = json.loads(info_file.read_text())
        except FileNotFoundError:
            known = ", ".join(self.services()) or "none"
            raise ServiceNotFoundError(
                f"no discovery record for service {service!r} in {info_file.parent} "
                f"(known: {known}); is the testenv plugin active (real_services fixture)?"
            ) from None
        except json.JSONDecodeError as exc:
            raise ServiceNotFoundError(
                f"discovery file {info_file} is not JSON ({exc}); delete it and start the "
                "services again"
            ) from None
        return record_from_file_data(service, data, source=info_file)

    def get_service_info_sync(self, service: str) -> ServiceInfo:
        return ServiceInfo.from_record(self.get_record(service))

    async def get_service_info(self, service: str) -> ServiceInfo:
        """Endpoint info of ``service`` (:class:`ServiceNotFoundError`, a ``LookupError``,
        if it is unknown)."""
        return self.get_service_info_sync(service)


def record_from_file_data(service: str, data: object, *, source: Path) -> DiscoveryRecord:
    """A record from a discovery file's JSON: the full record the plugin writes, or the
    plan's shape, which holds only ``port`` and ``health_url`` (and maybe ``base_url``)."""
    if not isinstance(data, dict) or not isinstance(data.get("port"), int):
        raise ServiceNotFoundError(
            f"discovery file {source} has no integer 'port'; it must hold at least "
            '{"port": <int>, "health_url": "<url>"}'
        )
    port = data["port"]
    host = str(data.get("host") or "localhost")
    base_url = str(data.get("base_url") or f"http://{host}:{port}")
    filled = {
        "name": service,
        "host": host,
        "base_url": base_url,
        "health_url": str(data.get("health_url") or f"{base_url}/health"),
        **{k: v for k, v in data.items() if v is not None},
    }
    try:
        return DiscoveryRecord.model_validate(filled)
    except ValueError as exc:
        raise ServiceNotFoundError(
            f"discovery file {source} is not a discovery record: {exc}"
        ) from None


def write_discovery_files(directory: Path, records: Mapping[str, DiscoveryRecord]) -> list[Path]:
    """Write ``<directory>/<service>.json`` for each record; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, record in records.items():
        path = directory / f"{name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(record.to_json())
        tmp.replace(path)
        written.append(path)
    return written


def remove_discovery_files(paths: list[Path], root: Path | None = None) -> None:
    """Remove the files written by :func:`write_discovery_files`, then their directory and its
    parents up to ``root`` as long as they are empty."""
    dirs = set()
    for path in paths:
        path.unlink(missing_ok=True)
        dirs.add(path.parent)
    for directory in dirs:
        while True:
            try:
                directory.rmdir()
            except OSError:
                break
            if root is None or directory == root or root not in directory.parents:
                break
            directory = directory.parent
