"""KITTY's library of parametric parts: the shapes a workshop prints again and again.

A family is a pydantic model of its parameters (the API's JSON schema, and what a
model fills in), a builder, and its envelope: the part's size computed from the
parameters alone, so a part too large for the printer is refused before it is built.

Every part is made of prisms and cylinders, and no two of its cuts overlap,
so its volume has a closed form, and it is laid on the bed (z from 0, centred on x
and y) the way it prints best without supports. Lengths are millimetres.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
import math
from typing import Any, Literal, Self

import cadquery as cq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kittyai.contract.cad import ParameterValue, PartFamilyInfo

type Size = tuple[float, float, float]
type Axis = Literal["x", "y", "z"]

# Thinnest wall that prints reliably with a 0.4 mm nozzle: two to three perimeters.
MIN_WALL_MM = 1.0
# Longest side any family accepts; the printer's build volume is checked separately.
MAX_LENGTH_MM = 1000.0
# Cutters reach this far past the faces they cut through, so no face is left coplanar.
CUT_OVERSHOOT_MM = 0.5
# Gap between an enclosure's body and its lid on the bed.
LID_GAP_MM = 10.0
# Screw tabs reach this many screw diameters past what they hang on: the hole sits in
# the middle with one diameter of material on either side.
TAB_PER_SCREW = 3.0
# A cable clip's opening, as a share of the cable's diameter: narrower than the cable,
# so it snaps in and stays.
CLIP_OPENING_PER_CABLE = 0.75
# Radius of a knob's grip ridges, as a share of its diameter; with at most
# MAX_GRIP_RIDGES, neighbouring ridges never touch.
RIDGE_RADIUS_PER_DIAMETER = 0.05
MAX_GRIP_RIDGES = 24
# How far a hook's tip rises above its arm, as a share of the reach.
HOOK_LIP_PER_REACH = 1 / 3


class UnknownFamilyError(ValueError):
    """No part family has the name asked for."""


def _length(description: str, default: float, *, maximum: float = MAX_LENGTH_MM) -> Any:
    """Return a pydantic field for a length in mm: positive, bounded, described."""
    return Field(default=default, gt=0, le=maximum, description=f"{description}, in mm.")


def _hole(description: str, default: float, *, maximum: float = 200.0) -> Any:
    """Return a pydantic field for a hole's diameter in mm, where 0 means no hole."""
    return Field(
        default=default, ge=0, le=maximum, description=f"{description}, in mm; 0 for none."
    )


def _require_wall(hole_name: str, hole: float, around_name: str, around: float) -> None:
    """Raise ValueError unless the hole leaves MIN_WALL_MM on both sides within `around`."""
    if hole > 0 and hole + 2 * MIN_WALL_MM > around:
        raise ValueError(
            f"{hole_name} ({hole:g} mm) must be smaller than {around_name} ({around:g} mm),"
            f" leaving at least {MIN_WALL_MM:g} mm of wall on each side"
        )


