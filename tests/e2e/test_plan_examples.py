"""The plan's example tests, exactly as written, using the plugin's ``real_services`` fixture
in the main test session (real mode: a TestEnvironment in the e2e cluster)."""

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("operator_installed")]


async def test_websocket_auth_flow(real_services):
    # Get auth token
    token = await real_services.auth_client.login("test@example.com", "password")

    # Connect WebSocket
    ws_client = await real_services.websocket_factory(token)
    await ws_client.connect()

    # Test real message flow
    await ws_client.send_chat("Hello")
    response = await ws_client.receive()
    assert response["type"] == "chat_response"


async def test_first_time_user_journey(real_services):
    # Register user
    user = await real_services.auth_client.register(email="new@example.com", password="secure123")

    # Login and get token
    token = await real_services.auth_client.login(user.email, "secure123")

    # Connect WebSocket
    ws = await real_services.websocket_factory(token)
    await ws.connect()

    # Complete onboarding flow
    await ws.send({"type": "onboarding_start"})
    # ... continue journey
