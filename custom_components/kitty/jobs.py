"""What happens to a printer's jobs, read from its successive statuses.

The print monitor and the shop scenes act when a job starts, pauses, resumes and
ends. The print servers report states, not changes: the change is the difference
between the status before and the status now, whoever caused it (KITTY, the print
server's own interface, the printer's display).
"""

from collections.abc import Callable
from enum import StrEnum

from homeassistant.core import CALLBACK_TYPE, callback

from kittyai.printers.base import PrinterState, PrinterStatus

from .printer_coordinator import PrinterCoordinator


class JobEvent(StrEnum):
    """A change of a printer's job."""

    STARTED = "started"
    PAUSED = "paused"
    RESUMED = "resumed"
    # The job printed to its end.
    FINISHED = "finished"
    # The job ended before its end: cancelled, a printer error, the printer lost.
    STOPPED = "stopped"


type JobListener = Callable[[JobEvent, PrinterStatus], None]


def job_event(before: PrinterStatus, now: PrinterStatus) -> JobEvent | None:
    """Return how the job changed from `before` to `now`; None if it did not."""
    if now.busy and (not before.busy or now.file != before.file):
        return JobEvent.STARTED
    if not now.busy:
        if not before.busy:
            return None
        return JobEvent.FINISHED if now.state is PrinterState.COMPLETE else JobEvent.STOPPED
    if now.state is PrinterState.PAUSED and before.state is not PrinterState.PAUSED:
        return JobEvent.PAUSED
    if now.state is PrinterState.PRINTING and before.state is PrinterState.PAUSED:
        return JobEvent.RESUMED
    return None


@callback
def async_track_jobs(printer: PrinterCoordinator, listener: JobListener) -> CALLBACK_TYPE:
    """Call `listener` with each change of the printer's job; return what stops it.

    The first status is no change: a job that runs when Home Assistant starts was
    started before.
    """
    before = printer.data

    @callback
    def follow() -> None:
        nonlocal before
        now = printer.data
        if now is None:
            return
        previous, before = before, now
        if previous is not None and (event := job_event(previous, now)) is not None:
            listener(event, now)

    return printer.async_add_listener(follow)
