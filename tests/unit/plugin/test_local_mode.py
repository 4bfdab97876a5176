"""The fixtures end-to-end in local mode: real processes of the reference services."""

from __future__ import annotations

import json
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

# Real local processes: seconds each, so `make test-unit` leaves them out.
pytestmark = pytest.mark.integration


def run(pytester: pytest.Pytester, *args: str, timeout: float = 120) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--testenv-mode=local", *args, timeout=timeout
    )


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_plan_tests_pass_as_written(plan_tests: str, pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plan=plan_tests)
    result = run(pytester)
    result.assert_outcomes(passed=2)
    result.stdout.re_match_lines(
        [
            r"testenv: (auth|backend|frontend) ready \(\d+\.\ds\) \[1/3\]",
            r"testenv: \w+ ready .* \[3/3\]",
        ]
    )
    assert not (pytester.path / ".service_discovery").exists()


def test_plan_tests_without_pytest_asyncio(plan_tests: str, pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plan=plan_tests)
    run(pytester, "-p", "no:asyncio").assert_outcomes(passed=2)


def test_sync_fixture_and_more_of_the_api(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_sync="""
        from testenv import ServiceDiscovery, TestClientFactory

        def test_sync_clients(real_services_sync):
            rs = real_services_sync
            assert rs.environment.mode == "local"
            token = rs.auth_client.login("test@example.com", "password")
            assert rs.backend_client.me(token)["email"] == "test@example.com"
            with rs.websocket_factory(token) as ws:
                ws.send_chat("Hi")
                assert ws.receive()["type"] == "chat_response"
                ws.send({"type": "onboarding_start"})
                assert ws.receive_until("onboarding_step")["type"] == "onboarding_step"

        async def test_plan_style_discovery_and_factory(real_services):
            discovery = ServiceDiscovery()
            info = await discovery.get_service_info("backend")
            assert info.base_url == f"http://127.0.0.1:{info.port}"
            assert info.ws_url == f"ws://127.0.0.1:{info.port}/ws"
            factory = TestClientFactory(discovery)
            auth = await factory.create_auth_client()
            token = await auth.login("test@example.com", "password")
            backend = await factory.create_backend_client()
            assert (await backend.me(token))["email"] == "test@example.com"
            async with await factory.create_websocket_client(token) as ws:
                await ws.send_chat("x")
                assert (await ws.receive())["type"] == "chat_response"
            assert (await real_services.backend_client.health())
    """
    )
    run(pytester).assert_outcomes(passed=2)


def test_discovery_files_written_then_removed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_disc="""
        import json
        from pathlib import Path

        def test_files(real_services_sync):
            files = sorted(p.name for p in Path(".service_discovery").glob("*.json"))
            assert files == ["auth.json", "backend.json", "frontend.json"]
            record = json.loads(Path(".service_discovery/backend.json").read_text())
            assert record["schema_version"] == 1 and record["name"] == "backend"
            assert record["host"] == "127.0.0.1"
            assert record["health_url"] == f"http://127.0.0.1:{record['port']}/health"
            assert record["ws_url"] == f"ws://127.0.0.1:{record['port']}/ws"
            Path("seen").write_text(str(record["port"]))
    """
    )
    run(pytester).assert_outcomes(passed=1)
    port = int((pytester.path / "seen").read_text())
    assert not (pytester.path / ".service_discovery").exists()
    assert not port_open(port), "the local services must be stopped after the session"


