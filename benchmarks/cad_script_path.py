"""How often a model's CadQuery scripts make the part, and what the repair rounds buy.

`benchmarks/data/cad_script_prompts.json` holds shapes outside KITTY's part library
(a hexagonal pencil cup, a cable comb, a funnel, ...), each with the length of its
longest side as the prompt states it. Each goes to a real CAD service process
(`python -m kittyai.cad`) as `POST /api/cad/generate` with provider `cadquery`: the
model writes a script, the service runs it in its sandbox, checks the part and, when a
round fails, hands the error back to the model (`sandbox.repair_rounds`, 2 by default).

The model is the real local one (Gemma 3 270M on llama.cpp, from `.venv-llm`) unless
`--model-url` names any OpenAI-compatible API (with `--model` and the key in the
environment variable `--api-key-env`). Per prompt it records whether the job made a
part, after how many repair rounds, how long it took, and whether the part's longest
side is within 25 % of the prompt's. It prints the success rate, the first-try success
rate, their ratio (what repair buys), the repair rounds of the parts made and the time
per part.

    .venv/bin/python -m benchmarks.cad_script_path [--limit N]
    .venv/bin/python -m benchmarks.cad_script_path --model-url https://api.openai.com/v1 \\
        --model gpt-5-mini --api-key-env OPENAI_API_KEY
"""

import argparse
import asyncio
import json
from pathlib import Path
import statistics
import tempfile
from typing import Any

import aiohttp

from benchmarks.cad_family_choice import (
    JobOutcome,
    add_model_arguments,
    cad_service,
    model_name,
    model_options,
    run_job,
)

PROMPTS = Path(__file__).parent / "data" / "cad_script_prompts.json"
# How far the part's longest side may be from the prompt's and still count as the right size.
SIZE_TOLERANCE = 0.25


async def run_all(
    prompts: list[dict[str, Any]], args: argparse.Namespace, workdir: Path
) -> list[JobOutcome]:
    """Send every prompt to the CadQuery provider, one after the other."""
    outcomes: list[JobOutcome] = []
    async with (
        model_options(args, workdir) as model,
        cad_service(workdir, model) as service,
        aiohttp.ClientSession() as session,
    ):
        for number, item in enumerate(prompts, start=1):
            body = {"prompt": item["prompt"], "provider": "cadquery", "slice": False}
            outcome = await run_job(session, service, body)
            outcomes.append(outcome)
            print(f"  {number}/{len(prompts)} {item['name']}: {describe(outcome)}")
    return outcomes


def describe(outcome: JobOutcome) -> str:
    """Return one line on how a part went."""
    if outcome.artifact is None:
        return f"failed in {outcome.seconds:.0f} s: {outcome.error}"
    size = " x ".join(f"{extent:.0f}" for extent in outcome.artifact.metrics.bbox_mm)
    rounds = repair_rounds(outcome)
    return f"made ({size} mm) after {rounds} repair rounds in {outcome.seconds:.0f} s"


def right_size(outcome: JobOutcome, longest_mm: float) -> bool:
    """Return whether the part's longest side is within SIZE_TOLERANCE of the prompt's."""
    if outcome.artifact is None:
        return False
    longest = max(outcome.artifact.metrics.bbox_mm)
    return abs(longest - longest_mm) <= SIZE_TOLERANCE * longest_mm


def repair_rounds(outcome: JobOutcome) -> int:
    """Return how many times the model's error went back to it."""
    return outcome.job.variants[0].repair_rounds if outcome.job.variants else 0


def report(prompts: list[dict[str, Any]], outcomes: list[JobOutcome], model: str) -> None:
    """Print the rates, their ratio, the repair rounds and the times."""
    total = len(outcomes)
    made = [outcome for outcome in outcomes if outcome.artifact is not None]
    first_try = [outcome for outcome in made if repair_rounds(outcome) == 0]
    sized = sum(
        right_size(outcome, item["longest_mm"])
        for item, outcome in zip(prompts, outcomes, strict=True)
    )
    print(f"\nmodel: {model}, {total} prompts")
    for label, count in (
        ("success rate", len(made)),
        ("first-try success rate", len(first_try)),
        ("right size (longest side ±25 %)", sized),
    ):
        print(f"{label:34s} {count / total:7.1%}  ({count}/{total})")
    ratio = f"{len(made) / len(first_try):7.2f}" if first_try else "    n/a  (no first-try success)"
    print(f"{'success / first-try success':34s} {ratio}")
    # Only made parts: a failed variant's job records no repair rounds (its error says them).
    if made:
        rounds = statistics.mean(map(repair_rounds, made))
        print(f"{'mean repair rounds, parts made':34s} {rounds:7.2f}")
        seconds = statistics.mean(outcome.seconds for outcome in made)
        print(f"{'time per part made (mean)':34s} {seconds:7.1f} s")
    seconds = statistics.mean(outcome.seconds for outcome in outcomes)
    print(f"{'time per prompt (mean)':34s} {seconds:7.1f} s")


def main() -> None:
    """Run the prompt set through the CadQuery provider and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    prompts = json.loads(PROMPTS.read_text(encoding="utf-8"))[: args.limit]
    with tempfile.TemporaryDirectory() as workdir:
        outcomes = asyncio.run(run_all(prompts, args, Path(workdir)))
    report(prompts, outcomes, model_name(args))


if __name__ == "__main__":
    main()