class _Parameters(BaseModel):
    """Parameters of a part family: lengths in mm, no unknown names."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class PartFamily:
    """A kind of part the library builds from parameters.

    `build` and `envelope` take an instance of `parameters`; their own signatures say so.
    """

    name: str
    title: str
    # One line that tells a small model when this family is the right one.
    description: str
    parameters: type[BaseModel]
    build: Callable[[Any], cq.Workplane]
    # The part's extents along x, y and z, as built: known before building it.
    envelope: Callable[[Any], Size]
    # Separate solids the part has: a body and its lid are two.
    max_solids: int = 1


# Solids the builders compose.


def _block(start: tuple[float, float, float], end: tuple[float, float, float]) -> cq.Solid:
    """Return the axis-aligned box between two opposite corners."""
    (x0, y0, z0), (x1, y1, z1) = start, end
    return cq.Solid.makeBox(x1 - x0, y1 - y0, z1 - z0, cq.Vector(x0, y0, z0))


_AXES: dict[Axis, tuple[float, float, float]] = {"x": (1, 0, 0), "y": (0, 1, 0), "z": (0, 0, 1)}


def _rod(diameter: float, start: tuple[float, float, float], axis: Axis, length: float) -> cq.Solid:
    """Return a cylinder from `start` along `axis`."""
    return cq.Solid.makeCylinder(diameter / 2, length, cq.Vector(*start), cq.Vector(*_AXES[axis]))


def _bore(
    diameter: float, centre: tuple[float, float, float], axis: Axis, through: tuple[float, float]
) -> cq.Solid:
    """Return a cutter for a hole along `axis`, from `through[0]` to `through[1]` on it.

    `centre` gives the hole's other two coordinates; its coordinate along the axis is
    ignored. The cutter overshoots both ends.
    """
    low, high = through[0] - CUT_OVERSHOOT_MM, through[1] + CUT_OVERSHOOT_MM
    x, y, z = centre
    start = {"x": (low, y, z), "y": (x, low, z), "z": (x, y, low)}[axis]
    return _rod(diameter, start, axis, high - low)


def _on_bed(shape: cq.Shape) -> cq.Workplane:
    """Return the shape cleaned, centred on x and y, its bottom on z = 0."""
    cleaned = shape.clean()
    box = cleaned.BoundingBox()
    return cq.Workplane("XY").add(
        cleaned.translate(cq.Vector(-box.center.x, -box.center.y, -box.zmin))
    )


# box


class BoxParameters(_Parameters):
    """A rectangular block, optionally with a vertical hole through its centre."""

    length: float = _length("Extent along x", 40)
    width: float = _length("Extent along y", 30)
    height: float = _length("Extent along z", 10)
    hole_diameter: float = _hole("Vertical through-hole at the centre", 0)

    @model_validator(mode="after")
    def _hole_fits(self) -> Self:
        _require_wall("hole_diameter", self.hole_diameter, "width", self.width)
        _require_wall("hole_diameter", self.hole_diameter, "length", self.length)
        return self


def _build_box(p: BoxParameters) -> cq.Workplane:
    part: cq.Shape = _block((0, 0, 0), (p.length, p.width, p.height))
    if p.hole_diameter > 0:
        centre = (p.length / 2, p.width / 2, 0)
        part = part.cut(_bore(p.hole_diameter, centre, "z", (0, p.height)))
    return _on_bed(part)


def _box_envelope(p: BoxParameters) -> Size:
    return (p.length, p.width, p.height)


BOX = PartFamily(
    name="box",
    title="Box / block",
    description="A solid rectangular block, optionally with one vertical hole through"
    " the middle: feet, weights, shims, test cubes.",
    parameters=BoxParameters,
    build=_build_box,
    envelope=_box_envelope,
)


# enclosure


class EnclosureParameters(_Parameters):
    """An open box with walls and a floor, and its lid with a lip that fits inside."""

    length: float = _length("Outer extent of the body along x", 80)
    width: float = _length("Outer extent of the body along y", 60)
    height: float = _length("Outer height of the body, without the lid", 30)
    wall: float = _length("Thickness of the side walls", 2, maximum=20)
    floor: float = _length("Thickness of the floor", 2, maximum=20)
    lid_thickness: float = _length("Thickness of the lid plate", 2, maximum=20)
    lip_height: float = _length("Height of the lid's lip that sits inside the walls", 4)
    clearance: float = Field(
        default=0.2,
        ge=0,
        le=2,
        description="Gap between the lid's lip and the walls on each side, in mm.",
    )

    @model_validator(mode="after")
    def _fits_together(self) -> Self:
        # Inside the walls, the lip needs its own two walls and two clearances.
        needed = 4 * self.wall + 2 * self.clearance
        for name, outer in (("length", self.length), ("width", self.width)):
            if outer <= needed:
                raise ValueError(
                    f"{name} ({outer:g} mm) must exceed 4 walls and 2 clearances"
                    f" ({needed:g} mm) so the lid's lip fits inside the walls"
                )
        if self.floor >= self.height:
            raise ValueError(
                f"floor ({self.floor:g} mm) must be less than height ({self.height:g} mm)"
            )
        depth = self.height - self.floor
        if self.lip_height > depth:
            raise ValueError(
                f"lip_height ({self.lip_height:g} mm) must be at most height minus floor"
                f" ({depth:g} mm), the depth inside the body"
            )
        return self


def _build_enclosure(p: EnclosureParameters) -> cq.Workplane:
    body = _block((0, 0, 0), (p.length, p.width, p.height)).cut(
        _block(
            (p.wall, p.wall, p.floor),
            (p.length - p.wall, p.width - p.wall, p.height + CUT_OVERSHOOT_MM),
        )
    )
    # The lid lies plate down next to the body, its lip upwards: no supports.
    lip_outer = p.wall + p.clearance
    lip_inner = lip_outer + p.wall
    top = p.lid_thickness + p.lip_height
    lid_start = p.length + LID_GAP_MM
    lid = (
        _block((0, 0, 0), (p.length, p.width, p.lid_thickness))
        .fuse(
            _block(
                (lip_outer, lip_outer, p.lid_thickness),
                (p.length - lip_outer, p.width - lip_outer, top),
            )
        )
        .cut(
            _block(
                (lip_inner, lip_inner, p.lid_thickness),
                (p.length - lip_inner, p.width - lip_inner, top + CUT_OVERSHOOT_MM),
            )
        )
        .translate(cq.Vector(lid_start, 0, 0))
    )
    return _on_bed(cq.Compound.makeCompound([body, lid]))


def _enclosure_envelope(p: EnclosureParameters) -> Size:
    return (
        2 * p.length + LID_GAP_MM,
        p.width,
        max(p.height, p.lid_thickness + p.lip_height),
    )


ENCLOSURE = PartFamily(
    name="enclosure",
    title="Enclosure with lid",
    description="A hollow project box with walls and floor, plus a separate lid whose"
    " lip fits inside: electronics cases, storage boxes.",
    parameters=EnclosureParameters,
    build=_build_enclosure,
    envelope=_enclosure_envelope,
    max_solids=2,
)


# l_bracket


class LBracketParameters(_Parameters):
    """Two legs at a right angle, one screw hole in the middle of each."""

    leg_a: float = _length("Length of the horizontal leg, along x", 40)
    leg_b: float = _length("Height of the vertical leg, along z", 40)
    width: float = _length("Width of both legs, along y", 20)
    thickness: float = _length("Thickness of both legs", 4, maximum=50)
    hole_diameter: float = _hole("Screw hole in the middle of each leg", 4.5)

    @model_validator(mode="after")
    def _legs_hold_holes(self) -> Self:
        for name, leg in (("leg_a", self.leg_a), ("leg_b", self.leg_b)):
            if self.thickness >= leg:
                raise ValueError(
                    f"thickness ({self.thickness:g} mm) must be less than {name} ({leg:g} mm)"
                )
            free = leg - self.thickness
            _require_wall("hole_diameter", self.hole_diameter, f"{name} minus thickness", free)
        _require_wall("hole_diameter", self.hole_diameter, "width", self.width)
        return self


def _build_l_bracket(p: LBracketParameters) -> cq.Workplane:
    part: cq.Shape = _block((0, 0, 0), (p.leg_a, p.width, p.thickness)).fuse(
        _block((0, 0, 0), (p.thickness, p.width, p.leg_b))
    )
    if p.hole_diameter > 0:
        middle_a = (p.thickness + p.leg_a) / 2
        middle_b = (p.thickness + p.leg_b) / 2
        part = part.cut(
            _bore(p.hole_diameter, (middle_a, p.width / 2, 0), "z", (0, p.thickness)),
            _bore(p.hole_diameter, (0, p.width / 2, middle_b), "x", (0, p.thickness)),
        )
    return _on_bed(part)


def _l_bracket_envelope(p: LBracketParameters) -> Size:
    return (p.leg_a, p.width, p.leg_b)


L_BRACKET = PartFamily(
    name="l_bracket",
    title="L bracket / angle",
    description="A right-angle bracket with a screw hole in each leg: joining boards,"
    " shelf supports, corner braces.",
    parameters=LBracketParameters,
    build=_build_l_bracket,
    envelope=_l_bracket_envelope,
)


# pipe_bracket


class PipeBracketParameters(_Parameters):
    """A ring around a pipe on a base plate screwed to the wall, a screw on each side."""

    pipe_diameter: float = _length("Outer diameter of the pipe", 25, maximum=300)
    clearance: float = Field(
        default=0.4, ge=0, le=5, description="Added to pipe_diameter for the ring's bore, in mm."
    )
    wall: float = _length("Thickness of the ring around the pipe", 3, maximum=50)
    width: float = _length("Width of the bracket along the pipe", 15)
    screw_diameter: float = _length("Diameter of the two screw holes", 4.5, maximum=20)
    base_thickness: float = _length("Thickness of the base plate", 4, maximum=50)

    @model_validator(mode="after")
    def _screws_fit(self) -> Self:
        _require_wall("screw_diameter", self.screw_diameter, "width", self.width)
        return self

    @property
    def ring_radius(self) -> float:
        """Return the outer radius of the ring."""
        return (self.pipe_diameter + self.clearance) / 2 + self.wall

    @property
    def plate_length(self) -> float:
        """Return the base plate's length: the ring plus a screw tab on either side."""
        return 2 * self.ring_radius + 2 * TAB_PER_SCREW * self.screw_diameter