def test_report_json_and_junit_properties(plan_tests: str, pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_plan=plan_tests,
        test_other="""
        import pytest
        def test_fails(real_services_sync):
            assert False, "boom"
        @pytest.mark.skip
        def test_skipped(): pass
    """,
    )
    result = run(pytester, "--testenv-report=out/report.json", "--junitxml=junit.xml")
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    report = json.loads((pytester.path / "out" / "report.json").read_text())
    assert report["mode"] == "local"
    assert report["services_started"] == ["auth", "backend", "frontend"]
    assert 0 < report["startup_time"] < 60
    assert set(report["phases"]) == {"auth_ready", "backend_ready", "frontend_ready"}
    ports = {name: entry["local_port"] for name, entry in report["port_allocations"].items()}
    assert set(ports) == {"auth", "backend", "frontend"} and len(set(ports.values())) == 3
    for name, check in report["health_check_results"].items():
        assert check["ok"] is True and check["status_code"] == 200
        assert check["url"] == f"http://127.0.0.1:{ports[name]}/health"
    results = report["test_results"]
    assert (results["total"], results["passed"], results["failed"], results["skipped"]) == (
        4,
        2,
        1,
        1,
    )
    outcomes = {t["nodeid"].split("::")[-1]: t["outcome"] for t in results["tests"]}
    assert outcomes["test_fails"] == "failed"
    props = {
        p.get("name"): p.get("value")
        for p in ET.parse(pytester.path / "junit.xml").iter("property")
    }
    assert props["testenv_mode"] == "local"
    assert float(props["testenv_startup_time"]) == report["startup_time"]
    assert "testenv_phase_auth_ready" in props


def test_failure_gets_forensics_section(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_fail="""
        def test_fails(real_services_sync):
            assert False, "boom"
    """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*testenv forensics*", "--- auth (port *, running), log *"])


def test_service_that_cannot_start(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_x="""
        def test_a(real_services_sync): pass
        def test_b(real_services_sync): pass
    """
    )
    result = run(pytester, "--testenv-local-package=no_such_services_pkg")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(
        ["*ConfigurationError*local mode has no module no_such_services_pkg.auth to run*"]
    )


def test_provisioning_timeout(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_a(real_services_sync): pass\n")
    result = run(pytester, "--testenv-timeout=0.05")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*ProvisioningTimeoutError*not ready after 0.05s*", "*testenv forensics*"]
    )


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_cleanup_on_interrupt(pytester: pytest.Pytester, signame: str) -> None:
    pytester.makepyfile(
        test_int=f"""
        import json, os, signal, time
        from pathlib import Path

        def test_interrupted(real_services_sync):
            ports = {{n: s.port for n, s in real_services_sync.services.items()}}
            Path("ports.json").write_text(json.dumps(ports))
            # Ctrl-C as in a terminal, even when this suite runs with SIGINT ignored (a
            # background job, CI): an ignored SIGINT is inherited, so restore Python's own.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.kill(os.getpid(), signal.{signame})
            time.sleep(30)

        def test_never_runs():
            Path("ran").write_text("")
    """
    )
    result = run(pytester)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    ports = json.loads((pytester.path / "ports.json").read_text())
    assert len(ports) == 3
    assert not any(port_open(p) for p in ports.values())
    assert not (pytester.path / ".service_discovery").exists()
    assert not (pytester.path / "ran").exists()


def test_xdist_plan_tests(plan_tests: str, pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plan=plan_tests)
    run(pytester, "-n", "2").assert_outcomes(passed=2)
    assert not (pytester.path / ".service_discovery").exists()


RECORD_ENV = """
import os
from pathlib import Path

def test_env_name(real_services_sync):
    rs = real_services_sync
    worker = os.environ["PYTEST_XDIST_WORKER"]
    port = rs.services["auth"].port
    Path(f"env-{worker}").write_text(f"{rs.environment.name} {port}")
    assert rs.auth_client.login("test@example.com", "password")
    assert os.environ["TESTENV_DISCOVERY_DIR"].endswith(worker)
"""


@pytest.mark.parametrize("xdist_mode", ["shared", "per-worker"])
def test_xdist_modes(pytester: pytest.Pytester, xdist_mode: str) -> None:
    pytester.makepyfile(test_env=RECORD_ENV)
    result = run(pytester, "-n", "2", "--dist=each", f"--testenv-xdist={xdist_mode}")
    result.assert_outcomes(passed=2)
    seen = {p.name: p.read_text().split() for p in pytester.path.glob("env-gw*")}
    assert set(seen) == {"env-gw0", "env-gw1"}
    names = {v[0] for v in seen.values()}
    ports = {int(v[1]) for v in seen.values()}
    if xdist_mode == "shared":
        assert len(names) == 1 and len(ports) == 1, seen  # provisioned once
    else:
        assert len(names) == 2 and len(ports) == 2, seen
    assert not any(port_open(p) for p in ports)
    assert not (pytester.path / ".service_discovery").exists()


def test_no_environment_without_the_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_a(): pass\n")
    result = run(pytester, "--testenv-mode=real", "--testenv-kubeconfig=/nonexistent")
    result.assert_outcomes(passed=1)
    assert "testenv:" not in result.stdout.str().split("collected")[1]


def test_cluster_unreachable_is_actionable(pytester: pytest.Pytester, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "dead",
                "clusters": [{"name": "dead", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "x"}}],
                "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "u"}}],
            }
        )
    )
    pytester.makepyfile(test_x="def test_a(real_services_sync): pass\n")
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--testenv-kubeconfig={kubeconfig}", timeout=60
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*ClusterUnreachableError: cannot reach the Kubernetes API*--testenv-mode=local*"]
    )


