"""Render a part's STL into a PNG preview, in software: no GL, no display, no CAD kernel.

The camera looks at the part from the front right and above, orthographic, so the part
reads as the maker will see it on the bed. Triangles are rasterised with a z-buffer in
numpy: a batch of triangles is cut into rows, the rows into pixel spans, and the
spans' pixels are depth-tested all at once, so the cost is a few array operations per
batch of a couple of million pixels rather than per triangle.
"""

from dataclasses import dataclass
import math
from pathlib import Path
import tempfile

import numpy as np
import numpy.typing as npt
from PIL import Image

from kittyai.cad.mesh import read_stl

type Floats = npt.NDArray[np.float64]
type Ints = npt.NDArray[np.int64]

AZIMUTH_DEG = 45.0
ELEVATION_DEG = 30.0
# Share of the image left free on each side of the part.
MARGIN = 0.06
# Rendered this many times larger, then averaged down: smooth edges.
SUPERSAMPLING = 2
BACKGROUND = np.array([243, 243, 240], dtype=np.float64)
# KITTY orange.
PART_COLOUR = np.array([242, 133, 34], dtype=np.float64)
AMBIENT = 0.4
DIFFUSE = 0.6
# Towards the light, in camera terms: from the upper left, behind the viewer.
LIGHT_RIGHT, LIGHT_UP, LIGHT_TOWARDS_VIEWER = -0.35, 0.65, 0.7
# Bounds the arrays one rasterisation step allocates: pixels its triangles may cover.
MAX_FRAGMENTS = 1 << 21
MIN_PREVIEW_SIZE = 16


@dataclass(frozen=True, slots=True)
class _ScreenTriangles:
    """Triangles in pixel coordinates, with the rows they may cover and their depth planes."""

    # (n, 3): pixel x and y (downwards) of the vertices.
    x: Floats
    y: Floats
    first_row: Ints
    last_row: Ints
    # Depth towards the viewer at pixel (x, y): depth_at_origin + x * depth_dx + y * depth_dy.
    depth_at_origin: Floats
    depth_dx: Floats
    depth_dy: Floats
    # Index of each triangle in the mesh, rising.
    source: Ints


def render_preview(stl_path: Path, png_path: Path, *, size: int = 512) -> None:
    """Render the STL as a square PNG of `size` pixels; the same mesh gives the same bytes.

    Args:
        stl_path: The part's STL.
        png_path: Where the PNG goes; written whole or not at all.
        size: Width and height in pixels.

    Raises:
        ValueError: The STL is unreadable or `size` is too small.
    """
    if size < MIN_PREVIEW_SIZE:
        raise ValueError(f"a preview needs at least {MIN_PREVIEW_SIZE} pixels, not {size}")
    pixels = _render(read_stl(stl_path), size * SUPERSAMPLING)
    image = Image.fromarray(pixels).resize((size, size), Image.Resampling.BOX)
    _save_atomically(image, png_path)


def _render(triangles: Floats, size: int) -> npt.NDArray[np.uint8]:
    """Return an RGB image of the triangles, `size` pixels square."""
    right, up, towards_viewer = _camera()
    colours = _shade(triangles, right, up, towards_viewer)
    screen = _to_screen(triangles, right, up, towards_viewer, size)
    depth_buffer = np.full(size * size, -np.inf)
    owner = np.full(size * size, -1, dtype=np.int64)
    for indices in _batches(screen, size):
        pixels, depths, owners = _fragments(screen, indices, size)
        np.maximum.at(depth_buffer, pixels, depths)
        # Batches go in triangle order, so on equal depth the last triangle wins, and a
        # nearer fragment of a later batch takes the pixel from an earlier one.
        nearest = depths == depth_buffer[pixels]
        np.maximum.at(owner, pixels[nearest], owners[nearest])
    image = np.where((owner >= 0)[:, None], colours[np.maximum(owner, 0)], BACKGROUND)
    pixels_rgb: npt.NDArray[np.uint8] = np.rint(image).astype(np.uint8).reshape(size, size, 3)
    return pixels_rgb


def _camera() -> tuple[Floats, Floats, Floats]:
    """Return the camera's right, up and towards-the-viewer unit vectors, in part space."""
    azimuth, elevation = math.radians(AZIMUTH_DEG), math.radians(ELEVATION_DEG)
    # From the front (-y) right (+x), above.
    towards_viewer = np.array(
        [
            math.cos(elevation) * math.sin(azimuth),
            -math.cos(elevation) * math.cos(azimuth),
            math.sin(elevation),
        ]
    )
    right = np.cross(np.array([0.0, 0.0, 1.0]), towards_viewer)
    right /= np.linalg.norm(right)
    up = np.cross(towards_viewer, right)
    return right, up, towards_viewer


def _shade(triangles: Floats, right: Floats, up: Floats, towards_viewer: Floats) -> Floats:
    """Return each triangle's colour: ambient plus Lambert light, lit from either side."""
    normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    lengths = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.divide(normals, lengths, out=np.zeros_like(normals), where=lengths > 0)
    # Meshes from the web have flipped triangles; light the side the camera sees.
    normals *= np.where(normals @ towards_viewer < 0, -1.0, 1.0)[:, None]
    light = LIGHT_RIGHT * right + LIGHT_UP * up + LIGHT_TOWARDS_VIEWER * towards_viewer
    light /= np.linalg.norm(light)
    brightness = AMBIENT + DIFFUSE * np.clip(normals @ light, 0.0, 1.0)
    colours: Floats = np.clip(brightness[:, None] * PART_COLOUR, 0, 255)
    return colours


