"""The plugin's per-process state: one :class:`testenv.DevLauncher`, its progress shown in the
terminal, and xdist coordination (per-worker environments, or one shared by all workers)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import json
import queue
import shutil
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from filelock import FileLock

import testenv

from ._options import header, resolve


class TestenvSession:
    """One per pytest process (controller, worker or plain run); made on first use."""

    __test__ = False

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.settings, self.sources = resolve(config)
        workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
        self.worker_id: str | None = workerinput["workerid"] if workerinput else None
        self.testrun_uid: str | None = workerinput.get("testrunuid") if workerinput else None
        self.shared_dir: Path | None = None
        if workerinput and workerinput.get("testenv_shared_dir"):
            self.shared_dir = Path(workerinput["testenv_shared_dir"])
        self.shared = (
            self.worker_id is not None
            and self.settings.xdist == "shared"
            and self.shared_dir is not None
        )
        base = Path(config.invocation_params.dir) / testenv.DEFAULT_DISCOVERY_DIR
        self.discovery_root = base
        self.discovery_dir = base / self.worker_id if self.worker_id else base
        self.launcher: testenv.DevLauncher | None = None
        self.result: testenv.StartResult | None = None
        self.error: BaseException | None = None
        self.messages: queue.Queue[str] = queue.Queue()
        self.final_lines: list[str] = []
        self.forensics_budget = 10
        self.eager = False
        self._previous_sigterm: Any = None

    # -- provisioning -------------------------------------------------------------------------
    def _launcher(self, attach: dict[str, Any] | None = None) -> testenv.DevLauncher:
        name = None
        if self.shared and self.settings.mode == "real":
            name = (attach or {}).get("name") or f"pytest-{(self.testrun_uid or '')[:10]}"
        config = self.settings.model_copy(
            update={"discovery_dir": self.discovery_dir, "name": name or self.settings.name}
        )
        self.messages.put(header(self.settings, self.sources))
        return testenv.DevLauncher(
            config, progress=self.messages.put, shared=self.shared, attach=attach
        )

    def _install_sigterm(self) -> None:
        """While an environment exists, SIGTERM tears it down like Ctrl-C does."""

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        with contextlib.suppress(ValueError):  # not the main thread
            if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                self._previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)

    def begin_early(self) -> None:
        """Start provisioning at the end of collection, before any fixture runs."""
        if self.launcher is None and self.error is None and not self.shared:
            self.eager = True
            self.begin()

    def begin(self) -> None:
        """Start provisioning in the background (idempotent; non-shared mode only)."""
        if self.launcher is not None or self.error is not None or self.shared:
            return
        self._install_sigterm()
        self.launcher = self._launcher()
        self.launcher.begin()

    def wait(self) -> testenv.StartResult:
        """Block until the environment is up, echoing progress in the terminal."""
        if self.result is not None:
            return self.result
        if self.error is not None:
            raise self.error
        launcher = self.launcher
        if self.eager and launcher is not None:
            future = launcher.begin()
            # The early start (at collection) may have run before a session fixture that
            # prepares the cluster (installs the operator): retry fast failures once.
            if future.done() and isinstance(
                future.exception(),
                (testenv.ClusterUnreachableError, testenv.OperatorNotInstalledError),
            ):
                launcher.retry()
        self.eager = False
        try:
            if self.shared:
                self.result = self._start_shared()
            else:
                self.begin()
                assert self.launcher is not None
                self.result = self._drain_until_done(self.launcher.begin())
                self.launcher.start()  # publishes the discovery files
        except BaseException as exc:
            if not isinstance(exc, KeyboardInterrupt):
                self.error = exc
            raise
        # What exists now lives as long as the session: the library's modules, the clients,
        # the models. Frozen, it is no longer walked by the garbage collections that follow
        # (pytest's own at the end of the run among them); what the tests create is
        # collected as before.
        gc.freeze()
        return self.result

    def wait_quietly(self) -> None:
        """Wait for the early start and echo its progress; errors surface in the fixtures."""
        if self.launcher is not None and self.result is None:
            with contextlib.suppress(Exception):
                self._drain_until_done(self.launcher.begin())

    def _drain_until_done(
        self, future: concurrent.futures.Future[testenv.StartResult]
    ) -> testenv.StartResult:
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
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        while True:
            try:
                message = self.messages.get_nowait()
            except queue.Empty:
                return
            if reporter is None:
                continue
            if capman is not None:
                with capman.global_and_fixture_disabled():
                    reporter.write_line(message)
            else:
                reporter.write_line(message)

    # -- xdist shared mode --------------------------------------------------------------------
    def _start_shared(self) -> testenv.StartResult:
        assert self.shared_dir is not None
        state_file = self.shared_dir / "state.json"
        with FileLock(self.shared_dir / "lock", timeout=self.settings.startup_timeout + 120):
            state = json.loads(state_file.read_text()) if state_file.exists() else None
            self._install_sigterm()
            self.launcher = self._launcher(attach=state)
            result = self._drain_until_done(self.launcher.begin())
            self.launcher.start()
            if state is None:
                new_state = {**self.launcher.share_state(), "owner": self.worker_id}
                tmp = state_file.with_suffix(".tmp")
                tmp.write_text(json.dumps(new_state))
                tmp.replace(state_file)
        result.environment.shared = True
        return result

    # -- diagnostics --------------------------------------------------------------------------
    def forensics(self, exc: BaseException | None = None) -> str | None:
        if isinstance(exc, testenv.TestenvError) and exc.forensics:
            return exc.forensics
        if self.launcher is None or self.forensics_budget <= 0:
            return None
        self.forensics_budget -= 1
        return self.launcher.forensics() or None

    # -- teardown -----------------------------------------------------------------------------
    def stop(self) -> None:
        launcher, self.launcher = self.launcher, None
        if launcher is not None:
            launcher.stop()
            self.final_lines += launcher.final_lines
            if self.discovery_dir != self.discovery_root:  # xdist: .service_discovery/<worker>
                with contextlib.suppress(OSError):  # still in use by another worker
                    self.discovery_root.rmdir()
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None


def controller_cleanup(config: pytest.Config, shared_dir: Path) -> list[str]:
    """xdist controller: end what shared-mode workers left for it, then remove ``shared_dir``."""
    lines: list[str] = []
    state_file = shared_dir / "state.json"
    try:
        if state_file.exists():
            settings, _ = resolve(config)
            lines += testenv.release_shared(settings, json.loads(state_file.read_text()))
    except Exception as exc:
        lines.append(f"testenv: cleanup of the shared environment failed: {exc}")
    shutil.rmtree(shared_dir, ignore_errors=True)
    return lines
