"""Temporal smoothing of per-frame scores into ok / warn / pause, as Obico does it.

One frame says little: a hand in the picture or a travel move can look odd once.
The watch acts on an exponentially weighted mean of the scores instead:

    ewm = alpha * score + (1 - alpha) * ewm,  alpha = 2 / (span + 1),  span 12,  ewm starts at 0

and compares `ewm * sensitivity` with two levels: the warn level and the pause
level, 1.75 times the warn level. Nothing is judged during the warm-up (the first
frames of a job, while the first layer goes down and a detector learns the
scene), although the mean already follows the scores. An unknown score leaves the
mean as it is. The smoother never recommends cancelling: pausing keeps the part
and lets a person decide.

Obico tuned span 12 and 30 warm-up frames for a snapshot every 10 seconds, which
is KITTY's default interval too; `WatchSettings.for_interval` keeps the warm-up at
five minutes for another interval. Obico also compares the mean with a lifetime
baseline per printer; KITTY keeps no such baseline, so its levels are absolute.
"""

from dataclasses import dataclass
from enum import StrEnum
import math

EWM_SPAN = 12
# The pause level is this many times the warn level.
PAUSE_FACTOR = 1.75
DEFAULT_INTERVAL_S = 10.0
DEFAULT_WARMUP_S = 300.0
DEFAULT_WARMUP_FRAMES = round(DEFAULT_WARMUP_S / DEFAULT_INTERVAL_S)
DEFAULT_WARN_LEVEL = 0.38


class Level(StrEnum):
    """What the watch recommends after a frame."""

    OK = "ok"
    # Looks wrong: worth a notification.
    WARN = "warn"
    # Looks failed: pause the printer.
    PAUSE = "pause"


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchSettings:
    """How the watch turns scores into levels."""

    # Frames judged as OK at the start of a job (and after a resume).
    warmup_frames: int = DEFAULT_WARMUP_FRAMES
    warn_level: float = DEFAULT_WARN_LEVEL
    # Scales the smoothed score before it meets the levels: 2 warns and pauses at
    # half the score, 0.5 at twice the score (a level above 1 is never reached).
    sensitivity: float = 1.0
    span: int = EWM_SPAN

    def __post_init__(self) -> None:
        """Refuse settings the smoother cannot work with."""
        if self.warmup_frames < 0:
            raise ValueError("warmup_frames must not be negative")
        if not 0 < self.warn_level < 1:
            raise ValueError("warn_level must be between 0 and 1")
        if self.sensitivity <= 0:
            raise ValueError("sensitivity must be positive")
        if self.span < 1:
            raise ValueError("span must be at least 1")

    @classmethod
    def for_interval(
        cls,
        interval_s: float,
        *,
        warmup_s: float = DEFAULT_WARMUP_S,
        warn_level: float = DEFAULT_WARN_LEVEL,
        sensitivity: float = 1.0,
    ) -> WatchSettings:
        """Return settings whose warm-up lasts `warmup_s` at one frame every `interval_s`."""
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        return cls(
            warmup_frames=math.ceil(warmup_s / interval_s),
            warn_level=warn_level,
            sensitivity=sensitivity,
        )

    @property
    def alpha(self) -> float:
        """Return the weight of the newest score in the mean."""
        return 2 / (self.span + 1)

    @property
    def pause_level(self) -> float:
        """Return the level at which the watch recommends pausing."""
        return self.warn_level * PAUSE_FACTOR


@dataclass(frozen=True, slots=True)
class Smoothed:
    """The smoother's view after one frame."""

    # The frame's own score; None when unknown.
    score: float | None
    # The exponentially weighted mean after this frame.
    smoothed: float
    level: Level
    warming_up: bool
    # Every score since the smoother (re)started, oldest first, this frame's last.
    scores: tuple[float | None, ...]


class Smoother:
    """Smooths one job's scores and says when to warn and when to pause."""

    def __init__(self, settings: WatchSettings) -> None:
        """Smooth with `settings`."""
        self._settings = settings
        self._scores: list[float | None] = []
        self._mean = 0.0

    @property
    def settings(self) -> WatchSettings:
        """Return the settings."""
        return self._settings

    @property
    def smoothed(self) -> float:
        """Return the current weighted mean."""
        return self._mean

    def update(self, score: float | None) -> Smoothed:
        """Take the next frame's score; return the mean and the level it reaches."""
        settings = self._settings
        if score is not None:
            self._mean = settings.alpha * score + (1 - settings.alpha) * self._mean
        self._scores.append(score)
        warming_up = len(self._scores) <= settings.warmup_frames
        return Smoothed(
            score=score,
            smoothed=self._mean,
            level=Level.OK if warming_up else self.level_of(self._mean),
            warming_up=warming_up,
            scores=tuple(self._scores),
        )

    def level_of(self, smoothed: float) -> Level:
        """Return the level a weighted mean reaches, warm-up aside."""
        adjusted = smoothed * self._settings.sensitivity
        if adjusted >= self._settings.pause_level:
            return Level.PAUSE
        if adjusted >= self._settings.warn_level:
            return Level.WARN
        return Level.OK

    def reset(self) -> None:
        """Start afresh: mean 0, warm-up again, no scores."""
        self._scores = []
        self._mean = 0.0
