"""Checking, exporting and measuring parts, with real CadQuery and the files it writes."""

import math
from pathlib import Path

import cadquery as cq
import pytest

from kittyai.cad.geometry import TIMES, GeometryError, check_part, export_part, measure
from kittyai.cad.mesh import mesh_metrics, read_stl, stl_watertight
from kittyai.contract.cad import FileKind

PRUSA_MK4 = (250.0, 210.0, 220.0)


def _refusal(result: object, *, max_solids: int = 1) -> str:
    with pytest.raises(GeometryError) as caught:
        check_part(result, PRUSA_MK4, max_solids=max_solids)
    return str(caught.value)


def test_part_larger_than_the_printer_is_refused_with_both_sizes() -> None:
    assert _refusal(cq.Workplane().box(260, 30, 10)) == (
        f"the part is 260.0{TIMES}30.0{TIMES}10.0 mm;"
        f" the printer builds at most 250{TIMES}210{TIMES}220 mm"
    )


def test_part_as_large_as_the_printer_fits() -> None:
    shape = check_part(cq.Workplane().box(250, 210, 220), PRUSA_MK4)
    assert measure(shape, 1.0).bbox_mm == PRUSA_MK4


def test_round_part_is_sized_by_its_surfaces_not_its_mesh(tmp_path: Path) -> None:
    # Once meshed, CadQuery's own bounding box grows by the mesh deflection.
    shape = check_part(cq.Workplane().cylinder(20, 30), PRUSA_MK4)
    export_part(shape, tmp_path)
    assert measure(shape, 1.0).bbox_mm == (60.0, 60.0, 20.0)
    assert check_part(shape, (60.0, 60.0, 20.0)) is not None


def test_two_separate_solids_are_refused_when_one_is_allowed() -> None:
    two = cq.Workplane().box(10, 10, 10).union(cq.Workplane().box(10, 10, 10).translate((30, 0, 0)))
    assert _refusal(two) == (
        "the result has 2 separate solids; the part must be one solid"
        " (union overlapping bodies, or remove the stray ones)"
    )
    assert _refusal(two.add(cq.Workplane().sphere(3).translate((0, 40, 0))), max_solids=2) == (
        "the result has 3 separate solids; the part must be at most 2 solids"
        " (union overlapping bodies, or remove the stray ones)"
    )


def test_two_solids_are_one_part_when_allowed(tmp_path: Path) -> None:
    stack = cq.Workplane().add(
        [cq.Solid.makeBox(10, 10, 10), cq.Solid.makeBox(5, 5, 5, (20, 0, 0))]
    )
    shape = check_part(stack, PRUSA_MK4, max_solids=2)
    metrics = measure(shape, 1.24)
    assert (metrics.solids, metrics.volume_mm3, metrics.bbox_mm) == (2, 1125, (25, 10, 10))
    assert metrics.mass_g == pytest.approx(1.125 * 1.24)
    files = export_part(shape, tmp_path)
    assert mesh_metrics(files[FileKind.STL], 1.24).solids == 2


def test_face_only_result_is_not_a_solid() -> None:
    face = cq.Workplane().add(cq.Face.makePlane(10, 10))
    assert _refusal(face) == (
        "the result holds only Face geometry, not a solid; extrude, revolve or loft it"
        " into a closed solid"
    )
    assert "only Wire geometry" in _refusal(cq.Workplane().rect(10, 10))
    assert "only Shell geometry" in _refusal(cq.Workplane().box(5, 5, 5).shells())


def test_workplane_without_shapes_is_refused() -> None:
    assert _refusal(cq.Workplane()) == (
        "the result is a Workplane with no shape on its stack; end the chain with the"
        " operation that makes the solid"
    )


@pytest.mark.parametrize(
    ("result", "type_name"), [(42, "int"), (None, "NoneType"), ("box(10, 10, 10)", "str")]
)
def test_anything_but_a_shape_is_refused_by_type(result: object, type_name: str) -> None:
    assert _refusal(result) == f"the script's result is a {type_name}, not a CadQuery shape"


