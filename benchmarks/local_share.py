"""Local share and escalation quality of KITTY's routing on 225 labelled workshop queries.

`benchmarks/data/workshop_queries.jsonl` labels each query with the tier that should
answer it: `intent` (a device command), `local`, `search` (fresh facts) or `cloud`.

- Tier 0 is decided as Home Assistant decides it: hassil's strict matching of HA's
  English intent sentences against a workshop's exposed entities (name, domain and
  area, as HA's default agent passes them), action intents only (KITTY's agent has
  `CONTROL`, so HA hands `HassGetState` to the model).
- Every other query goes, as one user turn with a short system prompt, through a real
  router process (`kitty-auto`, default threshold and cache) whose local backend is
  the real local model (Gemma 3 270M on llama.cpp, from `.venv-llm`) and whose cloud
  and search backends are protocol-faithful fakes.

It prints the local share, the escalation precision and recall against the labels,
per category, side by side with baselines on the same data: always local, always
cloud, and a random router escalating as often as KITTY did.

    .venv/bin/python -m benchmarks.local_share [--limit N]
"""

import argparse
import asyncio
from collections import Counter, defaultdict
from dataclasses import dataclass
import json
from pathlib import Path
import tempfile

import aiohttp
from hassil import Intents, recognize
from hassil.expression import TextChunk
from hassil.intents import TextSlotList, TextSlotValue
from home_assistant_intents import get_intents

from kittyai.catalog import ServiceName
from kittyai.contract.routing import RoutingDecision
from kittyai.router.calibration import threshold_for_share
from tests.helpers.fake_llm import FakeOpenAI, ScriptedReply
from tests.helpers.llama import LlamaServer
from tests.helpers.services import ServiceProcess

QUERIES = Path(__file__).parent / "data" / "workshop_queries.jsonl"
SYSTEM_PROMPT = (
    "You are KITTY, the voice assistant of a home workshop. Answer in one or two sentences."
)
# HA's pipeline hands these to an agent that controls the house (CONTROL): not tier 0.
NOT_ACTIONS = frozenset({"HassGetState", "HassMediaSearchAndPlay", "HassNevermind"})
ESCALATED = frozenset({"search", "cloud"})
# The workshop's exposed entities: name, domain, area.
ENTITIES = [
    ("workshop lights", "light", "workshop"),
    ("bench lamp", "light", "workshop"),
    ("pegboard lights", "light", "workshop"),
    ("garage lights", "light", "garage"),
    ("shop door", "lock", "workshop"),
    ("tool cabinet", "lock", "workshop"),
    ("garage door", "cover", "garage"),
    ("roller shutter", "cover", "garage"),
    ("workshop blinds", "cover", "workshop"),
    ("dust collector", "switch", "workshop"),
    ("air compressor", "switch", "garage"),
    ("3D printer", "switch", "workshop"),
    ("resin printer", "switch", "workshop"),
    ("soldering station", "switch", "workshop"),
    ("shop vac", "switch", "workshop"),
    ("laser cutter extractor", "switch", "workshop"),
    ("bench power supply", "switch", "workshop"),
    ("garage heater", "switch", "garage"),
    ("exhaust fan", "fan", "workshop"),
    ("paint booth fan", "fan", "workshop"),
    ("air purifier", "fan", "workshop"),
    ("workshop thermostat", "climate", "workshop"),
    ("robot vacuum", "vacuum", "workshop"),
    ("workshop speaker", "media_player", "workshop"),
    ("water valve", "valve", "garage"),
    ("air valve", "valve", "workshop"),
    ("dehumidifier", "humidifier", "workshop"),
    ("soldering scene", "scene", "workshop"),
]
AREAS = ("workshop", "garage", "office")


@dataclass(slots=True)
class Outcome:
    """How one query was routed."""

    text: str
    category: str
    expected: str
    tier: str
    confidence: float | None


def tier0_recognizer() -> tuple[Intents, dict[str, TextSlotList]]:
    """Return HA's English intents and the workshop's slot lists."""
    intents = Intents.from_dict(get_intents("en"))
    names = TextSlotList(
        name="name",
        values=[
            TextSlotValue(TextChunk(name), name, context={"domain": domain, "area": area})
            for name, domain, area in ENTITIES
        ],
    )
    areas = TextSlotList.from_strings(AREAS, name="area")
    return intents, {"name": names, "area": areas, "floor": TextSlotList(name="floor", values=[])}


def handled_at_tier0(text: str, intents: Intents, slots: dict[str, TextSlotList]) -> bool:
    """Return whether HA's strict intent matching would carry out `text` itself."""
    result = recognize(text, intents, slot_lists=slots)
    return result is not None and result.intent.name not in NOT_ACTIONS


