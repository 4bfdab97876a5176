"""``python -m testenv_services.auth.db migrate|seed|reset``: the jobs of the reference
environment.

``migrate`` creates auth's schema; ``seed`` adds the users of ``AUTH_SEED_USERS``
(``email:password,...``), keeping any that exist; ``reset`` removes every user, then seeds
(the reset job: clean data for a test that asks for it). All read the database from
``AUTH_DATABASE_URL``. Exit codes: 0 done, 1 the database refused, 2 bad configuration.
"""

from __future__ import annotations

import os
import sys
import uuid

import psycopg

from testenv_services._common import ConfigError
from testenv_services.auth.security import hash_password
from testenv_services.auth.settings import DATABASE_ENV, parse_seed_users
from testenv_services.auth.store import SCHEMA


def migrate(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        conn.execute(SCHEMA)
    return "schema ready: table users"


def seed(dsn: str, text: str) -> str:
    users = parse_seed_users(text)
    added = 0
    with psycopg.connect(dsn) as conn:
        for email, password in users:
            cur = conn.execute(
                "INSERT INTO users (id, email, password_hash) VALUES (%s, %s, %s) "
                "ON CONFLICT (email) DO NOTHING",
                (uuid.uuid4().hex, email, hash_password(password)),
            )
            added += cur.rowcount
    return f"seeded {added} of {len(users)} users ({len(users) - added} already there)"


def reset(dsn: str, text: str) -> str:
    with psycopg.connect(dsn) as conn:
        cur = conn.execute("DELETE FROM users")
        removed = cur.rowcount
    return f"removed {removed} users; " + seed(dsn, text)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in (["migrate"], ["seed"], ["reset"]):
        print("usage: python -m testenv_services.auth.db migrate|seed|reset", file=sys.stderr)
        return 2
    dsn = os.environ.get(DATABASE_ENV, "")
    try:
        if not dsn:
            raise ConfigError(f"{DATABASE_ENV} must name the database")
        users = os.environ.get("AUTH_SEED_USERS", "")
        if args == ["migrate"]:
            print(migrate(dsn), flush=True)
        elif args == ["seed"]:
            print(seed(dsn, users), flush=True)
        else:
            print(reset(dsn, users), flush=True)
    except ConfigError as exc:
        print(f"auth db {args[0]}: {exc}", file=sys.stderr)
        return 2
    except psycopg.Error as exc:
        print(f"auth db {args[0]}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
