"""`config_change`: patch a file of Home Assistant's configuration, check, apply, verify.

The file is recorded first and restored byte for byte when the check, the reload
or the verification fails. Only files `policies.config_change.allowed_paths`
names can be patched, never Home Assistant's secrets or storage; protected files
and Core restarts wait for a human.
"""

import asyncio
from collections.abc import Awaitable, Mapping
import json
from pathlib import Path, PurePosixPath
import time
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kittyai.contract.orchestrator import (
    ApprovalGate,
    ArtifactKind,
    RetryPolicy,
    RunErrorCode,
    StepSpec,
)
from kittyai.orchestrator.engine import RunError
from kittyai.orchestrator.home_assistant import HomeAssistantClient, HomeAssistantError
from kittyai.orchestrator.templates.base import (
    Peers,
    StepContext,
    StepExecutor,
    StepFailedError,
    peer,
    planned_params,
)
from kittyai.orchestrator.templates.patching import (
    PatchDoesNotApplyError,
    PathNotAllowedError,
    apply_unified_diff,
    default_reload_domain,
    file_mode,
    remove_file,
    resolve_config_path,
    sha256_hex,
    unified_diff,
    write_atomically,
)

MAX_FILE_BYTES = 1024 * 1024
POLL_INTERVAL_S = 1.0
# Core takes a while to stop, and longer to start with every integration.
RESTART_DOWN_WAIT_S = 60.0
RESTART_TIMEOUT_S = 900.0
CHECK_TIMEOUT_S = 180.0
VERIFY_MARGIN_S = 30.0
# Calls to Core: a lost answer is tried again.
_HA_RETRY = RetryPolicy(attempts=3, backoff_s=2)
_TRUE = frozenset({"True", "true"})


class EntityCondition(BaseModel):
    """Holds once an entity has a state."""

    model_config = ConfigDict(extra="forbid")

    entity_id: str = Field(pattern=r"^[a-z0-9_]+\.[a-z0-9_]+$")
    state: str = Field(min_length=1, max_length=255)


class TemplateCondition(BaseModel):
    """Holds once a template renders `True`."""

    model_config = ConfigDict(extra="forbid")

    template: str = Field(min_length=1, max_length=10_000)


