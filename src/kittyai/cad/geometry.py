"""Check a CadQuery result is a printable part, export it, and measure it.

Every B-rep provider ends here: whatever a part family or a model's script built is
checked (valid, solid, fits the printer), written as STEP, STL and 3MF, and measured.
The messages of GeometryError go to the user and back to the model that wrote the
script, so each says exactly what is wrong and with which numbers.
"""

from pathlib import Path

import cadquery as cq
from OCP.Bnd import Bnd_Box
from OCP.BRepBndLib import BRepBndLib
from OCP.IFSelect import IFSelect_ReturnStatus

from kittyai.cad.mesh import part_metrics, stl_watertight, write_3mf
from kittyai.contract.cad import FileKind, PartMetrics

# Largest distance between the B-rep and its triangles, in mm, and largest angle between
# neighbouring triangles, in radians. 0.05 mm is far below what a printer resolves; the
# angle is what bounds the volume error of round parts: measured, 0.06 rad keeps a
# sphere's STL within 0.07 % of its volume (0.1 rad: 0.18 %), a cylinder's within
# 0.02 %, at any size, for about 22 000 triangles per sphere.
STL_LINEAR_TOLERANCE_MM = 0.05
STL_ANGULAR_TOLERANCE_RAD = 0.06
# Joins the extents of a size with multiplication signs.
TIMES = " \N{MULTIPLICATION SIGN} "
# Below this a solid is an empty or inside-out shell, not material.
MIN_SOLID_VOLUME_MM3 = 1e-6


class GeometryError(Exception):
    """The geometry cannot be printed; the message says why, for the user and the model."""


def check_part(
    result: object, build_volume: tuple[float, float, float], *, max_solids: int = 1
) -> cq.Shape:
    """Return the part a CadQuery result holds, checked to be printable.

    Args:
        result: A `cq.Workplane` (its solids make the part) or a `cq.Shape`.
        build_volume: The printer's build volume along x, y and z, in mm.
        max_solids: How many separate solids the part may have (a body and its lid: 2).

    Returns:
        The part as one shape: the solid itself, or a compound of the solids.

    Raises:
        GeometryError: The result is no shape, not valid, not solid, has too many
            solids or is larger than the build volume.
    """
    solids = _solids_of(result)
    if len(solids) > max_solids:
        allowed = "one solid" if max_solids == 1 else f"at most {max_solids} solids"
        raise GeometryError(
            f"the result has {len(solids)} separate solids; the part must be {allowed}"
            " (union overlapping bodies, or remove the stray ones)"
        )
    for number, solid in enumerate(solids, start=1):
        volume = solid.Volume()
        if volume < MIN_SOLID_VOLUME_MM3:
            raise GeometryError(
                f"solid {number} has a volume of {volume:.4g} mm³: it is an empty or"
                " inside-out shell, not a solid"
            )
    shape = solids[0] if len(solids) == 1 else cq.Compound.makeCompound(solids)
    if not shape.isValid():
        raise GeometryError(
            "the shape is not valid (self-intersecting or broken faces); build it from"
            " simpler, overlapping solids"
        )
    size = _extents(shape)
    if any(extent > limit for extent, limit in zip(size, build_volume, strict=True)):
        part = TIMES.join(f"{extent:.1f}" for extent in size)
        printer = TIMES.join(f"{limit:g}" for limit in build_volume)
        raise GeometryError(f"the part is {part} mm; the printer builds at most {printer} mm")
    return shape


def export_part(shape: cq.Shape, out_dir: Path, *, stem: str = "part") -> dict[FileKind, Path]:
    """Write the part as STEP, binary STL and 3MF into `out_dir`.

    Args:
        shape: A part `check_part` returned.
        out_dir: An existing folder.
        stem: The file names' stem: `<stem>.step`, `<stem>.stl`, `<stem>.3mf`.

    Returns:
        The path of each file, by kind.

    Raises:
        GeometryError: A file could not be written, or the STL is not watertight.
    """
    step_path = out_dir / f"{stem}.step"
    stl_path = out_dir / f"{stem}.stl"
    three_mf_path = out_dir / f"{stem}.3mf"
    if shape.exportStep(str(step_path)) != IFSelect_ReturnStatus.IFSelect_RetDone:
        raise GeometryError("the part could not be written as STEP")
    # Absolute tolerances: relative ones coarsen big faces and refine tiny ones.
    written = shape.exportStl(
        str(stl_path),
        tolerance=STL_LINEAR_TOLERANCE_MM,
        angularTolerance=STL_ANGULAR_TOLERANCE_RAD,
        relative=False,
    )
    if not written:
        raise GeometryError("the part could not be meshed into an STL")
    if not stl_watertight(stl_path):
        raise GeometryError(
            "the part's mesh has holes or edges shared by more than two triangles;"
            " avoid bodies that touch only along an edge or at a point"
        )
    # From the checked STL rather than CadQuery's 3MF writer, whose meshes share no
    # vertices between faces and so read as open to slicers.
    write_3mf(stl_path, three_mf_path)
    return {FileKind.STEP: step_path, FileKind.STL: stl_path, FileKind.THREE_MF: three_mf_path}


def measure(shape: cq.Shape, density_g_cm3: float) -> PartMetrics:
    """Return the part's volume, extents, mass in the given material and solid count."""
    return part_metrics(shape.Volume(), _extents(shape), density_g_cm3, solids=len(shape.Solids()))


def _solids_of(result: object) -> list[cq.Solid]:
    """Return the solids a script's result holds, or say why it holds none."""
    if isinstance(result, cq.Workplane):
        shapes = [value for value in result.vals() if isinstance(value, cq.Shape)]
        if not shapes:
            raise GeometryError(
                "the result is a Workplane with no shape on its stack; end the chain"
                " with the operation that makes the solid"
            )
    elif isinstance(result, cq.Shape):
        shapes = [result]
    else:
        raise GeometryError(
            f"the script's result is a {type(result).__name__}, not a CadQuery shape"
        )
    solids = [solid for shape in shapes for solid in shape.Solids()]
    if not solids:
        kinds = sorted({shape.ShapeType() for shape in shapes})
        raise GeometryError(
            f"the result holds only {', '.join(kinds)} geometry, not a solid; extrude,"
            " revolve or loft it into a closed solid"
        )
    return solids


def _extents(shape: cq.Shape) -> tuple[float, float, float]:
    """Return the shape's bounding box extents along x, y and z, in mm."""
    # From the exact surfaces: once the shape is meshed, CadQuery's BoundingBox() pads
    # curved faces by the mesh's deflection.
    box = Bnd_Box()
    BRepBndLib.AddOptimal_s(shape.wrapped, box, False, False)
    x_min, y_min, z_min, x_max, y_max, z_max = box.Get()
    return (x_max - x_min, y_max - y_min, z_max - z_min)
