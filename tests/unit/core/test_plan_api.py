"""The plan's names, importable from ``testenv`` and behaving as the plan uses them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import testenv
from testenv import (
    AuthTestClient,
    BackendTestClient,
    ConfigurationError,
    DevLauncher,
    LauncherConfig,
    RealServiceContext,
    RealServicesManager,
    RealServiceTestReport,
    ServiceCache,
    ServiceDiscovery,
    ServiceInfo,
    SpecError,
    TestClientFactory,
    WebSocketTestClient,
)
from testenv._clients import _PerLoopClient
from testenv.api import DiscoveryRecord, ServiceSpec

PLAN_VARIABLES = ("USE_REAL_SERVICES", "TEST_ISOLATION", "DYNAMIC_PORTS")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("TESTENV_") or name in PLAN_VARIABLES:
            monkeypatch.delenv(name)
    monkeypatch.setattr(LauncherConfig, "_overrides", {})
    monkeypatch.setattr(LauncherConfig, "_ini", {})


def test_every_public_name_resolves() -> None:
    for name in testenv.__all__:
        assert getattr(testenv, name) is not None, name
    assert set(testenv.__all__) <= set(dir(testenv))
    with pytest.raises(AttributeError):
        _ = testenv.NoSuchName  # type: ignore[attr-defined]


def test_plugin_reexports_resolve() -> None:
    import testenv_pytest

    for name in testenv_pytest.__all__:
        assert getattr(testenv_pytest, name) is getattr(testenv, name)


# -- LauncherConfig --------------------------------------------------------------------------
def test_launcher_config_as_in_the_plan() -> None:
    config = LauncherConfig(dynamic_ports=True, test_mode=True, startup_timeout=30)
    assert (config.mode, config.startup_timeout, config.lease) == ("real", 30.0, "2m")


def test_precedence_code_env_plan_ini(monkeypatch: pytest.MonkeyPatch) -> None:
    testenv.set_front_end_values({}, {"startup_timeout": "11", "context": "from-ini"})
    assert LauncherConfig().startup_timeout == 11.0
    monkeypatch.setenv("TESTENV_TIMEOUT", "22")
    assert LauncherConfig().startup_timeout == 22.0
    monkeypatch.setenv("TESTENV_STARTUP_TIMEOUT", "33")
    assert LauncherConfig().startup_timeout == 33.0
    assert LauncherConfig(startup_timeout=44).startup_timeout == 44.0
    testenv.set_front_end_values({"startup_timeout": 55}, {})
    assert LauncherConfig(startup_timeout=44).startup_timeout == 55.0  # the command line wins


def test_plan_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USE_REAL_SERVICES", "false")
    monkeypatch.setenv("TEST_ISOLATION", "1")
    monkeypatch.setenv("DYNAMIC_PORTS", "true")
    config = LauncherConfig()
    assert (config.mode, config.xdist, config.dynamic_ports) == ("local", "per-worker", True)
    monkeypatch.setenv("TESTENV_MODE", "real")  # ours beats the plan's
    assert LauncherConfig().mode == "real"


@pytest.mark.parametrize(
    ("env", "kwargs", "message"),
    [
        ({"DYNAMIC_PORTS": "false"}, {}, "DYNAMIC_PORTS=false cannot be honoured"),
        ({}, {"dynamic_ports": False}, "DYNAMIC_PORTS=false cannot be honoured"),
        ({}, {"test_mode": False}, "test_mode=False cannot be honoured"),
        ({"USE_REAL_SERVICES": "maybe"}, {}, "USE_REAL_SERVICES='maybe' is not a boolean"),
        ({}, {"startup_timeout": 0}, "startup_timeout: Input should be greater than 0"),
        ({}, {"lease": "0s"}, "setting lease: must be longer than 0s"),
        ({}, {"mode": "local", "reuse": True}, "reuse and keep need mode=real"),
    ],
)
def test_settings_that_cannot_be_honoured_are_refused(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], kwargs: dict[str, Any], message: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")):
        LauncherConfig.build(**kwargs)


def test_cache_key(tmp_path: Path) -> None:
    base = LauncherConfig()
    assert base.cache_key() == LauncherConfig(startup_timeout=5).cache_key()
    assert base.cache_key() != LauncherConfig(mode="local").cache_key()
    spec = tmp_path / "spec.yaml"
    spec.write_text("services: [{name: api, image: example/api:1}]\n")
    assert base.cache_key() != LauncherConfig(spec=spec).cache_key()


# -- discovery and clients -------------------------------------------------------------------
def test_discovery_reads_the_plans_file_shape(tmp_path: Path) -> None:
    (tmp_path / "auth.json").write_text(json.dumps({"port": 8123, "health_url": "h"}))
    info = asyncio.run(ServiceDiscovery(discovery_dir=tmp_path).get_service_info("auth"))
    plan_info = ServiceInfo(port=8123, health_url="h", base_url="http://localhost:8123")
    assert (info.port, info.health_url, info.base_url) == (
        plan_info.port,
        plan_info.health_url,
        plan_info.base_url,
    )
    assert (info.name, info.ws_url) == ("auth", None)


@pytest.mark.parametrize(
    ("content", "message"),
    [("{", "is not JSON"), ('{"health_url": "h"}', "has no integer 'port'")],
)
def test_discovery_explains_bad_files(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "auth.json").write_text(content)
    with pytest.raises(testenv.ServiceNotFoundError, match=message):
        ServiceDiscovery(discovery_dir=tmp_path).get_service_info_sync("auth")
    with pytest.raises(LookupError, match=r"known: auth"):
        ServiceDiscovery(discovery_dir=tmp_path).get_service_info_sync("backend")


def test_client_factory_as_in_the_plan(tmp_path: Path) -> None:
    for name, port in (("auth", 9001), ("backend", 9002)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"port": port, "health_url": "h"}))
    factory = TestClientFactory(ServiceDiscovery(discovery_dir=tmp_path))

    async def make() -> tuple[Any, Any, Any]:
        return (
            await factory.create_auth_client(),
            await factory.create_backend_client(),
            await factory.create_websocket_client("t k"),
        )

    auth, backend, ws = asyncio.run(make())
    assert isinstance(auth, AuthTestClient) and auth.base_url == "http://localhost:9001"
    assert isinstance(backend, BackendTestClient) and backend.base_url == "http://localhost:9002"
    assert isinstance(ws, WebSocketTestClient)
    assert ws.url == "ws://localhost:9002/ws?token=t%20k"


def test_real_service_context_from_the_plans_three_arguments() -> None:
    auth, backend = AuthTestClient("http://a"), BackendTestClient("http://b")

    async def factory(token: str) -> WebSocketTestClient:
        return WebSocketTestClient(f"ws://b/ws?token={token}")

    context = RealServiceContext(
        auth_client=auth, backend_client=backend, websocket_factory=factory
    )
    assert context.auth_client is auth and context.services == {}
    assert context.environment is None


def test_one_http_client_per_event_loop_closed_with_the_loop() -> None:
    clients = _PerLoopClient("http://127.0.0.1:1", timeout=1)

    async def twice() -> tuple[Any, Any]:
        return await clients.get(), await clients.get()

    first, again = asyncio.run(twice())
    assert first is again
    assert first.is_closed  # asyncio.run shut the loop's async generators down
    other, _ = asyncio.run(twice())
    assert other is not first


# -- report ----------------------------------------------------------------------------------
def test_report_has_the_plans_keys() -> None:
    assert set(RealServiceTestReport().generate()) == {
        "services_started",
        "startup_time",
        "port_allocations",
        "health_check_results",
        "test_results",
    }
    record = DiscoveryRecord.for_service(ServiceSpec(name="auth", image="x"), "127.0.0.1", 4321)
    result = testenv.StartResult(
        records={"auth": record},
        environment=testenv.EnvironmentInfo(mode="local", name="n", startup_time=1.5),
        health={"auth": {"ok": True}},
    )
    report = RealServiceTestReport.from_start(result).generate()
    assert report["services_started"] == ["auth"]
    assert report["startup_time"] == 1.5
    assert report["port_allocations"]["auth"]["local_port"] == 4321
    assert report["health_check_results"]["auth"]["ok"] is True


# -- launcher, manager, cache ----------------------------------------------------------------
def test_launcher_run_returns_false_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("services: [{name: Bad_Name, image: x}]\n")
    messages: list[str] = []
    launcher = DevLauncher(LauncherConfig(spec=bad), progress=messages.append)
    assert asyncio.run(launcher.run()) is False
    assert isinstance(launcher.error, SpecError)
    assert "invalid spec" in str(launcher.error) and messages
    with pytest.raises(SpecError):
        asyncio.run(RealServicesManager(launcher).start_all_services())
    with pytest.raises(RuntimeError, match="not running"):
        _ = launcher.records


class _FakeLauncher(DevLauncher):
    runs = 0

    async def run(self) -> bool:
        type(self).runs += 1
        self.result = testenv.StartResult(
            records={}, environment=testenv.EnvironmentInfo(mode=self.config.mode, name="fake")
        )
        return True

    async def shutdown(self) -> None:
        self.result = None


def test_service_cache_reuses_by_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ServiceCache, "_instances", {})

    async def scenario() -> None:
        one = await ServiceCache.get_or_create(LauncherConfig(), factory=_FakeLauncher)
        two = await ServiceCache.get_or_create(
            LauncherConfig(startup_timeout=9), factory=_FakeLauncher
        )
        three = await ServiceCache.get_or_create(
            LauncherConfig(mode="local"), factory=_FakeLauncher
        )
        assert one is two and one is not three
        assert one.config.reuse  # across processes: reuse a Ready environment of that spec
        assert not three.config.reuse
        assert _FakeLauncher.runs == 2
        await ServiceCache.clear()
        assert one.result is None and ServiceCache._instances == {}

    asyncio.run(scenario())
