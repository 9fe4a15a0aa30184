"""The router's statistics sensors, fed over a real broker with real RouterStats payloads."""

from collections.abc import Iterator
import json
import logging
from pathlib import Path

from homeassistant.components.sensor import (
    ATTR_OPTIONS,
    ATTR_STATE_CLASS,
    SensorDeviceClass,
    SensorStateClass,
)
from homeassistant.const import (
    ATTR_DEVICE_CLASS,
    ATTR_UNIT_OF_MEASUREMENT,
    STATE_UNAVAILABLE,
    STATE_UNKNOWN,
    EntityCategory,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
import pytest
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from custom_components.kitty.const import DOMAIN
from kittyai.catalog import ServiceName
from kittyai.contract import AVAILABILITY, ROUTER_STATS
from kittyai.contract.routing import (
    BudgetState,
    BudgetStatus,
    LastRoute,
    RouteReason,
    RouterStats,
    Tier,
)
from tests.helpers.broker import MosquittoBroker
from tests.helpers.services import ServiceProcess
from tests.integration.common import (
    example_router_stats,
    publish,
    publish_router_stats,
    report_intent_turn,
    set_up_kitty,
    wait_for,
)

AVAILABILITY_TOPIC = AVAILABILITY.topic(ServiceName.ROUTER)
STATS_TOPIC = ROUTER_STATS.topic(ServiceName.ROUTER)

LOCAL_HANDLING = "sensor.kitty_router_local_handling"
P95_LATENCY = "sensor.kitty_router_p95_latency"
COST_TODAY = "sensor.kitty_router_cost_today"
COST_MONTH = "sensor.kitty_router_cost_this_month"
BUDGET_LEFT = "sensor.kitty_router_budget_left"
CACHE_HIT_RATE = "sensor.kitty_router_cache_hit_rate"
LAST_ROUTE = "sensor.kitty_router_last_route"
SENSORS = {
    "local_share": LOCAL_HANDLING,
    "p95_latency": P95_LATENCY,
    "cost_today": COST_TODAY,
    "cost_month": COST_MONTH,
    "budget_left": BUDGET_LEFT,
    "cache_hit_rate": CACHE_HIT_RATE,
    "last_route": LAST_ROUTE,
}

pytestmark = pytest.mark.usefixtures("mqtt_entry")


@pytest.fixture(autouse=True)
def info_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Capture the integration's info logs: the router coming back is logged there."""
    caplog.set_level(logging.INFO, logger="custom_components.kitty")


@pytest.fixture
def mqtt_router(tmp_path: Path, mqtt_broker: MosquittoBroker) -> Iterator[ServiceProcess]:
    """Run a real router connected to the test's broker: it publishes its own stats."""
    process = ServiceProcess(ServiceName.ROUTER, tmp_path, mqtt_port=mqtt_broker.port)
    process.start()
    yield process
    process.stop()


def state(hass: HomeAssistant, entity_id: str) -> str:
    """Return the state of an entity that must exist."""
    current = hass.states.get(entity_id)
    assert current is not None, f"{entity_id} does not exist"
    return current.state


def all_states(hass: HomeAssistant) -> set[str]:
    """Return the set of states the router's sensors are in."""
    return {state(hass, entity_id) for entity_id in SENSORS.values()}


def router_logs(caplog: pytest.LogCaptureFixture, level: int, text: str) -> int:
    """Count the records at `level` that say `text`."""
    return sum(record.levelno == level and record.getMessage() == text for record in caplog.records)


def contract_warnings(caplog: pytest.LogCaptureFixture) -> int:
    """Count the warnings about stats payloads that break the contract."""
    return sum(
        record.levelno == logging.WARNING
        and f"on {STATS_TOPIC} that breaks the KITTY contract" in record.getMessage()
        for record in caplog.records
    )


async def router_sends(hass: HomeAssistant, stats: RouterStats) -> None:
    """Announce the router online with `stats` and wait until the sensors show them."""
    await publish(hass, AVAILABILITY_TOPIC, "online")
    await publish_router_stats(hass, stats)
    await wait_for(
        hass,
        lambda: hass.states.get(COST_MONTH).state == str(stats.cost_month_usd),
        "the statistics to arrive",
    )


async def test_sensors_show_the_router_stats(
    hass: HomeAssistant,
    router: ServiceProcess,
    entity_registry: er.EntityRegistry,
    device_registry: dr.DeviceRegistry,
) -> None:
    """Every figure of the stats shows on the router's device, with its unit and class."""
    entry = await set_up_kitty(hass, router)
    # This router has no broker: nothing is known until the test publishes.
    assert all_states(hass) == {STATE_UNAVAILABLE}

    await router_sends(hass, example_router_stats())

    expected = {
        LOCAL_HANDLING: ("87.5", "%", None, SensorStateClass.MEASUREMENT),
        P95_LATENCY: ("1834.5", "ms", SensorDeviceClass.DURATION, SensorStateClass.MEASUREMENT),
        COST_TODAY: ("0.42", "USD", SensorDeviceClass.MONETARY, SensorStateClass.TOTAL),
        COST_MONTH: ("3.5", "USD", SensorDeviceClass.MONETARY, SensorStateClass.TOTAL),
        BUDGET_LEFT: ("6.5", "USD", SensorDeviceClass.MONETARY, None),
        CACHE_HIT_RATE: ("25.0", "%", None, SensorStateClass.MEASUREMENT),
        LAST_ROUTE: ("local", None, SensorDeviceClass.ENUM, None),
    }
    for entity_id, (value, unit, device_class, state_class) in expected.items():
        current = hass.states.get(entity_id)
        assert current is not None
        assert current.state == value, entity_id
        assert current.attributes.get(ATTR_UNIT_OF_MEASUREMENT) == unit, entity_id
        assert current.attributes.get(ATTR_DEVICE_CLASS) == device_class, entity_id
        assert current.attributes.get(ATTR_STATE_CLASS) == state_class, entity_id

    # The costs restart with the UTC day and month the router counts them in.
    assert hass.states.get(COST_TODAY).attributes["last_reset"] == "2026-10-22T00:00:00+00:00"
    assert hass.states.get(COST_MONTH).attributes["last_reset"] == "2026-10-01T00:00:00+00:00"
    last_route = hass.states.get(LAST_ROUTE).attributes
    assert last_route[ATTR_OPTIONS] == ["intent", "cache", "local", "search", "cloud"]
    assert last_route["backend"] == "ollama"
    assert last_route["reason"] == "confident"
    assert last_route["at"].isoformat() == "2026-10-22T14:30:00+00:00"

    router_device = device_registry.async_get_device_by_identifier(
        (DOMAIN, f"{entry.unique_id}_router"), entry.entry_id
    )
    assert router_device is not None
    for key, entity_id in SENSORS.items():
        registered = entity_registry.async_get(entity_id)
        assert registered is not None
        assert registered.unique_id == f"{entry.unique_id}_router_{key}"
        assert registered.device_id == router_device.id
        assert registered.translation_key == key
        diagnostic = key in {"p95_latency", "cache_hit_rate"}
        assert (registered.entity_category is EntityCategory.DIAGNOSTIC) is diagnostic, key


async def test_new_stats_replace_the_old(hass: HomeAssistant, router: ServiceProcess) -> None:
    """The retained stats are re-sent after each turn; the sensors follow each one."""
    await set_up_kitty(hass, router)
    await router_sends(hass, example_router_stats())

    later = example_router_stats(
        decisions=41,
        local_share=0.8,
        cost_month_usd=3.61,
        cost_today_usd=0.53,
        last_route=LastRoute(
            at=example_router_stats().at,
            tier=Tier.CLOUD,
            backend="openai",
            reason=RouteReason.LOW_CONFIDENCE,
        ),
    )
    await router_sends(hass, later)

    assert state(hass, LOCAL_HANDLING) == "80.0"
    assert state(hass, COST_TODAY) == "0.53"
    assert state(hass, LAST_ROUTE) == "cloud"
    assert hass.states.get(LAST_ROUTE).attributes["backend"] == "openai"
    assert hass.states.get(LAST_ROUTE).attributes["reason"] == "low_confidence"


async def test_unknown_until_the_router_has_figures(
    hass: HomeAssistant, router: ServiceProcess
) -> None:
    """A router without turns or without a hard global budget has no figure: unknown."""
    await set_up_kitty(hass, router)

    await router_sends(
        hass,
        example_router_stats(
            decisions=0,
            local_share=None,
            cache_hit_rate=None,
            p95_latency_ms=None,
            latency={},
            cost_today_usd=0.0,
            cost_month_usd=0.0,
            # Only a soft budget: nothing is blocked, so nothing is "left".
            budgets=[
                BudgetStatus(
                    scope="global",
                    period="daily",
                    spent_usd=0.0,
                    soft_usd=1.0,
                    state=BudgetState.OK,
                )
            ],
            budget_left_usd=None,
            last_route=None,
        ),
    )

    for entity_id in (LOCAL_HANDLING, P95_LATENCY, BUDGET_LEFT, CACHE_HIT_RATE, LAST_ROUTE):
        assert state(hass, entity_id) == STATE_UNKNOWN, entity_id
    assert state(hass, COST_TODAY) == "0.0"
    assert "backend" not in hass.states.get(LAST_ROUTE).attributes


async def test_unavailable_while_the_router_is_offline(
    hass: HomeAssistant, router: ServiceProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """Offline, the retained stats are stale: unavailable, logged once; back, logged once."""
    await set_up_kitty(hass, router)
    await router_sends(hass, example_router_stats())
    assert STATE_UNAVAILABLE not in all_states(hass)

    await publish(hass, AVAILABILITY_TOPIC, "offline")
    await wait_for(hass, lambda: all_states(hass) == {STATE_UNAVAILABLE}, "unavailable")
    # The router (or the broker, for its will) may repeat itself: still one line.
    await publish(hass, AVAILABILITY_TOPIC, "offline")

    await publish(hass, AVAILABILITY_TOPIC, "online")
    await wait_for(hass, lambda: STATE_UNAVAILABLE not in all_states(hass), "available again")
    assert state(hass, COST_MONTH) == "3.5"
    assert router_logs(caplog, logging.WARNING, "KITTY Router is offline") == 1
    # Once when first seen online, once when back.
    assert router_logs(caplog, logging.INFO, "KITTY Router is online") == 2


async def test_online_without_stats_stays_unavailable(
    hass: HomeAssistant, router: ServiceProcess
) -> None:
    """A router that is online but sent no stats yet has nothing to show."""
    entry = await set_up_kitty(hass, router)

    await publish(hass, AVAILABILITY_TOPIC, "online")
    await wait_for(
        hass,
        lambda: entry.runtime_data.coordinator.data[ServiceName.ROUTER].online,
        "the router online",
    )

    assert all_states(hass) == {STATE_UNAVAILABLE}


async def test_invalid_stats_are_ignored(
    hass: HomeAssistant, router: ServiceProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """Stats that break the contract are logged once each and change no sensor."""
    entry = await set_up_kitty(hass, router)
    good = example_router_stats()
    await router_sends(hass, good)
    before = {entity_id: hass.states.get(entity_id) for entity_id in SENSORS.values()}

    valid = good.model_dump(mode="json")
    for payload in (
        "not json",
        "{}",
        # A future contract version, an unknown field, a negative cost, an unknown tier.
        json.dumps(valid | {"v": 2}),
        json.dumps(valid | {"surprise": True}),
        json.dumps(valid | {"cost_today_usd": -1}),
        json.dumps(valid | {"last_route": valid["last_route"] | {"tier": "moon"}}),
    ):
        expected = contract_warnings(caplog) + 1
        await publish(hass, STATS_TOPIC, payload)
        await wait_for(
            hass,
            lambda expected=expected: contract_warnings(caplog) == expected,
            f"{payload!r} refused",
        )

    assert entry.runtime_data.coordinator.data[ServiceName.ROUTER].stats == good
    assert {entity_id: hass.states.get(entity_id) for entity_id in SENSORS.values()} == before


async def test_the_real_router_feeds_the_sensors(
    hass: HomeAssistant, mqtt_router: ServiceProcess
) -> None:
    """A turn reported to the real router shows in the sensors; its will makes them stale."""
    await set_up_kitty(hass, mqtt_router)
    await wait_for(hass, lambda: STATE_UNAVAILABLE not in all_states(hass), "the first stats")

    report_intent_turn(mqtt_router)
    await wait_for(hass, lambda: state(hass, LAST_ROUTE) == "intent", "the turn in the stats")
    assert state(hass, LOCAL_HANDLING) == "100.0"
    assert state(hass, COST_TODAY) == "0.0"

    mqtt_router.kill()
    await wait_for(hass, lambda: all_states(hass) == {STATE_UNAVAILABLE}, "the will")


async def test_diagnostics_include_the_stats(
    hass: HomeAssistant, hass_client: ClientSessionGenerator, router: ServiceProcess
) -> None:
    """The downloaded diagnostics hold the latest stats, as the router sent them."""
    entry = await set_up_kitty(hass, router)
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)
    assert diagnostics["router_stats"] is None

    stats = example_router_stats()
    await router_sends(hass, stats)
    diagnostics = await get_diagnostics_for_config_entry(hass, hass_client, entry)

    assert RouterStats.model_validate(diagnostics["router_stats"]) == stats
    assert router.token not in json.dumps(diagnostics)