class ConfigChangeParams(BaseModel):
    """Which file to change, how, how to apply it and how to tell that it worked."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        min_length=1, max_length=255, description="Relative to the configuration folder."
    )
    diff: str | None = Field(default=None, min_length=1, max_length=MAX_FILE_BYTES)
    content: str | None = Field(default=None, max_length=MAX_FILE_BYTES)
    reload: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9_]+$",
        description="The domain whose `reload` applies the change; by default from the file.",
    )
    verify: EntityCondition | TemplateCondition | None = None
    reason: str | None = Field(default=None, max_length=1000)

    @model_validator(mode="after")
    def _one_change(self) -> Self:
        if (self.diff is None) == (self.content is None):
            raise ValueError("give exactly one of diff and content")
        return self


class ConfigChangeTemplate:
    """Changes one configuration file the way a careful human would, and undoes a bad change."""

    name: ClassVar[str] = "config_change"
    title: ClassVar[str] = "Change Home Assistant's configuration"
    params_model: ClassVar[type[BaseModel]] = ConfigChangeParams

    async def plan(self, params: BaseModel, peers: Peers) -> list[StepSpec]:
        """Plan analyze, patch, check, reload or restart, verify; refuse a path or a bad diff."""
        params = planned_params(self.name, params, ConfigChangeParams)
        if peers.home_assistant is None:
            raise RunError(
                RunErrorCode.TEMPLATE_UNAVAILABLE,
                "config_change needs Home Assistant to check and apply the change:"
                " set home_assistant.url and token, or run the orchestrator as an app",
            )
        policy = peers.policies.config_change
        try:
            target = resolve_config_path(peers.config_dir, params.path, policy.allowed_paths)
        except PathNotAllowedError as err:
            raise RunError(RunErrorCode.PATH_NOT_ALLOWED, str(err)) from None
        try:
            _changed(await asyncio.to_thread(_read, target), params)
        except PatchDoesNotApplyError as err:
            raise RunError(RunErrorCode.PATCH_DOES_NOT_APPLY, f"{params.path}: {err}") from None
        domain = params.reload or default_reload_domain(params.path)
        why = f" ({params.reason})" if params.reason else ""
        # A link to a protected file is as protected as the file.
        names = {params.path, target.relative_to(peers.config_dir.resolve()).as_posix()}
        patch_gate = None
        if any(_matches(name, pattern) for name in names for pattern in policy.protected_paths):
            patch_gate = ApprovalGate(reason=f"{params.path} is protected: change it{why}?")
        steps = [
            StepSpec(
                name="analyze",
                kind="config.analyze",
                title=f"Record {params.path} as it is",
                params={"path": params.path},
            ),
            StepSpec(
                name="patch",
                kind="config.patch",
                title=f"Change {params.path}{why}",
                params={"path": params.path, "domain": domain},
                # Also the tries of the restore, whose reload may meet a busy Core; a
                # repeated patch finds the change made.
                retry=_HA_RETRY,
                compensation="config.restore",
                approval=patch_gate,
            ),
            StepSpec(
                name="check",
                kind="ha.check_config",
                title="Check Home Assistant's configuration",
                retry=_HA_RETRY,
                timeout_s=CHECK_TIMEOUT_S,
            ),
        ]
        steps.append(_apply_step(params.path, domain))
        if params.verify is not None:
            steps.append(_verify_step(params.verify, policy.verify_timeout_s))
        return steps

    @property
    def executors(self) -> Mapping[str, StepExecutor]:
        """Executors of the analyze, patch, check, reload, restart, verify and restore kinds."""
        return {
            "config.analyze": _analyze,
            "config.patch": _patch,
            "config.restore": _restore,
            "ha.check_config": _check,
            "ha.reload": _reload,
            "ha.restart": _restart,
            "ha.verify": _verify,
        }


def _apply_step(relative: str, domain: str | None) -> StepSpec:
    """Return the step that makes Core use the changed file: a reload, else a restart."""
    if domain is not None:
        return StepSpec(
            name="reload",
            kind="ha.reload",
            title=f"Reload {domain}",
            params={"domain": domain},
            retry=_HA_RETRY,
        )
    return StepSpec(
        name="restart",
        kind="ha.restart",
        title="Restart Home Assistant",
        timeout_s=RESTART_TIMEOUT_S,
        approval=ApprovalGate(reason=f"Restart Home Assistant to apply the change to {relative}?"),
    )


def _verify_step(condition: EntityCondition | TemplateCondition, timeout_s: float) -> StepSpec:
    return StepSpec(
        name="verify",
        kind="ha.verify",
        title=f"Check that {_condition_text(condition)}",
        params={"condition": condition.model_dump(), "timeout_s": timeout_s},
        timeout_s=timeout_s + VERIFY_MARGIN_S,
    )


def _matches(relative: str, pattern: str) -> bool:
    return PurePosixPath(relative).full_match(pattern)


def _read(target: Path) -> bytes | None:
    """Return the file's bytes; None when it does not exist yet."""
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) > MAX_FILE_BYTES:
        raise PatchDoesNotApplyError(f"the file is larger than {MAX_FILE_BYTES} bytes")
    return data


async def _read_in_step(target: Path, relative: str) -> bytes | None:
    try:
        return await asyncio.to_thread(_read, target)
    except PatchDoesNotApplyError as err:
        raise StepFailedError(f"{relative}: {err}", retryable=False) from None


def _changed(current: bytes | None, params: ConfigChangeParams) -> bytes:
    """Return the file's new bytes: the diff applied to `current`, or the new content."""
    if params.content is not None:
        return params.content.encode()
    try:
        text = (current or b"").decode()
    except UnicodeDecodeError:
        raise PatchDoesNotApplyError("the file is not UTF-8 text") from None
    return apply_unified_diff(text, params.diff or "").encode()


def _condition_text(condition: EntityCondition | TemplateCondition) -> str:
    if isinstance(condition, EntityCondition):
        return f"{condition.entity_id} is {condition.state}"
    return "the verification template renders true"


