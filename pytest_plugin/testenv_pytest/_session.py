"""The plugin's per-process state: provisioning, teardown, xdist coordination."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import json
import os
import queue
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testenv_operator.api import DiscoveryRecord

from ._context import EnvironmentInfo, Progress, Provider, StartResult
from ._environment import KubeEnvironment, connect, delete_environment, load_spec
from ._errors import (
    ClusterUnreachableError,
    OperatorNotInstalledError,
    ProvisioningTimeoutError,
    TestenvError,
)
from ._local import LocalServices, terminate_pids
from ._loop import BackgroundLoop
from ._options import Settings
from ._portforward import verify
from .discovery import (
    DEFAULT_DISCOVERY_DIR,
    DISCOVERY_ENV,
    remove_discovery_files,
    write_discovery_files,
)


class AttachedLocal:
    """Shared local mode, non-first worker: the processes another worker started."""

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

    async def forensics(self) -> str:
        return (
            f"shared local services started by {self.state.get('owner')}; logs in "
            f"{self.state.get('log_dir')}"
        )


@contextlib.contextmanager
def file_lock(path: Path, timeout: float) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"timed out waiting for {path}") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class TestenvSession:
    """One per pytest process (controller, worker or plain run)."""

    __test__ = False

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
        self.worker_id: str | None = workerinput["workerid"] if workerinput else None
        self.testrun_uid: str | None = workerinput.get("testrunuid") if workerinput else None
        self.shared_dir: Path | None = None
        if workerinput and workerinput.get("testenv_shared_dir"):
            self.shared_dir = Path(workerinput["testenv_shared_dir"])
        self.is_controller = (
            workerinput is None
            and getattr(config.option, "dist", "no") != "no"
            and bool(
                getattr(config.option, "numprocesses", None) or getattr(config.option, "tx", None)
            )
        )
        self.shared = (
            self.worker_id is not None
            and settings.xdist == "shared"
            and self.shared_dir is not None
        )
        self.loop: BackgroundLoop | None = None
        self.provider: Provider | None = None
        self.future: concurrent.futures.Future[StartResult] | None = None
        self.result: StartResult | None = None
        self.error: BaseException | None = None
        self.messages: queue.Queue[str] = queue.Queue()
        self.discovery_files: list[Path] = []
        base = Path(config.invocation_params.dir) / DEFAULT_DISCOVERY_DIR
        self.discovery_root = base
        self.discovery_dir = base / self.worker_id if self.worker_id else base
        self.kept_lines: list[str] = []
        self.stopped = False
        self.forensics_budget = 10
        self.eager = False

    # -- provisioning -----------------------------------------------------------------------
    def _progress(self, message: str) -> None:
        self.messages.put(message)

    def _make_provider(self, state: dict[str, Any] | None) -> Provider:
        spec, labels = load_spec(self.settings.spec)
        s = self.settings
        if s.mode == "local":
            if state is not None:
                return AttachedLocal(state)
            local = LocalServices(
                spec, name=f"local-{secrets.token_hex(4)}", package=s.local_package
            )
            local.detached = self.shared  # the controller stops shared processes
            return local
        name = None
        if self.shared:
            name = (state or {}).get("name") or f"pytest-{(self.testrun_uid or '')[:10]}"
        return KubeEnvironment(
            spec,
            kubeconfig=s.kubeconfig,
            context=s.context,
            extra_labels=labels,
            name=name,
            shared=self.shared,
            reuse=s.reuse,
            keep=s.keep,
            lease=s.lease,
        )

    def begin_early(self) -> None:
        """Start provisioning at the end of collection, before any fixture runs."""
        if self.future is None and self.error is None and not self.shared:
            self.eager = True
            self.begin()

    def begin(self) -> None:
        """Start provisioning in the background (idempotent; non-shared mode only)."""
        if self.future is not None or self.error is not None or self.shared:
            return
        try:
            self.provider = self._make_provider(None)
        except TestenvError as exc:
            self.error = exc
            return
        self._submit()

    def _submit(self) -> None:
        assert self.provider is not None
        if self.loop is None:
            self.loop = BackgroundLoop()
        self.future = self.loop.submit(self._start(self.provider))

    async def _start(self, provider: Provider) -> StartResult:
        try:
            async with asyncio.timeout(self.settings.timeout):
                return await provider.start(self._progress)
        except TimeoutError:
            forensics = await _safe_forensics(provider)
            raise ProvisioningTimeoutError(
                f"testenv: the {self.settings.mode} environment was not ready after "
                f"{self.settings.timeout:g}s (--testenv-timeout)",
                reason="Timeout",
                forensics=forensics,
            ) from None
        except TestenvError as exc:
            if exc.forensics is None:
                exc.forensics = await _safe_forensics(provider)
            raise

    def wait(self) -> StartResult:
        """Block until the environment is up, echoing progress in the terminal."""
        if self.result is not None:
            return self.result
        if self.error is not None:
            raise self.error
        if self.eager and self.future is not None and self.future.done():
            # The early start (at collection) may have run before a session fixture that
            # prepares the cluster (installs the operator): retry fast failures once.
            exc = self.future.exception()
            if isinstance(exc, (ClusterUnreachableError, OperatorNotInstalledError)):
                self.future = None
        self.eager = False
        if self.shared:
            self._start_shared()
        else:
            self.begin()
        assert self.future is not None
        try:
            self.result = self._drain_until_done(self.future)
        except BaseException as exc:
            if not isinstance(exc, KeyboardInterrupt):
                self.error = exc
            raise
        self._publish(self.result)
        return self.result

    def wait_quietly(self) -> None:
        """Wait for the early start and echo its progress; errors surface in the fixtures."""
        if self.future is not None and self.result is None:
            with contextlib.suppress(Exception):
                self._drain_until_done(self.future)

    def _drain_until_done(self, future: concurrent.futures.Future[StartResult]) -> StartResult:
        while True:
            try:
                result = future.result(timeout=0.1)
            except concurrent.futures.TimeoutError:
                self._flush()
                continue
            except BaseException:
                self._flush()
                raise
            self._flush()
            return result

    def _flush(self) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        while True:
            try:
                message = self.messages.get_nowait()
            except queue.Empty:
                return
            if reporter is None:
                continue
            capman = self.config.pluginmanager.get_plugin("capturemanager")
            if capman is not None:
                with capman.global_and_fixture_disabled():
                    reporter.write_line(message)
            else:
                reporter.write_line(message)

    def _publish(self, result: StartResult) -> None:
        self.discovery_files = write_discovery_files(self.discovery_dir, result.records)
        os.environ[DISCOVERY_ENV] = str(self.discovery_dir)

    # -- xdist shared mode -----------------------------------------------------------------
    def _start_shared(self) -> None:
        assert self.shared_dir is not None
        state_file = self.shared_dir / "state.json"
        with file_lock(self.shared_dir / "lock", timeout=self.settings.timeout + 120):
            state = json.loads(state_file.read_text()) if state_file.exists() else None
            self.provider = self._make_provider(state)
            self._submit()
            assert self.future is not None
            result = self._drain_until_done(self.future)
            if state is None:
                new_state: dict[str, Any] = {
                    "mode": self.settings.mode,
                    "name": result.environment.name,
                    "owner": self.worker_id,
                    "records": {n: r.model_dump() for n, r in result.records.items()},
                    "deletes": bool(getattr(self.provider, "created", False))
                    and not (self.settings.keep or self.settings.reuse),
                }
                if isinstance(self.provider, LocalServices):
                    new_state["pids"] = self.provider.pids()
                    new_state["log_dir"] = str(self.provider.log_dir)
                tmp = state_file.with_suffix(".tmp")
                tmp.write_text(json.dumps(new_state))
                tmp.replace(state_file)
        result.environment.shared = True

    # -- diagnostics -----------------------------------------------------------------------
    def forensics(self, exc: BaseException | None = None) -> str | None:
        if isinstance(exc, TestenvError) and exc.forensics:
            return exc.forensics
        if self.provider is None or self.loop is None or self.forensics_budget <= 0:
            return None
        self.forensics_budget -= 1
        try:
            return self.loop.run(_safe_forensics(self.provider), timeout=40)
        except Exception as err:
            return f"(forensics failed: {type(err).__name__}: {err})"

    # -- teardown --------------------------------------------------------------------------
    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        remove_discovery_files(self.discovery_files, root=self.discovery_root)
        self.discovery_files = []
        if os.environ.get(DISCOVERY_ENV) == str(self.discovery_dir):
            del os.environ[DISCOVERY_ENV]
        if self.loop is None:
            return
        if self.future is not None and not self.future.done():
            self.future.cancel()
            with contextlib.suppress(BaseException):
                self.future.result(timeout=15)
        if self.provider is not None:
            if (
                isinstance(self.provider, KubeEnvironment)
                and (self.settings.keep or self.settings.reuse)
                and self.provider.namespace
            ):
                self.kept_lines = self.provider.how_to_reach()
            try:
                self.loop.run(self.provider.stop(), timeout=120)
                message = getattr(self.provider, "teardown_message", None)
                if message:
                    self.kept_lines.append(message)
            except Exception as exc:
                self.kept_lines.append(
                    f"testenv: teardown failed ({type(exc).__name__}: {exc}); the lease "
                    "or ttl will remove the environment"
                )
        self.loop.stop()
        self.loop = None

    def controller_cleanup(self) -> list[str]:
        """xdist controller: remove what shared-mode workers left for it."""
        if self.shared_dir is None:
            return []
        lines: list[str] = []
        state_file = self.shared_dir / "state.json"
        try:
            state = json.loads(state_file.read_text()) if state_file.exists() else None
            if state and state.get("pids"):
                terminate_pids(state["pids"], wait=5)
            if state and state.get("mode") == "real" and state.get("deletes"):
                asyncio.run(_delete(self.settings, state["name"]))
                lines.append(f"testenv: deleted shared TestEnvironment {state['name']}")
            elif state and state.get("mode") == "real":
                lines.append(f"testenv: kept shared TestEnvironment {state['name']}")
        except Exception as exc:
            lines.append(f"testenv: cleanup of the shared environment failed: {exc}")
        shutil.rmtree(self.shared_dir, ignore_errors=True)
        return lines


async def _delete(settings: Settings, name: str) -> None:
    api = await connect(settings.kubeconfig, settings.context)
    await delete_environment(api, name)


async def _safe_forensics(provider: Provider) -> str:
    try:
        return await asyncio.wait_for(provider.forensics(), timeout=30)
    except Exception as exc:
        return f"(forensics failed: {type(exc).__name__}: {exc})"