def _build_pipe_bracket(p: PipeBracketParameters) -> cq.Workplane:
    # Printed standing: the pipe's axis is z, the plate stands on its long edge.
    outer = p.ring_radius
    centre_y = p.base_thickness + outer
    half_plate = p.plate_length / 2
    screw_x = outer + TAB_PER_SCREW * p.screw_diameter / 2
    part = (
        _block((-half_plate, 0, 0), (half_plate, p.base_thickness, p.width))
        .fuse(
            _block((-outer, 0, 0), (outer, centre_y, p.width)),
            _rod(2 * outer, (0, centre_y, 0), "z", p.width),
        )
        .cut(
            _bore(p.pipe_diameter + p.clearance, (0, centre_y, 0), "z", (0, p.width)),
            *(
                _bore(p.screw_diameter, (x, 0, p.width / 2), "y", (0, p.base_thickness))
                for x in (-screw_x, screw_x)
            ),
        )
    )
    return _on_bed(part)


def _pipe_bracket_envelope(p: PipeBracketParameters) -> Size:
    return (p.plate_length, p.base_thickness + 2 * p.ring_radius, p.width)


PIPE_BRACKET = PartFamily(
    name="pipe_bracket",
    title="Pipe wall bracket",
    description="A closed ring that holds a pipe, tube or rod off a wall, on a base"
    " plate with a screw hole on each side.",
    parameters=PipeBracketParameters,
    build=_build_pipe_bracket,
    envelope=_pipe_bracket_envelope,
)