def _target(ctx: StepContext) -> Path:
    """Return the file again: the policy is checked at every step, not only at planning."""
    policy = ctx.peers.policies.config_change
    try:
        return resolve_config_path(
            ctx.peers.config_dir, ctx.step.params["path"], policy.allowed_paths
        )
    except PathNotAllowedError as err:
        raise StepFailedError(str(err), retryable=False) from None


def _home_assistant(ctx: StepContext) -> HomeAssistantClient:
    return peer(ctx.peers.home_assistant, "Home Assistant is not available any more")


async def _analyze(ctx: StepContext) -> dict[str, Any]:
    """Record the file's bytes and mode as they are, the snapshot a rollback writes back."""
    target = _target(ctx)
    relative = ctx.step.params["path"]
    current = await _read_in_step(target, relative)
    mode = await asyncio.to_thread(file_mode, target)
    snapshot = await ctx.artifacts.write(
        f"{target.name}.before",
        current or b"",
        kind=ArtifactKind.SNAPSHOT,
        media_type="text/plain",
    )
    if current is None:
        await ctx.log(f"{relative} does not exist yet")
    else:
        await ctx.log(f"Recorded {relative}: {len(current)} bytes, sha256 {sha256_hex(current)}")
    return {
        "path": relative,
        "exists": current is not None,
        "sha256": None if current is None else sha256_hex(current),
        "size": 0 if current is None else len(current),
        "mode": mode,
        "snapshot": snapshot.id,
    }


async def _patch(ctx: StepContext) -> dict[str, Any]:
    """Write the changed file in one step, if nobody changed it since it was recorded."""
    target = _target(ctx)
    recorded = ctx.results["analyze"]
    relative = ctx.step.params["path"]
    params = ConfigChangeParams.model_validate(ctx.params)
    snapshot = await ctx.artifacts.read(recorded["snapshot"]) if recorded["exists"] else None
    try:
        changed = _changed(snapshot, params)
    except PatchDoesNotApplyError as err:
        raise StepFailedError(f"{relative}: {err}", retryable=False) from None
    current = await _read_in_step(target, relative)
    current_sha = None if current is None else sha256_hex(current)
    if current_sha == sha256_hex(changed) and current_sha != recorded["sha256"]:
        # An earlier try wrote it before it was cut off.
        await ctx.log(f"{relative} has the change already")
    elif current_sha != recorded["sha256"]:
        raise StepFailedError(
            f"{relative} changed since it was recorded; start a new run against the new file",
            retryable=False,
        )
    else:
        await asyncio.to_thread(write_atomically, target, changed, recorded["mode"])
    diff = unified_diff(snapshot or b"", changed, relative)
    artifact = await ctx.artifacts.write(
        f"{target.name}.diff", diff.encode(), kind=ArtifactKind.DIFF, media_type="text/x-diff"
    )
    await ctx.log(f"Changed {relative}: sha256 {sha256_hex(changed)}")
    return {"sha256": sha256_hex(changed), "size": len(changed), "diff": artifact.id}


async def _restore(ctx: StepContext) -> dict[str, Any]:
    """Write the recorded bytes back (or remove a file that was new), then apply that."""
    target = _target(ctx)
    recorded = ctx.results["analyze"]
    relative = ctx.step.params["path"]
    if recorded["exists"]:
        snapshot = await ctx.artifacts.read(recorded["snapshot"])
        await asyncio.to_thread(write_atomically, target, snapshot, recorded["mode"])
        restored = await _read_in_step(target, relative)
        if restored is None or sha256_hex(restored) != recorded["sha256"]:
            raise StepFailedError(f"{relative} does not read back as it was recorded")
        await ctx.log(f"Restored {relative} as it was (sha256 {recorded['sha256']})")
    else:
        await asyncio.to_thread(remove_file, target)
        await ctx.log(f"Removed {relative}, which the change had made")
    applied: Literal["reloaded", "restarted"] | None = None
    domain = ctx.step.params["domain"]
    # Past the check, the reload ran, if only partly: reloading the restored file is
    # harmless. Before it, Core never saw the change and is left alone.
    if domain is not None and "check" in ctx.results:
        await _call_core(_home_assistant(ctx).call_service(domain, "reload"))
        await ctx.log(f"Reloaded {domain} with the restored file")
        applied = "reloaded"
    elif "restart" in ctx.results:
        await _restart_core(ctx)
        applied = "restarted"
    return {"sha256": recorded["sha256"], "applied": applied}


