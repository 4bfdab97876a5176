"""One TLS context for every HTTP client the library makes.

httpx builds a new context for each client it creates, loading the whole CA bundle
(about 20 ms each, 40 ms for the first): the price of every ``stack.http()``, typed client
and health check, though they mostly talk plain HTTP to a local forward. The context is
built once per process instead, on first use or ahead of it while the cluster works. Like
httpx's default, it honours ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` as they are when it is
built.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def client_tls() -> ssl.SSLContext:
    """httpx's default verifying context, built once."""
    return httpx.create_ssl_context()
