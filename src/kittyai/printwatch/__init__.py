"""The print-failure watch: camera snapshots in, ok / warn / pause out.

While a printer prints, Home Assistant takes a snapshot from the printer's camera
every `DEFAULT_INTERVAL_S` seconds (10) and feeds it to the job's `PrintWatch`. A
`Detector` scores each frame from 0 (fine) to 1 (failing), with a short reason;
the watch smooths the scores the way Obico does (an exponentially weighted mean,
span 12) and, after a warm-up of `DEFAULT_WARMUP_FRAMES` frames (30: five minutes
at the default interval, while the first layer goes down; `WatchSettings.for_interval`
keeps five minutes at another interval), reports a `Level`: `OK`, `WARN` (notify)
or `PAUSE` (pause the printer). The pause level is 1.75 times the warn level; the
user's sensitivity scales both. The watch never recommends cancelling: a paused
print keeps its part, and a person decides.

    detector = HeuristicDetector()  # offline; or one of the two below
    detector = VisionDetector(session, router_url, token, model="kitty-local")
    detector = ObicoDetector(session, "http://obico-ml:3333")  # needs url= per frame
    watch = PrintWatch(detector, WatchSettings(sensitivity=1.0), job="benchy.gcode")

    result = await watch.process(jpeg)  # every interval, while printing
    if result.should_pause:  # true once, on the frame that reached PAUSE
        await printer.pause()
        evidence = await hass.async_add_executor_job(watch.write_evidence, folder)
        # notify with result.reason; attach evidence.image (evidence.record: the scores)
    elif result.level is Level.WARN:
        ...  # notify, once per job

    watch.resume()  # the user resumed the paused print: learn the scene again
    watch.reset("next.gcode")  # a new job starts

One watch per printer, one detector per watch: the heuristic keeps what it learned
about the current job. Feed frames only while the printer prints (not while it is
paused), and call `reset` when a job starts and `resume` when a paused one goes on.

Detectors:

- `HeuristicDetector`: offline, numpy and Pillow only. Compares each frame with
  the first layer, outside the part's footprint, lighting and small camera bumps
  aside. A heuristic, with the limits its module lists; `HeuristicSettings` can
  narrow it to a print region and give it the footprint.
- `VisionDetector`: a vision model's JSON verdict, through KITTY's router. The
  caller picks the routing profile: `kitty-local` never sends a snapshot out of
  the house; `kitty-auto` may send it to a cloud model.
- `ObicoDetector`: a self-hosted Obico ML API, which fetches each snapshot from a
  URL the caller provides (`process(..., url=...)`).

Which calls block: `PrintWatch.write_evidence` writes files (run it in an
executor). `PrintWatch.process` does not block the event loop: the heuristic does
its few milliseconds of image work in an executor (the loop's default, which is
Home Assistant's, unless one is passed), the others wait on HTTP. Everything else
is bookkeeping. A watch judges one frame at a time; a frame that arrives while
the one before is being judged waits for it.

A detector that cannot judge a frame (no answer, an unreadable answer) scores it
as unknown: the smoothed score stays where it was, and nothing is paused on it.
Only a setup someone must fix, such as a rejected token, raises `DetectorError`.
"""

from kittyai.printwatch.detector import (
    Box,
    Detector,
    DetectorAuthError,
    DetectorError,
    Frame,
    FrameContext,
    FrameScore,
)
from kittyai.printwatch.heuristic import HeuristicDetector, HeuristicSettings
from kittyai.printwatch.obico import ObicoDetector
from kittyai.printwatch.smoothing import (
    DEFAULT_INTERVAL_S,
    DEFAULT_WARMUP_FRAMES,
    PAUSE_FACTOR,
    Level,
    Smoothed,
    Smoother,
    WatchSettings,
)
from kittyai.printwatch.vision import VisionDetector
from kittyai.printwatch.watch import Evidence, PrintWatch, WatchResult

__all__ = [
    "DEFAULT_INTERVAL_S",
    "DEFAULT_WARMUP_FRAMES",
    "PAUSE_FACTOR",
    "Box",
    "Detector",
    "DetectorAuthError",
    "DetectorError",
    "Evidence",
    "Frame",
    "FrameContext",
    "FrameScore",
    "HeuristicDetector",
    "HeuristicSettings",
    "Level",
    "ObicoDetector",
    "PrintWatch",
    "Smoothed",
    "Smoother",
    "VisionDetector",
    "WatchResult",
    "WatchSettings",
]
