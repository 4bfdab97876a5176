"""The plan's launcher API over the two providers: ``DevLauncher``, ``RealServicesManager``,
``ServiceCache``.

A :class:`DevLauncher` runs everything (provisioning, port-forwards, the lease) on its own
event loop in a daemon thread, so it works the same from any caller: an async fixture in
pytest-asyncio's session loop, a test in its function loop, a sync fixture or a script.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Self

from ._clients import TestClientFactory
from ._context import EnvironmentInfo, Progress, Provider, StartResult
from ._discovery import (
    DISCOVERY_ENV,
    ServiceDiscovery,
    remove_discovery_files,
    write_discovery_files,
)
from ._environment import KubeEnvironment
from ._errors import ProvisioningTimeoutError, TestenvError
from ._kube import connect, delete_environment
from ._local import LocalServices, no_reset, no_secrets, terminate_pids
from ._loop import BackgroundLoop
from ._portforward import verify
from ._settings import LauncherConfig
from ._spec import load_spec
from ._stack import Stack
from .api import DiscoveryRecord


def _print_progress(message: str) -> None:
    print(message, flush=True)


class AttachedLocal:
    """Local services another process started and shares (xdist workers of one run)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    async def start(self, progress: Progress) -> StartResult:
        records = {n: DiscoveryRecord.model_validate(r) for n, r in self.state["records"].items()}
        health = {n: await verify(r, seconds=10) for n, r in records.items()}
        progress(f"testenv: attached to shared local services {self.state['name']}")
        info = EnvironmentInfo(mode="local", name=self.state["name"], shared=True, startup_time=0.0)
        return StartResult(records=records, environment=info, health=health)

    async def stop(self) -> None:
        return None

    async def reset(self, progress: Progress) -> None:
        raise no_reset()

    async def secret(self, name: str) -> str:
        raise no_secrets(name)

    async def forensics(self) -> str:
        return (
            f"shared local services started by {self.state.get('owner')}; logs in "
            f"{self.state.get('log_dir')}"
        )


