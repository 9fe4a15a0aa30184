"""KITTY's orchestrator from Home Assistant: its runs, their events, their errors.

The orchestrator is optional: an entry uses one when its options name it. Its
statistics (active runs, the runs awaiting approval, the last result) arrive over
MQTT whenever a run changes; a slow poll covers a broker that was away, and an
orchestrator that announces itself offline is asked at once, so its sensors do not
show stale counts. Every change of a run or of one of its steps is fired on Home
Assistant's bus as `kitty_run_event`, for automations such as the approval blueprint.
"""

from collections import OrderedDict
from contextlib import AbstractContextManager
from typing import Any, Final, override

from homeassistant.components import mqtt
from homeassistant.config_entries import ConfigEntry
from homeassistant.core import Context, HomeAssistant, callback

from kittyai.catalog import ServiceName
from kittyai.contract import RUN_EVENT, RUN_STATS
from kittyai.contract.orchestrator import (
    RunErrorCode,
    RunEvent,
    RunEventType,
    RunInfo,
    RunState,
    RunStats,
    StepInfo,
)
from kittyai.orchestrator_client import OrchestratorClient

from .const import EVENT_RUN
from .optional_service import (
    OptionalServiceCoordinator,
    ServiceErrorKeys,
    loaded_service,
    required_service,
    translated_service_errors,
)
from .users import async_user_name

# Who approved, rejected or asked for a run when no signed-in user did: an
# automation, such as the approval blueprint answering a notification's button.
AUTOMATION_USER: Final = "Home Assistant automation"
MAX_USER_NAME: Final = 128
# The events of a run that `kitty_run_event` reports: state changes, not log lines.
STATE_EVENTS: Final = frozenset({RunEventType.RUN, RunEventType.STEP})
# The runs whose last event is remembered, to skip events sent twice; older runs are
# long finished.
REMEMBERED_RUNS: Final = 1000
_ERROR_KEYS: Final = ServiceErrorKeys(
    rejected="orchestrator_rejected",
    invalid_auth="orchestrator_invalid_auth",
    unavailable="orchestrator_unavailable",
    not_configured="orchestrator_not_configured",
    by_code={
        RunErrorCode.RUN_NOT_FOUND: "unknown_run",
        RunErrorCode.UNKNOWN_TEMPLATE: "unknown_template",
        RunErrorCode.INVALID_PARAMS: "invalid_run_params",
        RunErrorCode.NOT_AWAITING_APPROVAL: "run_not_awaiting_approval",
        RunErrorCode.INVALID_CHOICE: "invalid_run_choice",
        RunErrorCode.CANNOT_RETRY: "run_cannot_retry",
        RunErrorCode.ALREADY_FINISHED: "run_already_finished",
        # From the HTTP scaffold, not the engine: a token without the scope.
        "missing_scope": "orchestrator_missing_scope",
    },
)


