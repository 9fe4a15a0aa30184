"""The integration's side of the MQTT contract, against a real broker and real routers."""

from collections.abc import Callable, Iterator
from datetime import datetime
import json
import logging
from pathlib import Path
import re
from typing import Any

from homeassistant.components.mqtt import client as mqtt_client
from homeassistant.const import STATE_OFF, STATE_ON, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from jsonschema import Draft202012Validator, FormatChecker
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.kitty.const import DOMAIN
from custom_components.kitty.coordinator import KittyCoordinator
from kittyai.catalog import SERVICES, ServiceName
import kittyai.contract
from kittyai.contract import AVAILABILITY, INFO, Availability, ServiceInfo
from tests.helpers.broker import MosquittoBroker
from tests.helpers.services import ServiceProcess
from tests.integration.common import (
    contract_subscribed,
    kitty_entry,
    publish,
    router_info,
    wait_for,
)

SCHEMA_DIR = Path(kittyai.contract.__file__).parent / "schemas" / "v1"
ROUTER_SENSOR = "binary_sensor.kitty_router_connection"
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")

FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _is_rfc3339(value: object) -> bool:
    """Check `date-time` as the schema means it (jsonschema needs an extra package for it)."""
    if not isinstance(value, str):
        return True
    if not RFC3339.fullmatch(value):
        return False
    datetime.fromisoformat(value.upper())
    return True


@pytest.fixture(autouse=True)
def info_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Capture the integration's info logs: online/offline changes are logged there."""
    caplog.set_level(logging.INFO, logger="custom_components.kitty")


@pytest.fixture
def mqtt_router(tmp_path: Path, mqtt_broker: MosquittoBroker) -> Iterator[ServiceProcess]:
    """Run a real router connected to the test's broker."""
    process = ServiceProcess(ServiceName.ROUTER, tmp_path, mqtt_port=mqtt_broker.port)
    process.start()
    yield process
    process.stop()


async def set_up(
    hass: HomeAssistant, router: ServiceProcess
) -> tuple[MockConfigEntry, KittyCoordinator]:
    """Set up KITTY for `router` and return its entry and coordinator."""
    entry = kitty_entry(router)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await contract_subscribed(hass)
    return entry, entry.runtime_data.coordinator


def warnings_about(caplog: pytest.LogCaptureFixture, topic: str) -> int:
    """Count the contract warnings logged about `topic`."""
    return sum(
        record.levelno == logging.WARNING
        and f"on {topic} that breaks the KITTY contract" in record.getMessage()
        for record in caplog.records
    )


def sw_version(hass: HomeAssistant, entry: MockConfigEntry, service: ServiceName) -> str | None:
    """Return the registered software version of a service's device."""
    device = dr.async_get(hass).async_get_device_by_identifier(
        (DOMAIN, f"{entry.unique_id}_{service}"), entry.entry_id
    )
    assert device is not None
    return device.sw_version


