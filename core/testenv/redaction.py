"""Redaction of credentials in text copied out of an environment (pure; no I/O).

Log lines and events end up in a TestEnvironment's status, in events, in a test session's
forensics and its JSON report, all of which more people can read than the environment's
Secrets. Everything copied there goes through :func:`redact`: the environment's own secret
values are replaced wherever they appear, and so are values that look like credentials
(``password=...``, ``token: ...``, the password of a URL such as ``postgresql://u:pw@h``).
Each line is also cut to :data:`MAX_LINE` characters.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable

__all__ = ["MASK", "MAX_LINE", "redact", "redact_lines"]

MASK = "***"
#: The longest line kept (longer ones are cut and end with "…").
MAX_LINE = 300
#: Secret values shorter than this are not searched for (they would mask ordinary words).
_MIN_SECRET = 6

_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]+:)([^@\s]+)(@)")
_BEARER = re.compile(r"(?i)(\b(?:bearer|basic)\s+)(?!\*\*\*)[A-Za-z0-9._~+/=-]+")
_KEY_VALUE = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|api[-_]?key|authorization)(\"?\s*[=:]\s*\"?)"
    r"(?!\*\*\*)(?!(?:bearer|basic)\s)([^\s\",;&]+)"
)


def redact(text: str, secrets: Collection[str] = (), limit: int | None = MAX_LINE) -> str:
    """``text`` with ``secrets`` and credential-looking values masked, cut to ``limit``."""
    for value in sorted((s for s in secrets if len(s) >= _MIN_SECRET), key=len, reverse=True):
        text = text.replace(value, MASK)
    text = _URL_PASSWORD.sub(rf"\1{MASK}\3", text)
    text = _BEARER.sub(rf"\1{MASK}", text)
    text = _KEY_VALUE.sub(rf"\1\2{MASK}", text)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    return text


def redact_lines(
    lines: Iterable[str], secrets: Collection[str] = (), limit: int | None = MAX_LINE
) -> list[str]:
    return [redact(line, secrets, limit) for line in lines]
