"""Auth service settings, read only from environment variables."""

from __future__ import annotations

from dataclasses import dataclass, field

from email_validator import EmailNotValidError, validate_email

from testenv_services._common import ConfigError, Env, ServerSettings, env_number, require

SECRET_ENV = "TESTENV_SECRET_KEY"
DEV_SECRET_ENV = "AUTH_SIGNING_KEY"
DATABASE_ENV = "AUTH_DATABASE_URL"
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


def normalize_email(email: str) -> str:
    """Syntax-check an address (no DNS) and return its canonical, lower-case form."""
    return validate_email(email, check_deliverability=False).normalized.lower()


def parse_seed_users(text: str) -> tuple[tuple[str, str], ...]:
    """Parse ``email:password,email2:password2`` (a password may contain ``:``, not ``,``)."""
    users: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        email, sep, password = item.partition(":")
        if not sep or not password:
            raise ConfigError(f"AUTH_SEED_USERS: entry {email!r} needs the form email:password")
        try:
            key = normalize_email(email.strip())
        except EmailNotValidError as exc:
            raise ConfigError(f"AUTH_SEED_USERS: invalid email {email!r}: {exc}") from None
        if key in users:
            raise ConfigError(f"AUTH_SEED_USERS: {key} is listed twice")
        users[key] = password
    return tuple(users.items())


@dataclass(frozen=True)
class AuthSettings:
    """Everything the auth service needs; secrets are kept out of ``repr``."""

    secret_key: str = field(repr=False)
    token_ttl_seconds: int = 3600
    seed_users: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    issuer: str = "testenv-auth"
    #: PostgreSQL (users survive restarts); None: users live in memory, seeded at start.
    database_url: str | None = field(default=None, repr=False)
    server: ServerSettings = field(default_factory=ServerSettings)

    def __post_init__(self) -> None:
        if not self.secret_key:
            raise ConfigError(f"{SECRET_ENV} must not be empty")

    @classmethod
    def from_env(cls, env: Env) -> AuthSettings:
        """Read ``TESTENV_SECRET_KEY`` (or ``AUTH_SIGNING_KEY``), ``AUTH_TOKEN_TTL_SECONDS``,
        ``AUTH_SEED_USERS``, ``AUTH_DATABASE_URL`` and the server settings."""
        ttl = env_number(env, "AUTH_TOKEN_TTL_SECONDS", 3600, minimum=1, maximum=30 * 86400)
        try:
            secret_key = require(env, SECRET_ENV, DEV_SECRET_ENV)
        except ConfigError as exc:  # the operator gives it only to a service that asks
            raise ConfigError(
                f"{exc}; in a TestEnvironment: secretKey: true on this service"
            ) from None
        return cls(
            secret_key=secret_key,
            token_ttl_seconds=int(ttl),
            seed_users=parse_seed_users(env.get("AUTH_SEED_USERS", "")),
            database_url=env.get(DATABASE_ENV) or None,
            server=ServerSettings.from_env(env),
        )
