"""``python -m testenv_operator``: run the operator (cluster-wide) with kopf."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import Any

from testenv_operator.settings import Settings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data)


class QuietEventHandlers(logging.Filter):
    """Drop kopf's per-event success lines of the watch-event handlers (one per pod event)."""

    NOISY = (
        "Handler 'child_event' succeeded",
        "Handler 'environment_event' succeeded",
        "Handler 'pool_event' succeeded",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.NOISY)


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(QuietEventHandlers())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="testenv-operator", description=__doc__)
    parser.add_argument(
        "--liveness",
        default=None,
        help="liveness endpoint (default: TESTENV_LIVENESS_ENDPOINT or "
        "http://0.0.0.0:8080/healthz)",
    )
    parser.add_argument("--no-liveness", action="store_true", help="serve no liveness endpoint")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings()
    setup_logging(settings)

    import kopf

    from testenv_operator import handlers  # registers the handlers

    del handlers
    liveness = None if args.no_liveness else (args.liveness or settings.liveness_endpoint)
    asyncio.run(
        kopf.operator(
            clusterwide=True,
            standalone=True,
            liveness_endpoint=liveness,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
