"""The reference frontend: an HTML chat page plus same-origin proxies to auth and backend."""

from testenv_services.frontend.app import create_app, main
from testenv_services.frontend.settings import FrontendSettings

__all__ = ["FrontendSettings", "create_app", "main"]
