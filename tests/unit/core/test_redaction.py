"""What is copied out of an environment (status, events, forensics, reports) never shows a
credential."""

from __future__ import annotations

import pytest

from testenv.redaction import MASK, MAX_LINE, redact, redact_lines

SECRET = "Zq8-vT3kP9wXy2Lm"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"connecting with {SECRET} now", f"connecting with {MASK} now"),
        (f"{SECRET}{SECRET}", MASK * 2),
        ("password=hunter22 user=bob", f"password={MASK} user=bob"),
        ('{"password": "hunter22", "user": "bob"}', f'{{"password": "{MASK}", "user": "bob"}}'),
        ("TOKEN: abc.def.ghi", f"TOKEN: {MASK}"),
        ("api_key=k-123&x=1", f"api_key={MASK}&x=1"),
        ("Authorization: Bearer eyJhbGciOi.x.y", f"Authorization: Bearer {MASK}"),
        (
            "FATAL: could not connect to postgresql://app:pw0rd@db:5432/app",
            f"FATAL: could not connect to postgresql://app:{MASK}@db:5432/app",
        ),
        ("redis://default:s3cr3t@cache:6379/0", f"redis://default:{MASK}@cache:6379/0"),
        ("GET /health 200", "GET /health 200"),
        ("http://example.com:8080/path", "http://example.com:8080/path"),
    ],
)
def test_credentials_are_masked(text: str, expected: str) -> None:
    assert redact(text, [SECRET]) == expected
    assert redact(redact(text, [SECRET]), [SECRET]) == expected  # idempotent


def test_short_secrets_do_not_mask_ordinary_words() -> None:
    assert redact("the app started", ["app"]) == "the app started"


def test_lines_are_cut() -> None:
    line = "x" * (MAX_LINE + 50)
    assert redact(line) == "x" * MAX_LINE + "…"
    assert redact(line, limit=None) == line
    assert redact_lines([line, "ok"]) == ["x" * MAX_LINE + "…", "ok"]
