"""Local mode: the services of the spec as local processes on OS-chosen ports."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ._context import EnvironmentInfo, Progress, StartResult
from ._errors import ConfigurationError, EnvironmentFailedError
from ._tls import client_tls
from .api import ENV_SECRET_KEY, DiscoveryRecord, ServiceSpec, TestEnvironmentSpec, contract_env

SEED_USERS = "test@example.com:password"
LOG_TAIL = 30


def free_port() -> int:
    """A free TCP port on 127.0.0.1, chosen by the OS."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = LOG_TAIL) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def no_reset() -> ConfigurationError:
    return ConfigurationError(
        "local mode cannot reset data (reset jobs run on a cluster): restart the session"
    )


def no_secrets(name: str) -> ConfigurationError:
    return ConfigurationError(
        f"local mode has no generated secrets (asked for {name!r}): run on a cluster"
    )


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its package does not exist
        return False


@dataclass
class _Proc:
    spec: ServiceSpec
    port: int
    log: Path
    process: asyncio.subprocess.Process | None = None


class LocalServices:
    """Runs ``python -m <package>.<service>`` for every service of the spec."""

    def __init__(
        self,
        spec: TestEnvironmentSpec,
        name: str,
        package: str = "testenv_services",
        log_dir: Path | None = None,
    ) -> None:
        self.spec = spec
        self.name = name
        self.package = package
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix=f"testenv-{name}-"))
        self.procs: dict[str, _Proc] = {}
        self.detached = False

    def _environ(self, proc: _Proc, secret: str) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("AUTH_SEED_USERS", SEED_USERS)
        # Literal values only: secrets and other services' addresses exist on a cluster.
        env.update({e.name: e.value or "" for e in proc.spec.env if e.value is not None})
        env.update(
            contract_env(
                environment=self.name,
                namespace="local",
                service=proc.spec.name,
                port=proc.port,
                urls={n: f"http://127.0.0.1:{p.port}" for n, p in self.procs.items()},
            )
        )
        if proc.spec.secret_key:
            env[ENV_SECRET_KEY] = secret
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def plan(self) -> tuple[list[ServiceSpec], list[str], list[str]]:
        """What local mode runs: the services it can run as processes, what it leaves out
        (presets, jobs, env taken from secrets or other services: the reference services then
        keep their data in memory), and problems that stop it (a service with no module)."""
        runnable: list[ServiceSpec] = []
        left_out: list[str] = []
        problems: list[str] = []
        for svc in self.spec.services:
            if svc.preset is not None:
                left_out.append(f"{svc.name} ({svc.preset} preset)")
            elif not _module_exists(f"{self.package}.{svc.name}"):
                problems.append(
                    f"service {svc.name} runs the image {svc.image}; local mode has no module "
                    f"{self.package}.{svc.name} to run instead"
                )
            else:
                runnable.append(svc)
        left_out += [f"job {job.name}" for job in self.spec.jobs]
        return runnable, left_out, problems

    async def start(self, progress: Progress) -> StartResult:
        runnable, left_out, problems = self.plan()
        if problems:
            raise ConfigurationError(
                "local mode runs the reference services as Python processes; this spec cannot "
                "run that way: " + "; ".join(problems) + ". Run it on a cluster instead "
                "(--testenv-mode real)."
            )
        if left_out:
            progress(
                "testenv: local mode leaves out " + ", ".join(left_out) + " (images and jobs "
                "run only on a cluster; the reference services keep their data in memory)"
            )
        started = time.monotonic()
        secret = secrets.token_urlsafe(32)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for svc in runnable:
            self.procs[svc.name] = _Proc(svc, free_port(), self.log_dir / f"{svc.name}.log")
        for proc in self.procs.values():
            with proc.log.open("wb") as log:
                proc.process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    f"{self.package}.{proc.spec.name}",
                    *proc.spec.args,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    env=self._environ(proc, secret),
                    start_new_session=True,
                )
        records = {
            name: DiscoveryRecord.for_service(p.spec, "127.0.0.1", p.port)
            for name, p in self.procs.items()
        }
        timings: dict[str, float] = {}
        health: dict[str, dict[str, Any]] = {}
        total = len(self.procs)

        async def wait(name: str) -> None:
            health[name] = await self._wait_healthy(self.procs[name], records[name])
            timings[name] = round(time.monotonic() - started, 3)
            progress(f"testenv: {name} ready ({timings[name]:.1f}s) [{len(timings)}/{total}]")

        await asyncio.gather(*(wait(name) for name in self.procs))
        info = EnvironmentInfo(
            mode="local",
            name=self.name,
            namespace=None,
            startup_time=round(time.monotonic() - started, 3),
            timings={f"{n}_ready": t for n, t in timings.items()},
        )
        return StartResult(records=records, environment=info, health=health)

    async def _wait_healthy(self, proc: _Proc, record: DiscoveryRecord) -> dict[str, Any]:
        assert proc.process is not None
        async with httpx.AsyncClient(timeout=2.0, verify=client_tls()) as client:
            while True:
                if proc.process.returncode is not None:
                    raise EnvironmentFailedError(
                        f"local service {proc.spec.name!r} (python -m {self.package}."
                        f"{proc.spec.name}) exited with code {proc.process.returncode} before "
                        f"becoming healthy; last output:\n{tail(proc.log)}",
                        reason="ProcessExited",
                    )
                t0 = time.monotonic()
                try:
                    response = await client.get(record.health_url or record.base_url or "")
                except httpx.TransportError:
                    response = None
                if response is not None and response.is_success:
                    return {
                        "url": record.health_url,
                        "status_code": response.status_code,
                        "ok": True,
                        "latency_ms": round((time.monotonic() - t0) * 1000, 1),
                    }
                await asyncio.sleep(0.05)

    async def reset(self, progress: Progress) -> None:
        raise no_reset()

    async def secret(self, name: str) -> str:
        raise no_secrets(name)

    def pids(self) -> list[int]:
        return [p.process.pid for p in self.procs.values() if p.process is not None]

    async def stop(self) -> None:
        if self.detached:
            return
        terminate_pids(self.pids())
        for proc in self.procs.values():
            if proc.process is None:
                continue
            try:
                await asyncio.wait_for(proc.process.wait(), timeout=5)
            except TimeoutError:
                kill_group(proc.process.pid, signal.SIGKILL)
                await proc.process.wait()

    async def forensics(self) -> str:
        parts = []
        for name, proc in self.procs.items():
            code = proc.process.returncode if proc.process else None
            state = "running" if code is None else f"exited with {code}"
            parts.append(
                f"--- {name} (port {proc.port}, {state}), log {proc.log}:\n{tail(proc.log)}"
            )
        return "\n".join(parts)


def kill_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def terminate_pids(pids: list[int], wait: float = 0.0) -> None:
    """SIGTERM the process groups of ``pids``; after ``wait`` seconds, SIGKILL survivors."""
    for pid in pids:
        kill_group(pid, signal.SIGTERM)
    if wait <= 0:
        return
    deadline = time.monotonic() + wait
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _alive(p)]
        time.sleep(0.05)
    for pid in alive:
        kill_group(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except OSError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
