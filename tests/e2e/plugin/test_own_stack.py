"""A team's own stack through the plugin's generic ``testenv`` fixture: PostgreSQL with
migration and seed jobs, Redis, nginx serving files, start order, a generated secret
(manifests/samples/own-stack.yaml), on the real cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("operator_installed")]

SAMPLE = Path(__file__).resolve().parents[3] / "manifests/samples/own-stack.yaml"

INNER = r"""
import json
import socket
from pathlib import Path

import psycopg


def redis(address, *commands):
    with socket.create_connection(address, timeout=10) as conn:
        conn.sendall("".join(c + "\r\n" for c in commands).encode())
        answer = b""
        while answer.count(b"\r\n") < len(commands):
            answer += conn.recv(4096)
    return answer.decode().split("\r\n")[: len(commands)]


def test_the_whole_stack(testenv):
    # the seed job's rows, read through the forwarded PostgreSQL port
    with psycopg.connect(testenv.dsn("db")) as conn:
        rows = conn.execute("SELECT text FROM greetings").fetchall()
        token = conn.execute("SELECT value FROM tokens").fetchone()[0]
    assert rows == [("hello from the seed job",)]
    # the generated secret reached the job, and the test side reads the same value
    assert token == testenv.secret("api-token")
    assert len(token) == 24 and set(token) <= set("0123456789abcdef")
    # nginx (a Debian package) serves the page given in `files`, on two named ports
    with testenv.http_sync("web") as web:
        assert "<h1>Own stack</h1>" in web.get("/").text
    with testenv.http_sync("web", "admin") as admin:
        assert admin.get("/").text == "admin\n"
    # Redis wants its generated password
    assert redis(testenv.address("cache"), "PING")[0].startswith("-NOAUTH")
    password = testenv.secret("cache-password")
    assert redis(testenv.address("cache"), f"AUTH {password}", "PING") == ["+OK", "+PONG"]
    assert testenv.dsn("cache").startswith("redis://:")
    Path("leak-check.json").write_text(json.dumps({
        "name": testenv.environment.name,
        "namespace": testenv.environment.namespace,
        "secrets": [testenv.secret(n) for n in ("api-token", "db-password", "cache-password")],
    }))
"""


def test_own_stack_through_the_testenv_fixture(pytester: pytest.Pytester, k) -> None:
    pytester.makepyfile(test_stack=INNER)
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        f"--testenv-spec={SAMPLE}",
        "--testenv-keep",
        "--testenv-report=report.json",
        "--testenv-timeout=300",
        timeout=600,
    )
    facts = json.loads((pytester.path / "leak-check.json").read_text())
    name, namespace = facts["name"], facts["namespace"]
    try:
        result.assert_outcomes(passed=1)
        # Secrets never appear in the status, the ConfigMaps, events or the JSON report.
        seen = [
            (pytester.path / "report.json").read_text(),
            k("get", "testenv", name, "-o", "json").stdout,
            k("-n", namespace, "get", "configmaps", "-o", "json").stdout,
            k("-n", namespace, "get", "events", "-o", "json").stdout,
            k(
                "get", "events", "-A", f"--field-selector=involvedObject.name={name}", "-o", "json"
            ).stdout,
            result.stdout.str(),
        ]
        for secret in facts["secrets"]:
            assert len(secret) >= 16
            for text in seen:
                assert secret not in text

        # PostgreSQL restarted (its process, not its pod): the data stays.
        db_pod = k(
            "-n", namespace, "get", "pods", "-l", "testenv.dev/service=db", "-o", "name"
        ).stdout.split()[0]
        k("-n", namespace, "exec", db_pod, "--", "sh", "-c", "kill 1")
        restarted = "jsonpath={.status.containerStatuses[0].restartCount}=1"
        k("-n", namespace, "wait", f"--for={restarted}", db_pod, "--timeout=120s")
        k("-n", namespace, "wait", "--for=condition=Ready", db_pod, "--timeout=120s")
        dsn = f"postgresql://app:{facts['secrets'][1]}@127.0.0.1:5432/app"
        query = ("psql", dsn, "-At", "-c", "SELECT text FROM greetings")
        rows = k("-n", namespace, "exec", db_pod, "--", *query).stdout
        assert rows.strip() == "hello from the seed job"
    finally:
        k(
            "delete",
            "testenv",
            name,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
            check=False,
        )


def test_the_sample_is_a_valid_spec() -> None:
    from testenv.api import TestEnvironmentSpec

    doc = yaml.safe_load(SAMPLE.read_text())
    spec = TestEnvironmentSpec.model_validate(doc["spec"])
    assert [s.name for s in spec.services] == ["db", "cache", "web"]
