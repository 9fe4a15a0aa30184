"""The orchestrator in tests: its options, drill runs, and waiting for a run's state."""

import asyncio
from pathlib import Path
import subprocess
from typing import Any

import aiohttp

from kittyai.contract.orchestrator import CreateRunRequest, RunInfo, RunState
from kittyai.orchestrator.options import Policies
from kittyai.orchestrator.templates.base import Peers
from kittyai.orchestrator_client import OrchestratorClient
from tests.helpers.services import ServiceApi

# A further token of the test orchestrators that may only read runs.
READ_ONLY_TOKEN = "orchestrator-reader-token-0123456789"
# A drill run takes a moment; a slow machine more.
RUN_TIMEOUT_S = 60.0
# A run in one of these states goes no further without a human.
SETTLED = frozenset({"succeeded", "failed", "rolled_back", "cancelled", "awaiting_approval"})


# The options of a test orchestrator: SQLite in its data dir, a token that only reads,
# and room for the writes of a whole test module without being rate-limited.
ORCHESTRATOR_SERVICE_OPTIONS: dict[str, Any] = {
    "scoped_tokens": [{"name": "reader", "token": READ_ONLY_TOKEN, "scopes": ["runs:read"]}],
    "writes_per_minute": 100_000,
    "write_burst": 10_000,
}


def peers_with(session: aiohttp.ClientSession, config_dir: Path, **peers: Any) -> Peers:
    """Return the orchestrator's peers, with the default policies: none but those given."""
    return Peers(
        session=session,
        supervisor=peers.get("supervisor"),
        home_assistant=peers.get("home_assistant"),
        config_dir=config_dir,
        cad=peers.get("cad"),
        knowledge=peers.get("knowledge"),
        policies=Policies(),
    )


def noop_run(
    *, idempotency_key: str | None = None, requested_by: str | None = None, **params: Any
) -> CreateRunRequest:
    """Return the request of a drill run of the `noop` template with these parameters."""
    return CreateRunRequest(
        template="noop",
        params=params,
        idempotency_key=idempotency_key,
        requested_by=requested_by,
    )


async def wait_for_run(
    client: OrchestratorClient,
    run_id: str,
    state: RunState,
    timeout: float = RUN_TIMEOUT_S,  # noqa: ASYNC109 - the error names the run's last state
) -> RunInfo:
    """Return the run once it is in `state`; fail, naming where it is, after `timeout` s."""
    run = await client.run(run_id)
    try:
        async with asyncio.timeout(timeout):
            while run.state is not state:
                await asyncio.sleep(0.05)
                run = await client.run(run_id)
    except TimeoutError:
        raise AssertionError(f"run {run_id} is {run.state}, not {state}: {run}") from None
    return run


# The API as JSON, through `ServiceApi`: what a test of a template's whole run reads.


async def create_run(api: ServiceApi, template: str, **params: Any) -> dict[str, Any]:
    """Create a run of `template` with `params`; return it as the API answered."""
    answer = await api.call("POST", "/api/runs", json_body={"template": template, "params": params})
    assert answer.status == 201, answer.body
    run: dict[str, Any] = answer.body
    return run


async def wait_until_settled(api: ServiceApi, run_id: str) -> dict[str, Any]:
    """Return the run once it has finished or waits for a human."""
    run: dict[str, Any] = {}

    def settled() -> bool:
        return run.get("state") in SETTLED

    while not settled():
        run = await api.get(f"/api/runs/{run_id}")
        if not settled():
            await asyncio.sleep(0.1)
    return run


async def artifact_text(api: ServiceApi, run: dict[str, Any], kind: str) -> str:
    """Return the text of the run's one artifact of `kind`."""
    artifacts = (await api.get(f"/api/runs/{run['id']}/artifacts"))["artifacts"]
    [artifact] = [artifact for artifact in artifacts if artifact["kind"] == kind]
    url = f"{api.process.url}/api/runs/{run['id']}/artifacts/{artifact['id']}"
    headers = {"Authorization": f"Bearer {api.process.token}"}
    async with api.session.get(url, headers=headers) as response:
        assert response.status == 200
        return await response.text()


def step_states(run: dict[str, Any]) -> dict[str, str]:
    """Return each step's state, by step name."""
    return {step["name"]: step["state"] for step in run["steps"]}


def diff_of(tmp_path: Path, before: str, after: str) -> str:
    """Return what `diff -u` prints for the change, as a human (or a model) would send it."""
    (tmp_path / "before.yaml").write_text(before, encoding="utf-8")
    (tmp_path / "after.yaml").write_text(after, encoding="utf-8")
    return subprocess.run(
        ["diff", "-u", str(tmp_path / "before.yaml"), str(tmp_path / "after.yaml")],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
