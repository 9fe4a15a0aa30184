"""A phone for blueprint tests: Home Assistant's own mobile_app, and where its pushes land.

The phone registers over Home Assistant's HTTP API as the companion app does; its
push notifications go to a small push server here (the relay between Home
Assistant and the phone), and its button taps come back through its webhook.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Self

from aiohttp import web
from aiohttp.test_utils import TestClient
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.setup import async_setup_component
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

PHONE_NAME = "Workshop phone"
PUSH_TOKEN = "workshop-phone-token"


async def settle() -> None:
    """Let Home Assistant do what it can do now (event loop work, no network).

    A run waiting for a button is a task `async_block_till_done` would wait for.
    """
    for _ in range(100):
        await asyncio.sleep(0)


@dataclass
class PushServer:
    """Receives the push notifications Home Assistant sends to the phone."""

    notifications: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    @classmethod
    @asynccontextmanager
    async def serving(cls) -> AsyncIterator[Self]:
        """Serve on a free port of 127.0.0.1 while entered."""
        server = cls()
        app = web.Application()
        app.router.add_post("/push", server._push)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        server.url = f"http://{host}:{port}/push"
        try:
            yield server
        finally:
            await runner.cleanup()

    async def _push(self, request: web.Request) -> web.Response:
        self.notifications.append(await request.json())
        return web.json_response({}, status=HTTPStatus.CREATED)


@dataclass
class Phone:
    """A phone registered with Home Assistant's mobile_app integration."""

    device_id: str
    webhook_id: str
    client: TestClient

    async def tap(self, action: str) -> None:
        """Tap a notification button: the app fires the action event through its webhook."""
        response = await self.client.post(
            f"/api/webhook/{self.webhook_id}",
            json={
                "type": "fire_event",
                "data": {
                    "event_type": "mobile_app_notification_action",
                    "event_data": {"action": action},
                },
            },
        )
        assert response.status == HTTPStatus.OK
        await settle()


async def register_phone(
    hass: HomeAssistant, hass_client: ClientSessionGenerator, push: PushServer
) -> Phone:
    """Register the workshop's Android phone, pushing to `push`, as a signed-in user."""
    assert await async_setup_component(hass, "mobile_app", {})
    # mobile_app sets up notify (and its views) in the background; the client's
    # server freezes the views, so let it finish first.
    await hass.async_block_till_done()
    client = await hass_client()
    response = await client.post(
        "/api/mobile_app/registrations",
        json={
            "app_id": "io.homeassistant.companion.android",
            "app_name": "Home Assistant",
            "app_version": "2026.10.0",
            "device_id": "workshop-phone",
            "device_name": PHONE_NAME,
            "manufacturer": "Google",
            "model": "Pixel 9",
            "os_name": "Android",
            "os_version": "16",
            "supports_encryption": False,
            "app_data": {"push_token": PUSH_TOKEN, "push_url": push.url},
        },
    )
    assert response.status == HTTPStatus.CREATED
    webhook_id = (await response.json())["webhook_id"]
    await hass.async_block_till_done()
    assert hass.services.has_service("notify", "mobile_app_workshop_phone")
    (entry,) = hass.config_entries.async_entries("mobile_app")
    device = dr.async_get(hass).async_get_device_by_identifier(
        ("mobile_app", "workshop-phone"), entry.entry_id
    )
    assert device is not None
    return Phone(device.id, webhook_id, client)
