"""Helpers of the integration tests."""

import asyncio
from collections.abc import Callable
import urllib.request

from homeassistant.components import mqtt
from homeassistant.const import CONF_TOKEN, CONF_URL
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.kitty.const import DOMAIN, NAME
from kittyai.contract import AVAILABILITY, INFO, ServiceInfo
from tests.helpers.services import ServiceProcess


def router_info(router: ServiceProcess) -> ServiceInfo:
    """Ask a running router who it is, over its real HTTP API."""
    request = urllib.request.Request(
        f"{router.url}/api/info", headers={"Authorization": f"Bearer {router.token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return ServiceInfo.model_validate_json(response.read())


def kitty_entry(
    router: ServiceProcess, *, url: str | None = None, token: str | None = None
) -> MockConfigEntry:
    """Return an entry for `router` as the config flow makes it; override url or token."""
    return MockConfigEntry(
        domain=DOMAIN,
        title=NAME,
        unique_id=router_info(router).instance_id,
        data={CONF_URL: url or router.url, CONF_TOKEN: token or router.token},
    )


async def wait_for(
    hass: HomeAssistant, condition: Callable[[], bool], what: str, within: float = 15.0
) -> None:
    """Let HA run until `condition` holds: real peers answer in their own time."""
    try:
        async with asyncio.timeout(within):
            while not condition():
                await asyncio.sleep(0.02)
                await hass.async_block_till_done()
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def publish(hass: HomeAssistant, topic: str, payload: str) -> None:
    """Publish through HA's MQTT client and the real broker, like any other publisher."""
    await mqtt.async_publish(hass, topic, payload, qos=1, retain=False)


async def contract_subscribed(hass: HomeAssistant) -> None:
    """Wait until the broker confirmed KITTY's subscriptions: messages sent before are lost."""
    for spec in (AVAILABILITY, INFO):
        done = asyncio.Event()
        stop = mqtt.async_on_subscribe_done(hass, spec.wildcard, spec.qos, done.set)
        try:
            async with asyncio.timeout(10):
                await done.wait()
        finally:
            stop()