# spacer


class SpacerParameters(_Parameters):
    """A round standoff with a hole along its axis."""

    outer_diameter: float = _length("Outer diameter", 10, maximum=300)
    inner_diameter: float = _hole("Diameter of the hole through it", 4.5)
    height: float = _length("Height", 10)

    @model_validator(mode="after")
    def _hole_fits(self) -> Self:
        _require_wall("inner_diameter", self.inner_diameter, "outer_diameter", self.outer_diameter)
        return self


def _build_spacer(p: SpacerParameters) -> cq.Workplane:
    part: cq.Shape = _rod(p.outer_diameter, (0, 0, 0), "z", p.height)
    if p.inner_diameter > 0:
        part = part.cut(_bore(p.inner_diameter, (0, 0, 0), "z", (0, p.height)))
    return _on_bed(part)


def _spacer_envelope(p: SpacerParameters) -> Size:
    return (p.outer_diameter, p.outer_diameter, p.height)


SPACER = PartFamily(
    name="spacer",
    title="Spacer / standoff",
    description="A round tube-shaped spacer, standoff or washer with a hole for a screw or shaft.",
    parameters=SpacerParameters,
    build=_build_spacer,
    envelope=_spacer_envelope,
)


# cable_clip


class CableClipParameters(_Parameters):
    """A C-shaped clip a cable snaps into, on a tab with a screw hole."""

    cable_diameter: float = _length("Diameter of the cable", 6, maximum=100)
    wall: float = _length("Thickness of the clip and its tab", 2, maximum=20)
    width: float = _length("Width of the clip along the cable", 10, maximum=200)
    screw_diameter: float = _length("Diameter of the screw hole", 3.5, maximum=20)

    @model_validator(mode="after")
    def _screw_fits(self) -> Self:
        _require_wall("screw_diameter", self.screw_diameter, "width", self.width)
        return self

    @property
    def opening(self) -> float:
        """Return the width of the gap the cable snaps in through."""
        return CLIP_OPENING_PER_CABLE * self.cable_diameter

    @property
    def ring_radius(self) -> float:
        """Return the outer radius of the clip's ring."""
        return self.cable_diameter / 2 + self.wall


