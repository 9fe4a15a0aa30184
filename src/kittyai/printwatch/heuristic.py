"""The offline detector: image differences and texture against the first layer, no model.

`HeuristicDetector` is a heuristic. It does not know what a print failure looks
like; it knows what a print that goes well does not do: during a good print, the
bed around the part stays as it was after the first layer, and new things appear
only where the part grows and the toolhead works. Spaghetti breaks that rule:
strands and blobs spread over the bed around the part. The detector measures
exactly that, in the print region (the whole frame unless configured), on the
brightness plus the colourfulness of each pixel:

1. **Learning** (the watch's warm-up): the first frame is the anchor; every
   warm-up frame is compared with it, and what changes in a fifth of them (the
   first layer, the toolhead working over it) is the part's *footprint*, widened
   by a margin and extended to the top of the region, since a camera in front of
   the printer sees the part grow upwards. A configured footprint box replaces
   the learned one. The pixelwise median of the last five warm-up frames becomes
   the *reference* (the moving toolhead and the sensor noise drop out of it), and
   how much each pixel wandered over them becomes its noise level.
2. **Every frame after**: the frame is registered to the reference (a
   coarse-to-fine search finds a shift of up to 4 % of the picture's width,
   sub-pixel, so a camera bump does not look like a failure), then compared with
   it through a local lighting model (each neighbourhood's gain and offset are
   fitted, so a light switched on, a tint or a gradient does not look like
   spaghetti), tolerant of sub-pixel jitter and of each pixel's own noise. A pixel
   counts as changed only when it differs in this frame and the one before, so a
   toolhead passing over the bed once does not count.
3. **Score**: outside the footprint, the fraction of changed pixels, the fraction
   in thin structures (what a morphological opening removes: strands), and the
   edge energy the changed pixels gained over the reference, each divided by what
   a clear failure reaches, averaged and clipped to [0, 1].

What it cannot see: failures inside the footprint (a detached part, a layer
shift, stringing or a blob on the part itself, spaghetti hidden behind the part);
anything on the bed that is not filament (a hand, a tool, a cat: it looks just as
new); failures during the warm-up (they become part of the reference; only their
growth afterwards counts); filament close to the bed in brightness and colour
(dark grey on black PEI may warn without pausing); a bed that moves in the
picture (bed-slingers filmed from the frame, beds that drop in Z under a camera
fixed above); a camera that turns or zooms; and anything outside the print
region. It is tuned on synthetic sequences, not on real failures: treat its
verdicts as a prompt to look, and prefer `VisionDetector` or `ObicoDetector`
where a model is available.

The image work takes a few milliseconds a frame on one core (the picture is
decoded at reduced size and processed at 320 pixels wide); `score` runs it in an
executor, so it never blocks the event loop.
"""

import asyncio
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
import io
import math

import numpy as np
from PIL import Image, ImageChops, UnidentifiedImageError

from kittyai.printwatch.detector import Box, Detector, Frame, FrameContext, FrameScore

# Width of the picture the detector works on, in pixels.
WORK_WIDTH = 320
# Warm-up frames whose pixelwise median is the reference.
REFERENCE_FRAMES = 5
# The detector needs at least an anchor and one frame to compare with it.
MIN_LEARNING_FRAMES = 2
# A pixel that changes in this share of the warm-up frames (and in at least
# FOOTPRINT_MIN_FRAMES) belongs to the footprint: the part and where the toolhead
# works over it, not where it once travelled.
FOOTPRINT_SHARE = 0.2
FOOTPRINT_MIN_FRAMES = 2
# How far the footprint is widened, as a fraction of the working width.
FOOTPRINT_MARGIN = 0.03
# The largest camera bump that is registered, as a fraction of the working width.
MAX_SHIFT = 0.04

type _Pyramid = tuple[np.ndarray, np.ndarray, np.ndarray]

