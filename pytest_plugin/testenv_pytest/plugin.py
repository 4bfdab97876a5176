"""pytest plugin (entry point ``testenv``): real services for tests, one environment per run.

Fixtures: ``real_services`` (async clients), ``real_services_sync`` (blocking clients),
``service_discovery``, ``dev_launcher`` (the plan's). Options: ``pytest --help`` group "testenv".

The plugin costs nothing until it is used: importing it loads only pytest and the option
table; the library (:mod:`testenv`) is imported, settings resolved and signal handlers
installed only once a test uses a fixture of ours or a testenv option is set.
"""

from __future__ import annotations

import gc
import inspect
import sys
import tempfile
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ._options import add_options, configured, header, resolve

if TYPE_CHECKING:
    import testenv

    from ._session import TestenvSession

FIXTURES = frozenset(
    {
        "real_services",
        "real_services_sync",
        "service_discovery",
        "dev_launcher",
        "testenv",
        "testenv_reset",
    }
)
RESET_MARKER = "testenv_reset"
_ASYNC_MARKERS = ("asyncio", "anyio", "trio")
_PLUGIN = "testenv-session"


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{RESET_MARKER}: run the environment's reset jobs (run: reset) before this test, "
        "for clean data in a shared environment",
    )
    config.pluginmanager.register(TestenvPlugin(config), _PLUGIN)


def pytest_report_header(config: pytest.Config) -> list[str]:
    # Only when a testenv option is set: otherwise the library is not even imported.
    if not configured(config):
        return []
    settings, sources = resolve(config)
    return [header(settings, sources)]


def _plugin(config: pytest.Config) -> TestenvPlugin:
    plugin = config.pluginmanager.get_plugin(_PLUGIN)
    assert isinstance(plugin, TestenvPlugin)
    return plugin


def _uses_testenv(item: pytest.Item) -> bool:
    """The test asks for a fixture named like ours (the plugin's, or a user's override such
    as the plan's own ``real_services``): its async code gets run for it."""
    return bool(FIXTURES & set(getattr(item, "fixturenames", ())))


