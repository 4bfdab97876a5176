"""pytest plugin (entry point ``testenv``): real services for tests, one environment per run.

Fixtures: ``real_services`` (async clients), ``real_services_sync`` (blocking clients),
``service_discovery``. Options: ``pytest --help`` group "testenv".
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import tempfile
from collections.abc import Callable, Generator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from ._context import RealServiceContext, StartResult, SyncRealServiceContext
from ._errors import TestenvError
from ._options import add_options, resolve
from ._report import TestResults, environment_section, junit_properties, write_report
from ._session import TestenvSession
from .clients import AuthTestClient, BackendTestClient, TestClientFactory
from .discovery import ServiceDiscovery

FIXTURES = frozenset({"real_services", "real_services_sync", "service_discovery"})
_SESSION = pytest.StashKey[TestenvSession]()
_ASYNC_MARKERS = ("asyncio", "anyio", "trio")


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    plugin = TestenvPlugin(config)
    config.stash[_SESSION] = plugin.session
    config.pluginmanager.register(plugin, "testenv-session")


def pytest_report_header(config: pytest.Config) -> list[str]:
    session = config.stash.get(_SESSION, None)
    return session.settings.header() if session else []


def _session(config: pytest.Config) -> TestenvSession:
    return config.stash[_SESSION]


def _uses_testenv(item: pytest.Item) -> bool:
    return bool(FIXTURES & set(getattr(item, "fixturenames", ())))


class TestenvPlugin:
    """Hooks that need state; registered as ``testenv-session``."""

    __test__ = False

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.session = TestenvSession(config, resolve(config))
        self.results = TestResults()
        self.worker_sections: dict[str, dict[str, Any]] = {}
        self._previous_sigterm: Any = None
        self._install_sigterm()
        if self.session.is_controller and self.session.settings.xdist == "shared":
            self.session.shared_dir = Path(tempfile.mkdtemp(prefix="testenv-xdist-"))

    # -- signals -----------------------------------------------------------------------------
    def _install_sigterm(self) -> None:
        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            # Turn SIGTERM into the same orderly teardown as Ctrl-C.
            raise KeyboardInterrupt(f"signal {signum}")

        try:
            if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                self._previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)
        except ValueError:  # not the main thread
            pass

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.session.stop()
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)

    # -- xdist -------------------------------------------------------------------------------
    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        if self.session.shared_dir is not None:
            node.workerinput["testenv_shared_dir"] = str(self.session.shared_dir)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", {}) or {}
        section = output.get("testenv")
        if section:
            self.worker_sections[str(node.gateway.id)] = section

    # -- collection --------------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_pycollect_makeitem(
        self, collector: pytest.Collector, name: str, obj: object
    ) -> Generator[None, Any, Any]:
        """Make plain ``async def`` tests that use our fixtures run under pytest-asyncio,
        without asyncio_mode=auto or a marker (the plan's tests are written that way)."""
        result = yield
        if not self.config.pluginmanager.hasplugin("asyncio"):
            return result
        items = result if isinstance(result, list) else [result]
        for item in items:
            if (
                isinstance(item, pytest.Function)
                and _uses_testenv(item)
                and inspect.iscoroutinefunction(item.obj)
                and not any(item.get_closest_marker(m) for m in _ASYNC_MARKERS)
            ):
                item.add_marker(pytest.mark.asyncio)
        return result

    @pytest.hookimpl(tryfirst=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> bool | None:
        """Without pytest-asyncio, run async tests that use our fixtures with asyncio.run."""
        if self.config.pluginmanager.hasplugin("asyncio") or not _uses_testenv(pyfuncitem):
            return None
        if not inspect.iscoroutinefunction(pyfuncitem.obj):
            return None
        if any(pyfuncitem.get_closest_marker(m) for m in ("anyio", "trio")):
            return None
        names = pyfuncitem._fixtureinfo.argnames
        kwargs = {n: pyfuncitem.funcargs[n] for n in names}
        asyncio.run(pyfuncitem.obj(**kwargs))
        return True

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        # Start provisioning as soon as we know a test needs it; fixtures wait for it.
        if not self.config.option.collectonly and any(_uses_testenv(i) for i in items):
            self.session.begin_early()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        # Show the early start's progress before the first test's line is printed.
        if self.session.future is not None and not session.config.option.collectonly:
            try:
                self.session.wait_quietly()
            except Exception:
                pass

    # -- results and forensics -------------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        error = call.excinfo.value if call.excinfo else None
        if report.failed and isinstance(error, TestenvError):
            # Our errors say what went wrong and what to do; a traceback into the plugin's
            # internals would only bury that.
            report.longrepr = f"{type(error).__name__}: {error}"
        if (
            report.failed
            and _uses_testenv(item)
            and (self.session.result is not None or self.session.error is not None)
        ):
            exc = call.excinfo.value if call.excinfo else None
            text = self.session.forensics(exc)
            if text:
                report.sections.append(("testenv forensics", text))
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.session.worker_id is None:
            self.results.add(report)

    # -- teardown and report ---------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        result = self.session.result
        self.session.stop()
        sections = dict(self.worker_sections)
        if result is not None:
            sections[self.session.worker_id or "main"] = environment_section(result)
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None and result is not None:
            workeroutput["testenv"] = environment_section(result)
        if self.session.is_controller:
            self.session.kept_lines += self.session.controller_cleanup()
        report_path = self.session.settings.report
        if report_path is not None and self.session.worker_id is None:
            write_report(report_path, sections, self.results, self.session.settings.mode)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        lines = list(self.session.kept_lines)
        if self.session.settings.report is not None and self.session.worker_id is None:
            lines.append(f"testenv: report written to {self.session.settings.report}")
        for line in lines:
            terminalreporter.write_line(line)


# -- fixtures --------------------------------------------------------------------------------
def _record_properties(request: pytest.FixtureRequest, result: StartResult) -> None:
    try:
        record: Callable[[str, object], None] = request.getfixturevalue("record_testsuite_property")
    except pytest.FixtureLookupError:
        return
    for name, value in junit_properties(result):
        record(name, value)


@pytest.fixture(scope="session")
def service_discovery(request: pytest.FixtureRequest) -> ServiceDiscovery:
    """The running services' endpoints (provisions the environment on first use)."""
    session = _session(request.config)
    result = session.wait()
    _record_properties(request, result)
    return ServiceDiscovery(discovery_dir=session.discovery_dir, records=result.records)


@pytest.fixture(scope="session")
def real_services(
    request: pytest.FixtureRequest, service_discovery: ServiceDiscovery
) -> RealServiceContext:
    """Typed async clients for the environment's services (see :class:`RealServiceContext`)."""
    result = _session(request.config).wait()
    factory = TestClientFactory(service_discovery)
    return RealServiceContext(
        auth_client=AuthTestClient(service_discovery.get_service_info_sync("auth").base_url),
        backend_client=BackendTestClient(
            service_discovery.get_service_info_sync("backend").base_url
        ),
        websocket_factory=factory.create_websocket_client,
        discovery=service_discovery,
        environment=result.environment,
        factory=factory,
    )


@pytest.fixture(scope="session")
def real_services_sync(
    request: pytest.FixtureRequest, service_discovery: ServiceDiscovery
) -> Generator[SyncRealServiceContext, None, None]:
    """Blocking clients (httpx.Client, websockets.sync) for the environment's services."""
    result = _session(request.config).wait()
    factory = TestClientFactory(service_discovery)
    context = SyncRealServiceContext(
        auth_client=factory.create_auth_client_sync(),
        backend_client=factory.create_backend_client_sync(),
        websocket_factory=factory.create_websocket_client_sync,
        discovery=service_discovery,
        environment=result.environment,
        factory=factory,
    )
    yield context
    context.auth_client.close()
    context.backend_client.close()