_WHOLE_FRAME = Box(left=0, top=0, right=1, bottom=1)
# Side of the square blocks the lighting model is fitted on, in working pixels;
# the working height is a multiple of it.
_BLOCK = 8
# Regularises the lighting model (levels squared): flat neighbourhoods are
# matched by their mean, textured ones by gain and offset.
_LIGHT_EPS = 4.0
# A pixel has changed when it lies this many noise sigmas outside what the
# reference predicts, and at least this many levels (of 0 to 510: brightness plus
# chroma).
_CHANGE_SIGMAS = 5.0
_CHANGE_FLOOR = 6.0
# Where the reference has an edge, a pixel may stray this share of its contrast more.
_EDGE_TOLERANCE = 0.35
# The median absolute deviation of Gaussian noise times this is its sigma, and a
# frame's difference from the median of five has this much more noise than the frame.
_MAD_TO_SIGMA = 1.4826 * 1.15
# The lighting model is not fitted where a neighbourhood keeps less than this share
# of its pixels.
_MIN_FIT_SHARE = 0.3
# Differences of high-passed pictures are cut here (in their contrast units) while
# registering, so that what moved or is new cannot outweigh the static scene.
_SHIFT_TRUNCATE = 4.0
# A shift must beat no shift by this factor: a still camera stays still.
_SHIFT_MARGIN = 0.97
# Registration searches every shift again when the best near the last one matches
# this much worse than the last one did.
_RESEARCH_FACTOR = 1.25
# Shifts smaller than this (working pixels) are noise: the frame is taken as is.
_MIN_SHIFT = 0.4
# What a clear failure reaches on each measure; the score is the mean of the three
# ratios, clipped to 1.
_FULL_CHANGED = 0.03
_FULL_THIN = 0.015
_FULL_EDGES = 0.3
# Below this share of the region outside the footprint, fractions are taken of it.
_MIN_OUTSIDE = 0.1


@dataclass(frozen=True, slots=True, kw_only=True)
class HeuristicSettings:
    """Where the heuristic looks; boxes are in fractions of the whole frame."""

    # The part of the frame where the printing happens; None: the whole frame.
    region: Box | None = None
    # Where the part stands and will grow; None: learned during the warm-up.
    footprint: Box | None = None

    def __post_init__(self) -> None:
        """Refuse a footprint outside the region."""
        if self.footprint is not None:
            _relative(self.footprint, self.region or _WHOLE_FRAME)


