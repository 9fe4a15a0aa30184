"""Crash safety: SIGKILL the orchestrator process anywhere, restart it, and runs go on.

A run awaiting approval is still awaiting after the restart and accepts the
approval; a run killed mid-step finishes; no step that had completed runs again.
The step attempts, results and the stored events (log lines included) prove it.
On SQLite in the data dir, and on PostgreSQL (a throwaway database).
"""

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from kittyai.catalog import ServiceName
from kittyai.contract.orchestrator import RunEvent, RunEventType, RunInfo, RunState, StepState
from tests.helpers.postgres import throwaway_database
from tests.helpers.services import ServiceProcess
from tests.lib.conftest import StartService
from tests.lib.orchestrator.process import STARTUP_TIMEOUT_S, OrchestratorApi, step_logs


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Return the orchestrator's database options."""
    if request.param == "sqlite":
        yield {}
        return
    with throwaway_database() as url:
        yield {"database": {"url": url}}


async def restart(process: ServiceProcess) -> None:
    """Start the killed process again, on the same data dir and database."""
    await asyncio.to_thread(process.start, STARTUP_TIMEOUT_S)


async def wait_for_step(api: OrchestratorApi, run_id: str, index: int, state: StepState) -> None:
    async with asyncio.timeout(30):
        while True:
            if (await api.run(run_id)).steps[index].state is state:
                return
            await asyncio.sleep(0.02)


def step_events(events: list[RunEvent], state: StepState) -> list[int | None]:
    return [e.step for e in events if e.type is RunEventType.STEP and e.step_state is state]


def assert_each_step_ran_once(run: RunInfo, events: list[RunEvent]) -> None:
    for step in run.steps:
        assert step.state is StepState.SUCCEEDED, step
        number = step.index + 1
        assert len(step_logs(events, f"drill step {number} ran")) == 1, events
    assert step_events(events, StepState.SUCCEEDED) == [step.index for step in run.steps]


async def test_a_run_awaiting_approval_survives_sigkill(
    start_service: StartService, session: aiohttp.ClientSession, database: dict[str, Any]
) -> None:
    process = await start_service(ServiceName.ORCHESTRATOR, extra_options=database)
    api = OrchestratorApi(process, session)
    run = await api.create_noop(steps=3, approval=True)
    await api.wait_for(run.id, RunState.AWAITING_APPROVAL)

    process.kill()
    await restart(process)

    waiting = await api.run(run.id)
    assert waiting.state is RunState.AWAITING_APPROVAL
    assert waiting.awaiting_step == 0
    assert [step.state for step in waiting.steps] == [
        StepState.AWAITING_APPROVAL,
        StepState.PENDING,
        StepState.PENDING,
    ]
    await api.approve(run.id, approver="ada")
    done = await api.wait_for(run.id, RunState.SUCCEEDED)

    assert [step.attempts for step in done.steps] == [1, 1, 1]
    assert [approval.approver for approval in done.approvals] == ["ada"]
    events = await api.events_of(run.id)
    assert_each_step_ran_once(done, events)
    # The gate was entered once: Home Assistant is not asked twice.
    assert step_events(events, StepState.AWAITING_APPROVAL) == [0]


async def test_a_run_killed_mid_step_finishes_after_the_restart(
    start_service: StartService, session: aiohttp.ClientSession, database: dict[str, Any]
) -> None:
    process = await start_service(ServiceName.ORCHESTRATOR, extra_options=database)
    api = OrchestratorApi(process, session)
    run = await api.create_noop(steps=3, seconds=2)
    # Killed two seconds before the second step would have ended.
    await wait_for_step(api, run.id, 1, StepState.RUNNING)

    process.kill()
    await restart(process)
    done = await api.wait_for(run.id, RunState.SUCCEEDED)

    # The cut try of the second step counts, and runs again; the first step does not.
    assert [step.attempts for step in done.steps] == [1, 2, 1]
    assert [step.result["attempt"] for step in done.steps if step.result] == [1, 2, 1]
    events = await api.events_of(run.id)
    assert_each_step_ran_once(done, events)
