"""The reference auth service: registration, login (JWT) and token verification."""

from testenv_services.auth.app import create_app, main
from testenv_services.auth.settings import AuthSettings

__all__ = ["AuthSettings", "create_app", "main"]