@dataclass(frozen=True, slots=True)
class _Anchor:
    """A picture others are compared with, and what every comparison needs of it."""

    image: np.ndarray
    # The detail of the full-, half- and quarter-size pictures, for registration.
    pyramid: _Pyramid
    # Each pixel's darkest and brightest neighbour (3 by 3), and their difference.
    low: np.ndarray
    high: np.ndarray
    contrast: np.ndarray
    gradient: np.ndarray
    # The picture at half size, which the lighting model is fitted on, and its mean
    # and variance over each block's neighbourhood.
    half: np.ndarray
    half_mean: np.ndarray
    half_variance: np.ndarray
    # Each pixel's noise sigma as learned, or None: the picture's median only.
    noise: np.ndarray | None

    @classmethod
    def of(cls, image: np.ndarray, noise: np.ndarray | None = None) -> _Anchor:
        low, high, half = _min3(image), _max3(image), _blocks(image, 2)
        half_mean = _neighbourhood(half, _BLOCK // 2)
        return cls(
            image=image,
            noise=noise,
            pyramid=_pyramid(image),
            low=low,
            high=high,
            contrast=high - low,
            gradient=_gradient(image),
            half=half,
            half_mean=half_mean,
            half_variance=_neighbourhood(half * half, _BLOCK // 2) - half_mean**2,
        )


@dataclass(frozen=True, slots=True)
class _Registration:
    """Where a frame lies against an anchor, and how well it matched at quarter size."""

    # (dy, dx) in working pixels: the frame sampled at (y + dy, x + dx) is the anchor.
    shift: tuple[float, float] = (0.0, 0.0)
    # The quarter-size mismatch at the best whole shift; None before any frame.
    cost: float | None = None


@dataclass(frozen=True, slots=True)
class _Comparison:
    """A frame registered to an anchor, and where it differs from it."""

    aligned: np.ndarray
    valid: np.ndarray
    changed: np.ndarray
    # The frame's local gain over the anchor, per pixel.
    gain: np.ndarray
    registration: _Registration

    @property
    def shift(self) -> float:
        """Return how far the camera moved against the anchor, in working pixels."""
        return math.hypot(*self.registration.shift)


@dataclass(slots=True)
class _Reference:
    anchor: _Anchor
    # Where the part is expected; everything else should stay as it is.
    outside: np.ndarray
    previous_changed: np.ndarray
    # The frame before's registration, where the next one starts looking.
    registration: _Registration


@dataclass(slots=True)
class _Job:
    """What the detector learns about one job."""

    size: tuple[int, int] | None = None
    anchor: _Anchor | None = None
    counts: np.ndarray | None = None
    recent: deque[np.ndarray] = field(default_factory=lambda: deque(maxlen=REFERENCE_FRAMES))
    # The frame before's registration against the anchor.
    registration: _Registration = field(default_factory=_Registration)
    reference: _Reference | None = None


class HeuristicDetector(Detector):
    """Flags strands and blobs outside the part's footprint; offline, numpy and Pillow only."""

    name = "heuristic"

    def __init__(
        self, settings: HeuristicSettings | None = None, *, executor: Executor | None = None
    ) -> None:
        """Look where `settings` say; do the image work in `executor` (None: the loop's)."""
        self._settings = settings or HeuristicSettings()
        self._executor = executor
        self._job = _Job()

    @property
    def settings(self) -> HeuristicSettings:
        """Return where the detector looks."""
        return self._settings

    async def score(self, frame: Frame, context: FrameContext) -> FrameScore:
        """Score `frame` against the job's reference; unknown while learning the scene."""
        # The job is taken now: a reset meanwhile starts a new one, left untouched.
        job = self._job
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._analyse, job, frame, context)

    def reset(self) -> None:
        """Forget the scene: the next frame starts learning a new one."""
        self._job = _Job()

    def _analyse(self, job: _Job, frame: Frame, context: FrameContext) -> FrameScore:
        try:
            picture = self._decode(frame.image, job)
        except UnidentifiedImageError, OSError, ValueError:
            return FrameScore(None, "the snapshot is not a picture")
        learning = max(context.warmup_frames, MIN_LEARNING_FRAMES)
        if job.reference is None:
            return self._learn(job, picture, context.index, learning)
        return self._judge(job.reference, picture)

    def _decode(self, image: bytes, job: _Job) -> np.ndarray:
        """Return the print region at the working size, as brightness plus colourfulness.

        Grey levels alone lose filament that is as bright as the bed but of another
        colour (green on grey); adding the chroma (largest channel minus smallest)
        keeps it, and the lighting model copes with it as with the brightness.
        """
        region = self._settings.region or _WHOLE_FRAME
        with Image.open(io.BytesIO(image)) as picture:
            # A JPEG decodes at a half or a quarter of its size almost for free.
            needed = WORK_WIDTH / (region.right - region.left)
            picture.draft("RGB", (math.ceil(needed), math.ceil(needed / 2)))
            colour = picture.convert("RGB")
        colour = colour.crop(region.pixels(*colour.size))
        if job.size is None:
            width, height = colour.size
            rows = max(round(height * WORK_WIDTH / width / _BLOCK), 2) * _BLOCK
            job.size = (WORK_WIDTH, rows)
        # Downscaling averages the sensor noise away too.
        colour = colour.resize(job.size, Image.Resampling.BOX)
        red, green, blue = colour.split()
        largest = ImageChops.lighter(ImageChops.lighter(red, green), blue)
        smallest = ImageChops.darker(ImageChops.darker(red, green), blue)
        brightness = np.asarray(colour.convert("L"), dtype=np.float32)
        return brightness + np.asarray(ImageChops.subtract(largest, smallest), dtype=np.float32)

    # ---------------------------------------------------------------- learning

    def _learn(self, job: _Job, picture: np.ndarray, index: int, learning: int) -> FrameScore:
        if job.anchor is None or job.counts is None:
            job.anchor = _Anchor.of(picture)
            job.counts = np.zeros(picture.shape, np.int16)
            job.recent.append(picture)
        else:
            comparison = _compare(job.anchor, picture, job.registration)
            job.registration = comparison.registration
            job.counts += comparison.changed
            job.recent.append(np.where(comparison.valid, comparison.aligned, job.anchor.image))
        if index < learning - 1 or len(job.recent) < MIN_LEARNING_FRAMES:
            return FrameScore(None, f"learning the scene ({index + 1} of {learning} frames)")
        recent = np.stack(job.recent)
        median = np.median(recent, axis=0)
        # How much each pixel wandered over those frames: its own noise, which a
        # textured bed has more of than a plain wall.
        spread = np.median(np.abs(recent - median), axis=0)
        noise = _upsampled(_neighbourhood(spread), median.shape) * _MAD_TO_SIGMA
        reference = _Anchor.of(median, noise)
        # The frames were registered to the anchor: the reference lies where it did.
        last = _compare(reference, picture, job.registration)
        job.reference = _Reference(
            anchor=reference,
            outside=~self._footprint(job.counts, index),
            previous_changed=last.changed,
            registration=last.registration,
        )
        job.anchor, job.counts = None, None
        job.recent.clear()
        return FrameScore(None, "took the reference frame")

    def _footprint(self, counts: np.ndarray, compared: int) -> np.ndarray:
        """Return where the part is expected: configured, or what changed while learning."""
        height, width = counts.shape
        if (box := self._settings.footprint) is not None:
            footprint = np.zeros(counts.shape, bool)
            left, top, right, bottom = _relative(box, self._settings.region or _WHOLE_FRAME).pixels(
                width, height
            )
            footprint[top:bottom, left:right] = True
            return footprint
        changed = counts >= max(FOOTPRINT_SHARE * compared, min(FOOTPRINT_MIN_FRAMES, compared))
        # Specks are noise; what remains is widened by the margin.
        changed &= ~_thin(changed)
        footprint = _box_sum(changed, round(FOOTPRINT_MARGIN * width)) > 0
        # And everything above it: the part grows upwards in the picture.
        return np.maximum.accumulate(footprint[::-1], axis=0)[::-1]

    # ----------------------------------------------------------------- judging

    def _judge(self, reference: _Reference, picture: np.ndarray) -> FrameScore:
        comparison = _compare(reference.anchor, picture, reference.registration)
        reference.registration = comparison.registration
        # Only what differs in two frames in a row: a toolhead passing once does not count.
        persistent = comparison.changed & reference.previous_changed
        reference.previous_changed = comparison.changed
        watched = reference.outside & comparison.valid
        area = max(int(watched.sum()), round(_MIN_OUTSIDE * watched.size))
        changed = float((persistent & watched).sum()) / area
        thin = float((_thin(persistent) & watched).sum()) / area
        growth = _edge_growth(reference.anchor, comparison, persistent & watched, watched)
        score = min(1.0, (changed / _FULL_CHANGED + thin / _FULL_THIN + growth / _FULL_EDGES) / 3)
        # As a share of the picture's width, whatever the camera's resolution.
        shift = comparison.shift / WORK_WIDTH
        reason = (
            f"{changed:.1%} of the bed around the part changed, {thin:.1%} in thin strands,"
            f" edges {growth:+.0%}"
        )
        if shift:
            reason += f"; re-registered the camera, moved by {shift:.1%} of the picture"
        return FrameScore(
            round(score, 4),
            reason,
            {
                "changed": round(changed, 5),
                "thin": round(thin, 5),
                "edge_growth": round(growth, 4),
                "shift": round(shift, 4),
            },
        )


# ----------------------------------------------------------------- image work


def _compare(anchor: _Anchor, frame: np.ndarray, previous: _Registration) -> _Comparison:
    """Register `frame` to `anchor`, starting from the frame before's, and find what differs.

    Lighting aside: see the lighting model below.
    """
    registration = _register(anchor.pyramid, _pyramid(frame), previous)
    aligned, valid, weight = frame, np.ones(frame.shape, bool), None
    if math.hypot(*registration.shift) >= _MIN_SHIFT:
        aligned, valid = _shifted(frame, *registration.shift)
        weight = _blocks(valid.astype(np.float32), 2)
    else:
        registration = _Registration((0.0, 0.0), registration.cost)
    # The lighting model: in each neighbourhood, the frame is a gain times the anchor
    # plus an offset. It is fitted at half size, where edges the registration left a
    # fraction of a pixel apart still agree and do not dilute the gain; and twice, the
    # second time without what the first found changed, so that a toolhead in a
    # neighbourhood does not skew the fit for the bed beside it.
    half = _blocks(aligned, 2)
    slope, offset, _ = _light_fit(anchor, half, weight)
    gain, base = _upsampled(slope, frame.shape), _upsampled(offset, frame.shape)
    kept = valid & ~_deviations(anchor, aligned, valid, gain, base)
    refit_slope, refit_offset, share = _light_fit(anchor, half, _blocks(kept.astype(np.float32), 2))
    # Neighbourhoods that kept too few pixels keep the first fit.
    poor = share < _MIN_FIT_SHARE
    gain = _upsampled(np.where(poor, slope, refit_slope), frame.shape)
    base = _upsampled(np.where(poor, offset, refit_offset), frame.shape)
    changed = _deviations(anchor, aligned, valid, gain, base)
    # A lone pixel is noise; filament is at least a line.
    changed &= _neighbours(changed) > 0
    return _Comparison(aligned, valid, changed, gain, registration)


def _light_fit(
    anchor: _Anchor, half: np.ndarray, weight: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return gain, offset and the share of pixels kept, per block, fitting `half` on the anchor.

    `weight` (half size) keeps pixels out of the fit; None keeps them all.
    """
    neighbourhood = partial(_neighbourhood, block=_BLOCK // 2)
    if weight is None:
        share = np.ones(anchor.half_mean.shape, np.float32)
        mean_anchor, variance = anchor.half_mean, anchor.half_variance
        mean = neighbourhood(half)
        covariance = neighbourhood(anchor.half * half) - mean_anchor * mean
    else:
        share = neighbourhood(weight)
        kept = np.maximum(share, 1e-6)
        weighted_anchor = weight * anchor.half
        mean_anchor = neighbourhood(weighted_anchor) / kept
        mean = neighbourhood(weight * half) / kept
        variance = neighbourhood(weighted_anchor * anchor.half) / kept - mean_anchor**2
        covariance = neighbourhood(weighted_anchor * half) / kept - mean_anchor * mean
    slope = np.maximum(covariance / (np.maximum(variance, 0) + _LIGHT_EPS), 0)
    return slope, mean - slope * mean_anchor, share


def _deviations(
    anchor: _Anchor, frame: np.ndarray, valid: np.ndarray, gain: np.ndarray, base: np.ndarray
) -> np.ndarray:
    """Return where `frame` leaves what the anchor, lit by `gain` and `base`, predicts."""
    noise = _noise(np.abs(frame - gain * anchor.image - base), valid)
    if anchor.noise is not None:
        # Noise differs over the picture (a textured bed, a plain wall): each pixel's
        # own as learned, brightened like the frame, but never below the picture's.
        noise = np.maximum(gain * anchor.noise, noise)
    threshold = np.maximum(_CHANGE_SIGMAS * noise, _CHANGE_FLOOR)
    # Resampling and JPEG ringing err in proportion to an edge's contrast.
    threshold += _EDGE_TOLERANCE * gain * anchor.contrast
    # Tolerant of sub-pixel jitter: a pixel must leave the range of its neighbours.
    low = gain * anchor.low + base
    high = gain * anchor.high + base
    return (np.maximum(low - frame, frame - high) > threshold) & valid


def _noise(residual: np.ndarray, valid: np.ndarray) -> float:
    """Return the noise sigma: most of the picture is unchanged, so the median residual."""
    sample = residual[::3, ::3][valid[::3, ::3]]
    return 1.4826 * float(np.median(sample)) if sample.size else 0.0


def _edge_growth(
    anchor: _Anchor, comparison: _Comparison, changed: np.ndarray, where: np.ndarray
) -> float:
    """Return the edge energy the `changed` pixels gained, over all the anchor's in `where`.

    Both lit like the frame. Strands bring many edges; a lighting change brings none
    where nothing changed.
    """
    expected = anchor.gradient * comparison.gain
    total = float(expected[where].sum())
    if total <= 0:
        return 0.0
    gained = np.maximum(_gradient(comparison.aligned)[changed] - expected[changed], 0)
    return float(gained.sum()) / total


def _register(anchor: _Pyramid, frame: _Pyramid, previous: _Registration) -> _Registration:
    """Return where the frame lies against the anchor.

    Coarse to fine on a truncated difference, which the moving toolhead and new
    filament barely sway. At a quarter of the working size, the neighbours of the
    previous frame's shift (a camera seldom moves); every shift when one of them
    is better, or when the best matches much worse than the frame before did.
    Then the neighbours of the best at half size; then at full size the best and
    its four neighbours, through which a V gives the fraction of a pixel.
    """
    limit = max(1, round(MAX_SHIFT * WORK_WIDTH / 4))
    py, px = (round(value / 4) for value in previous.shift)
    coarse = _costs(anchor[2], frame[2], range(py - 1, py + 2), range(px - 1, px + 2))
    best = _best(coarse)
    if previous.cost is None or best != (py, px) or coarse[best] > _RESEARCH_FACTOR * previous.cost:
        around = range(-limit, limit + 1)
        coarse = _costs(anchor[2], frame[2], around, around)
        best = _best(coarse)
    cost = coarse[best]
    rows, columns = (range(2 * value - 1, 2 * value + 2) for value in best)
    best = _best(_costs(anchor[1], frame[1], rows, columns))
    by, bx = 2 * best[0], 2 * best[1]
    costs: dict[tuple[int, int], float] = {}
    for _ in range(limit):
        for dy, dx in ((by, bx), (by - 1, bx), (by + 1, bx), (by, bx - 1), (by, bx + 1)):
            if (dy, dx) not in costs:
                costs |= _costs(anchor[0], frame[0], range(dy, dy + 1), range(dx, dx + 1))
        step = _best(costs)
        if step == (by, bx):
            break
        # The half-size step left the best a pixel or two away: walk to it.
        by, bx = step

    def vertex(before: float, after: float) -> float:
        # Near its minimum the truncated difference grows like |shift|: fit a V.
        rise = max(before, after) - costs[by, bx]
        return 0.0 if rise <= 0 else max(-0.5, min(0.5, 0.5 * (before - after) / rise))

    if (by - 1, bx) not in costs:
        return _Registration((float(by), float(bx)), cost)
    return _Registration(
        (
            by + vertex(costs[by - 1, bx], costs[by + 1, bx]),
            bx + vertex(costs[by, bx - 1], costs[by, bx + 1]),
        ),
        cost,
    )


def _costs(
    anchor: np.ndarray, frame: np.ndarray, rows: range, columns: range
) -> dict[tuple[int, int], float]:
    """Return the mismatch of `anchor` and `frame` moved by each (dy, dx)."""
    height, width = anchor.shape
    costs = {}
    for dy in rows:
        for dx in columns:
            a = anchor[max(0, -dy) : height - max(0, dy), max(0, -dx) : width - max(0, dx)]
            f = frame[max(0, dy) : height + min(0, dy), max(0, dx) : width + min(0, dx)]
            costs[dy, dx] = float(np.minimum(np.abs(a - f), _SHIFT_TRUNCATE).mean())
    return costs


def _best(costs: dict[tuple[int, int], float]) -> tuple[int, int]:
    """Return the cheapest shift, or no shift unless another is clearly cheaper."""
    best = min(costs, key=costs.__getitem__)
    if (0, 0) in costs and costs[best] > _SHIFT_MARGIN * costs[0, 0]:
        return (0, 0)
    return best


def _pyramid(image: np.ndarray) -> _Pyramid:
    """Return the detail of the full-, half- and quarter-size pictures, in contrast units.

    Each level's detail is what the next smaller one, enlarged again, lacks.
    """
    half = _blocks(image, 2)
    quarter = _blocks(half, 2)
    return (
        _detail(image, _upsampled(half, image.shape)),
        _detail(half, _upsampled(quarter, half.shape)),
        _detail(quarter, _upsampled(_blocks(quarter, 2), quarter.shape)),
    )


def _detail(image: np.ndarray, smooth: np.ndarray) -> np.ndarray:
    """Return `image` minus its smooth version over their mean difference, whatever the light."""
    detail = image - smooth
    step = max(1, image.shape[1] // 80)
    return detail / max(float(np.abs(detail[::step, ::step]).mean()), 1e-3)


def _blocks(image: np.ndarray, size: int) -> np.ndarray:
    """Return the means of `size` by `size` blocks (Pillow's reduce is the fastest way)."""
    reduced = Image.fromarray(image.astype(np.float32, copy=False)).reduce(size)
    return np.asarray(reduced, dtype=np.float32)


def _neighbourhood(image: np.ndarray, block: int = _BLOCK) -> np.ndarray:
    """Return the mean over each block and its eight neighbours (24 by 24 working pixels)."""
    return (_box_sum(_blocks(image, block), 1) / 9).astype(np.float32)


def _upsampled(blocks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Return per-block values spread smoothly over the pixels."""
    resized = Image.fromarray(blocks.astype(np.float32, copy=False)).resize(
        (shape[1], shape[0]), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.float32)


def _shifted(image: np.ndarray, dy: float, dx: float) -> tuple[np.ndarray, np.ndarray]:
    """Return `image` sampled at (y + dy, x + dx), bilinearly, and where that lies inside it."""
    height, width = image.shape
    iy, ix = math.floor(dy), math.floor(dx)
    fy, fx = dy - iy, dx - ix
    pad = max(abs(iy), abs(ix)) + 2
    padded = np.pad(image, pad, mode="edge")
    y0, x0 = pad + iy, pad + ix

    def corner(oy: int, ox: int) -> np.ndarray:
        return padded[y0 + oy : y0 + oy + height, x0 + ox : x0 + ox + width]

    moved = (1 - fy) * ((1 - fx) * corner(0, 0) + fx * corner(0, 1)) + fy * (
        (1 - fx) * corner(1, 0) + fx * corner(1, 1)
    )
    valid = np.zeros(image.shape, bool)
    top, bottom = max(0, math.ceil(-dy)), min(height, math.floor(height - 1 - dy) + 1)
    left, right = max(0, math.ceil(-dx)), min(width, math.floor(width - 1 - dx) + 1)
    valid[top:bottom, left:right] = True
    return moved.astype(np.float32), valid


def _box_sum(image: np.ndarray, radius: int) -> np.ndarray:
    """Return the sum over the (2 * radius + 1)-pixel square around each pixel, edges repeated."""
    size = 2 * radius + 1
    height, width = image.shape
    padded = np.pad(image.astype(np.float64), ((radius + 1, radius), (0, 0)), "edge")
    rows = np.cumsum(padded, 0)
    rows = rows[size : size + height] - rows[:height]
    total = np.cumsum(np.pad(rows, ((0, 0), (radius + 1, radius)), "edge"), 1)
    return total[:, size : size + width] - total[:, :width]


def _neighbours(mask: np.ndarray) -> np.ndarray:
    """Return how many of each pixel's eight neighbours are set in `mask`."""
    padded = np.pad(mask, 1).astype(np.uint8)
    height, width = mask.shape
    count = np.zeros(mask.shape, np.uint8)
    for dy in range(3):
        for dx in range(3):
            if dy != 1 or dx != 1:
                count += padded[dy : dy + height, dx : dx + width]
    return count


def _min3(image: np.ndarray) -> np.ndarray:
    padded = np.pad(image, 1, mode="edge")
    rows = np.minimum(np.minimum(padded[:-2], padded[1:-1]), padded[2:])
    return np.minimum(np.minimum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


def _max3(image: np.ndarray) -> np.ndarray:
    padded = np.pad(image, 1, mode="edge")
    rows = np.maximum(np.maximum(padded[:-2], padded[1:-1]), padded[2:])
    return np.maximum(np.maximum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


def _thin(mask: np.ndarray) -> np.ndarray:
    """Return the parts of `mask` a 3-by-3 opening removes: lines and specks, not areas."""
    padded = np.pad(mask, 1)
    rows = padded[:-2] & padded[1:-1] & padded[2:]
    eroded = np.pad(rows[:, :-2] & rows[:, 1:-1] & rows[:, 2:], 1)
    rows = eroded[:-2] | eroded[1:-1] | eroded[2:]
    return mask & ~(rows[:, :-2] | rows[:, 1:-1] | rows[:, 2:])


def _gradient(image: np.ndarray) -> np.ndarray:
    """Return |∂x| + |∂y| per pixel."""
    gradient = np.zeros(image.shape, np.float32)
    gradient[:, 1:] += np.abs(np.diff(image, axis=1))
    gradient[1:, :] += np.abs(np.diff(image, axis=0))
    return gradient


def _relative(box: Box, region: Box) -> Box:
    """Return `box` (in fractions of the frame) in fractions of `region`, clipped to it."""
    width, height = region.right - region.left, region.bottom - region.top

    def clip(value: float) -> float:
        return min(1.0, max(0.0, value))

    try:
        return Box(
            left=clip((box.left - region.left) / width),
            top=clip((box.top - region.top) / height),
            right=clip((box.right - region.left) / width),
            bottom=clip((box.bottom - region.top) / height),
        )
    except ValueError:
        raise ValueError(f"the footprint {box} lies outside the region {region}") from None
