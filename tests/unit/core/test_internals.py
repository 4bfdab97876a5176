"""Pure unit tests of the library's building blocks (no processes, no cluster)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from testenv import ServiceDiscovery, SpecError, TestClientFactory
from testenv._discovery import remove_discovery_files, write_discovery_files
from testenv._environment import KubeEnvironment
from testenv._kube import _require_crd
from testenv._portforward import localize
from testenv._spec import load_spec, spec_hash
from testenv.api import (
    DiscoveryRecord,
    ServiceSpec,
    TestEnvironmentSpec,
    pod_selector,
    reference_jobs,
    reference_services,
)


def test_spec_hash_ignores_the_lease_but_not_the_services() -> None:
    base = TestEnvironmentSpec()
    assert spec_hash(base) == spec_hash(base.model_copy(update={"lease": "20s"}))
    other = TestEnvironmentSpec(
        services=reference_services(tag="0.2.0"), jobs=reference_jobs(tag="0.2.0")
    )
    assert spec_hash(base) != spec_hash(other)
    assert len(spec_hash(base)) == 16


def test_load_spec_resource_or_bare_spec(tmp_path: Path) -> None:
    assert load_spec(None) == (TestEnvironmentSpec(), {})
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump({"lease": "20s", "ttl": "10m"}))
    spec, labels = load_spec(bare)
    assert (spec.lease, spec.ttl, labels) == ("20s", "10m", {})
    full = tmp_path / "full.yaml"
    full.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "testenv.dev/v1alpha1",
                "kind": "TestEnvironment",
                "metadata": {"name": "ignored", "labels": {"team": "a"}},
                "spec": {"lease": "30s"},
            }
        )
    )
    spec, labels = load_spec(full)
    assert (spec.lease, labels) == ("30s", {"team": "a"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: {ttl: forever}\n")
    with pytest.raises(SpecError, match="invalid spec"):
        load_spec(bad)


@pytest.mark.parametrize(
    ("reuse", "keep", "spec_lease", "expected"),
    [
        (False, False, None, "2m"),
        (False, False, "20s", "20s"),
        (True, False, "20s", None),
        (False, True, None, None),
    ],
)
def test_lease_only_when_the_session_deletes(
    reuse: bool, keep: bool, spec_lease: str | None, expected: str | None
) -> None:
    env = KubeEnvironment(TestEnvironmentSpec(lease=spec_lease), reuse=reuse, keep=keep)
    assert env.spec.lease == expected
    manifest = env._manifest()
    assert manifest["metadata"]["name"].startswith("pytest-")
    labels = manifest["metadata"]["labels"]
    assert labels["testenv.dev/spec-hash"] == env.hash
    assert labels["testenv.dev/created-by"] == "testenv"
    assert ("testenv.dev/reusable" in labels) == reuse
    assert "testenv.dev/lease-renewed-at" in manifest["metadata"]["annotations"]


def candidate(env: KubeEnvironment, *, creator: str | None, spec: object) -> dict[str, object]:
    """A TestEnvironment as the API returns it: our hash label, whatever spec and creator."""
    annotations = {"testenv.dev/creator": creator} if creator else {}
    labels = {"testenv.dev/spec-hash": env.hash, "testenv.dev/reusable": "true"}
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec}


def test_reuse_trusts_only_our_own_environment_with_the_spec_we_asked_for() -> None:
    env = KubeEnvironment(TestEnvironmentSpec(), reuse=True)
    env.user = "alice"
    ours = env.spec.to_wire()
    assert env._trusted(candidate(env, creator="alice", spec=ours))
    # The label is only a lookup key: a different spec under our hash label is not reused.
    other = TestEnvironmentSpec(services=[], jobs=[]).to_wire()
    assert not env._trusted(candidate(env, creator="alice", spec=other))
    assert not env._trusted(candidate(env, creator="alice", spec={"services": "garbage"}))
    # Someone else's environment (or one whose creator nobody vouches for) is not reused.
    assert not env._trusted(candidate(env, creator="mallory", spec=ours))
    assert not env._trusted(candidate(env, creator=None, spec=ours))
    env.user = None  # the cluster could not say who we are: never reuse
    assert not env._trusted(candidate(env, creator="alice", spec=ours))


def test_the_manifest_names_its_creator() -> None:
    env = KubeEnvironment(TestEnvironmentSpec())
    assert "testenv.dev/creator" not in env._manifest()["metadata"]["annotations"]
    env.user = "alice"
    assert env._manifest()["metadata"]["annotations"]["testenv.dev/creator"] == "alice"


def test_localize_rewrites_every_url() -> None:
    svc = reference_services()[1]
    remote = DiscoveryRecord.for_service(svc, "backend.testenv-x.svc.cluster.local")
    local = localize(remote, "127.0.0.1", 40000)
    assert local.base_url == "http://127.0.0.1:40000"
    assert local.health_url == "http://127.0.0.1:40000/health"
    assert local.ws_url == "ws://127.0.0.1:40000/ws"
    assert (local.name, local.port) == ("backend", 40000)
    assert pod_selector("e", "backend") == {
        "testenv.dev/environment": "e",
        "testenv.dev/service": "backend",
    }


def test_discovery_files_roundtrip(tmp_path: Path) -> None:
    records = {
        s.name: DiscoveryRecord.for_service(s, "127.0.0.1", 5000 + i)
        for i, s in enumerate(reference_services())
    }
    written = write_discovery_files(tmp_path / "d" / "gw0", records)
    discovery = ServiceDiscovery(discovery_dir=tmp_path / "d" / "gw0")
    assert discovery.services() == ["auth", "backend", "cache", "db", "frontend"]
    info = asyncio.run(discovery.get_service_info("backend"))
    assert (info.port, info.base_url, info.ws_url) == (
        5001,
        "http://127.0.0.1:5001",
        "ws://127.0.0.1:5001/ws",
    )
    assert json.loads((tmp_path / "d" / "gw0" / "auth.json").read_text())["port"] == 5000
    ws = asyncio.run(TestClientFactory(discovery).create_websocket_client("a b/c"))
    assert ws.url == "ws://127.0.0.1:5001/ws?token=a%20b%2Fc"
    with pytest.raises(LookupError, match="no discovery record for service 'nope'"):
        asyncio.run(discovery.get_service_info("nope"))
    remove_discovery_files(written, root=tmp_path / "d")
    assert not (tmp_path / "d").exists() and tmp_path.exists()


def test_discovery_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESTENV_DISCOVERY_DIR", str(tmp_path))
    assert ServiceDiscovery().discovery_dir == tmp_path
    monkeypatch.delenv("TESTENV_DISCOVERY_DIR")
    assert ServiceDiscovery().discovery_dir == Path(".service_discovery")


class _InstantProvider:
    """A provider whose environment is up at once."""

    async def start(self, progress: object) -> object:
        from testenv._context import EnvironmentInfo, StartResult

        return StartResult(records={}, environment=EnvironmentInfo(mode="real", name="x"))

    async def stop(self) -> None:
        return None


def test_the_result_is_kept_before_the_start_completes() -> None:
    """Whoever sees the start's future done finds the launcher's result set (a done-callback
    runs only after waiters wake: the plugin once read an unset result)."""
    from testenv import DevLauncher, LauncherConfig

    launcher = DevLauncher(LauncherConfig(mode="local"))
    result = asyncio.run(launcher._start(_InstantProvider()))  # type: ignore[arg-type]
    assert launcher.result is result
    assert launcher.environment.name == "x"


def test_loading_the_library_leaves_command_line_packages_alone() -> None:
    """A session pays for what it uses: httpx's own command line (click, pygments, rich) is
    not loaded with the library, and httpx still works."""
    probe = (
        "import sys, testenv\n"
        "testenv.DevLauncher, testenv.ServiceDiscovery, testenv.AuthTestClient\n"
        "import httpx\n"
        "assert httpx.Client().base_url is not None\n"
        "print(sorted(m for m in ('click', 'pygments', 'rich', 'typer') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_an_async_api_request_does_not_search_the_import_path() -> None:
    """httpcore looks up sniffio inside every async lock, event and shield it sets up; a
    failed import is not cached, so without sniffio installed every API request of the
    operator and the plugin walks sys.path again (encode/httpcore#1103)."""
    import importlib.abc
    import importlib.machinery

    from httpcore import _synchronization

    searched: list[str] = []

    class Recorder(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, *_: object) -> importlib.machinery.ModuleSpec | None:
            searched.append(name)
            return None

    async def set_up_like_a_request() -> None:
        _synchronization.AsyncEvent().set()
        with _synchronization.AsyncShieldCancellation():
            pass

    asyncio.run(set_up_like_a_request())  # anything loaded once is loaded now
    recorder = Recorder()
    sys.meta_path.insert(0, recorder)
    try:
        asyncio.run(set_up_like_a_request())
    finally:
        sys.meta_path.remove(recorder)
    assert searched == []


class ClassesOnlyApi:
    """kr8s resolves a kind given by name by reading every API group (a request each, once
    per process): the session's reads must name their kinds by class."""

    def __init__(self, objects: dict[str, list[dict[str, Any]]]) -> None:
        self.objects = objects
        self.read: list[str] = []

    async def async_get(self, kind: Any, *names: str, **params: Any) -> AsyncIterator[Any]:
        assert not isinstance(kind, str), f"{kind!r} by name walks every API group"
        self.read.append(kind.endpoint)
        for raw in self.objects.get(kind.endpoint, []):
            yield SimpleNamespace(raw=raw)


async def test_a_session_reads_by_kind_class_never_by_kind_name() -> None:
    record = DiscoveryRecord.for_service(ServiceSpec(name="web", image="x"), "web", 8080)
    api = ClassesOnlyApi(
        {
            "customresourcedefinitions": [{"metadata": {"name": "testenvironments.testenv.dev"}}],
            "configmaps": [{"data": {"web.json": record.model_dump_json()}}],
            "pods": [{"metadata": {"name": "web-1"}}],
        }
    )
    await _require_crd(api, "here")
    env = KubeEnvironment(TestEnvironmentSpec())
    env.api, env.namespace = api, "testenv-x"
    assert list(await env._discovery()) == ["web"]
    assert await env._pods() == [{"metadata": {"name": "web-1"}}]
    assert api.read == ["customresourcedefinitions", "configmaps", "pods"]