async def route_all(queries: list[dict[str, str]], workdir: Path) -> list[Outcome]:
    """Route every query; tier 0 locally, the rest through a real router."""
    intents, slots = tier0_recognizer()
    llama = LlamaServer(workdir)
    await asyncio.to_thread(llama.start)
    cloud = FakeOpenAI(api_key="sk-bench-cloud-0000000000")
    search = FakeOpenAI(api_key="pplx-bench-0000000000", perplexity=True)
    cloud.respond_with(lambda _body: ScriptedReply(content="A careful cloud answer."))
    search.respond_with(lambda _body: ScriptedReply(content="A fresh answer.", citations=["x"]))
    outcomes: list[Outcome] = []
    async with cloud, search, aiohttp.ClientSession() as session:
        router = ServiceProcess(
            ServiceName.ROUTER,
            workdir,
            mqtt_port=None,
            extra_options={
                "log_level": "warning",
                "backends": [
                    {
                        "name": "gemma",
                        "kind": "openai_compatible",
                        "url": llama.url,
                        "model": llama.model,
                        "timeout": 120,
                    },
                    {
                        "name": "cloud",
                        "kind": "openai",
                        "url": cloud.url,
                        "model": "gpt-5-mini",
                        "api_key": "sk-bench-cloud-0000000000",
                        "price_input": 0.25,
                        "price_output": 2.0,
                    },
                    {
                        "name": "search",
                        "kind": "perplexity",
                        "url": search.url,
                        "model": "sonar",
                        "api_key": "pplx-bench-0000000000",
                        "price_input": 1.0,
                        "price_output": 1.0,
                        "price_per_request": 0.005,
                    },
                ],
            },
        )
        await asyncio.to_thread(router.start, 60.0)
        try:
            for number, query in enumerate(queries, start=1):
                if handled_at_tier0(query["text"], intents, slots):
                    outcomes.append(Outcome(**query, tier="intent", confidence=None))
                    continue
                decision = await ask(session, router, query["text"])
                outcomes.append(
                    Outcome(**query, tier=decision.tier.value, confidence=decision.confidence)
                )
                if number % 25 == 0:
                    print(f"  {number}/{len(queries)} routed")
        finally:
            await asyncio.to_thread(router.stop)
            await asyncio.to_thread(llama.stop)
    return outcomes


async def ask(session: aiohttp.ClientSession, router: ServiceProcess, text: str) -> RoutingDecision:
    """Send one turn to the router and return its decision."""
    body = {
        "model": "kitty-auto",
        "max_tokens": 48,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": text},
        ],
    }
    async with session.post(
        f"{router.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {router.token}"},
    ) as response:
        answer = await response.json()
    return RoutingDecision.model_validate(answer["kitty"])


def precision_recall(predicted: list[bool], actual: list[bool]) -> tuple[float, float]:
    """Return the precision and recall of `predicted` against `actual`."""
    hits = sum(p and a for p, a in zip(predicted, actual, strict=True))
    precision = hits / sum(predicted) if any(predicted) else 0.0
    recall = hits / sum(actual) if any(actual) else 0.0
    return precision, recall


def report(outcomes: list[Outcome]) -> None:
    """Print the figures and the baselines."""
    total = len(outcomes)
    local = sum(o.tier in {"intent", "cache", "local"} for o in outcomes)
    should = [o.expected in ESCALATED for o in outcomes]
    did = [o.tier in ESCALATED for o in outcomes]
    precision, recall = precision_recall(did, should)
    base_rate = sum(should) / total
    escalation_rate = sum(did) / total

    print(f"\n{total} queries: {dict(Counter(o.tier for o in outcomes))}")
    print(f"{'router':34s} {'local share':>12s} {'esc. precision':>15s} {'esc. recall':>12s}")
    print(f"{'KITTY (kitty-auto)':34s} {local / total:12.1%} {precision:15.1%} {recall:12.1%}")
    print(f"{'always local':34s} {1:12.1%} {'-':>15s} {0:12.1%}")
    print(f"{'always cloud':34s} {0:12.1%} {base_rate:15.1%} {1:12.1%}")
    print(
        f"{'random, same escalation rate':34s} {1 - escalation_rate:12.1%}"
        f" {base_rate:15.1%} {escalation_rate:12.1%}"
    )
    if base_rate:
        print(f"escalation precision, KITTY / random: {precision / base_rate:.2f}")

    fresh_p, fresh_r = precision_recall(
        [o.tier == "search" for o in outcomes], [o.expected == "search" for o in outcomes]
    )
    print(f"freshness detector (search): precision {fresh_p:.1%}, recall {fresh_r:.1%}")
    intent_p, intent_r = precision_recall(
        [o.tier == "intent" for o in outcomes], [o.expected == "intent" for o in outcomes]
    )
    print(f"tier 0 (HA intents): precision {intent_p:.1%}, recall {intent_r:.1%}")
    gated = [
        o for o in outcomes if o.tier in {"local", "cloud"} and o.expected in {"local", "cloud"}
    ]
    gate_p, gate_r = precision_recall(
        [o.tier == "cloud" for o in gated], [o.expected == "cloud" for o in gated]
    )
    print(
        f"confidence gate on {len(gated)} non-fresh model questions:"
        f" escalation precision {gate_p:.1%}, recall {gate_r:.1%}"
    )

    print("\nper category: predicted tiers")
    by_category: dict[str, Counter[str]] = defaultdict(Counter)
    for outcome in outcomes:
        by_category[f"{outcome.category} (→ {outcome.expected})"][outcome.tier] += 1
    for category, tiers in sorted(by_category.items()):
        print(f"  {category:34s} {dict(tiers)}")

    scores = [o.confidence for o in gated if o.confidence is not None]
    threshold = threshold_for_share(scores, 0.8)
    if threshold is not None:
        would = [(o.confidence or 0) < threshold for o in gated]
        p80, r80 = precision_recall(would, [o.expected == "cloud" for o in gated])
        print(
            f"\nthreshold for 80% local among gated questions: {threshold:.3f}"
            f" (escalation precision {p80:.1%}, recall {r80:.1%})"
        )


def main() -> None:
    """Route the labelled queries and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    queries = [json.loads(line) for line in QUERIES.read_text(encoding="utf-8").splitlines()]
    queries = queries[: args.limit] if args.limit else queries
    with tempfile.TemporaryDirectory() as workdir:
        outcomes = asyncio.run(route_all(queries, Path(workdir)))
    report(outcomes)


if __name__ == "__main__":
    main()