def _to_screen(
    triangles: Floats, right: Floats, up: Floats, towards_viewer: Floats, size: int
) -> _ScreenTriangles:
    """Project the triangles orthographically and scale them to fill the image.

    Edge-on triangles, which cover no pixel, are dropped.
    """
    horizontal = triangles @ right
    vertical = triangles @ up
    span = max(float(np.ptp(horizontal)), float(np.ptp(vertical)), 1e-9)
    scale = size * (1 - 2 * MARGIN) / span
    centre_h = (float(horizontal.max()) + float(horizontal.min())) / 2
    centre_v = (float(vertical.max()) + float(vertical.min())) / 2
    x = (horizontal - centre_h) * scale + size / 2
    y = size / 2 - (vertical - centre_v) * scale
    depth = triangles @ towards_viewer
    # The depth plane through the three vertices, by Cramer's rule.
    dx1, dx2 = x[:, 1] - x[:, 0], x[:, 2] - x[:, 0]
    dy1, dy2 = y[:, 1] - y[:, 0], y[:, 2] - y[:, 0]
    dd1, dd2 = depth[:, 1] - depth[:, 0], depth[:, 2] - depth[:, 0]
    determinant = dx1 * dy2 - dx2 * dy1
    has_area = determinant != 0
    determinant = determinant[has_area]
    depth_dx = (dd1 * dy2 - dd2 * dy1)[has_area] / determinant
    depth_dy = (dx1 * dd2 - dx2 * dd1)[has_area] / determinant
    x, y, depth = x[has_area], y[has_area], depth[has_area]
    # Pixel row r covers [r, r + 1) and is sampled at its centre, r + 0.5.
    return _ScreenTriangles(
        x=x,
        y=y,
        first_row=np.clip(np.ceil(y.min(axis=1) - 0.5), 0, size).astype(np.int64),
        last_row=np.clip(np.floor(y.max(axis=1) - 0.5), -1, size - 1).astype(np.int64),
        depth_at_origin=depth[:, 0] - x[:, 0] * depth_dx - y[:, 0] * depth_dy,
        depth_dx=depth_dx,
        depth_dy=depth_dy,
        source=np.flatnonzero(has_area),
    )


def _batches(screen: _ScreenTriangles, size: int) -> list[Ints]:
    """Return the triangles' indices in order, in batches of about MAX_FRAGMENTS pixels."""
    heights = np.maximum(screen.last_row - screen.first_row + 1, 0)
    widths = np.clip(np.ceil(np.ptp(screen.x, axis=1)) + 1, 0, size)
    batch = np.cumsum(heights * widths) // MAX_FRAGMENTS
    return np.split(np.arange(len(batch)), np.flatnonzero(np.diff(batch)) + 1)


def _fragments(screen: _ScreenTriangles, indices: Ints, size: int) -> tuple[Ints, Floats, Ints]:
    """Return the pixels the triangles cover, with their depth and the mesh triangle covering.

    Each triangle is cut into the rows it crosses; each row's span runs between where
    the row's centre line crosses the triangle's edges.
    """
    heights = np.maximum(screen.last_row[indices] - screen.first_row[indices] + 1, 0)
    row_triangle = np.repeat(indices, heights)
    row = screen.first_row[row_triangle] + _counting_up(heights)
    centre_y = row[:, None] + 0.5
    start_x, end_x = screen.x[row_triangle], screen.x[row_triangle][:, [1, 2, 0]]
    start_y, end_y = screen.y[row_triangle], screen.y[row_triangle][:, [1, 2, 0]]
    rise = end_y - start_y
    with np.errstate(divide="ignore", invalid="ignore"):
        along = (centre_y - start_y) / rise
    crosses = (rise != 0) & (along >= 0) & (along <= 1)
    crossing_x = start_x + along * (end_x - start_x)
    left = np.where(crosses, crossing_x, np.inf).min(axis=1)
    right = np.where(crosses, crossing_x, -np.inf).max(axis=1)
    first_column = np.clip(np.ceil(left - 0.5), 0, size).astype(np.int64)
    last_column = np.clip(np.floor(right - 0.5), -1, size - 1).astype(np.int64)
    widths = np.maximum(last_column - first_column + 1, 0)
    span = np.repeat(np.arange(len(row)), widths)
    column = first_column[span] + _counting_up(widths)
    triangle = row_triangle[span]
    row = row[span]
    depth = (
        screen.depth_at_origin[triangle]
        + (column + 0.5) * screen.depth_dx[triangle]
        + (row + 0.5) * screen.depth_dy[triangle]
    )
    return row * size + column, depth, screen.source[triangle]


def _counting_up(counts: Ints) -> Ints:
    """Return 0, 1, ... counts[0] - 1, then 0, 1, ... counts[1] - 1, and so on."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    counting: Ints = np.arange(total) - starts
    return counting


def _save_atomically(image: Image.Image, png_path: Path) -> None:
    """Write the PNG next to its place under a temporary name, then move it there."""
    with tempfile.NamedTemporaryFile(
        dir=png_path.parent, prefix=f".{png_path.name}.", suffix=".tmp", delete=False
    ) as temporary:
        temporary_path = Path(temporary.name)
    try:
        image.save(temporary_path, format="PNG")
        temporary_path.replace(png_path)
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise
