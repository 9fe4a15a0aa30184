"""Synthetic printer-camera sequences with ground truth, for the print watch.

A seeded generator draws what a webcam in front of a printer sees every few
seconds while it prints: an enclosure wall, the frame's posts, a textured bed, a
part that grows layer by layer (its footprint), the toolhead with its fan and
cable working over the part (and now and then travelling across the bed), sensor
noise, and JPEG compression like a real camera's. The same seed always gives the
same bytes.

Scenarios:

- `GOOD`: the print goes well.
- `SPAGHETTI`: from frame `onset` on the part stops growing and filament strands
  pile up: a blob on the part, strands falling from the nozzle and spreading
  over the bed around the part, more every frame.
- `LIGHTING`: a good print; at frame `event` a light goes on or off (a global
  gain, a colour tint and a left-to-right gradient), and the room light drifts
  slowly all along.
- `BUMP`: a good print; at frame `event` the camera is knocked and the whole
  picture moves by a few pixels for the rest of the print.
- `DARK_SPAGHETTI`: `SPAGHETTI` in near-black filament.

The other scenarios pick a filament colour per seed, dark ones included.

    print_ = generate(Scenario.SPAGHETTI, seed=3)
    for frame in print_.frames:
        frame.image    # JPEG bytes
        frame.failing  # ground truth: spaghetti is in the picture
"""

from dataclasses import dataclass
from enum import StrEnum
import io
import math

import numpy as np
from PIL import Image, ImageDraw

DEFAULT_FRAMES = 90
DEFAULT_SIZE = (640, 480)
# Frames the print watch spends warming up by default; failures start after it.
WARMUP_FRAMES = 30

type RGB = tuple[int, int, int]
type Box = tuple[float, float, float, float]

_FILAMENTS: tuple[RGB, ...] = (
    (235, 235, 230),  # white
    (225, 110, 30),  # orange
    (40, 90, 190),  # blue
    (200, 40, 45),  # red
    (60, 160, 80),  # green
    (150, 150, 155),  # grey
    (45, 45, 50),  # dark grey
    (230, 200, 40),  # yellow
)
_DARK_FILAMENT: RGB = (22, 22, 26)
_BEDS: tuple[RGB, ...] = (
    (182, 150, 92),  # textured gold PEI
    (58, 58, 64),  # black PEI
    (120, 124, 130),  # glass over grey
)


class Scenario(StrEnum):
    """What happens during a synthetic print."""

    GOOD = "good"
    SPAGHETTI = "spaghetti"
    LIGHTING = "lighting"
    BUMP = "bump"
    DARK_SPAGHETTI = "dark_spaghetti"

    @property
    def failing(self) -> bool:
        """Return whether the print fails."""
        return self in (Scenario.SPAGHETTI, Scenario.DARK_SPAGHETTI)


@dataclass(frozen=True, slots=True)
class SyntheticFrame:
    """One snapshot and its ground truth."""

    index: int
    image: bytes
    # Spaghetti is in the picture.
    failing: bool


@dataclass(frozen=True, slots=True)
class SyntheticPrint:
    """A whole print's snapshots, oldest first."""

    scenario: Scenario
    seed: int
    frames: tuple[SyntheticFrame, ...]
    # The first frame with spaghetti; None for a good print.
    onset: int | None
    # The frame of the lighting change or the camera bump, if any.
    event: int | None
    # Where the finished part stands: (left, top, right, bottom) in fractions of
    # the frame, toolhead excluded.
    part_box: Box


@dataclass(slots=True)
class _Part:
    cx: float
    base_y: float
    width: float
    depth: float
    max_height: float
    colour: RGB


def generate(
    scenario: Scenario,
    seed: int,
    *,
    frames: int = DEFAULT_FRAMES,
    size: tuple[int, int] = DEFAULT_SIZE,
    onset: int | None = None,
) -> SyntheticPrint:
    """Draw one print's snapshots; `onset` fixes when spaghetti starts (failing scenarios).

    `size` keeps the 4:3 of the 640x480 layout.
    """
    return _Generator(scenario, seed, frames, size, onset).run()


