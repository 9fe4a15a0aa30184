"""One print job's watch: frames in, a level per frame out, and the evidence kept."""

import asyncio
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
import json
from pathlib import Path
import re
from typing import Any

from kittyai.printwatch.detector import Detector, Frame, FrameContext, image_type
from kittyai.printwatch.smoothing import Level, Smoother, WatchSettings

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchResult:
    """What the watch says after one frame."""

    # 0 for the job's first frame; it keeps counting across resumes.
    index: int
    taken_at: datetime
    # The detector's score for this frame, 0 to 1; None when it could not tell.
    score: float | None
    reason: str
    # The smoothed score after this frame.
    smoothed: float
    level: Level
    warming_up: bool
    # True on the one frame that first reaches the pause level (per job, and again
    # after each resume): pause the printer now.
    should_pause: bool
    # The detector's measurements behind the score.
    details: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Evidence:
    """The files an evidence record was written to."""

    # The snapshot that triggered the pause (or the latest one, without a pause).
    image: Path
    # The job's score history and settings, as JSON.
    record: Path


@dataclass(slots=True)
class _Job:
    """What the watch holds for one job."""

    name: str
    smoother: Smoother
    started_at: datetime
    results: list[WatchResult] = field(default_factory=list)
    # Frames since the job started or last resumed.
    since_start: int = 0
    trigger: WatchResult | None = None
    trigger_image: bytes | None = None
    latest_image: bytes | None = None


class PrintWatch:
    """Watches one printer's job: feed it the camera's snapshots in order, act on its levels.

    `process` never blocks the event loop for long (the detectors do their work in
    an executor or over HTTP); `write_evidence` writes files and blocks, so call it
    in an executor. Frames are processed one at a time, in the order they arrive.
    """

    def __init__(
        self, detector: Detector, settings: WatchSettings | None = None, *, job: str = "print"
    ) -> None:
        """Watch the job named `job` with `detector`, smoothing by `settings`."""
        self._detector = detector
        self._settings = settings or WatchSettings()
        self._lock = asyncio.Lock()
        self._job = self._new_job(job)

    @property
    def detector(self) -> Detector:
        """Return the detector."""
        return self._detector

    @property
    def settings(self) -> WatchSettings:
        """Return the smoothing settings."""
        return self._settings

    @property
    def job(self) -> str:
        """Return the name of the job being watched."""
        return self._job.name

    @property
    def results(self) -> tuple[WatchResult, ...]:
        """Return every result of the job, oldest first."""
        return tuple(self._job.results)

    @property
    def trigger(self) -> WatchResult | None:
        """Return the result of the frame that triggered the last pause, if any."""
        return self._job.trigger

    async def process(
        self, image: bytes, *, taken_at: datetime | None = None, url: str | None = None
    ) -> WatchResult:
        """Judge the next snapshot of the job and return what to do.

        `taken_at` defaults to now; `url` is where a detector that fetches images
        itself finds this snapshot. Raises `DetectorError` when the detector cannot
        work at all (a rejected token).
        """
        frame = Frame(image=image, taken_at=taken_at or datetime.now(UTC), url=url)
        async with self._lock:
            # A reset while the detector works starts a new job; this frame stays in the old one.
            job = self._job
            context = FrameContext(
                index=job.since_start, warmup_frames=self._settings.warmup_frames
            )
            verdict = await self._detector.score(frame, context)
            smoothed = job.smoother.update(verdict.score)
            should_pause = smoothed.level is Level.PAUSE and job.trigger is None
            result = WatchResult(
                index=len(job.results),
                taken_at=frame.taken_at,
                score=verdict.score,
                reason=verdict.reason,
                smoothed=smoothed.smoothed,
                level=smoothed.level,
                warming_up=smoothed.warming_up,
                should_pause=should_pause,
                details=verdict.details,
            )
            job.results.append(result)
            job.since_start += 1
            job.latest_image = image
            if should_pause:
                job.trigger, job.trigger_image = result, image
            return result

    def reset(self, job: str) -> None:
        """Start watching a new job named `job`: history, smoothing and detector start afresh."""
        self._job = self._new_job(job)
        self._detector.reset()

    def resume(self) -> None:
        """The job was resumed after a pause: learn the scene again and smooth afresh.

        Whatever was in the picture when the job was resumed (a person judged it
        fine) becomes part of the new reference. The history is kept; the next
        pause is reported again with `should_pause`.
        """
        job = self._job
        job.smoother.reset()
        job.since_start = 0
        job.trigger, job.trigger_image = None, None
        self._detector.reset()

    def write_evidence(self, directory: Path) -> Evidence:
        """Write the triggering snapshot and the job's score history into `directory`.

        Without a pause, the latest snapshot is written. Blocks: call it in an executor.
        Raises `ValueError` before the first frame.
        """
        job = self._job
        image = job.trigger_image or job.latest_image
        if image is None:
            raise ValueError("the watch has seen no frame yet")
        trigger = job.trigger
        moment = (trigger or job.results[-1]).taken_at
        stem = f"{_UNSAFE.sub('_', job.name).strip('._') or 'print'}-{moment:%Y%m%dT%H%M%S}"
        directory.mkdir(parents=True, exist_ok=True)
        known = image_type(image)
        image_path = directory / f"{stem}{known[1] if known else '.img'}"
        record_path = directory / f"{stem}.json"
        image_path.write_bytes(image)
        record = self._record(job, image_path.name)
        record_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
        return Evidence(image=image_path, record=record_path)

    def _record(self, job: _Job, image_name: str) -> dict[str, Any]:
        settings = self._settings
        return {
            "job": job.name,
            "started_at": job.started_at.isoformat(),
            "detector": self._detector.name,
            "settings": {
                **asdict(settings),
                "alpha": settings.alpha,
                "pause_level": settings.pause_level,
            },
            "image": image_name,
            "trigger": None if job.trigger is None else job.trigger.index,
            "frames": [
                {
                    "index": result.index,
                    "taken_at": result.taken_at.isoformat(),
                    "score": result.score,
                    "smoothed": round(result.smoothed, 6),
                    "level": result.level.value,
                    "warming_up": result.warming_up,
                    "reason": result.reason,
                    "details": result.details,
                }
                for result in job.results
            ],
        }

    def _new_job(self, name: str) -> _Job:
        return _Job(name=name, smoother=Smoother(self._settings), started_at=datetime.now(UTC))