async def _call_core[T](call: Awaitable[T]) -> T:
    """Await a call to Core; its failures fail the try, to be tried again."""
    try:
        return await call
    except HomeAssistantError as err:
        raise StepFailedError(str(err)) from None


async def _check(ctx: StepContext) -> dict[str, Any]:
    """Run Core's configuration check over the files as they are now."""
    check = await _call_core(_home_assistant(ctx).check_config())
    if not check.valid:
        raise StepFailedError(
            f"Home Assistant's config check failed: {check.errors or 'no details'}",
            retryable=False,
        )
    await ctx.log("Home Assistant's config check passed")
    return {"valid": True, "warnings": check.warnings}


async def _reload(ctx: StepContext) -> dict[str, Any]:
    """Call `<domain>.reload` so Core uses the changed file."""
    domain = ctx.step.params["domain"]
    await _call_core(_home_assistant(ctx).call_service(domain, "reload"))
    await ctx.log(f"Reloaded {domain}")
    return {"domain": domain}


async def _restart(ctx: StepContext) -> dict[str, Any]:
    """Restart Core and wait until it runs again."""
    await _restart_core(ctx)
    return {"restarted": True}


async def _restart_core(ctx: StepContext) -> None:
    home_assistant = _home_assistant(ctx)
    await _call_core(home_assistant.restart())
    await ctx.log("Home Assistant is restarting")
    # Seeing Core go down first tells the old instance from the restarted one.
    deadline = time.monotonic() + RESTART_DOWN_WAIT_S
    while await _core_running(home_assistant):
        if time.monotonic() >= deadline:
            # Down and up again between two polls.
            break
        await asyncio.sleep(POLL_INTERVAL_S)
    deadline = time.monotonic() + RESTART_TIMEOUT_S
    while not await _core_running(home_assistant):
        if time.monotonic() >= deadline:
            raise StepFailedError(
                f"Home Assistant did not run again within {RESTART_TIMEOUT_S:g} s"
            )
        await asyncio.sleep(POLL_INTERVAL_S)
    await ctx.log("Home Assistant runs again")


async def _core_running(home_assistant: HomeAssistantClient) -> bool:
    try:
        return await home_assistant.get_core_state() == "RUNNING"
    except HomeAssistantError:
        return False


async def _verify(ctx: StepContext) -> dict[str, Any]:
    """Poll until the condition holds; fail with what was seen when time runs out."""
    home_assistant = _home_assistant(ctx)
    condition = ctx.step.params["condition"]
    timeout_s = float(ctx.step.params["timeout_s"])
    deadline = time.monotonic() + timeout_s
    while True:
        seen, problem = await _condition(home_assistant, condition)
        if problem is None:
            await ctx.log(f"Verified: {seen}")
            return {"seen": seen}
        if time.monotonic() >= deadline:
            raise StepFailedError(
                f"The change did not verify within {timeout_s:g} s: {problem}", retryable=False
            )
        await asyncio.sleep(POLL_INTERVAL_S)


async def _condition(
    home_assistant: HomeAssistantClient, condition: Mapping[str, Any]
) -> tuple[str | None, str | None]:
    """Return what Core shows now and, unless the condition holds, what is wrong."""
    try:
        if "template" in condition:
            rendered = (await home_assistant.render_template(condition["template"])).strip()
            if rendered in _TRUE:
                return rendered, None
            return rendered, f"the template rendered {json.dumps(rendered[:200])}, not True"
        entity_id, expected = condition["entity_id"], condition["state"]
        state = await home_assistant.get_state(entity_id)
    except HomeAssistantError as err:
        return None, str(err)
    if state is None:
        return None, f"{entity_id} does not exist"
    if state.state != expected:
        return state.state, f"{entity_id} is '{state.state}', not '{expected}'"
    return state.state, None
