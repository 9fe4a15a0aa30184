"""How well the real local model picks a part family of KITTY's CAD library from words.

A real CAD service process (`python -m kittyai.cad`) asks the real local model (Gemma 3
270M on llama.cpp, from `.venv-llm`) through its OpenAI-compatible API. Three plain
requests that each have one obvious family go to `POST /api/cad/generate` with provider
`parametric` and no family, R times each, one after the other:

- "a round spacer ..." → `spacer`, "a wall bracket for a 25 mm pipe ..." →
  `pipe_bracket`, "a plain box ..." → `box`.

For each it records the family of the artifact made (none if the job failed), whether
the job made an artifact, and the time from the request to the job's end (slicing off,
so that is the model's choice, the build and the preview). The hit rate is printed side
by side with a uniform random choice over the library (1 / number of families), as a
ratio.

    .venv/bin/python -m benchmarks.cad_family_choice [--repeats 3]
        [--model-url URL --model NAME --api-key-env VARIABLE]

`--model-url` points the service at any other OpenAI-compatible API instead. The
helpers (model options, the CAD service, one job to its end) serve
`benchmarks/cad_script_path.py` too.
"""

import argparse
import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
import os
from pathlib import Path
import statistics
import tempfile
import time
from typing import Any

import aiohttp

from kittyai.catalog import ServiceName
from kittyai.contract.cad import Artifact, CadJob, JobState
from tests.helpers.llama import MODEL, LlamaServer
from tests.helpers.services import ServiceProcess

REQUESTS = [
    ("a round spacer 20 mm wide and 10 mm tall with a 3.2 mm hole", "spacer"),
    ("a wall bracket for a 25 mm pipe with 4 mm screws", "pipe_bracket"),
    ("a plain box 40 by 30 by 10 mm", "box"),
]
JOB_POLL_S = 0.25
JOB_TIMEOUT_S = 600.0
SETTLED = frozenset({JobState.DONE, JobState.FAILED})


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """How one generate request ended."""

    job: CadJob
    artifact: Artifact | None
    seconds: float

    @property
    def error(self) -> str | None:
        """Return why the job's first variant failed, if it did."""
        return self.job.variants[0].error if self.job.variants else self.job.error


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that name the model the CAD service asks."""
    parser.add_argument("--model-url", default=None, help="OpenAI-compatible base URL")
    parser.add_argument("--model", default="kitty-auto", help="model name, with --model-url")
    parser.add_argument("--api-key-env", default=None, help="variable holding the API key")


def model_name(args: argparse.Namespace) -> str:
    """Return the name of the model the arguments select."""
    return args.model if args.model_url is not None else f"{MODEL} (local)"


@asynccontextmanager
async def model_options(args: argparse.Namespace, workdir: Path) -> AsyncIterator[dict[str, Any]]:
    """Yield the CAD service's model options: the API the arguments name, else the local model.

    The local model is started for the duration of the block.
    """
    if args.model_url is not None:
        options: dict[str, Any] = {"url": args.model_url, "model": args.model}
        if args.api_key_env:
            options["api_key"] = os.environ[args.api_key_env]
        yield options
        return
    llama = LlamaServer(workdir)
    await asyncio.to_thread(llama.start)
    try:
        yield {"url": llama.url, "model": llama.model}
    finally:
        await asyncio.to_thread(llama.stop)


@asynccontextmanager
async def cad_service(workdir: Path, model: dict[str, Any]) -> AsyncIterator[ServiceProcess]:
    """Run a real CAD service process asking `model` (ModelOptions) for the duration."""
    service = ServiceProcess(
        ServiceName.CAD,
        workdir,
        mqtt_port=None,
        extra_options={"log_level": "info", "model": model},
    )
    await asyncio.to_thread(service.start, 60.0)
    try:
        yield service
    finally:
        await asyncio.to_thread(service.stop)


async def run_job(
    session: aiohttp.ClientSession, service: ServiceProcess, body: dict[str, Any]
) -> JobOutcome:
    """Send one generate request and wait for its job to end."""
    headers = {"Authorization": f"Bearer {service.token}"}
    started = time.perf_counter()
    async with session.post(
        f"{service.url}/api/cad/generate", json=body, headers=headers
    ) as response:
        if response.status != 202:
            raise RuntimeError(f"generate answered {response.status}: {await response.text()}")
        job = CadJob.model_validate(await response.json())
    async with asyncio.timeout(JOB_TIMEOUT_S):
        while job.state not in SETTLED:
            await asyncio.sleep(JOB_POLL_S)
            async with session.get(
                f"{service.url}/api/cad/jobs/{job.id}", headers=headers
            ) as response:
                job = CadJob.model_validate(await response.json())
    seconds = time.perf_counter() - started
    artifact_id = job.variants[0].artifact_id if job.variants else None
    artifact = None
    if artifact_id is not None:
        async with session.get(
            f"{service.url}/api/cad/artifacts/{artifact_id}", headers=headers
        ) as response:
            artifact = Artifact.model_validate(await response.json())
    return JobOutcome(job, artifact, seconds)


async def family_names(session: aiohttp.ClientSession, service: ServiceProcess) -> list[str]:
    """Return the names of the service's part families."""
    async with session.get(
        f"{service.url}/api/cad/families",
        headers={"Authorization": f"Bearer {service.token}"},
    ) as response:
        return [family["name"] for family in (await response.json())["families"]]


