"""What every failure detector offers: one frame in, one score with a reason out."""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime

# The picture formats a snapshot may come in: leading bytes, media type, file extension.
_IMAGE_TYPES = (
    (b"\xff\xd8\xff", "image/jpeg", ".jpg"),
    (b"\x89PNG\r\n\x1a\n", "image/png", ".png"),
)


def image_type(image: bytes) -> tuple[str, str] | None:
    """Return the media type and file extension of a JPEG or PNG snapshot, else None."""
    for magic, media_type, extension in _IMAGE_TYPES:
        if image.startswith(magic):
            return media_type, extension
    return None


class DetectorError(Exception):
    """A detector cannot work until someone fixes its setup; its message is fit to show."""


class DetectorAuthError(DetectorError):
    """The detector's service rejected the token."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Box:
    """A rectangle in fractions of the frame: (0, 0) is the top left, (1, 1) the bottom right.

    Fractions keep a box right when the camera's resolution changes.
    """

    left: float
    top: float
    right: float
    bottom: float

    def __post_init__(self) -> None:
        """Refuse a box that is empty or reaches outside the frame."""
        if not (0 <= self.left < self.right <= 1 and 0 <= self.top < self.bottom <= 1):
            raise ValueError(f"{self} is not a box inside the frame")

    def pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Return (left, top, right, bottom) in pixels of a `width` by `height` picture."""
        left, top = round(self.left * width), round(self.top * height)
        right = max(round(self.right * width), left + 1)
        bottom = max(round(self.bottom * height), top + 1)
        return left, top, right, bottom


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """One camera snapshot."""

    # JPEG or PNG bytes, as the camera sent them.
    image: bytes
    taken_at: datetime
    # Where a detector that fetches images itself (Obico's ML API) finds this snapshot.
    url: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameContext:
    """Where a frame stands in the watch: the detector's view of the job."""

    # 0 for the first frame since the watch (re)started.
    index: int
    # Frames the watch ignores at the start; a detector may learn the scene meanwhile.
    warmup_frames: int

    @property
    def warming_up(self) -> bool:
        """Return whether this frame is still in the warm-up."""
        return self.index < self.warmup_frames


@dataclass(frozen=True, slots=True)
class FrameScore:
    """A detector's verdict on one frame."""

    # How much the frame looks like a failure, 0 (fine) to 1 (failing); None when the
    # detector could not tell (still learning, no answer, an answer it cannot read).
    score: float | None
    # A short explanation, fit to show a user.
    reason: str
    # The measurements behind the score, for the evidence record.
    details: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse a score outside [0, 1]."""
        if self.score is not None and not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score {self.score} is outside [0, 1]")


class Detector(ABC):
    """Turns one frame into a failure score.

    A detector may keep state about the current job (a reference frame); the watch
    feeds it one frame at a time, in order, and calls `reset` when a job starts or
    resumes.
    """

    # Names the detector in results and evidence.
    name: str

    @abstractmethod
    async def score(self, frame: Frame, context: FrameContext) -> FrameScore:
        """Return how much `frame` looks like a failing print.

        Trouble with one frame (no answer, an unreadable answer) gives an unknown
        score; only a setup someone must fix raises `DetectorError`.
        """

    @abstractmethod
    def reset(self) -> None:
        """Forget the current job: the next frame is the first of a new one."""