def _uses_plugin_environment(item: pytest.Item) -> bool:
    """The test uses one of *the plugin's* fixtures (not a user's override of that name),
    so the plugin's environment must be provisioned for it."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    for name in FIXTURES & set(info.names_closure):
        defs = info.name2fixturedefs.get(name) or ()
        if defs and getattr(defs[-1].func, "__module__", None) == __name__:
            return True
    return False


class TestenvPlugin:
    """Hooks that need state; registered as ``testenv-session``."""

    __test__ = False

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._session: TestenvSession | None = None
        self._results: testenv.TestResults | None = None
        self.worker_sections: dict[str, dict[str, Any]] = {}
        #: xdist controller: where shared-mode workers coordinate (made when nodes start).
        self.shared_dir: Path | None = None
        #: Printed in the terminal summary (what was deleted or kept, the report's path).
        self.final_lines: list[str] = []

    @property
    def session(self) -> TestenvSession:
        """The per-process state, made on first use (this imports the library)."""
        if self._session is None:
            from ._session import TestenvSession

            self._session = TestenvSession(self.config)
        return self._session

    @property
    def active(self) -> bool:
        return self._session is not None

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self._session is not None:
            self._session.stop()
            # The session is over. The interpreter's last garbage collection would walk the
            # large heap a session that provisioned leaves (clients, models, kr8s objects):
            # a quarter of a second, for memory the OS takes back anyway. Frozen objects are
            # skipped by it; finalizers registered with atexit or weakref.finalize still run.
            gc.freeze()

    # -- xdist --------------------------------------------------------------------------------
    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        if self.shared_dir is None:
            self.shared_dir = Path(tempfile.mkdtemp(prefix="testenv-xdist-"))
        node.workerinput["testenv_shared_dir"] = str(self.shared_dir)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", {}) or {}
        section = output.get("testenv")
        if section:
            self.worker_sections[str(node.gateway.id)] = section

    # -- collection ---------------------------------------------------------------------------
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
        import asyncio

        names = pyfuncitem._fixtureinfo.argnames
        kwargs = {n: pyfuncitem.funcargs[n] for n in names}
        asyncio.run(pyfuncitem.obj(**kwargs))
        return True

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> Generator[None, Any, Any]:
        """The plan's fixtures are plain ``async def`` fixtures (``dev_launcher``,
        ``real_services``). When no async plugin took them (no pytest-asyncio, or its strict
        mode), run them on the library's background loop, so they work pasted as they are."""
        if not _is_plan_style_fixture(fixturedef):
            return (yield)
        original = fixturedef.func
        fixturedef.func = _synchronize(original, request)  # type: ignore[misc]
        try:
            return (yield)
        finally:
            fixturedef.func = original  # type: ignore[misc]

    @pytest.hookimpl(trylast=True)
    @pytest.hookimpl(trylast=True)  # after conftests that add markers
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:  # the marker is the fixture, first of the test's own
            if item.get_closest_marker(RESET_MARKER) and RESET_MARKER not in getattr(
                item, "fixturenames", [RESET_MARKER]
            ):
                item.fixturenames.insert(0, RESET_MARKER)  # type: ignore[attr-defined]
        self._modify_items(items)

    def _modify_items(self, items: list[pytest.Item]) -> None:
        if self.config.pluginmanager.hasplugin("asyncio"):
            _hand_plan_fixtures_to_pytest_asyncio(items)
        # Start provisioning as soon as we know a test needs it; fixtures wait for it.
        if not self.config.option.collectonly and any(_uses_plugin_environment(i) for i in items):
            self.session.begin_early()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        # Show the early start's progress before the first test's line is printed.
        if self.active and not session.config.option.collectonly:
            self.session.wait_quietly()

    # -- results and forensics ----------------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if not report.failed:
            return report
        error = call.excinfo.value if call.excinfo else None
        library = sys.modules.get("testenv")  # loaded if anything of ours ran
        if library is not None and isinstance(error, library.TestenvError):
            # Our errors say what went wrong and what to do; a traceback into the library's
            # internals would only bury that.
            report.longrepr = f"{type(error).__name__}: {error}"
        if (
            self.active
            and _uses_plugin_environment(item)
            and (self.session.result is not None or self.session.error is not None)
        ):
            text = self.session.forensics(error)
            if text:
                report.sections.append(("testenv forensics", text))
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.active and self.session.worker_id is None:
            if self._results is None:
                import testenv

                self._results = testenv.TestResults()
            self._results.add(report)

    # -- teardown and report ------------------------------------------------------------------
    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        lines: list[str] = []
        if self.shared_dir is not None:  # xdist controller
            from ._session import controller_cleanup

            lines += controller_cleanup(self.config, self.shared_dir)
        if not self.active and not self.worker_sections:
            self.final_lines = lines
            return
        import testenv

        ts = self.session
        result = ts.result
        ts.stop()
        sections = dict(self.worker_sections)
        if result is not None:
            sections[ts.worker_id or "main"] = testenv.environment_section(result)
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None and result is not None:
            workeroutput["testenv"] = testenv.environment_section(result)
        report_path = ts.settings.report
        if report_path is not None and ts.worker_id is None:
            testenv.write_report(
                report_path, sections, self._results or testenv.TestResults(), ts.settings.mode
            )
            lines.append(f"testenv: report written to {report_path}")
        self.final_lines = ts.final_lines + lines

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for line in self.final_lines:
            terminalreporter.write_line(line)


def _is_plan_style_fixture(fixturedef: pytest.FixtureDef[Any]) -> bool:
    """A plain ``async def`` fixture of ours or of the plan (``dev_launcher``, ...)."""
    func = fixturedef.func
    is_async = inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)
    return is_async and (
        fixturedef.argname in FIXTURES or bool(FIXTURES & set(fixturedef.argnames))
    )


