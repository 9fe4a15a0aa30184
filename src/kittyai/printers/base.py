"""What every printer client offers: one status shape, one set of errors, one interface.

OctoPrint and Moonraker name their states, temperatures and jobs differently; the
clients translate both into `PrinterStatus`, so Home Assistant's entities, services
and the print watch never need to know which one a printer runs.
"""

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path


class PrinterKind(StrEnum):
    """The print server a printer runs."""

    OCTOPRINT = "octoprint"
    MOONRAKER = "moonraker"


class PrinterState(StrEnum):
    """A printer's state, the same for every print server."""

    # The print server answers, but the printer itself is not connected to it.
    DISCONNECTED = "disconnected"
    IDLE = "idle"
    PRINTING = "printing"
    PAUSING = "pausing"
    PAUSED = "paused"
    CANCELLING = "cancelling"
    COMPLETE = "complete"
    CANCELLED = "cancelled"
    ERROR = "error"


# States in which a job holds the printer: no other job may start.
BUSY_STATES = frozenset(
    {PrinterState.PRINTING, PrinterState.PAUSING, PrinterState.PAUSED, PrinterState.CANCELLING}
)


@dataclass(frozen=True, slots=True)
class Temperature:
    """A heater's temperature in °C; None where the printer does not say."""

    actual: float | None = None
    target: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PrinterStatus:
    """A printer at one moment, as the print server reports it."""

    state: PrinterState
    # The server's own words for the state, e.g. OctoPrint's "Offline after error".
    message: str | None = None
    # The file of the current or last job, as the server names it.
    file: str | None = None
    # Job completion in percent, 0 to 100.
    progress: float | None = None
    print_time_s: float | None = None
    time_left_s: float | None = None
    nozzle: Temperature = field(default_factory=Temperature)
    bed: Temperature = field(default_factory=Temperature)

    @property
    def busy(self) -> bool:
        """Return whether a job holds the printer."""
        return self.state in BUSY_STATES

    def has_targets(self, *, nozzle: float | None, bed: float | None) -> bool:
        """Return whether the heaters are set to these targets (None: any target)."""
        return (nozzle is None or self.nozzle.target == nozzle) and (
            bed is None or self.bed.target == bed
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PrinterInfo:
    """Who a print server is: what identifies it across restarts and address changes."""

    kind: PrinterKind
    # A stable id of the server (OctoPrint's discovery UUID, Moonraker's instance id),
    # or its URL where the server has none.
    unique_id: str
    name: str
    version: str | None = None
    # Camera URLs the server knows, if any.
    stream_url: str | None = None
    snapshot_url: str | None = None


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A G-code file on the print server."""

    name: str
    size: int | None = None
    modified: datetime | None = None


class PrinterError(Exception):
    """Base error of the printer clients; its message is fit to show a user."""


class PrinterConnectionError(PrinterError):
    """The print server could not be reached or timed out."""


class PrinterAuthError(PrinterError):
    """The print server rejected the API key."""


class PrinterBusyError(PrinterError):
    """The printer is in a state that does not allow the command (e.g. already printing)."""


class PrinterFileNotFoundError(PrinterError):
    """The print server has no file of that name."""


class PrinterCommandError(PrinterError):
    """The server took a command, but reading the printer back shows it did not happen."""


type StatusListener = Callable[[PrinterStatus], Awaitable[None] | None]


class PrinterClient(ABC):
    """One print server, reached over HTTP (and a WebSocket where it pushes).

    Every command waits until reading the printer back shows it took effect, or
    raises `PrinterCommandError`: print servers accept commands that do nothing.
    """

    kind: PrinterKind
    # Whether `listen` delivers status changes as they happen (else: poll `status`).
    pushes: bool = False

    @abstractmethod
    async def info(self) -> PrinterInfo:
        """Return who the server is; raise `PrinterAuthError` for a rejected key."""

    @abstractmethod
    async def status(self) -> PrinterStatus:
        """Return the printer's status now."""

    @abstractmethod
    async def list_files(self) -> list[StoredFile]:
        """Return the G-code files the server holds."""

    @abstractmethod
    async def upload(self, path: Path, name: str | None = None) -> StoredFile:
        """Upload a local G-code file; `name` is its name on the server."""

    @abstractmethod
    async def start(self, name: str) -> PrinterStatus:
        """Start printing a file the server holds, and return the printing status.

        Raise `PrinterFileNotFoundError` if there is no such file and
        `PrinterBusyError` if a job holds the printer.
        """

    @abstractmethod
    async def set_targets(
        self, *, nozzle: float | None = None, bed: float | None = None
    ) -> PrinterStatus:
        """Set the nozzle and bed target temperatures in °C (None leaves one as it is).

        Return once the printer reports the new targets; it does not wait for the
        heaters to reach them.
        """

    @abstractmethod
    async def pause(self) -> PrinterStatus:
        """Pause the running job; return once the printer is paused."""

    @abstractmethod
    async def resume(self) -> PrinterStatus:
        """Resume the paused job; return once the printer prints again."""

    @abstractmethod
    async def cancel(self) -> PrinterStatus:
        """Cancel the job; return once the printer no longer prints."""

    async def listen(self, listener: StatusListener) -> None:
        """Deliver every status change to `listener` until cancelled (push servers only)."""
        raise NotImplementedError(f"{self.kind} does not push its status")

    async def close(self) -> None:  # noqa: B027 - a polled client holds nothing open
        """Release what the client holds open (a WebSocket); the session stays the caller's."""