async def choose_all(
    args: argparse.Namespace, workdir: Path
) -> tuple[list[str], dict[str, list[JobOutcome]]]:
    """Return the library's families and every request's outcomes."""
    outcomes: dict[str, list[JobOutcome]] = {prompt: [] for prompt, _ in REQUESTS}
    async with (
        model_options(args, workdir) as model,
        cad_service(workdir, model) as service,
        aiohttp.ClientSession() as session,
    ):
        families = await family_names(session, service)
        for round_number in range(1, args.repeats + 1):
            for prompt, _ in REQUESTS:
                body = {"prompt": prompt, "provider": "parametric", "slice": False}
                outcomes[prompt].append(await run_job(session, service, body))
            print(f"  round {round_number}/{args.repeats} done")
    return families, outcomes


def chose(run: JobOutcome, family: str) -> bool:
    """Return whether the run made a part of `family`."""
    return run.artifact is not None and run.artifact.family == family


def report(families: list[str], outcomes: dict[str, list[JobOutcome]], model: str) -> None:
    """Print the figures per request, overall, and against the random baseline."""
    expected = dict(REQUESTS)
    print(f"\n{len(families)} families: {', '.join(families)}")
    print(f"{'request':62s} {'expected':>13s} {'right':>6s} {'made':>5s} {'s/choice':>9s}  chosen")
    for prompt, runs in outcomes.items():
        chosen = Counter(run.artifact.family if run.artifact else "(failed)" for run in runs)
        right = sum(chose(run, expected[prompt]) for run in runs)
        made = sum(run.artifact is not None for run in runs)
        seconds = statistics.mean(run.seconds for run in runs)
        print(
            f"{prompt:62s} {expected[prompt]:>13s} {right:>3d}/{len(runs):<2d}"
            f" {made:>2d}/{len(runs):<2d} {seconds:9.1f}  {dict(chosen)}"
        )
    runs = [run for group in outcomes.values() for run in group]
    right = sum(chose(run, expected[prompt]) for prompt, group in outcomes.items() for run in group)
    made = sum(run.artifact is not None for run in runs)
    rate = right / len(runs)
    baseline = 1 / len(families)
    times = [run.seconds for run in runs]
    print(f"\n{'chooser':30s} {'right family':>13s} {'artifact made':>14s}")
    print(f"{model:30s} {rate:13.1%} {made / len(runs):14.1%}")
    print(f"{'uniform random over library':30s} {baseline:13.1%} {'-':>14s}")
    print(f"right family, model / random: {rate / baseline:.2f}")
    print(
        f"time per choice: median {statistics.median(times):.1f} s,"
        f" mean {statistics.mean(times):.1f} s, max {max(times):.1f} s"
    )
    failures = Counter(run.error for run in runs if run.artifact is None)
    for error, count in failures.most_common():
        print(f"  failed {count}x: {error}")


def main() -> None:
    """Ask the local model R times per request and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    add_model_arguments(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        families, outcomes = asyncio.run(choose_all(args, Path(workdir)))
    report(families, outcomes, model_name(args))


if __name__ == "__main__":
    main()