def _hand_plan_fixtures_to_pytest_asyncio(items: list[pytest.Item]) -> None:
    """In pytest-asyncio's strict mode, mark the plan's plain async fixtures as asyncio
    fixtures of their own scope, as ``@pytest_asyncio.fixture`` would: pytest-asyncio then runs
    them (no "requested async @pytest.fixture in strict mode" warnings)."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        for defs in info.name2fixturedefs.values() if info is not None else ():
            for fixturedef in defs:
                func = getattr(fixturedef.func, "__func__", fixturedef.func)
                if _is_plan_style_fixture(fixturedef) and not hasattr(
                    func, "_force_asyncio_fixture"
                ):
                    func._force_asyncio_fixture = True
                    func._loop_scope = fixturedef.scope


def _synchronize(func: Callable[..., Any], request: pytest.FixtureRequest) -> Callable[..., Any]:
    """A blocking version of the async fixture function ``func``."""
    import testenv

    if inspect.iscoroutinefunction(func):

        def call(**kwargs: Any) -> Any:
            return testenv.run_sync(func(**kwargs))

        return call

    def setup(**kwargs: Any) -> Any:
        agen = func(**kwargs)
        value = testenv.run_sync(agen.__anext__())

        def teardown() -> None:
            try:
                testenv.run_sync(agen.__anext__())
            except StopAsyncIteration:
                return
            raise RuntimeError(f"async fixture {request.fixturename!r} yielded more than once")

        request.addfinalizer(teardown)
        return value

    return setup


# -- fixtures ---------------------------------------------------------------------------------
def _record_properties(request: pytest.FixtureRequest, result: testenv.StartResult) -> None:
    import testenv

    try:
        record: Callable[[str, object], None] = request.getfixturevalue("record_testsuite_property")
    except pytest.FixtureLookupError:
        return
    for name, value in testenv.junit_properties(result):
        record(name, value)


@pytest.fixture(scope="session")
def service_discovery(request: pytest.FixtureRequest) -> testenv.ServiceDiscovery:
    """The running services' endpoints (provisions the environment on first use)."""
    import testenv

    session = _plugin(request.config).session
    result = session.wait()
    _record_properties(request, result)
    return testenv.ServiceDiscovery(discovery_dir=session.discovery_dir, records=result.records)


@pytest.fixture(scope="session")
def dev_launcher(request: pytest.FixtureRequest) -> testenv.DevLauncher:
    """The plan's launcher, already running this session's environment: ``await
    launcher.run()`` returns True at once, ``RealServicesManager(dev_launcher)`` works."""
    session = _plugin(request.config).session
    session.wait()
    assert session.launcher is not None
    return session.launcher


@pytest.fixture(scope="session", name="testenv")
def testenv_fixture(request: pytest.FixtureRequest) -> testenv.Stack:
    """Any spec's services and secrets: ``testenv.url("web")``, ``testenv.http("web")``,
    ``testenv.ws("backend", "/ws")``, ``testenv.dsn("db")``, ``testenv.secret("api-key")``,
    ``testenv.records`` (see :class:`testenv.Stack`). Every declared port is forwarded."""
    session = _plugin(request.config).session
    result = session.wait()
    _record_properties(request, result)
    assert session.launcher is not None
    return session.launcher.stack()


@pytest.fixture
def testenv_reset(request: pytest.FixtureRequest) -> None:
    """Clean data before this test: runs the spec's ``run: reset`` jobs and waits for them
    (also ``@pytest.mark.testenv_reset``). A failed reset fails the test's setup."""
    session = _plugin(request.config).session
    session.wait()
    assert session.launcher is not None
    session.launcher.reset()


def _require(discovery: testenv.ServiceDiscovery, fixture: str, *names: str) -> None:
    import testenv

    missing = [n for n in names if n not in discovery.services()]
    if missing:
        raise testenv.ServiceNotFoundError(
            f"the {fixture} fixture needs the services {', '.join(names)}; this environment "
            f"has {', '.join(discovery.services()) or 'none'} (missing: {', '.join(missing)}). "
            "Use the testenv fixture for other specs."
        )


@pytest.fixture(scope="session")
def real_services(
    request: pytest.FixtureRequest, service_discovery: testenv.ServiceDiscovery
) -> testenv.RealServiceContext:
    """Typed async clients for the environment's services (see ``RealServiceContext``)."""
    import testenv

    _require(service_discovery, "real_services", "auth", "backend")
    result = _plugin(request.config).session.wait()
    factory = testenv.TestClientFactory(service_discovery)
    return testenv.RealServiceContext(
        auth_client=testenv.AuthTestClient(
            service_discovery.get_service_info_sync("auth").base_url
        ),
        backend_client=testenv.BackendTestClient(
            service_discovery.get_service_info_sync("backend").base_url
        ),
        websocket_factory=factory.create_websocket_client,
        discovery=service_discovery,
        environment=result.environment,
        factory=factory,
    )


@pytest.fixture(scope="session")
def real_services_sync(
    request: pytest.FixtureRequest, service_discovery: testenv.ServiceDiscovery
) -> Generator[testenv.SyncRealServiceContext, None, None]:
    """Blocking clients for the environment's services."""
    import testenv

    _require(service_discovery, "real_services_sync", "auth", "backend")
    result = _plugin(request.config).session.wait()
    factory = testenv.TestClientFactory(service_discovery)
    context = testenv.SyncRealServiceContext(
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
