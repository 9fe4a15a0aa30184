"""`app_update`: back up an app, update it, restart it, check it; restore the backup if it fails.

Every call goes through the Supervisor, which needs the orchestrator app to have the
`manager` role. The update waits for a human when the app is protected
(`policies.app_update.protected_apps`).
"""

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from fnmatch import fnmatchcase
import ipaddress
import json
import socket
import time
from typing import Any, ClassVar, Self

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from yarl import URL

from kittyai.contract.orchestrator import (
    ApprovalGate,
    ArtifactKind,
    RetryPolicy,
    RunErrorCode,
    StepSpec,
)
from kittyai.orchestrator.engine import RunError
from kittyai.orchestrator.home_assistant import HomeAssistantError
from kittyai.orchestrator.templates.base import (
    Peers,
    StepContext,
    StepExecutor,
    StepFailedError,
    peer,
    planned_params,
)
from kittyai.supervisor import AppRunState, AppState, SupervisorClient, SupervisorError

# Updates pull images and backups copy data: minutes, not seconds.
SUPERVISOR_STEP_TIMEOUT_S = 1800.0
RESTART_TIMEOUT_S = 300.0
POLL_INTERVAL_S = 1.0
HEALTH_REQUEST_TIMEOUT_S = 5.0
# What a verify step may need beyond its own polling: the last round of calls.
VERIFY_MARGIN_S = 60.0
_ENTITY_ID = r"^[a-z0-9_]+\.[a-z0-9_]+$"


class AppUpdateParams(BaseModel):
    """What to update, and how to tell that the updated app works."""

    model_config = ConfigDict(extra="forbid")

    app: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="The app's slug.")
    health_url: str | None = Field(
        default=None,
        max_length=2048,
        description="An http(s) URL on the local network that answers 2xx when the app works.",
    )
    health_entity: str | None = Field(default=None, pattern=_ENTITY_ID)
    health_state: str | None = Field(default=None, min_length=1, max_length=255)

    @field_validator("health_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = URL(value)
        if url.scheme not in {"http", "https"} or not url.host:
            raise ValueError("must be an http(s) URL with a host")
        if url.user is not None or url.password is not None:
            # They would be shown in the run's parameters.
            raise ValueError("must not carry a user name or password")
        return value

    @model_validator(mode="after")
    def _entity_with_state(self) -> Self:
        if (self.health_entity is None) != (self.health_state is None):
            raise ValueError("give health_entity and health_state together")
        return self


class AppUpdateTemplate:
    """Updates one app with a backup first and a restore when the update fails its check."""

    name: ClassVar[str] = "app_update"
    title: ClassVar[str] = "Update an app"
    params_model: ClassVar[type[BaseModel]] = AppUpdateParams

    async def plan(self, params: BaseModel, peers: Peers) -> list[StepSpec]:
        """Plan backup, update, restart and verify; refuse an unknown or up-to-date app."""
        params = planned_params(self.name, params, AppUpdateParams)
        if peers.supervisor is None:
            raise RunError(
                RunErrorCode.TEMPLATE_UNAVAILABLE,
                "app_update needs the Supervisor: run the orchestrator as a Home Assistant app",
            )
        if params.health_entity is not None and peers.home_assistant is None:
            raise RunError(
                RunErrorCode.TEMPLATE_UNAVAILABLE,
                "health_entity needs Home Assistant, which the orchestrator cannot reach",
            )
        if params.health_url is not None:
            await _require_local_host(URL(params.health_url))
        app = await _planned_app(peers.supervisor, params.app)
        policy = peers.policies.app_update
        gate = None
        if any(fnmatchcase(app.slug, pattern) for pattern in policy.protected_apps):
            gate = ApprovalGate(
                reason=f"{app.name} ({app.slug}) is protected: update it from {app.version}"
                f" to {app.version_latest}?"
            )
        return [
            StepSpec(
                name="backup",
                kind="supervisor.backup",
                title=f"Back up {app.name} {app.version}",
                params={"app": app.slug},
                retry=RetryPolicy(attempts=2, backoff_s=10),
                timeout_s=SUPERVISOR_STEP_TIMEOUT_S,
            ),
            StepSpec(
                name="update",
                kind="supervisor.update",
                title=f"Update {app.name} from {app.version} to {app.version_latest}",
                params={
                    "app": app.slug,
                    "from_version": app.version,
                    "to_version": app.version_latest,
                    "timeout_s": policy.health_timeout_s,
                },
                # Also the tries of the restore; a repeated update finds the new version.
                retry=RetryPolicy(attempts=2, backoff_s=30),
                timeout_s=SUPERVISOR_STEP_TIMEOUT_S,
                compensation="supervisor.restore",
                approval=gate,
            ),
            StepSpec(
                name="restart",
                kind="supervisor.restart",
                title=f"Restart {app.name}",
                params={"app": app.slug},
                retry=RetryPolicy(attempts=3, backoff_s=5),
                timeout_s=RESTART_TIMEOUT_S,
            ),
            StepSpec(
                name="verify",
                kind="app.verify",
                title=f"Check that {app.name} {app.version_latest} works",
                params={
                    "app": app.slug,
                    "version": app.version_latest,
                    "health_url": params.health_url,
                    "health_entity": params.health_entity,
                    "health_state": params.health_state,
                    "timeout_s": policy.health_timeout_s,
                },
                timeout_s=policy.health_timeout_s + VERIFY_MARGIN_S,
            ),
        ]

    @property
    def executors(self) -> Mapping[str, StepExecutor]:
        """Executors of the backup, update, restart, verify and restore kinds."""
        return {
            "supervisor.backup": _backup,
            "supervisor.update": _update,
            "supervisor.restore": _restore,
            "supervisor.restart": _restart,
            "app.verify": _verify,
        }


async def _planned_app(supervisor: SupervisorClient, slug: str) -> AppState:
    try:
        app = await supervisor.get_app_info(slug)
    except SupervisorError as err:
        if err.status is None:
            raise RunError(RunErrorCode.TEMPLATE_UNAVAILABLE, str(err)) from None
        raise RunError(
            RunErrorCode.INVALID_PARAMS, f"The Supervisor knows no app {slug}: {err}"
        ) from None
    if app.version is None:
        raise RunError(RunErrorCode.INVALID_PARAMS, f"{app.name} ({slug}) is not installed")
    if not app.update_available or app.version_latest in {None, app.version}:
        raise RunError(
            RunErrorCode.INVALID_PARAMS, f"{app.name} ({slug}) is already at {app.version}"
        )
    return app


async def _require_local_host(url: URL) -> None:
    """Refuse a health URL whose host is not on the home network."""
    host = url.host or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, url.port, type=socket.SOCK_STREAM
        )
    except OSError:
        raise RunError(
            RunErrorCode.INVALID_PARAMS, f"health_url: {host} cannot be resolved"
        ) from None
    for *_, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not (address.is_private or address.is_loopback or address.is_link_local):
            raise RunError(
                RunErrorCode.INVALID_PARAMS,
                f"health_url: {host} is at {address}, outside the local network",
            )


