"""The MQTT contract seen from the service side: real payloads against the schema files."""

import asyncio
from datetime import datetime
import json
import re
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
import pytest

from kittyai.catalog import ServiceName
from kittyai.contract import AVAILABILITY, TOPICS, TopicSpec
from kittyai.contract.schema import SCHEMA_DIR, render, schema_path
from tests.helpers.broker import MosquittoBroker
from tests.lib.conftest import StartService
from tests.lib.mqtt_probe import MqttProbe, on, text

# jsonschema checks "date-time" only with an optional package; check RFC 3339 here.
FORMATS = FormatChecker()
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


@FORMATS.checks("date-time", raises=ValueError)
def _is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _RFC3339.fullmatch(value):
        raise ValueError(f"{value!r} is not an RFC 3339 date-time")
    datetime.fromisoformat(value)
    return True


def validator(spec: TopicSpec) -> Draft202012Validator:
    schema = json.loads(schema_path(spec).read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=FORMATS)


def as_instance(spec: TopicSpec, payload: str) -> Any:
    """String payloads (availability) travel as raw text; models travel as JSON."""
    schema = json.loads(schema_path(spec).read_text(encoding="utf-8"))
    return payload if schema.get("type") == "string" else json.loads(payload)


@pytest.mark.parametrize("spec", TOPICS, ids=lambda spec: spec.name)
def test_committed_schema_files_match_the_code(spec: TopicSpec) -> None:
    assert schema_path(spec).read_text(encoding="utf-8") == render(spec), (
        "run `python -m kittyai.contract` and commit the result"
    )


def test_no_stale_schema_files() -> None:
    assert sorted(SCHEMA_DIR.glob("*.json")) == sorted(schema_path(spec) for spec in TOPICS)


def test_the_date_time_check_is_active() -> None:
    assert not FORMATS.conforms("2026-01-01 12:00", "date-time")
    assert FORMATS.conforms("2026-01-01T12:00:00.5Z", "date-time")


async def test_every_payload_a_service_publishes_validates(
    mqtt_broker: MosquittoBroker, start_service: StartService
) -> None:
    service = ServiceName.ORCHESTRATOR
    async with MqttProbe(mqtt_broker.port, f"kitty/{service}/#", retain_as_published=True) as probe:
        orchestrator = await start_service(service)
        await probe.expect(on(AVAILABILITY.topic(service), "online"))
        await asyncio.to_thread(orchestrator.stop)
        await probe.expect(on(AVAILABILITY.topic(service), "offline"))

    seen = set()
    for message in probe.messages:
        spec = spec_of(message.topic.value)
        assert (message.qos, message.retain) == (spec.qos, spec.retain), message.topic
        validator(spec).validate(as_instance(spec, text(message)))
        seen.add(spec.name)
    # The router's own topics are checked with the router's tests; an idle
    # orchestrator has its run statistics and no run events.
    assert seen == {spec.name for spec in TOPICS if "{service}" in spec.pattern} | {"run_stats"}


def spec_of(topic: str) -> TopicSpec:
    """Return the contract topic whose pattern `topic` is an instance of."""
    matching = [
        spec
        for spec in TOPICS
        if re.fullmatch(re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(spec.pattern)), topic)
    ]
    assert len(matching) == 1, topic
    return matching[0]