def _build_cable_clip(p: CableClipParameters) -> cq.Workplane:
    # Printed standing: the cable's axis is z; the tab lies along x at y = 0.
    outer = p.ring_radius
    tab_end = outer + TAB_PER_SCREW * p.screw_diameter
    screw_x = outer + TAB_PER_SCREW * p.screw_diameter / 2
    part = (
        _block((-outer, 0, 0), (outer, outer, p.width))
        .fuse(
            _rod(2 * outer, (0, outer, 0), "z", p.width),
            _block((outer, 0, 0), (tab_end, p.wall, p.width)),
        )
        .cut(
            _bore(p.cable_diameter, (0, outer, 0), "z", (0, p.width)),
            _block(
                (-p.opening / 2, outer, -CUT_OVERSHOOT_MM),
                (p.opening / 2, 2 * outer + CUT_OVERSHOOT_MM, p.width + CUT_OVERSHOOT_MM),
            ),
            _bore(p.screw_diameter, (screw_x, 0, p.width / 2), "y", (0, p.wall)),
        )
    )
    return _on_bed(part)


def _cable_clip_envelope(p: CableClipParameters) -> Size:
    outer = p.ring_radius
    # The opening cuts the ring's top; what is left rises to where its edges meet the ring.
    top = outer + math.sqrt(outer**2 - (p.opening / 2) ** 2)
    return (2 * outer + TAB_PER_SCREW * p.screw_diameter, top, p.width)


CABLE_CLIP = PartFamily(
    name="cable_clip",
    title="Cable clip",
    description="A snap-in C clip for one cable, wire or thin tube, on a tab with a screw"
    " hole to fix it to a wall or desk.",
    parameters=CableClipParameters,
    build=_build_cable_clip,
    envelope=_cable_clip_envelope,
)


# knob


class KnobParameters(_Parameters):
    """A round knob with a blind hole for a shaft, optionally ridged for grip."""

    diameter: float = _length("Diameter of the knob, without its ridges", 30, maximum=300)
    height: float = _length("Height of the knob", 15, maximum=300)
    shaft_diameter: float = _length("Diameter of the shaft hole", 6, maximum=100)
    shaft_depth: float = _length("Depth of the shaft hole", 10, maximum=300)
    grip_ridges: int = Field(
        default=12,
        ge=0,
        le=MAX_GRIP_RIDGES,
        description="Number of vertical ridges around the rim for grip; 0 for smooth.",
    )

    @model_validator(mode="after")
    def _shaft_fits(self) -> Self:
        _require_wall("shaft_diameter", self.shaft_diameter, "diameter", self.diameter)
        if self.shaft_depth + MIN_WALL_MM > self.height:
            raise ValueError(
                f"shaft_depth ({self.shaft_depth:g} mm) must be less than height"
                f" ({self.height:g} mm) by at least {MIN_WALL_MM:g} mm"
            )
        return self

    @property
    def ridge_centres(self) -> list[tuple[float, float]]:
        """Return where the ridges' axes cross the xy plane: evenly on the rim."""
        radius = self.diameter / 2
        return [
            (
                radius * math.cos(2 * math.pi * k / self.grip_ridges),
                radius * math.sin(2 * math.pi * k / self.grip_ridges),
            )
            for k in range(self.grip_ridges)
        ]