class RunsCoordinator(OptionalServiceCoordinator[OrchestratorClient, RunStats | None]):
    """Keeps the orchestrator's run statistics, as it pushes them; None until first read."""

    service = ServiceName.ORCHESTRATOR
    label = "orchestrator"
    error_keys = _ERROR_KEYS

    def __init__(self, hass: HomeAssistant, entry: ConfigEntry, client: OrchestratorClient) -> None:
        """Follow the orchestrator `client` talks to; no run event was seen yet."""
        super().__init__(hass, entry, client)
        # The `seq` of the last event fired, by run id.
        self._last_seq: OrderedDict[str, int] = OrderedDict()

    @override
    async def async_start(self) -> None:
        """Read the statistics without holding up setup; follow them and every run's events."""
        await super().async_start()
        await self._async_follow(RUN_STATS, self._async_handle_stats)
        await self._async_follow_availability()
        await self._async_follow(RUN_EVENT, self._async_handle_event, RUN_EVENT.wildcard)

    @override
    async def _async_fetch(self) -> RunStats:
        """Ask the orchestrator for its statistics."""
        return await self.client.stats()

    @callback
    def _async_handle_stats(self, msg: mqtt.ReceiveMessage) -> None:
        """Take the statistics the orchestrator pushed."""
        if (stats := self._payload(RunStats, msg)) is not None:
            self.async_set_updated_data(stats)

    @callback
    def _async_handle_event(self, msg: mqtt.ReceiveMessage) -> None:
        """Fire a run's change of state, or one of its steps', on Home Assistant's bus, once.

        The orchestrator sends its events in order, at least once: after a restart
        it may send the last ones again, which their `seq` shows.
        """
        if (event := self._payload(RunEvent, msg)) is None:
            return
        if event.seq <= self._last_seq.get(event.run_id, 0):
            return
        self._last_seq[event.run_id] = event.seq
        self._last_seq.move_to_end(event.run_id)
        if len(self._last_seq) > REMEMBERED_RUNS:
            self._last_seq.popitem(last=False)
        if event.type in STATE_EVENTS:
            self.hass.bus.async_fire(EVENT_RUN, run_event_data(event))


def translated_run_errors(client: OrchestratorClient) -> AbstractContextManager[None]:
    """Turn the orchestrator client's errors into Home Assistant's, with translated messages."""
    return translated_service_errors(client, _ERROR_KEYS)


@callback
def loaded_runs(hass: HomeAssistant) -> RunsCoordinator | None:
    """Return the orchestrator of the first loaded KITTY entry that has one."""
    return loaded_service(hass, RunsCoordinator)


@callback
def required_runs(hass: HomeAssistant) -> RunsCoordinator:
    """Return the orchestrator of a loaded KITTY entry; refuse when none has one."""
    return required_service(hass, RunsCoordinator)


async def async_run_user(hass: HomeAssistant, context: Context) -> str:
    """Return who asks for, approves or rejects a run: the signed-in user, else an automation."""
    name = await async_user_name(hass, context) or AUTOMATION_USER
    # The orchestrator records names of up to this many characters.
    return name[:MAX_USER_NAME]


def run_event_data(event: RunEvent) -> dict[str, Any]:
    """Return the data of the `kitty_run_event` a run event fires."""
    return {
        "run_id": event.run_id,
        "template": event.template,
        "type": event.type.value,
        "state": event.state.value,
        "step": event.step,
        "step_name": event.step_name,
        "step_state": event.step_state.value if event.step_state else None,
        "message": event.message,
        "at": event.at.isoformat(),
        "seq": event.seq,
    }


def awaiting_step(run: RunInfo) -> StepInfo | None:
    """Return the step a run waits at for approval; None while it waits for nobody."""
    if run.state is not RunState.AWAITING_APPROVAL or run.awaiting_step is None:
        return None
    return run.steps[run.awaiting_step]


def run_summary(run: RunInfo) -> dict[str, Any]:
    """Return what an action's response and an LLM tool's data say about a run."""
    waiting = awaiting_step(run)
    return {
        "run_id": run.id,
        "template": run.template,
        "state": run.state.value,
        "message": run.message,
        "requested_by": run.requested_by,
        "created_at": run.created_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "awaiting_approval": (
            {
                "step": waiting.index,
                "name": waiting.name,
                "title": waiting.title,
                "reason": waiting.approval.reason if waiting.approval else None,
                "choices": list(waiting.approval.choices) if waiting.approval else [],
            }
            if waiting is not None
            else None
        ),
        "steps": [
            {
                "index": step.index,
                "name": step.name,
                "title": step.title,
                "state": step.state.value,
                "attempts": step.attempts,
                "message": step.message,
            }
            for step in run.steps
        ],
        "approvals": [
            {
                "step": approval.step,
                "decision": approval.decision.value,
                "approver": approval.approver,
                "reason": approval.reason,
                "choice": approval.choice,
                "at": approval.at.isoformat(),
            }
            for approval in run.approvals
        ],
    }
