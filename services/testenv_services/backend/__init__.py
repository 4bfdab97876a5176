"""The reference backend: an authenticated API and a WebSocket chat/onboarding protocol."""

from testenv_services.backend.app import create_app, main
from testenv_services.backend.settings import BackendSettings

__all__ = ["BackendSettings", "create_app", "main"]