def _supervisor(ctx: StepContext) -> SupervisorClient:
    return peer(ctx.peers.supervisor, "The Supervisor is not available any more")


@asynccontextmanager
async def _supervisor_step() -> AsyncIterator[None]:
    """Fail the try with the Supervisor's message; its refusals are final, lost answers not."""
    try:
        yield
    except SupervisorError as err:
        retryable = err.status is None or err.status >= 500  # noqa: PLR2004
        raise StepFailedError(str(err), retryable=retryable) from None


async def _backup(ctx: StepContext) -> dict[str, Any]:
    """Take a partial backup of the app alone; record it as an artifact."""
    supervisor = _supervisor(ctx)
    slug = ctx.step.params["app"]
    async with _supervisor_step():
        app = await supervisor.get_app_info(slug)
        await ctx.log(f"Backing up {app.name} {app.version}")
        backup_slug = await supervisor.partial_backup(
            f"KITTY {ctx.run_id}: {app.name} {app.version}", [slug]
        )
        backup = await supervisor.backup_info(backup_slug)
    if not any(item.slug == slug for item in backup.addons):
        raise StepFailedError(f"The Supervisor's backup {backup_slug} does not hold {app.name}")
    record = {"slug": backup_slug, "app": slug, "version": app.version}
    artifact = await ctx.artifacts.write(
        "backup.json",
        json.dumps(record, indent=2).encode(),
        kind=ArtifactKind.BACKUP,
        media_type="application/json",
    )
    await ctx.log(f"Backup {backup_slug} holds {app.name} {app.version}")
    return {**record, "artifact": artifact.id}


async def _update(ctx: StepContext) -> dict[str, Any]:
    """Update the app to the version the plan (and its approver) saw."""
    supervisor = _supervisor(ctx)
    slug = ctx.step.params["app"]
    target = ctx.step.params["to_version"]
    async with _supervisor_step():
        app = await supervisor.get_app_info(slug)
        if app.version == target:
            # An earlier try got this far before it was cut off.
            await ctx.log(f"{app.name} is at {target} already")
            return {"version": app.version}
        if app.version_latest != target:
            raise StepFailedError(
                f"The Supervisor now offers {app.name} {app.version_latest}, not the planned"
                f" {target}: start a new run for it",
                retryable=False,
            )
        await ctx.log(f"Updating {app.name} from {app.version} to {target}")
        await supervisor.update_app(slug)
        app = await supervisor.get_app_info(slug)
    if app.version != target:
        raise StepFailedError(
            f"{app.name} is at {app.version} after the update, not {target}", retryable=False
        )
    return {"version": app.version}