class DevLauncher:
    """Starts the services of a spec and tells where they are (the plan's ``DevLauncher``).

    ::

        launcher = DevLauncher(LauncherConfig(dynamic_ports=True, test_mode=True,
                                              startup_timeout=30))
        if not await launcher.run():
            raise RuntimeError(launcher.error)
        await launcher.wait_for_healthy()
        ...
        await launcher.shutdown()

    or ``async with DevLauncher(config) as launcher:``. In ``mode="real"`` the services run in a
    TestEnvironment and are port-forwarded; in ``mode="local"`` they run as local processes.
    """

    def __init__(
        self,
        config: LauncherConfig | None = None,
        *,
        progress: Progress | None = None,
        shared: bool = False,
        attach: dict[str, Any] | None = None,
    ) -> None:
        self.config = config if config is not None else LauncherConfig.build()
        self.progress: Progress = progress or _print_progress
        #: Several processes use this environment (pytest-xdist workers of one run).
        self.shared = shared
        self._attach = attach
        self.discovery = ServiceDiscovery(discovery_dir=self._discovery_dir(), records={})
        self.result: StartResult | None = None
        #: Why the last :meth:`run` returned False.
        self.error: BaseException | None = None
        #: Lines for the user after :meth:`shutdown` (what was deleted, what was kept).
        self.final_lines: list[str] = []
        self.provider: Provider | None = None
        self._loop: BackgroundLoop | None = None
        self._future: concurrent.futures.Future[StartResult] | None = None
        self._files: list[Path] = []
        self._stopped = False

    # -- the plan's API -----------------------------------------------------------------------
    async def run(self) -> bool:
        """Start every service and wait until each answers its health check. True on success;
        on failure False, with the reason in :attr:`error` (a :class:`TestenvError`)."""
        try:
            await asyncio.wrap_future(self.begin())
        except TestenvError as exc:
            self.error = exc
            self.progress(f"testenv: {exc}")
            return False
        self._publish()
        return True

    async def wait_for_healthy(self, timeout: float = 30.0) -> dict[str, dict[str, Any]]:  # noqa: ASYNC109
        """Check every service's health through its local address (retrying up to
        ``timeout`` seconds); returns the results per service."""
        result = self._require_result()
        loop = self._require_loop()

        async def check() -> dict[str, dict[str, Any]]:
            names = list(result.records)
            answers = await asyncio.gather(
                *(verify(result.records[n], seconds=timeout) for n in names)
            )
            return dict(zip(names, answers, strict=True))

        health = await asyncio.wrap_future(loop.submit(check()))
        result.health.update({n: {**result.health.get(n, {}), **h} for n, h in health.items()})
        return health

    async def shutdown(self) -> None:
        """Stop the services (delete the environment unless it is kept or reused)."""
        await asyncio.to_thread(self.stop)

    async def __aenter__(self) -> Self:
        if not await self.run():
            assert self.error is not None
            raise self.error
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    # -- what it knows ------------------------------------------------------------------------
    @property
    def records(self) -> dict[str, DiscoveryRecord]:
        """Where each service is reachable from this process."""
        return dict(self._require_result().records)

    @property
    def environment(self) -> EnvironmentInfo:
        return self._require_result().environment

    @property
    def client_factory(self) -> TestClientFactory:
        return TestClientFactory(self.discovery)

    def secret(self, name: str) -> str:
        """A generated secret of the running environment (blocking; from any thread)."""
        self._require_result()
        if self.provider is None:
            raise RuntimeError("the services are not running: await launcher.run() first")
        return self._require_loop().run(self.provider.secret(name))

    def reset(self) -> None:
        """Run the spec's ``run: reset`` jobs and wait for them (blocking; from any thread)."""
        self._require_result()
        if self.provider is None:
            raise RuntimeError("the services are not running: await launcher.run() first")
        self._require_loop().run(self.provider.reset(self.progress))

    def stack(self) -> Stack:
        """The running environment's services and secrets (see :class:`Stack`)."""
        result = self._require_result()
        return Stack(result.records, result.environment, self.secret)

    def _require_result(self) -> StartResult:
        if self.result is None:
            raise RuntimeError("the services are not running: await launcher.run() first")
        return self.result

    def _require_loop(self) -> BackgroundLoop:
        if self._loop is None:
            self._loop = BackgroundLoop()
        return self._loop

    # -- the building blocks front ends use ----------------------------------------------------
    def begin(self) -> concurrent.futures.Future[StartResult]:
        """Start launching in the background (idempotent); the future holds the result."""
        if self._future is None:
            if self._stopped:
                raise RuntimeError("this launcher was shut down; make a new one")
            try:
                self.provider = self._make_provider()
            except TestenvError as exc:
                self._future = concurrent.futures.Future()
                self._future.set_exception(exc)
                return self._future
            self._future = self._require_loop().submit(self._start(self.provider))
        return self._future

    def start(self) -> StartResult:
        """Blocking :meth:`run` that raises instead of returning False."""
        result = self.begin().result()
        self._publish()
        return result

    def retry(self) -> None:
        """Forget a failed start so that :meth:`begin` tries again."""
        if self._future is not None and self._future.done() and self.result is None:
            self._future = None
            self.error = None

    def _keep_result(self, result: StartResult) -> StartResult:
        # Set before the future resolves: a done-callback runs only after waiters wake, so a
        # caller of ``begin().result()`` could see the future done and ``self.result`` unset.
        self.result = result
        self.discovery._set_records(result.records)
        return result

    def _discovery_dir(self) -> Path:
        path = self.config.discovery_dir.expanduser()
        return path if path.is_absolute() else Path.cwd() / path

    def _make_provider(self) -> Provider:
        c = self.config
        spec, labels = load_spec(c.spec)
        if c.mode == "local":
            if self._attach is not None:
                return AttachedLocal(self._attach)
            local = LocalServices(
                spec, name=c.name or f"local-{secrets.token_hex(4)}", package=c.local_package
            )
            local.detached = self.shared  # the process that started them stops them
            return local
        name = c.name or (self._attach or {}).get("name")
        return KubeEnvironment(
            spec,
            kubeconfig=c.kubeconfig,
            context=c.context,
            extra_labels=labels,
            name=name,
            shared=self.shared,
            reuse=c.reuse,
            keep=c.keep,
            lease=c.lease,
            wait_deleted=c.wait_deleted,
            pool=c.pool == "auto",
            pool_identity=c.pool_identity,
        )

    async def _start(self, provider: Provider) -> StartResult:
        try:
            async with asyncio.timeout(self.config.startup_timeout):
                return self._keep_result(await provider.start(self.progress))
        except TimeoutError:
            raise ProvisioningTimeoutError(
                f"testenv: the {self.config.mode} environment was not ready after "
                f"{self.config.startup_timeout:g}s (startup_timeout, --testenv-timeout)",
                reason="Timeout",
                forensics=await _safe_forensics(provider),
            ) from None
        except TestenvError as exc:
            if exc.forensics is None:
                exc.forensics = await _safe_forensics(provider)
            raise

    def _publish(self) -> None:
        if self._files or self.result is None:
            return
        directory = self._discovery_dir()
        self._files = write_discovery_files(directory, self.result.records)
        os.environ[DISCOVERY_ENV] = str(directory)

    def share_state(self) -> dict[str, Any]:
        """What another process needs to attach to these services (:class:`DevLauncher`
        with ``attach=``)."""
        result = self._require_result()
        state: dict[str, Any] = {
            "mode": self.config.mode,
            "name": result.environment.name,
            "records": {n: r.model_dump() for n, r in result.records.items()},
            "deletes": bool(getattr(self.provider, "created", False))
            and not (self.config.keep or self.config.reuse),
        }
        if isinstance(self.provider, LocalServices):
            state["pids"] = self.provider.pids()
            state["log_dir"] = str(self.provider.log_dir)
        return state

    def forensics(self, timeout: float = 40.0) -> str:
        """Status, events and logs of the environment (blocking; empty before a start)."""
        if self.provider is None or self._loop is None:
            return ""
        try:
            return self._loop.run(_safe_forensics(self.provider), timeout=timeout)
        except Exception as err:
            return f"(forensics failed: {type(err).__name__}: {err})"

    def stop(self) -> None:
        """Blocking :meth:`shutdown` (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        directory = self._discovery_dir()
        remove_discovery_files(self._files, root=directory)
        self._files = []
        if os.environ.get(DISCOVERY_ENV) == str(directory):
            del os.environ[DISCOVERY_ENV]
        if self._loop is None:
            return
        if self._future is not None and not self._future.done():
            self._future.cancel()
            with contextlib.suppress(BaseException):
                self._future.result(timeout=15)
        provider = self.provider
        if provider is not None:
            if (
                isinstance(provider, KubeEnvironment)
                and (self.config.keep or self.config.reuse)
                and provider.namespace
            ):
                self.final_lines = provider.how_to_reach()
            try:
                self._loop.run(provider.stop(), timeout=120)
                message = getattr(provider, "teardown_message", None)
                if message:
                    self.final_lines.append(message)
            except Exception as exc:
                self.final_lines.append(
                    f"testenv: teardown failed ({type(exc).__name__}: {exc}); the lease "
                    "or ttl will remove the environment"
                )
        self._loop.stop()
        self._loop = None
        for line in self.final_lines:
            self.progress(line)


async def _safe_forensics(provider: Provider) -> str:
    try:
        return await asyncio.wait_for(provider.forensics(), timeout=30)
    except Exception as exc:
        return f"(forensics failed: {type(exc).__name__}: {exc})"


def release_shared(config: LauncherConfig, state: dict[str, Any]) -> list[str]:
    """End what :meth:`DevLauncher.share_state` described, from the process that coordinates
    the sharers (the xdist controller): stop local processes, delete a created environment."""
    lines: list[str] = []
    if state.get("pids"):
        terminate_pids(state["pids"], wait=5)
    if state.get("mode") == "real":
        if state.get("deletes"):

            async def delete() -> None:
                api = await connect(config.kubeconfig, config.context)
                await delete_environment(api, state["name"])

            asyncio.run(delete())
            lines.append(f"testenv: deleted shared TestEnvironment {state['name']}")
        else:
            lines.append(f"testenv: kept shared TestEnvironment {state['name']}")
    return lines


class RealServicesManager:
    """The plan's manager: starts a launcher's services and hands out a client factory."""

    def __init__(self, dev_launcher: DevLauncher) -> None:
        self.launcher = dev_launcher
        self.discovery = dev_launcher.discovery
        self.client_factory = TestClientFactory(self.discovery)

    async def start_all_services(self) -> None:
        """Start (or attach to the already started) services and check their health; raises
        the launcher's error, which says what went wrong, if they cannot start."""
        if not await self.launcher.run():
            error = self.launcher.error
            if isinstance(error, TestenvError):
                raise error
            raise RuntimeError(f"Failed to start services via dev_launcher: {error}")
        await self.launcher.wait_for_healthy()


class ServiceCache:
    """Running launchers shared between users in one process, keyed by
    ``config.cache_key()`` (the plan's ``ServiceCache``). Real-mode launchers it creates reuse a
    Ready environment with the same spec across processes too (``reuse``)."""

    _instances: ClassVar[dict[str, DevLauncher]] = {}

    @classmethod
    async def get_or_create(
        cls,
        config: LauncherConfig,
        *,
        factory: Callable[[LauncherConfig], DevLauncher] = DevLauncher,
    ) -> DevLauncher:
        key = config.cache_key()
        launcher = cls._instances.get(key)
        if launcher is not None and launcher.result is not None:
            return launcher
        if config.mode == "real" and not config.reuse:
            config = config.model_copy(update={"reuse": True})
        launcher = factory(config)
        if not await launcher.run():
            assert launcher.error is not None
            raise launcher.error
        cls._instances[key] = launcher
        return launcher

    @classmethod
    async def clear(cls) -> None:
        """Shut every cached launcher down."""
        launchers, cls._instances = list(cls._instances.values()), {}
        for launcher in launchers:
            await launcher.shutdown()
