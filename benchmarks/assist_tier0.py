"""How long a device command takes through KITTY's agent at tier 0, against HA's own agent.

"Turn on the workshop lights" (and off again) goes through Home Assistant's real
conversation API, in HA's real test harness, to two agents side by side:

- KITTY's agent: HA's strict intent matching handles it (tier 0), the light switches,
  and the turn is reported to a real router process (`POST /api/routing/decisions`,
  recorded in its SQLite log) before the answer returns;
- HA's built-in agent (`conversation.home_assistant`), the peer, on the same sentence.

Goal from the router issue: a tier-0 turn under 50 ms at p95.

    .venv/bin/python -m benchmarks.assist_tier0 [--turns 300]

It runs as a pytest module so it can use HA's harness; it is not part of the suite.
"""

# ruff: noqa: E402 - pytest must start before Home Assistant is imported: it patches HA.
import argparse
import os
from pathlib import Path
import sys

import pytest

TURNS_ENV = "KITTY_BENCH_TURNS"

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    os.environ[TURNS_ENV] = str(parser.parse_args().turns)
    sys.exit(
        pytest.main(
            [
                str(Path(__file__).resolve()),
                "-q",
                "-s",
                "-p",
                "no:cacheprovider",
                f"--rootdir={Path(__file__).resolve().parent.parent}",
            ]
        )
    )

import asyncio
from collections.abc import Iterator
import time

from homeassistant.components import conversation
from homeassistant.const import STATE_OFF, STATE_ON
from homeassistant.core import Context, HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

# HA binds `custom_components` to the first copy imported: import ours first.
import custom_components.kitty  # noqa: F401
from tests.conftest import allow_loopback_sockets, mqtt_broker  # noqa: F401 - fixtures
from tests.helpers.services import ServiceProcess
from tests.integration.common import (
    WORKSHOP_LIGHTS,
    kitty_agent_entry,
    run_router,
    set_up_workshop,
)
from tests.integration.conftest import core, mqtt_entry  # noqa: F401 - fixtures

KITTY_AGENT = "conversation.kitty"
HA_AGENT = conversation.HOME_ASSISTANT_AGENT
WARMUP_TURNS = 20
GOAL_P95_MS = 50.0


@pytest.fixture
def router(tmp_path: Path) -> Iterator[ServiceProcess]:
    """A real router; tier 0 never asks a model, so it needs no backends."""
    yield from run_router(tmp_path)


def percentile(values: list[float], q: float) -> float:
    """Return the nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def test_tier0_turn_latency(
    hass: HomeAssistant,
    mqtt_entry: MockConfigEntry,  # noqa: F811 - the fixture
    router: ServiceProcess,
) -> None:
    """Time the same device commands through both agents, interleaved."""
    turns = int(os.environ.get(TURNS_ENV, "300"))
    await set_up_workshop(hass)
    entry = kitty_agent_entry(router)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    timings: dict[str, list[float]] = {KITTY_AGENT: [], HA_AGENT: []}

    for index in range(WARMUP_TURNS + turns):
        for agent in (KITTY_AGENT, HA_AGENT):
            on = index % 2 == 0
            text = f"turn {'on' if on else 'off'} the workshop lights"
            started = time.perf_counter()
            result = await conversation.async_converse(hass, text, None, Context(), agent_id=agent)
            elapsed = (time.perf_counter() - started) * 1000
            assert result.response.response_type.value == "action_done", result
            assert hass.states.get(WORKSHOP_LIGHTS).state == (STATE_ON if on else STATE_OFF)
            if index >= WARMUP_TURNS:
                timings[agent].append(elapsed)
        await asyncio.sleep(0)

    kitty, peer = timings[KITTY_AGENT], timings[HA_AGENT]
    print(f"\ntier-0 device commands through HA's conversation API, {turns} turns per agent")
    for name, values in (("KITTY agent (tier 0 + router log)", kitty), ("HA's own agent", peer)):
        print(
            f"  {name:36s} p50 {percentile(values, 0.5):6.2f} ms"
            f"  p95 {percentile(values, 0.95):6.2f} ms  max {max(values):6.2f} ms"
        )
    print(
        f"  ratio KITTY / HA  p50 {percentile(kitty, 0.5) / percentile(peer, 0.5):.2f}"
        f"  p95 {percentile(kitty, 0.95) / percentile(peer, 0.95):.2f}"
    )
    met = percentile(kitty, 0.95) < GOAL_P95_MS
    print(f"  goal p95 < {GOAL_P95_MS:.0f} ms: {'met' if met else 'NOT met'}")
