"""Preview PNGs rendered from real CadQuery STLs."""

from collections import Counter
from pathlib import Path

import cadquery as cq
import numpy as np
import numpy.typing as npt
from PIL import Image
import pytest

from kittyai.cad.geometry import check_part, export_part
from kittyai.cad.preview import BACKGROUND, render_preview
from kittyai.contract.cad import FileKind

LARGE_PRINTER = (500.0, 500.0, 500.0)
BOX_WITH_HOLE = cq.Workplane().box(40, 30, 10).faces(">Z").workplane().hole(8)


def stl_of(part: cq.Workplane, folder: Path, name: str) -> Path:
    folder.mkdir(exist_ok=True)
    return export_part(check_part(part, LARGE_PRINTER, max_solids=2), folder, stem=name)[
        FileKind.STL
    ]


def render(stl: Path, size: int = 512) -> npt.NDArray[np.uint8]:
    png = stl.with_suffix(".png")
    render_preview(stl, png, size=size)
    with Image.open(png) as image:
        assert image.format == "PNG"
        assert image.mode == "RGB"
        return np.asarray(image)


def part_mask(pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    mask: npt.NDArray[np.bool_] = (pixels != BACKGROUND.astype(np.uint8)).any(axis=2)
    return mask


@pytest.mark.parametrize("size", [512, 200])
def test_preview_is_a_square_png_of_the_size_asked(tmp_path: Path, size: int) -> None:
    pixels = render(stl_of(BOX_WITH_HOLE, tmp_path, "box"), size)
    assert pixels.shape == (size, size, 3)


def test_part_is_drawn_in_orange_on_the_background(tmp_path: Path) -> None:
    pixels = render(stl_of(BOX_WITH_HOLE, tmp_path, "box"))
    mask = part_mask(pixels)
    assert 0.2 < mask.mean() < 0.8
    # The frame's margin is background all round.
    margin = np.ones_like(mask)
    margin[20:-20, 20:-20] = False
    assert not (mask & margin).any()
    red, green, blue = (pixels[mask].astype(int).mean(axis=0)).tolist()
    assert red > green > blue


def test_flat_faces_are_shaded_apart(tmp_path: Path) -> None:
    pixels = render(stl_of(cq.Workplane().box(20, 20, 20), tmp_path, "cube"))
    colours = Counter(map(tuple, pixels[part_mask(pixels)].tolist()))
    faces = colours.most_common(3)
    # Top, front and right face: three flat shades make nearly all of the cube; the
    # rest are the smoothed edges between them.
    assert sum(count for _, count in faces) > 0.95 * colours.total()
    assert min(count for _, count in faces) > 0.2 * max(count for _, count in faces)
    brightness = sorted(sum(colour) for colour, _ in faces)
    assert brightness[1] - brightness[0] > 30
    assert brightness[2] - brightness[1] > 30


def test_same_stl_gives_the_same_bytes(tmp_path: Path) -> None:
    stl = stl_of(BOX_WITH_HOLE, tmp_path, "box")
    render_preview(stl, tmp_path / "first.png")
    render_preview(stl, tmp_path / "second.png")
    assert (tmp_path / "first.png").read_bytes() == (tmp_path / "second.png").read_bytes()


def test_taller_pillar_on_the_same_plate_covers_more_of_the_picture(tmp_path: Path) -> None:
    # The plate's width sets the framing; the pillar rises out of its outline.
    def plate_with_pillar(height: float) -> cq.Workplane:
        plate = cq.Workplane().box(100, 100, 2, centered=(True, True, False))
        return plate.union(cq.Workplane().box(10, 10, height, centered=(True, True, False)))

    areas = [
        part_mask(render(stl_of(plate_with_pillar(height), tmp_path, f"pillar{height}"))).sum()
        for height in (30, 60, 90)
    ]
    assert areas[0] < areas[1] < areas[2]
    assert areas[2] > 1.05 * areas[0]


def test_part_is_framed_whatever_its_size(tmp_path: Path) -> None:
    small = part_mask(render(stl_of(cq.Workplane().box(4, 3, 1), tmp_path, "small")))
    large = part_mask(render(stl_of(cq.Workplane().box(400, 300, 100), tmp_path, "large")))
    overlap = (small & large).sum() / (small | large).sum()
    assert overlap > 0.99


def test_taller_part_has_a_taller_silhouette(tmp_path: Path) -> None:
    def silhouette_aspect(part: cq.Workplane, name: str) -> float:
        rows, columns = np.nonzero(part_mask(render(stl_of(part, tmp_path, name))))
        return float(np.ptp(rows) / np.ptp(columns))

    cube = silhouette_aspect(cq.Workplane().box(20, 20, 20), "cube")
    column = silhouette_aspect(cq.Workplane().box(20, 20, 60), "column")
    assert column > 1.8 * cube


def test_preview_replaces_the_old_one_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    stl = stl_of(BOX_WITH_HOLE, tmp_path / "part", "box")
    png = tmp_path / "part" / "preview.png"
    png.write_bytes(b"stale")
    render_preview(stl, png)
    assert png.read_bytes().startswith(b"\x89PNG")
    assert sorted(path.name for path in png.parent.iterdir()) == [
        "box.3mf",
        "box.step",
        "box.stl",
        "preview.png",
    ]


def test_unreadable_stl_writes_no_preview(tmp_path: Path) -> None:
    stl = tmp_path / "broken.stl"
    stl.write_bytes(b"not a mesh at all")
    with pytest.raises(ValueError, match="neither a binary nor an ASCII STL"):
        render_preview(stl, tmp_path / "preview.png")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["broken.stl"]
