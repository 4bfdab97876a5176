# The plan's Phase 1.1 and 2.2 fixtures exactly as written (tests/conftest.py and
# tests/unified/conftest.py of "Real Service Testing Implementation Plan"), with the one import
# line a user adds. Not collected here: the plan tests (e2e and local mode) copy it into a
# user-style project as its conftest.py and run the plan's Phase 3 tests against it.
import pytest
from testenv import DevLauncher, LauncherConfig, RealServiceContext, RealServicesManager


@pytest.fixture(scope="session")
async def dev_launcher():
    """Provides dev_launcher instance for real service testing."""
    launcher = DevLauncher(LauncherConfig(
        dynamic_ports=True,
        test_mode=True,
        startup_timeout=30
    ))
    yield launcher
    await launcher.shutdown()


@pytest.fixture(scope="session")
async def real_services(dev_launcher):
    """Provides real services with typed clients."""
    manager = RealServicesManager(dev_launcher)
    await manager.start_all_services()

    return RealServiceContext(
        auth_client=await manager.client_factory.create_auth_client(),
        backend_client=await manager.client_factory.create_backend_client(),
        websocket_factory=manager.client_factory.create_websocket_client
    )
