"""The KITTY dashboard uses core cards only and loads the way its README says."""

from collections.abc import Iterator
from pathlib import Path
import re
import shutil
from typing import Any

from homeassistant.components.lovelace import CONFIG_SCHEMA
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component
from homeassistant.util.yaml import load_yaml_dict
import pytest
from pytest_homeassistant_custom_component.typing import WebSocketGenerator
import yaml

DASHBOARDS = Path(__file__).parents[2] / "dashboards"
DASHBOARD = DASHBOARDS / "kitty.yaml"

# Cards that ship with Home Assistant: the dashboard must work without HACS.
CORE_CARDS = frozenset(
    {
        "entities",
        "entity-filter",
        "glance",
        "markdown",
        "tile",
        "vertical-stack",
        "horizontal-stack",
        "grid",
        "history-graph",
        "statistic",
    }
)
# The connection sensors of the KITTY integration, one per service.
CONNECTION_SENSORS = {
    "binary_sensor.kitty_router_connection",
    "binary_sensor.kitty_knowledge_connection",
    "binary_sensor.kitty_cad_connection",
    "binary_sensor.kitty_orchestrator_connection",
}


def _cards(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield every card below a view, section or card, stacks included."""
    for section in node.get("sections", []):
        yield from _cards(section)
    # Stacks and grids hold cards; entity-filter wraps one card.
    for card in [*node.get("cards", []), *filter(None, [node.get("card")])]:
        yield card
        yield from _cards(card)


def _entities(card: dict[str, Any]) -> set[str]:
    listed = [card.get("entity"), *card.get("entities", [])]
    return {item["entity"] if isinstance(item, dict) else item for item in listed if item}


def _readme_config() -> dict[str, Any]:
    block = re.search(r"```yaml\n(.*?)```", (DASHBOARDS / "README.md").read_text(), re.DOTALL)
    assert block is not None, "README.md shows no configuration.yaml snippet"
    return yaml.safe_load(re.sub(r"^ {3}", "", block[1], flags=re.MULTILINE))


def test_dashboard_uses_core_cards_and_kitty_sensors() -> None:
    # Loaded the way Home Assistant loads a YAML dashboard.
    dashboard = load_yaml_dict(DASHBOARD)
    cards = [card for view in dashboard["views"] for card in _cards(view)]
    assert cards
    assert {card["type"] for card in cards} <= CORE_CARDS
    assert set().union(*map(_entities, cards)) == CONNECTION_SENSORS


def test_readme_snippet_is_valid_configuration() -> None:
    config = CONFIG_SCHEMA(_readme_config())
    (dashboard,) = config["lovelace"]["dashboards"].values()
    assert dashboard["filename"] == "dashboards/kitty.yaml"


@pytest.fixture
def hass_config_dir(hass_tmp_config_dir: str) -> str:
    """Give Home Assistant a config dir with the dashboard where README puts it."""
    folder = Path(hass_tmp_config_dir) / "dashboards"
    folder.mkdir()
    shutil.copy(DASHBOARD, folder)
    return hass_tmp_config_dir


async def test_home_assistant_serves_the_dashboard(
    hass: HomeAssistant, hass_ws_client: WebSocketGenerator
) -> None:
    config = _readme_config()
    assert await async_setup_component(hass, "lovelace", config)
    (url_path,) = config["lovelace"]["dashboards"]
    client = await hass_ws_client(hass)
    await client.send_json_auto_id({"type": "lovelace/config", "url_path": url_path})
    response = await client.receive_json()
    assert response["success"], response
    assert response["result"] == load_yaml_dict(DASHBOARD)