@pytest.mark.parametrize(
    ("args", "ini"),
    [
        ((), ""),  # pytest-asyncio in strict mode: the plugin runs the plan's async fixtures
        (("-p", "no:asyncio"), ""),  # no pytest-asyncio at all
        ((), "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = session\n"),
    ],
    ids=["asyncio-strict", "no-asyncio", "asyncio-auto"],
)
def test_plan_fixtures_in_a_user_conftest(
    plan_conftest: str,
    plan_tests: str,
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    ini: str,
) -> None:
    """The plan's Phase 1-2 fixtures pasted into conftest.py, its CI switch for local mode,
    and its Phase 3 tests: they pass, and the plugin provisions nothing of its own."""
    monkeypatch.setenv("USE_REAL_SERVICES", "false")
    pytester.makeconftest(plan_conftest)
    pytester.makepyfile(test_plan=plan_tests)
    if ini:
        pytester.makeini(ini)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)
    result.assert_outcomes(passed=2)
    # The user's dev_launcher ran the services; the plugin's own session never started one.
    assert not [line for line in result.outlines if " ready (" in line], result.outlines
    assert not (pytester.path / ".service_discovery").exists()


def test_plan_dynamic_ports_false_is_refused(
    plan_conftest: str, plan_tests: str, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USE_REAL_SERVICES", "false")
    monkeypatch.setenv("DYNAMIC_PORTS", "false")
    pytester.makeconftest(plan_conftest)
    pytester.makepyfile(test_plan=plan_tests)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    assert result.ret != 0
    assert "DYNAMIC_PORTS=false cannot be honoured" in result.stdout.str() + result.stderr.str()


def test_the_plugins_dev_launcher_fixture(pytester: pytest.Pytester) -> None:
    """``dev_launcher`` from the plugin: already running the session's services, so the plan's
    manager built on it starts nothing new and hands out working clients."""
    pytester.makepyfile(
        test_launcher="""
        from testenv import DevLauncher, RealServicesManager

        async def test_manager_on_the_plugins_launcher(dev_launcher, service_discovery):
            assert isinstance(dev_launcher, DevLauncher)
            assert await dev_launcher.run() is True
            manager = RealServicesManager(dev_launcher)
            await manager.start_all_services()
            auth = await manager.client_factory.create_auth_client()
            assert await auth.login("test@example.com", "password")
            assert dev_launcher.records["auth"].port == service_discovery.get_record("auth").port
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=1)
    assert len([line for line in result.outlines if "auth ready (" in line]) == 1


def test_local_mode_runs_the_reference_services_and_says_what_it_leaves_out() -> None:
    from testenv._local import LocalServices
    from testenv.api import TestEnvironmentSpec

    runnable, left_out, problems = LocalServices(TestEnvironmentSpec(), name="x").plan()
    assert [s.name for s in runnable] == ["auth", "backend", "frontend"]
    assert left_out == [
        "db (postgres preset)",
        "cache (redis preset)",
        "job migrate",
        "job seed",
        "job reset",
    ]
    assert problems == []
    own = TestEnvironmentSpec.model_validate(
        {"services": [{"name": "shop", "image": "example/shop:1"}]}
    )
    _, _, problems = LocalServices(own, name="x").plan()
    assert problems == [
        "service shop runs the image example/shop:1; local mode has no module "
        "testenv_services.shop to run instead"
    ]