async def _restart(ctx: StepContext) -> dict[str, Any]:
    """Restart the app."""
    supervisor = _supervisor(ctx)
    slug = ctx.step.params["app"]
    async with _supervisor_step():
        await supervisor.restart_app(slug)
        app = await supervisor.get_app_info(slug)
    await ctx.log(f"{app.name} restarted; it is {app.state}")
    return {"state": app.state.value}


async def _restore(ctx: StepContext) -> dict[str, Any]:
    """Undo the update: restore the backup, restart the app, wait until it runs again."""
    supervisor = _supervisor(ctx)
    slug = ctx.step.params["app"]
    backup = ctx.results["backup"]
    timeout_s = float(ctx.step.params["timeout_s"])
    async with _supervisor_step():
        await ctx.log(f"Restoring {slug} {backup['version']} from backup {backup['slug']}")
        await supervisor.restore_partial_backup(backup["slug"], [slug])
        await supervisor.restart_app(slug)
        deadline = time.monotonic() + timeout_s
        app = await supervisor.get_app_info(slug)
        while app.state is not AppRunState.STARTED and time.monotonic() < deadline:
            await asyncio.sleep(POLL_INTERVAL_S)
            app = await supervisor.get_app_info(slug)
    if app.state is not AppRunState.STARTED:
        raise StepFailedError(
            f"{app.name} {app.version} is {app.state} {timeout_s:g} s after the restore"
        )
    if app.version != backup["version"]:
        raise StepFailedError(
            f"{app.name} is at {app.version} after the restore, not {backup['version']}"
        )
    await ctx.log(f"{app.name} {app.version} runs again")
    return {"version": app.version, "backup": backup["slug"]}


async def _verify(ctx: StepContext) -> dict[str, Any]:
    """Poll until the app runs the new version and its health checks pass, or time runs out."""
    params = ctx.step.params
    timeout_s = float(params["timeout_s"])
    deadline = time.monotonic() + timeout_s
    while True:
        seen, problems = await _health(ctx)
        if not problems:
            await ctx.log(f"{params['app']} {params['version']} works")
            return seen
        if time.monotonic() >= deadline:
            raise StepFailedError(
                f"{params['app']} did not pass its checks within {timeout_s:g} s: "
                + "; ".join(problems),
                retryable=False,
            )
        await asyncio.sleep(POLL_INTERVAL_S)


async def _health(ctx: StepContext) -> tuple[dict[str, Any], list[str]]:
    """Return what the checks saw now, and what is wrong (nothing when all pass)."""
    params = ctx.step.params
    seen: dict[str, Any] = {}
    problems: list[str] = []
    try:
        app = await _supervisor(ctx).get_app_info(params["app"])
    except SupervisorError as err:
        problems.append(str(err))
    else:
        seen |= {"state": app.state.value, "version": app.version}
        if app.state is not AppRunState.STARTED:
            problems.append(f"{app.name} is {app.state}")
        if app.version != params["version"]:
            problems.append(f"{app.name} runs {app.version}, not {params['version']}")
    if (health_url := params.get("health_url")) is not None:
        status, problem = await _probe(ctx.peers.session, URL(health_url))
        seen["health_status"] = status
        if problem is not None:
            problems.append(problem)
    if (entity_id := params.get("health_entity")) is not None:
        state, problem = await _entity_state(ctx, entity_id, params["health_state"])
        seen["entity_state"] = state
        if problem is not None:
            problems.append(problem)
    return seen, problems


async def _probe(session: aiohttp.ClientSession, url: URL) -> tuple[int | None, str | None]:
    # The query may carry a key: messages show the URL without it.
    shown = url.with_query(None)
    try:
        async with session.get(
            url,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=HEALTH_REQUEST_TIMEOUT_S),
        ) as response:
            status = response.status
    except aiohttp.ClientError, TimeoutError:
        return None, f"{shown} does not answer"
    if not 200 <= status < 300:  # noqa: PLR2004
        return status, f"{shown} answered HTTP {status}"
    return status, None


async def _entity_state(
    ctx: StepContext, entity_id: str, expected: str
) -> tuple[str | None, str | None]:
    if ctx.peers.home_assistant is None:
        return None, "Home Assistant is not available any more"
    try:
        state = await ctx.peers.home_assistant.get_state(entity_id)
    except HomeAssistantError as err:
        return None, str(err)
    if state is None:
        return None, f"{entity_id} does not exist"
    if state.state != expected:
        return state.state, f"{entity_id} is '{state.state}', not '{expected}'"
    return state.state, None
