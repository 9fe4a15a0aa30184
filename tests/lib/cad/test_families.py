"""The part library, built with real CadQuery: every family's numbers against geometry.

Each expected volume and extent is worked out here from the parameters with plain
geometry (prisms, cylinders, circular segments, lenses), not by calling the family.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
import math
from pathlib import Path
import re
import subprocess

import cadquery as cq
from pydantic import ValidationError
import pytest

from kittyai.cad.families import (
    CLIP_OPENING_PER_CABLE,
    FAMILIES,
    HOOK_LIP_PER_REACH,
    LID_GAP_MM,
    RIDGE_RADIUS_PER_DIAMETER,
    TAB_PER_SCREW,
    UnknownFamilyError,
    family_info,
    parse_parameters,
)
from kittyai.cad.geometry import check_part, export_part, measure
from kittyai.cad.mesh import mesh_metrics, stl_watertight
from kittyai.contract.cad import FileKind, PartMetrics

BIG_PRINTER = (1000.0, 1000.0, 1000.0)
PLA = 1.24
type Values = dict[str, float]
type Size = tuple[float, float, float]


def _disc(diameter: float) -> float:
    return math.pi * diameter**2 / 4


def box_volume(v: Values) -> float:
    return v["length"] * v["width"] * v["height"] - _disc(v["hole_diameter"]) * v["height"]


def box_size(v: Values) -> Size:
    return (v["length"], v["width"], v["height"])


def enclosure_volume(v: Values) -> float:
    length, width, wall, clearance = v["length"], v["width"], v["wall"], v["clearance"]
    body = length * width * v["height"] - (length - 2 * wall) * (width - 2 * wall) * (
        v["height"] - v["floor"]
    )
    lip_outside = (length - 2 * wall - 2 * clearance) * (width - 2 * wall - 2 * clearance)
    lip_inside = (length - 4 * wall - 2 * clearance) * (width - 4 * wall - 2 * clearance)
    lid = length * width * v["lid_thickness"] + (lip_outside - lip_inside) * v["lip_height"]
    return body + lid


def enclosure_size(v: Values) -> Size:
    lid_height = v["lid_thickness"] + v["lip_height"]
    return (2 * v["length"] + LID_GAP_MM, v["width"], max(v["height"], lid_height))


def l_bracket_volume(v: Values) -> float:
    t = v["thickness"]
    profile = v["leg_a"] * t + (v["leg_b"] - t) * t
    return profile * v["width"] - 2 * _disc(v["hole_diameter"]) * t


def l_bracket_size(v: Values) -> Size:
    return (v["leg_a"], v["width"], v["leg_b"])


def _pipe_radii(v: Values) -> tuple[float, float]:
    bore = (v["pipe_diameter"] + v["clearance"]) / 2
    return bore + v["wall"], bore


def pipe_bracket_volume(v: Values) -> float:
    outer, bore = _pipe_radii(v)
    base = v["base_thickness"]
    plate_length = 2 * outer + 2 * TAB_PER_SCREW * v["screw_diameter"]
    # Plate, the block from the plate up to the ring's centre, the ring's upper half, no bore.
    profile = plate_length * base + 2 * outer * outer + math.pi * outer**2 / 2 - math.pi * bore**2
    return profile * v["width"] - 2 * _disc(v["screw_diameter"]) * base


def pipe_bracket_size(v: Values) -> Size:
    outer, _ = _pipe_radii(v)
    plate_length = 2 * outer + 2 * TAB_PER_SCREW * v["screw_diameter"]
    return (plate_length, v["base_thickness"] + 2 * outer, v["width"])


def spacer_volume(v: Values) -> float:
    return (_disc(v["outer_diameter"]) - _disc(v["inner_diameter"])) * v["height"]


def spacer_size(v: Values) -> Size:
    return (v["outer_diameter"], v["outer_diameter"], v["height"])


def _strip_of_disc(radius: float, half_width: float) -> float:
    """Area of a half disc within |x| < half_width: the integral of sqrt(r² - x²)."""
    return half_width * math.sqrt(radius**2 - half_width**2) + radius**2 * math.asin(
        half_width / radius
    )


def cable_clip_volume(v: Values) -> float:
    inner = v["cable_diameter"] / 2
    outer = inner + v["wall"]
    half_opening = CLIP_OPENING_PER_CABLE * v["cable_diameter"] / 2
    opening = _strip_of_disc(outer, half_opening) - _strip_of_disc(inner, half_opening)
    tab = TAB_PER_SCREW * v["screw_diameter"] * v["wall"]
    profile = 2 * outer * outer + math.pi * outer**2 / 2 - math.pi * inner**2 - opening + tab
    return profile * v["width"] - _disc(v["screw_diameter"]) * v["wall"]


def cable_clip_size(v: Values) -> Size:
    outer = v["cable_diameter"] / 2 + v["wall"]
    half_opening = CLIP_OPENING_PER_CABLE * v["cable_diameter"] / 2
    top = outer + math.sqrt(outer**2 - half_opening**2)
    return (2 * outer + TAB_PER_SCREW * v["screw_diameter"], top, v["width"])


def _lens(r1: float, r2: float, distance: float) -> float:
    """Area two circles of radii r1, r2 with centres `distance` apart have in common."""
    d = distance
    return (
        r1**2 * math.acos((d**2 + r1**2 - r2**2) / (2 * d * r1))
        + r2**2 * math.acos((d**2 + r2**2 - r1**2) / (2 * d * r2))
        - 0.5 * math.sqrt((-d + r1 + r2) * (d + r1 - r2) * (d - r1 + r2) * (d + r1 + r2))
    )


def knob_volume(v: Values) -> float:
    radius = v["diameter"] / 2
    ridge = RIDGE_RADIUS_PER_DIAMETER * v["diameter"]
    # Each ridge's centre is on the rim: it adds its disc less the lens inside the body.
    added = math.pi * ridge**2 - _lens(radius, ridge, radius)
    profile = math.pi * radius**2 + v["grip_ridges"] * added
    return profile * v["height"] - _disc(v["shaft_diameter"]) * v["shaft_depth"]


def knob_size(v: Values) -> Size:
    radius = v["diameter"] / 2
    ridge = RIDGE_RADIUS_PER_DIAMETER * v["diameter"]
    count = int(v["grip_ridges"])
    angles = [2 * math.pi * k / count for k in range(count)]
    right = max([radius] + [radius * math.cos(a) + ridge for a in angles])
    left = min([-radius] + [radius * math.cos(a) - ridge for a in angles])
    top = max([radius] + [radius * math.sin(a) + ridge for a in angles])
    bottom = min([-radius] + [radius * math.sin(a) - ridge for a in angles])
    return (right - left, top - bottom, v["height"])


def hook_volume(v: Values) -> float:
    t = v["thickness"]
    lip = HOOK_LIP_PER_REACH * v["reach"]
    profile = t * v["plate_height"] + (v["reach"] - t) * t + t * lip
    return profile * v["width"] - _disc(v["screw_diameter"]) * t


def hook_size(v: Values) -> Size:
    lip = HOOK_LIP_PER_REACH * v["reach"]
    return (v["reach"], max(v["plate_height"], v["thickness"] + lip), v["width"])


def plate_volume(v: Values) -> float:
    holes = v["rows"] * v["columns"] * _disc(v["hole_diameter"])
    return (v["length"] * v["width"] - holes) * v["thickness"]


def plate_size(v: Values) -> Size:
    return (v["length"], v["width"], v["thickness"])


@dataclass(frozen=True)
class Case:
    family: str
    values: Values
    volume: Callable[[Values], float]
    size: Callable[[Values], Size]


FORMULAS: dict[str, tuple[Callable[[Values], float], Callable[[Values], Size]]] = {
    "box": (box_volume, box_size),
    "enclosure": (enclosure_volume, enclosure_size),
    "l_bracket": (l_bracket_volume, l_bracket_size),
    "pipe_bracket": (pipe_bracket_volume, pipe_bracket_size),
    "spacer": (spacer_volume, spacer_size),
    "cable_clip": (cable_clip_volume, cable_clip_size),
    "knob": (knob_volume, knob_size),
    "hook": (hook_volume, hook_size),
    "plate": (plate_volume, plate_size),
}
CUSTOM: dict[str, list[Values]] = {
    # The acceptance figure: 12000 - π·4²·10 mm³.
    "box": [{"length": 40, "width": 30, "height": 10, "hole_diameter": 8}],
    "enclosure": [
        {
            "length": 100,
            "width": 70,
            "height": 40,
            "wall": 2.4,
            "floor": 3,
            "lid_thickness": 2.5,
            "lip_height": 6,
            "clearance": 0.3,
        }
    ],
    "l_bracket": [
        {"leg_a": 60, "leg_b": 30, "width": 25, "thickness": 5, "hole_diameter": 5.5},
        {"hole_diameter": 0},
    ],
    # "A wall bracket for a 25 mm pipe, 4 mm screws", and a bigger one with no clearance.
    "pipe_bracket": [
        {"pipe_diameter": 25, "screw_diameter": 4},
        {
            "pipe_diameter": 40,
            "wall": 4,
            "width": 20,
            "screw_diameter": 4,
            "base_thickness": 5,
            "clearance": 0,
        },
    ],
    "spacer": [{"outer_diameter": 8, "inner_diameter": 0, "height": 25}],
    "cable_clip": [{"cable_diameter": 10, "wall": 2.5, "width": 12, "screw_diameter": 4}],
    "knob": [
        {"diameter": 40, "height": 20, "shaft_diameter": 6.35, "shaft_depth": 15, "grip_ridges": 7},
        {"grip_ridges": 0},
    ],
    "hook": [{"width": 25, "thickness": 6, "plate_height": 60, "reach": 50, "screw_diameter": 5}],
    "plate": [
        {
            "length": 100,
            "width": 80,
            "thickness": 4,
            "rows": 3,
            "columns": 4,
            "hole_diameter": 3.4,
            "hole_spacing": 20,
        }
    ],
}
CASES = [Case(name, values, *FORMULAS[name]) for name in FAMILIES for values in [{}, *CUSTOM[name]]]


def _case_id(case: Case) -> str:
    values = "-".join(map(str, case.values.values())) if case.values else "default"
    return f"{case.family}-{values}"


@dataclass(frozen=True)
class Built:
    case: Case
    # The parameters with defaults filled in, as numbers.
    values: Values
    envelope: Size
    # Lowest z, and the centre on x and y, before meshing pads the bounding box.
    bed_position: Size
    shape: cq.Shape
    metrics: PartMetrics
    files: dict[FileKind, Path]


@pytest.fixture(scope="module", params=CASES, ids=_case_id)
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Built:
    case: Case = request.param
    family = FAMILIES[case.family]
    parameters = parse_parameters(case.family, case.values)
    shape = check_part(family.build(parameters), BIG_PRINTER, max_solids=family.max_solids)
    out_dir = tmp_path_factory.mktemp(case.family)
    box = shape.BoundingBox()
    return Built(
        case=case,
        values={key: float(value) for key, value in parameters.model_dump().items()},
        envelope=family.envelope(parameters),
        bed_position=(box.zmin, box.center.x, box.center.y),
        shape=shape,
        metrics=measure(shape, PLA),
        files=export_part(shape, out_dir),
    )


def test_every_family_has_a_formula_and_a_custom_case() -> None:
    assert set(FAMILIES) == set(FORMULAS) == set(CUSTOM)
    assert list(FAMILIES) == [
        "box",
        "enclosure",
        "l_bracket",
        "pipe_bracket",
        "spacer",
        "cable_clip",
        "knob",
        "hook",
        "plate",
    ]


def test_box_acceptance_figure() -> None:
    shape = check_part(
        FAMILIES["box"].build(
            parse_parameters("box", {"length": 40, "width": 30, "height": 10, "hole_diameter": 8})
        ),
        BIG_PRINTER,
    )
    expected = 12000 - math.pi * 4**2 * 10
    assert measure(shape, PLA).volume_mm3 == pytest.approx(expected, rel=1e-3)


def test_volume_bbox_and_mass_match_the_formula(built: Built) -> None:
    expected_volume = built.case.volume(built.values)
    assert built.metrics.volume_mm3 == pytest.approx(expected_volume, rel=1e-3)
    assert built.metrics.bbox_mm == pytest.approx(built.case.size(built.values), rel=1e-3)
    assert built.metrics.mass_g == pytest.approx(expected_volume / 1000 * PLA, rel=1e-3)
    assert built.metrics.solids == FAMILIES[built.case.family].max_solids


def test_envelope_is_the_built_bounding_box(built: Built) -> None:
    assert built.envelope == pytest.approx(built.metrics.bbox_mm, abs=1e-3)


def test_part_lies_on_the_bed_centred(built: Built) -> None:
    assert built.bed_position == pytest.approx((0, 0, 0), abs=1e-6)


def test_step_reimports_with_the_same_volume(built: Built) -> None:
    step = built.files[FileKind.STEP]
    assert step.name == "part.step"
    imported = cq.importers.importStep(str(step)).val()
    assert isinstance(imported, cq.Shape)
    assert len(imported.Solids()) == built.metrics.solids
    assert imported.Volume() == pytest.approx(built.metrics.volume_mm3, rel=1e-3)


def test_stl_is_watertight_and_measures_like_the_brep(built: Built) -> None:
    stl = built.files[FileKind.STL]
    assert stl.name == "part.stl"
    assert stl_watertight(stl)
    mesh = mesh_metrics(stl, PLA)
    assert mesh.volume_mm3 == pytest.approx(built.metrics.volume_mm3, rel=5e-3)
    assert mesh.bbox_mm == pytest.approx(built.metrics.bbox_mm, rel=5e-3)
    assert mesh.solids == built.metrics.solids


def test_prusaslicer_reads_the_3mf_as_closed_objects_one_per_solid(built: Built) -> None:
    three_mf = built.files[FileKind.THREE_MF]
    assert three_mf.name == "part.3mf"
    info = subprocess.run(
        ["prusa-slicer", "--info", str(three_mf)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    volumes = [float(v) for v in re.findall(r"^volume = ([\d.]+)$", info, re.MULTILINE)]
    assert len(volumes) == built.metrics.solids
    assert sum(volumes) == pytest.approx(built.metrics.volume_mm3, rel=5e-3)
    manifold = re.findall(r"^manifold = (\w+)$", info, re.MULTILINE)
    assert manifold == ["yes"] * built.metrics.solids


# Refused parameters: the message names the parameter and says what is wrong.


def _errors(family: str, values: dict[str, float]) -> Iterator[str]:
    with pytest.raises(ValidationError) as caught:
        parse_parameters(family, values)
    for error in caught.value.errors():
        yield f"{'.'.join(map(str, error['loc']))}: {error['msg']}"


def test_negative_length_is_refused_by_name() -> None:
    assert list(_errors("box", {"length": -5})) == ["length: Input should be greater than 0"]


def test_zero_height_is_refused_by_name() -> None:
    assert list(_errors("spacer", {"height": 0})) == ["height: Input should be greater than 0"]


def test_hole_bigger_than_the_part_is_refused() -> None:
    (message,) = _errors("box", {"length": 40, "width": 10, "height": 5, "hole_diameter": 12})
    assert message == (
        ": Value error, hole_diameter (12 mm) must be smaller than width (10 mm),"
        " leaving at least 1 mm of wall on each side"
    )


def test_spacer_hole_wider_than_the_spacer_is_refused() -> None:
    (message,) = _errors("spacer", {"outer_diameter": 6, "inner_diameter": 6})
    assert "inner_diameter (6 mm) must be smaller than outer_diameter (6 mm)" in message


def test_hole_pattern_that_does_not_fit_is_refused() -> None:
    (message,) = _errors(
        "plate", {"length": 45, "columns": 3, "hole_spacing": 20, "hole_diameter": 5}
    )
    assert message.endswith(
        "3 columns of holes span 45 mm; with 1 mm of margin each side they need a length"
        " of 47 mm, not 45 mm"
    )


def test_overlapping_holes_are_refused() -> None:
    (message,) = _errors("plate", {"hole_spacing": 5, "hole_diameter": 4.5})
    assert "hole_spacing (5 mm) must exceed hole_diameter (4.5 mm)" in message


def test_enclosure_walls_leaving_no_room_for_the_lid_are_refused() -> None:
    (message,) = _errors("enclosure", {"width": 20, "wall": 5})
    assert "width (20 mm) must exceed 4 walls and 2 clearances (20.4 mm)" in message


def test_shaft_deeper_than_the_knob_is_refused() -> None:
    (message,) = _errors("knob", {"height": 10, "shaft_depth": 10})
    assert "shaft_depth (10 mm) must be less than height (10 mm)" in message


def test_unknown_parameter_is_refused_by_name() -> None:
    assert list(_errors("box", {"depth": 3})) == ["depth: Extra inputs are not permitted"]


def test_unknown_family_is_named_with_the_alternatives() -> None:
    with pytest.raises(UnknownFamilyError) as caught:
        parse_parameters("gear", {})
    assert str(caught.value) == (
        "there is no part family 'gear'; the families are box, enclosure, l_bracket,"
        " pipe_bracket, spacer, cable_clip, knob, hook, plate"
    )


def test_family_info_describes_every_parameter_in_mm() -> None:
    infos = family_info()
    assert [info.name for info in infos] == list(FAMILIES)
    for info in infos:
        properties = info.parameters_schema["properties"]
        assert isinstance(properties, dict)
        assert properties, info.name
        for name, schema in properties.items():
            assert schema["description"], f"{info.name}.{name}"
            if schema["type"] == "number":
                assert "mm" in schema["description"], f"{info.name}.{name}"
        assert info.parameters_schema["additionalProperties"] is False