def test_inside_out_solid_is_refused() -> None:
    inside_out = cq.Solid(cq.Solid.makeBox(10, 10, 10).wrapped.Reversed())
    assert _refusal(inside_out) == (
        "solid 1 has a volume of -1000 mm³: it is an empty or inside-out shell, not a solid"
    )


def test_self_intersecting_solid_is_refused() -> None:
    crossed = cq.Workplane().polyline([(0, 0), (20, 10), (20, 0), (0, 4)]).close().extrude(5)
    assert _refusal(crossed).startswith("the shape is not valid (self-intersecting")


def test_export_writes_step_stl_and_3mf(tmp_path: Path) -> None:
    shape = check_part(cq.Workplane().box(40, 30, 10).faces(">Z").workplane().hole(8), PRUSA_MK4)
    files = export_part(shape, tmp_path, stem="bracket")
    assert files == {
        FileKind.STEP: tmp_path / "bracket.step",
        FileKind.STL: tmp_path / "bracket.stl",
        FileKind.THREE_MF: tmp_path / "bracket.3mf",
    }
    assert files[FileKind.STEP].read_text().startswith("ISO-10303-21;")
    # Binary STL: 80-byte header, count, 50 bytes per triangle.
    triangles = len(read_stl(files[FileKind.STL]))
    assert files[FileKind.STL].stat().st_size == 84 + 50 * triangles
    assert stl_watertight(files[FileKind.STL])
    assert files[FileKind.THREE_MF].read_bytes()[:2] == b"PK"


@pytest.mark.parametrize("radius", [0.5, 3, 50])
def test_stl_of_round_parts_keeps_the_volume_within_a_thousandth(
    tmp_path: Path, radius: float
) -> None:
    for name, part in {
        "cylinder": cq.Workplane().cylinder(10, radius),
        "sphere": cq.Workplane().sphere(radius),
        "tube": cq.Workplane().circle(radius * 2).circle(radius).extrude(10),
    }.items():
        shape = check_part(part, PRUSA_MK4)
        files = export_part(shape, tmp_path, stem=name)
        brep = measure(shape, 1.0)
        assert mesh_metrics(files[FileKind.STL], 1.0).volume_mm3 == pytest.approx(
            brep.volume_mm3, rel=1e-3
        ), name


def test_measure_rounds_without_losing_precision() -> None:
    # 12000 - π·4²·10 = 11497.345... mm³; PLA at 1.24 g/cm³.
    shape = check_part(cq.Workplane().box(40, 30, 10).faces(">Z").workplane().hole(8), PRUSA_MK4)
    metrics = measure(shape, 1.24)
    expected = 12000 - math.pi * 4**2 * 10
    assert metrics.volume_mm3 == pytest.approx(expected, rel=1e-5)
    assert metrics.mass_g == pytest.approx(expected / 1000 * 1.24, rel=1e-5)
    assert metrics.bbox_mm == (40.0, 30.0, 10.0)
    assert metrics.solids == 1
    tiny = measure(check_part(cq.Workplane().box(0.1, 0.1, 0.1), PRUSA_MK4), 1.0)
    assert tiny.volume_mm3 == pytest.approx(0.001, rel=1e-5)


def test_bodies_touching_along_an_edge_fail_export(tmp_path: Path) -> None:
    corner = cq.Workplane().box(5, 5, 5, centered=False)
    touching = corner.union(corner.translate((5, 5, 0)))
    shape = check_part(touching, PRUSA_MK4, max_solids=2)
    with pytest.raises(GeometryError) as caught:
        export_part(shape, tmp_path)
    assert str(caught.value) == (
        "the part's mesh has holes or edges shared by more than two triangles; avoid"
        " bodies that touch only along an edge or at a point"
    )
