"""Warm pools end to end: a TestEnvironmentPool keeps Ready environments; concurrent claims
(processes, as xdist workers and parallel CI jobs make them) never share one; the pool
refills; maxSize holds; the plugin and the command claim and say so; a deleted pool leaves
nothing but the environments its clients still hold."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_helpers import Kubectl

from testenv.api import (
    CLAIMED_BY_ANNOTATION,
    POOL_LABEL,
    POOL_STATE_LABEL,
    REFERENCE_IMAGE_TAG,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("operator_installed")]

WAIT = "180s"
# Holds one environment, prints its name and pool (a HELD line of JSON, after the launcher's
# progress), releases it on a line on stdin.
CLAIMER = textwrap.dedent(
    """
    import json, sys
    import testenv
    launcher = testenv.DevLauncher(testenv.LauncherConfig(spec=sys.argv[1]))
    launcher.start()
    env = launcher.environment
    print("HELD " + json.dumps({"name": env.name, "pool": env.pool}), flush=True)
    sys.stdin.readline()
    launcher.stop()
    """
)


def template() -> dict[str, Any]:
    """A one-service spec of its own (a unique variable): no other pool or test matches it."""
    return {
        "ttl": "30m",
        "services": [
            {
                "name": "web",
                "image": f"testenv/frontend:{REFERENCE_IMAGE_TAG}",
                "port": 8080,
                "command": ["python3", "-m", "http.server", "8080", "-d", "/etc"],
                "probe": {"tcp": {}},
                "env": [{"name": "POOL_TEST", "value": uuid.uuid4().hex}],
            }
        ],
    }


Pool = tuple[str, Path]  # its name, and a spec file with its template


@pytest.fixture
def make_pool(k: Kubectl, tmp_path: Path) -> Iterator[Callable[..., Pool]]:
    made: list[str] = []

    def make(size: int, max_size: int) -> Pool:
        name = f"pool-{uuid.uuid4().hex[:6]}"
        spec = template()
        doc = {
            "apiVersion": "testenv.dev/v1alpha1",
            "kind": "TestEnvironmentPool",
            "metadata": {"name": name},
            "spec": {"size": size, "maxSize": max_size, "template": spec},
        }
        k("apply", "-f", "-", input=yaml.safe_dump(doc))
        made.append(name)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"spec": spec}))
        return name, path

    yield make
    for name in made:
        k("delete", "testenvironmentpool", name, "--ignore-not-found", "--wait=false", check=False)


def wait_counts(k: Kubectl, pool: str, **counts: int) -> None:
    for field, value in counts.items():
        proc = k(
            "wait",
            f"--for=jsonpath={{.status.{field}}}={value}",
            f"testenvironmentpool/{pool}",
            f"--timeout={WAIT}",
            check=False,
        )
        if proc.returncode != 0:
            got = k("get", "testenvironmentpool", pool, "-o", "json").stdout
            pytest.fail(f"pool {pool}: {field} never {value}: {proc.stderr}\n{got}")


def members(k: Kubectl, pool: str) -> dict[str, dict[str, Any]]:
    out = k("get", "testenvironments", "-l", f"{POOL_LABEL}={pool}", "-o", "json").stdout
    return {o["metadata"]["name"]: o for o in json.loads(out)["items"]}


def start_claimers(spec: Path, n: int) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]


def held(claimer: subprocess.Popen[str]) -> dict[str, Any]:
    assert claimer.stdout is not None
    for line in claimer.stdout:
        if line.startswith("HELD "):
            result: dict[str, Any] = json.loads(line.removeprefix("HELD "))
            return result
    _, err = claimer.communicate(timeout=60)
    pytest.fail(f"a claimer failed:\n{err}")


def release(claimers: list[subprocess.Popen[str]]) -> None:
    for claimer in claimers:
        if claimer.poll() is None:
            _, err = claimer.communicate("\n", timeout=120)
            assert claimer.returncode == 0, err


def test_concurrent_claims_never_share_an_environment_and_the_pool_refills(
    k: Kubectl, make_pool: Callable[..., Pool]
) -> None:
    pool, spec = make_pool(size=2, max_size=8)
    wait_counts(k, pool, ready=2)
    ready_before = set(members(k, pool))
    claimers = start_claimers(spec, 4)
    try:
        got = [held(c) for c in claimers]
        names = [g["name"] for g in got]
        assert len(set(names)) == 4, f"an environment was handed out twice: {names}"
        from_pool = {g["name"] for g in got if g["pool"] == pool}
        # Both Ready ones were claimed first (a lost race moves on to the next one: a
        # refilling one, else a new environment is created).
        assert ready_before <= from_pool
        held_now = members(k, pool)
        for name in from_pool:
            labels = held_now[name]["metadata"]["labels"]
            assert labels[POOL_STATE_LABEL] == "claimed"
            assert CLAIMED_BY_ANNOTATION in held_now[name]["metadata"]["annotations"]
            assert not held_now[name]["metadata"].get("ownerReferences")
        # The pool refills in the background while the claims are held.
        wait_counts(k, pool, ready=2, claimed=len(from_pool), refilling=0)
    finally:
        release(claimers)
    # The claimers deleted what they held; the pool kept its own.
    wait_counts(k, pool, claimed=0, ready=2)


def test_max_size_bounds_a_pool_and_a_deleted_pool_leaves_only_what_is_held(
    k: Kubectl, make_pool: Callable[..., Pool]
) -> None:
    pool, spec = make_pool(size=2, max_size=2)
    wait_counts(k, pool, ready=2)
    [claimer] = start_claimers(spec, 1)
    try:
        mine = held(claimer)["name"]
        wait_counts(k, pool, claimed=1, ready=1)
        got = json.loads(k("get", "testenvironmentpool", pool, "-o", "json").stdout)["status"]
        assert got["refilling"] == 0 and "maxSize 2" in got["message"]
        # What the README says kubectl shows: the counts, and with -o wide why it waits.
        plain = k("get", "tepool", pool).stdout.splitlines()
        assert plain[0].split()[:6] == ["NAME", "SIZE", "MAX", "READY", "REFILLING", "CLAIMED"]
        assert plain[1].split()[:6] == [pool, "2", "2", "1", "0", "1"]
        assert "MESSAGE" not in plain[0]
        wide = k("get", "tepool", pool, "-o", "wide").stdout.splitlines()
        assert "MESSAGE" in wide[0] and "maxSize 2" in wide[1]
        assert len(members(k, pool)) == 2  # one held, one Ready: no third
        spare = next(n for n in members(k, pool) if n != mine)
        namespace = f"testenv-{spare}"
        k("delete", "testenvironmentpool", pool, "--wait=true", "--timeout=60s")
        k("wait", "--for=delete", f"testenv/{spare}", f"namespace/{namespace}", f"--timeout={WAIT}")
        # The held one is its client's: deleting the pool did not touch it.
        assert set(members(k, pool)) == {mine}
        assert k("get", "namespace", f"testenv-{mine}", check=False).returncode == 0
    finally:
        release([claimer])
    k("wait", "--for=delete", f"testenv/{mine}", f"--timeout={WAIT}", check=False)
    assert members(k, pool) == {}


def test_the_plugin_and_the_command_claim_from_a_matching_pool_and_say_so(
    k: Kubectl, make_pool: Callable[..., Pool], pytester: pytest.Pytester
) -> None:
    pool, spec = make_pool(size=2, max_size=4)
    wait_counts(k, pool, ready=2)
    pytester.makepyfile(
        """
        def test_web(testenv):
            with testenv.http_sync("web") as web:
                assert web.get("/").status_code == 200
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--testenv-spec={spec}", "-s")
    result.assert_outcomes(passed=1)
    result.stdout.re_match_lines(
        [rf".*claimed TestEnvironment {pool}-\w+ from pool {pool} \(Ready.*"]
    )
    # The command, without a name, claims too (and keeps it: it has no lease, only its ttl).
    up = subprocess.run(
        [sys.executable, "-m", "testenv_cli", "up", "-f", str(spec), "-o", "json"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        check=False,
    )
    # A file without a name: the command claims (the name is the pool's).
    assert up.returncode == 0, up.stderr
    name = json.loads(up.stdout)["name"]
    try:
        assert name.startswith(f"{pool}-")
        assert members(k, pool)[name]["metadata"]["labels"][POOL_STATE_LABEL] == "claimed"
    finally:
        k("delete", "testenv", name, "--wait=false", check=False)
    # Opting out creates a new one.
    off = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--testenv-spec={spec}", "--testenv-pool=off", "-s"
    )
    off.assert_outcomes(passed=1)
    assert "from pool" not in off.stdout.str()