@pytest.mark.usefixtures("mqtt_entry")
async def test_router_online_then_last_will(
    hass: HomeAssistant, mqtt_router: ServiceProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """The real router's retained announcements turn it on; its broker-sent will turns it off."""
    info = router_info(mqtt_router)
    entry, coordinator = await set_up(hass, mqtt_router)
    await wait_for(hass, lambda: hass.states.get(ROUTER_SENSOR).state == STATE_ON, "router online")
    assert coordinator.data[ServiceName.ROUTER].info == info
    assert sw_version(hass, entry, ServiceName.ROUTER) == info.version
    assert "KITTY Router is online" in caplog.text

    mqtt_router.kill()
    await wait_for(hass, lambda: hass.states.get(ROUTER_SENSOR).state == STATE_OFF, "the will")
    assert coordinator.data[ServiceName.ROUTER].availability is Availability.OFFLINE
    assert "KITTY Router is offline" in caplog.text


@pytest.mark.usefixtures("mqtt_entry")
async def test_invalid_payloads_change_nothing(
    hass: HomeAssistant, mqtt_router: ServiceProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """Payloads that break the contract are logged once each and leave the status alone."""
    entry, coordinator = await set_up(hass, mqtt_router)
    await wait_for(hass, lambda: hass.states.get(ROUTER_SENSOR).state == STATE_ON, "router online")
    # The router also keeps its stats retained: let them land before taking the snapshot.
    await wait_for(
        hass, lambda: coordinator.data[ServiceName.ROUTER].stats is not None, "router stats"
    )
    before = coordinator.data
    version = sw_version(hass, entry, ServiceName.ROUTER)
    cad_info = router_info(mqtt_router).model_dump(mode="json") | {"service": "cad"}

    # Re-announcements change nothing, and a service this version does not know is
    # skipped quietly. HA's client publishes in order, so once the warnings below
    # arrived, these were handled too.
    await publish(hass, AVAILABILITY.topic(ServiceName.ROUTER), "online")
    await publish(hass, INFO.topic(ServiceName.ROUTER), router_info(mqtt_router).model_dump_json())
    await publish(hass, "kitty/printer/availability", "online")
    await publish(hass, "kitty/printer/info", json.dumps(cad_info | {"service": "printer"}))
    await assert_refused(hass, caplog, INFO.topic(ServiceName.ROUTER), "not json")
    await assert_refused(hass, caplog, INFO.topic(ServiceName.ROUTER), json.dumps(cad_info))
    await assert_refused(hass, caplog, AVAILABILITY.topic(ServiceName.ROUTER), "maybe")

    assert coordinator.data == before
    assert hass.states.get(ROUTER_SENSOR).state == STATE_ON
    assert sw_version(hass, entry, ServiceName.ROUTER) == version
    assert "printer" not in caplog.text
    assert caplog.text.count("KITTY Router is online") == 1


def availability_examples(schema: dict[str, Any]) -> list[str]:
    """Return every availability payload the schema names, plus ones it must refuse."""
    return [*schema["enum"], *schema.get("examples", []), "", "ONLINE", "up"]


def info_examples(schema: dict[str, Any], service: str) -> list[Any]:
    """Return info payloads around the schema's edges, plus the schema's own examples."""
    base = {
        "service": service,
        "instance_id": f"{service}-0123456789",
        "version": "0.1.0",
        "started_at": "2026-10-22T08:00:00Z",
    }
    valid_variants = [
        {},
        {"v": 1},
        {"instance_id": "a" * 8},
        {"instance_id": "b" * 64},
        {"version": "1.2.3.dev4+local"},
        {"started_at": "2026-10-22T10:00:00.123456+02:00"},
    ]
    invalid_variants = [
        {"v": 2},
        {"instance_id": "short"},
        {"instance_id": "c" * 65},
        {"version": ""},
        {"started_at": "yesterday"},
        {"service": "printer"},
        {"extra": True},
    ]
    payloads: list[Any] = [base | variant for variant in valid_variants + invalid_variants]
    payloads.append({key: value for key, value in base.items() if key != "started_at"})
    payloads += [
        example for example in schema.get("examples", []) if example.get("service") == service
    ]
    payloads += [[], "info", None]
    return payloads


def load_schema(name: str) -> Draft202012Validator:
    """Load a committed schema file of the contract."""
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FORMATS)


def status_is(
    coordinator: KittyCoordinator, service: ServiceName, **expected: Any
) -> Callable[[], bool]:
    """Return a check that the stored status of `service` has the `expected` fields."""
    return lambda: all(
        getattr(coordinator.data[service], field) == value for field, value in expected.items()
    )


async def assert_refused(
    hass: HomeAssistant, caplog: pytest.LogCaptureFixture, topic: str, text: str
) -> None:
    """Publish a payload and wait for the one warning that says it was ignored."""
    before = warnings_about(caplog, topic)
    await publish(hass, topic, text)
    await wait_for(hass, lambda: warnings_about(caplog, topic) == before + 1, f"{text!r} refused")


@pytest.mark.usefixtures("mqtt_entry")
async def test_contract_examples(
    hass: HomeAssistant, router: ServiceProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever validates against the committed schemas is accepted, the rest is refused.

    This router has no broker, so the test is the only publisher on the contract topics.
    """
    entry, coordinator = await set_up(hass, router)
    availability_schema = load_schema(AVAILABILITY.name)
    info_schema = load_schema(INFO.name)
    accepted = refused = 0

    for service in SERVICES:
        topic = AVAILABILITY.topic(service)
        for payload in availability_examples(availability_schema.schema):
            if availability_schema.is_valid(payload):
                await publish(hass, topic, payload)
                check = status_is(coordinator, service, availability=Availability(payload))
                await wait_for(hass, check, f"{payload!r} accepted on {topic}")
                accepted += 1
            else:
                await assert_refused(hass, caplog, topic, payload)
                refused += 1

        topic = INFO.topic(service)
        for payload in info_examples(info_schema.schema, service):
            text = json.dumps(payload)
            if info_schema.is_valid(payload):
                await publish(hass, topic, text)
                check = status_is(coordinator, service, info=ServiceInfo.model_validate(payload))
                await wait_for(hass, check, f"{text} accepted on {topic}")
                accepted += 1
            else:
                await assert_refused(hass, caplog, topic, text)
                refused += 1
        # The device follows the version of the last accepted info.
        info = coordinator.data[service].info
        assert info is not None
        assert sw_version(hass, entry, service) == info.version

    # Both sides of the schema were exercised for every service.
    assert accepted >= (2 + 6) * len(SERVICES)
    assert refused >= (3 + 11) * len(SERVICES)


@pytest.mark.usefixtures("mqtt_entry")
async def test_unavailable_while_broker_is_gone(
    hass: HomeAssistant,
    router: ServiceProcess,
    mqtt_broker: MosquittoBroker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cut off from the broker, HA cannot know the services' state: the sensors say so."""
    # HA retries the broker every 10 s; the test does not need to wait that long.
    monkeypatch.setattr(mqtt_client, "RECONNECT_INTERVAL_SECONDS", 0.1)
    await set_up(hass, router)
    assert hass.states.get(ROUTER_SENSOR).state == STATE_OFF

    mqtt_broker.stop()
    await wait_for(
        hass, lambda: hass.states.get(ROUTER_SENSOR).state == STATE_UNAVAILABLE, "unavailable"
    )
    mqtt_broker.start()
    await wait_for(hass, lambda: hass.states.get(ROUTER_SENSOR).state == STATE_OFF, "reconnect")