class _Generator:
    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        frames: int,
        size: tuple[int, int],
        onset: int | None,
    ) -> None:
        self.scenario = scenario
        self.seed = seed
        self.count = frames
        self.width, self.height = size
        self.rng = np.random.default_rng([seed, list(Scenario).index(scenario)])
        rng = self.rng
        # Everything is laid out for 640x480 and scaled.
        self.scale = self.width / 640
        if scenario is Scenario.DARK_SPAGHETTI:
            colour = _DARK_FILAMENT
        else:
            colour = _FILAMENTS[rng.integers(len(_FILAMENTS))]
        width = rng.uniform(60, 150)
        self.part = _Part(
            cx=rng.uniform(250, 390),
            base_y=rng.uniform(380, 425),
            width=width,
            depth=0.32 * width,
            max_height=rng.uniform(70, 150),
            colour=colour,
        )
        self.bed_colour = _BEDS[rng.integers(len(_BEDS))]
        # Spaghetti starts soon after the warm-up, early enough to be caught in the print.
        earliest = WARMUP_FRAMES + 5
        self.onset: int | None = None
        if scenario.failing:
            latest = max(frames - 30, earliest + 1)
            self.onset = onset if onset is not None else int(rng.integers(earliest, latest))
        self.event: int | None = None
        if scenario is Scenario.LIGHTING:
            self.event = int(rng.integers(earliest, max(frames - 10, earliest + 1)))
        elif scenario is Scenario.BUMP:
            # Bumps may come during the warm-up too.
            self.event = int(rng.integers(10, max(frames - 10, 11)))
        self.quality = int(rng.integers(72, 88))
        sigma = rng.uniform(2.0, 5.0)
        # Sensor noise: a few fields drawn once and picked at random per frame.
        self.noise = [
            (rng.standard_normal((self.height, self.width, 3), dtype=np.float32) * sigma).astype(
                np.int16
            )
            for _ in range(3)
        ]
        self.background = self._background()
        self.light_change = self._light_change()
        self.bump = self._bump()
        self.spaghetti = Image.new("RGBA", (self.width, self.height), (0, 0, 0, 0))

    def run(self) -> SyntheticPrint:
        frames = tuple(
            SyntheticFrame(index, self._frame(index), self._failing(index))
            for index in range(self.count)
        )
        part = self.part
        box = (
            (part.cx - part.width / 2) / 640,
            (part.base_y - part.max_height - part.depth) / 480,
            (part.cx + part.width / 2) / 640,
            part.base_y / 480,
        )
        return SyntheticPrint(self.scenario, self.seed, frames, self.onset, self.event, box)

    def _failing(self, index: int) -> bool:
        return self.onset is not None and index >= self.onset

    # ----------------------------------------------------------------- drawing

    def _xy(self, x: float, y: float) -> tuple[float, float]:
        return (x * self.scale, y * self.scale)

    def _box(self, left: float, top: float, right: float, bottom: float) -> list[float]:
        return [left * self.scale, top * self.scale, right * self.scale, bottom * self.scale]

    def _background(self) -> Image.Image:
        """Draw what does not move: wall, posts, bed and its marks."""
        rng = self.rng
        height, width = self.height, self.width
        wall = 55 + 35 * np.linspace(0, 1, height)[:, None, None] * np.ones((1, width, 3))
        # Low-frequency blotches, like a real wall's uneven light.
        coarse = rng.normal(0, 6, (6, 8, 1))
        wall += np.asarray(
            Image.fromarray(coarse[:, :, 0].astype(np.float32)).resize(
                (width, height), Image.Resampling.BICUBIC
            )
        )[:, :, None]
        image = Image.fromarray(np.clip(wall, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for left in (18, 592):
            draw.rectangle(self._box(left, 0, left + 30, 480), fill=(38, 38, 42))
            draw.line([self._xy(left + 3, 0), self._xy(left + 3, 480)], fill=(95, 95, 100), width=2)
        bed = [self._xy(60, 468), self._xy(580, 468), self._xy(512, 288), self._xy(128, 288)]
        draw.polygon(bed, fill=self.bed_colour, outline=(30, 30, 30))
        draw.line([self._xy(60, 470), self._xy(580, 470)], fill=(25, 25, 28), width=4)
        marks = (0.45 * np.asarray(self.bed_colour)).astype(int)
        for x in (150, 470):
            draw.rectangle(self._box(x, 440, x + 18, 452), outline=tuple(marks), width=2)
        # The bed's texture: fine speckle that never moves.
        array = np.asarray(image).astype(np.int16)
        mask_image = Image.new("L", (width, height), 0)
        ImageDraw.Draw(mask_image).polygon(bed, fill=255)
        mask = np.asarray(mask_image) > 0
        speckle = rng.normal(0, 7, (height, width, 1)).astype(np.int16)
        array = np.where(mask[:, :, None], array + speckle, array)
        return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))

    def _height(self, index: int) -> float:
        """Return the part's height in pixels at frame `index`."""
        grown = index if self.onset is None else min(index, self.onset)
        return self.part.max_height * min(1.0, grown / max(self.count - 1, 1))

    def _frame(self, index: int) -> bytes:
        rng = self.rng
        image = self.background.copy()
        draw = ImageDraw.Draw(image)
        part = self.part
        height = self._height(index)
        self._draw_part(draw, index, height)
        top = part.base_y - height
        if self.onset is not None and index >= self.onset:
            self._grow_spaghetti(index, top)
            # Only where the strands are: pasting the whole layer costs more than drawing.
            if (box := self.spaghetti.getbbox()) is not None:
                strands = self.spaghetti.crop(box)
                image.paste(strands, box[:2], strands)
        if rng.random() < 0.1:
            # A travel move or a wipe: the toolhead anywhere over the bed.
            tip = (rng.uniform(160, 480), rng.uniform(300, 440))
        else:
            tip = (
                part.cx + rng.uniform(-0.5, 0.5) * part.width,
                top - rng.uniform(0, 1) * part.depth,
            )
        self._draw_toolhead(draw, tip)
        return self._camera(image, index)

    def _draw_part(self, draw: ImageDraw.ImageDraw, index: int, height: float) -> None:
        part = self.part
        colour = np.asarray(part.colour, float)
        left, right = part.cx - part.width / 2, part.cx + part.width / 2
        top = part.base_y - height
        # The first layer fills in over the first frames.
        filled = min(1.0, (index + 1) / 10)
        top_face = tuple(np.clip(colour * 1.05 + 8, 0, 255).astype(int))
        draw.rectangle(
            self._box(left, top - part.depth, left + filled * part.width, top), fill=top_face
        )
        if height >= 1:
            front = tuple((colour * 0.78).astype(int))
            draw.rectangle(self._box(left, top, right, part.base_y), fill=front)
            line = tuple((colour * 0.7).astype(int))
            for y in np.arange(part.base_y - 3, top, -3.0):
                draw.line([self._xy(left, y), self._xy(right, y)], fill=line, width=1)

    def _draw_toolhead(self, draw: ImageDraw.ImageDraw, tip: tuple[float, float]) -> None:
        x, y = tip
        draw.line(
            [self._xy(x + 10, y - 85), self._xy(x + 40, y - 140), self._xy(x + 70, 0)],
            fill=(20, 20, 22),
            width=max(1, round(9 * self.scale)),
            joint="curve",
        )
        draw.rectangle(self._box(x - 45, y - 88, x + 45, y - 14), fill=(34, 34, 38))
        draw.rectangle(self._box(x - 45, y - 88, x + 45, y - 84), fill=(90, 90, 96))
        draw.ellipse(self._box(x - 22, y - 76, x + 22, y - 32), fill=(62, 62, 68))
        draw.ellipse(self._box(x - 8, y - 62, x + 8, y - 46), fill=(25, 25, 28))
        draw.rectangle(self._box(x - 12, y - 14, x + 12, y - 6), fill=(170, 130, 60))
        draw.polygon(
            [self._xy(x - 5, y - 6), self._xy(x + 5, y - 6), self._xy(x, y)], fill=(200, 160, 70)
        )

    def _grow_spaghetti(self, index: int, top: float) -> None:
        """Add this frame's strands and grow the blob: a failure only gets worse."""
        rng = self.rng
        part = self.part
        draw = ImageDraw.Draw(self.spaghetti)
        since = index - (self.onset or 0)
        colour = np.asarray(part.colour, float)
        blob_radius = 5 + 2.2 * since
        centre_x, centre_y = part.cx, top - part.depth / 2
        angles = np.linspace(0, 2 * math.pi, 18, endpoint=False)
        radii = blob_radius * rng.uniform(0.7, 1.2, angles.size)
        draw.polygon(
            [
                self._xy(centre_x + r * math.cos(a), centre_y + 0.7 * r * math.sin(a))
                for a, r in zip(angles, radii, strict=True)
            ],
            fill=(*np.clip(colour * 0.9, 0, 255).astype(int), 255),
        )
        spread = part.width / 2 + 6 * since
        for _ in range(1 + rng.poisson(2)):
            x = centre_x + rng.uniform(-spread, spread)
            y = centre_y + rng.uniform(-10, 0.4 * spread)
            direction = rng.uniform(0, 2 * math.pi)
            points = [self._xy(x, y)]
            for _ in range(int(rng.integers(12, 36))):
                # Strands droop: each bend leans a little towards the bed.
                direction += rng.normal(0, 0.55)
                step = rng.uniform(4, 8)
                x += step * math.cos(direction)
                y += step * math.sin(direction) + 1.2
                # Strands end up on the bed, not beside it.
                x = min(max(x, 70), 570)
                y = min(y, 466)
                points.append(self._xy(x, y))
            shade = np.clip(colour * rng.uniform(0.8, 1.15) + rng.uniform(-10, 10), 0, 255)
            draw.line(
                points,
                fill=(*shade.astype(int), 255),
                width=max(1, round(rng.uniform(1.5, 4.0) * self.scale)),
                joint="curve",
            )

    # ------------------------------------------------------------------ camera

    def _camera(self, image: Image.Image, index: int) -> bytes:
        """Return what the camera sends: light, position, noise and JPEG applied."""
        if self.scenario is Scenario.LIGHTING:
            lit = np.asarray(image, dtype=np.float32) * self._light(index)
            array = lit.astype(np.int16)
        else:
            array = np.asarray(image, dtype=np.int16)
        array = array + self.noise[int(self.rng.integers(len(self.noise)))]
        if self.scenario is Scenario.BUMP and self.event is not None and index >= self.event:
            array = _shifted(array, *self.bump)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(
            buffer, "JPEG", quality=self.quality
        )
        return buffer.getvalue()

    def _light(self, index: int) -> np.ndarray:
        """Return the gain per pixel and channel at frame `index`."""
        drift = np.float32(1 + 0.08 * math.sin(2 * math.pi * index / 70 + self.seed))
        if self.event is None or index < self.event:
            return drift
        return drift * self.light_change

    def _light_change(self) -> np.ndarray:
        """Return the gain map of the light switched on or off: brighter or darker, tinted."""
        rng = self.rng
        gain = rng.uniform(0.55, 0.8) if rng.random() < 0.5 else rng.uniform(1.25, 1.6)
        tint = rng.uniform(0.85, 1.15, 3)
        slope = rng.uniform(-0.25, 0.25)
        ramp = 1 + slope * np.linspace(-1, 1, self.width)
        return (gain * ramp[None, :, None] * tint[None, None, :]).astype(np.float32)

    def _bump(self) -> tuple[int, int]:
        """Return how far the knocked camera's picture moves, in pixels."""
        rng = self.rng
        magnitude = rng.uniform(3, 10) * self.scale
        angle = rng.uniform(0, 2 * math.pi)
        return round(magnitude * math.cos(angle)), round(magnitude * math.sin(angle))


def _shifted(array: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Move the picture by (dx, dy) pixels, repeating the edge into the gap."""
    height, width = array.shape[:2]
    pad = max(abs(dx), abs(dy))
    padded = np.pad(array, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    return padded[pad - dy : pad - dy + height, pad - dx : pad - dx + width]