def _build_knob(p: KnobParameters) -> cq.Workplane:
    # Printed upside down: the face the hand touches lies flat on the bed, the shaft
    # hole opens upwards.
    ridge_diameter = 2 * RIDGE_RADIUS_PER_DIAMETER * p.diameter
    part: cq.Shape = _rod(p.diameter, (0, 0, 0), "z", p.height)
    if p.grip_ridges:
        part = part.fuse(
            *(_rod(ridge_diameter, (x, y, 0), "z", p.height) for x, y in p.ridge_centres)
        )
    # A blind hole: the cutter overshoots the open end only.
    shaft_bottom = p.height - p.shaft_depth
    part = part.cut(
        _rod(p.shaft_diameter, (0, 0, shaft_bottom), "z", p.shaft_depth + CUT_OVERSHOOT_MM)
    )
    return _on_bed(part)


def _knob_envelope(p: KnobParameters) -> Size:
    radius = p.diameter / 2
    ridge = RIDGE_RADIUS_PER_DIAMETER * p.diameter
    # The outline reaches as far as the body or the farthest ridge in each direction.
    xs = [x for x, _ in p.ridge_centres]
    ys = [y for _, y in p.ridge_centres]
    x_extent = max([radius, *(x + ridge for x in xs)]) - min([-radius, *(x - ridge for x in xs)])
    y_extent = max([radius, *(y + ridge for y in ys)]) - min([-radius, *(y - ridge for y in ys)])
    return (x_extent, y_extent, p.height)


KNOB = PartFamily(
    name="knob",
    title="Knob",
    description="A round control knob with a blind hole for a potentiometer or valve"
    " shaft, smooth or with grip ridges.",
    parameters=KnobParameters,
    build=_build_knob,
    envelope=_knob_envelope,
)


# hook


class HookParameters(_Parameters):
    """A J-shaped wall hook: a back plate with a screw hole, an arm and a raised tip."""

    width: float = _length("Width of the hook", 20, maximum=300)
    thickness: float = Field(
        default=5, ge=1, le=50, description="Thickness of plate, arm and tip, in mm."
    )
    plate_height: float = _length("Height of the back plate on the wall", 50)
    reach: float = _length("How far the hook sticks out from the wall", 40)
    screw_diameter: float = _length("Diameter of the screw hole in the plate", 4.5, maximum=20)

    @model_validator(mode="after")
    def _proportions(self) -> Self:
        if self.reach < 3 * self.thickness:
            raise ValueError(
                f"reach ({self.reach:g} mm) must be at least 3 times thickness"
                f" ({3 * self.thickness:g} mm) to leave room to hang things"
            )
        _require_wall("screw_diameter", self.screw_diameter, "width", self.width)
        _require_wall(
            "screw_diameter",
            self.screw_diameter,
            "plate_height minus thickness",
            self.plate_height - self.thickness,
        )
        return self

    @property
    def lip(self) -> float:
        """Return how far the tip rises above the arm."""
        return HOOK_LIP_PER_REACH * self.reach


def _build_hook(p: HookParameters) -> cq.Workplane:
    # Printed lying on its side: the J's outline is on the bed, layers run along it.
    t = p.thickness
    part = (
        _block((0, 0, 0), (t, p.plate_height, p.width))
        .fuse(
            _block((0, 0, 0), (p.reach, t, p.width)),
            _block((p.reach - t, 0, 0), (p.reach, t + p.lip, p.width)),
        )
        .cut(
            _bore(p.screw_diameter, (0, (t + p.plate_height) / 2, p.width / 2), "x", (0, t)),
        )
    )
    return _on_bed(part)


def _hook_envelope(p: HookParameters) -> Size:
    return (p.reach, max(p.plate_height, p.thickness + p.lip), p.width)


HOOK = PartFamily(
    name="hook",
    title="Wall hook",
    description="A J-shaped hook screwed to a wall or board, for coats, tools, cables or bags.",
    parameters=HookParameters,
    build=_build_hook,
    envelope=_hook_envelope,
)


# plate


