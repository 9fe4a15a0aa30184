"""JSON schema export of the MQTT contract."""

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kittyai.contract import CONTRACT_VERSION, TOPICS, TopicSpec

SCHEMA_DIR = Path(__file__).parent / "schemas" / f"v{CONTRACT_VERSION}"


def topic_schema(spec: TopicSpec) -> dict[str, Any]:
    """Return the JSON schema of one topic's payload, with its topic and delivery."""
    if isinstance(spec.payload, type) and issubclass(spec.payload, BaseModel):
        schema = spec.payload.model_json_schema()
    else:
        schema = {"type": "string", "enum": [member.value for member in spec.payload]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"kitty/v{CONTRACT_VERSION}/{spec.name}.schema.json",
        "x-kitty-topic": spec.pattern,
        "x-kitty-qos": spec.qos,
        "x-kitty-retain": spec.retain,
        "description": spec.description,
        **schema,
    }


def render(spec: TopicSpec) -> str:
    """Return the schema file text for one topic."""
    return json.dumps(topic_schema(spec), indent=2, sort_keys=True) + "\n"


def schema_path(spec: TopicSpec) -> Path:
    """Return where the schema of one topic is stored."""
    return SCHEMA_DIR / f"{spec.name}.schema.json"


def write_all() -> list[Path]:
    """Write every topic's schema file and return their paths."""
    SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in TOPICS:
        path = schema_path(spec)
        path.write_text(render(spec), encoding="utf-8")
        paths.append(path)
    return paths