class PlateParameters(_Parameters):
    """A flat plate with a centred grid of through-holes."""

    length: float = _length("Extent along x", 60)
    width: float = _length("Extent along y", 40)
    thickness: float = _length("Thickness", 3, maximum=100)
    rows: int = Field(default=2, ge=1, le=50, description="Rows of holes, along y.")
    columns: int = Field(default=2, ge=1, le=50, description="Columns of holes, along x.")
    hole_diameter: float = _hole("Diameter of each hole", 4.5)
    hole_spacing: float = _length("Distance between neighbouring hole centres", 30)

    @model_validator(mode="after")
    def _pattern_fits(self) -> Self:
        if self.hole_diameter == 0:
            return self
        if max(self.rows, self.columns) > 1 and (
            self.hole_spacing < self.hole_diameter + MIN_WALL_MM
        ):
            raise ValueError(
                f"hole_spacing ({self.hole_spacing:g} mm) must exceed hole_diameter"
                f" ({self.hole_diameter:g} mm) by at least {MIN_WALL_MM:g} mm of wall"
            )
        for count, count_name, side, side_name in (
            (self.columns, "columns", self.length, "length"),
            (self.rows, "rows", self.width, "width"),
        ):
            pattern = (count - 1) * self.hole_spacing + self.hole_diameter
            if pattern + 2 * MIN_WALL_MM > side:
                raise ValueError(
                    f"{count} {count_name} of holes span {pattern:g} mm; with"
                    f" {MIN_WALL_MM:g} mm of margin each side they need a {side_name} of"
                    f" {pattern + 2 * MIN_WALL_MM:g} mm, not {side:g} mm"
                )
        return self


def _build_plate(p: PlateParameters) -> cq.Workplane:
    part: cq.Shape = _block((0, 0, 0), (p.length, p.width, p.thickness))
    if p.hole_diameter > 0:
        part = part.cut(
            *(
                _bore(
                    p.hole_diameter,
                    (
                        p.length / 2 + (column - (p.columns - 1) / 2) * p.hole_spacing,
                        p.width / 2 + (row - (p.rows - 1) / 2) * p.hole_spacing,
                        0,
                    ),
                    "z",
                    (0, p.thickness),
                )
                for row in range(p.rows)
                for column in range(p.columns)
            )
        )
    return _on_bed(part)


def _plate_envelope(p: PlateParameters) -> Size:
    return (p.length, p.width, p.thickness)


PLATE = PartFamily(
    name="plate",
    title="Plate with hole pattern",
    description="A flat rectangular plate with a centred grid of holes: mounting plates,"
    " covers, adapter plates, drilling templates.",
    parameters=PlateParameters,
    build=_build_plate,
    envelope=_plate_envelope,
)


FAMILIES: dict[str, PartFamily] = {
    family.name: family
    for family in (BOX, ENCLOSURE, L_BRACKET, PIPE_BRACKET, SPACER, CABLE_CLIP, KNOB, HOOK, PLATE)
}


def family_info() -> list[PartFamilyInfo]:
    """Return what `GET /api/cad/families` lists: each family with its parameters' schema."""
    return [
        PartFamilyInfo(
            name=family.name,
            title=family.title,
            description=family.description,
            parameters_schema=family.parameters.model_json_schema(),
        )
        for family in FAMILIES.values()
    ]


def parse_parameters(family_name: str, values: Mapping[str, ParameterValue]) -> BaseModel:
    """Return the family's parameters from `values`, defaults filling what is missing.

    Raises:
        UnknownFamilyError: No family has that name.
        pydantic.ValidationError: A value is missing, out of range or inconsistent; each
            error names its parameter.
    """
    parameters: BaseModel = family_named(family_name).parameters.model_validate(dict(values))
    return parameters


def family_named(name: str) -> PartFamily:
    """Return the family called `name`.

    Raises:
        UnknownFamilyError: No family has that name; the message lists the families.
    """
    family = FAMILIES.get(name)
    if family is None:
        raise UnknownFamilyError(
            f"there is no part family {name!r}; the families are {', '.join(FAMILIES)}"
        )
    return family
