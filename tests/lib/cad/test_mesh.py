"""STL reading, watertightness, mesh metrics and 3MF packages, on hand-written meshes."""

from collections.abc import Sequence
from pathlib import Path
import re
import struct
import subprocess
import zipfile

import numpy as np
import pytest

from kittyai.cad.mesh import mesh_metrics, read_stl, stl_watertight, write_3mf

type Point = tuple[float, float, float]
type Triangle = tuple[Point, Point, Point]

# A tetrahedron with legs 3, 4 and 6 along the axes: volume 3·4·6/6 = 12 mm³.
TETRAHEDRON = """\
solid tetra
  facet normal 0 0 -1
    outer loop
      vertex 0 0 0
      vertex 0 4 0
      vertex 3 0 0
    endloop
  endfacet
  facet normal 0 -1 0
    outer loop
      vertex 0 0 0
      vertex 3 0 0
      vertex 0 0 6
    endloop
  endfacet
  facet normal -1 0 0
    outer loop
      vertex 0 0 0
      vertex 0 0 6
      vertex 0 4 0
    endloop
  endfacet
  facet normal 0.8 0.6 0.4
    outer loop
      vertex 3.0e0 0 0
      vertex 0 4. 0
      vertex 0 0 +6
    endloop
  endfacet
endsolid tetra
"""


def cube(origin: Point, side: float) -> list[Triangle]:
    """Return the 12 outward-wound triangles of an axis-aligned cube."""
    x, y, z = origin
    c = [(x + side * i, y + side * j, z + side * k) for k in (0, 1) for j in (0, 1) for i in (0, 1)]
    faces = [
        (0, 2, 3), (0, 3, 1), (4, 5, 7), (4, 7, 6), (0, 1, 5), (0, 5, 4),
        (1, 3, 7), (1, 7, 5), (3, 2, 6), (3, 6, 7), (2, 0, 4), (2, 4, 6),
    ]  # fmt: skip
    return [(c[a], c[b], c[d]) for a, b, d in faces]


def write_ascii(path: Path, triangles: Sequence[Triangle]) -> Path:
    facets = "".join(
        "facet normal 0 0 0\nouter loop\n"
        + "".join(f"vertex {x} {y} {z}\n" for x, y, z in triangle)
        + "endloop\nendfacet\n"
        for triangle in triangles
    )
    path.write_text(f"solid test\n{facets}endsolid test\n")
    return path


def write_binary(path: Path, triangles: Sequence[Triangle], header: bytes = b"binary") -> Path:
    body = b"".join(
        struct.pack("<12fH", 0, 0, 0, *(value for vertex in t for value in vertex), 0)
        for t in triangles
    )
    path.write_bytes(header.ljust(80, b" ") + struct.pack("<I", len(triangles)) + body)
    return path


def test_ascii_tetrahedron_measures_its_known_volume(tmp_path: Path) -> None:
    stl = tmp_path / "tetra.stl"
    stl.write_text(TETRAHEDRON)
    assert read_stl(stl).shape == (4, 3, 3)
    metrics = mesh_metrics(stl, 1.24)
    assert metrics.volume_mm3 == pytest.approx(12.0)
    assert metrics.bbox_mm == (3.0, 4.0, 6.0)
    assert metrics.mass_g == pytest.approx(12.0 / 1000 * 1.24)
    assert metrics.solids == 1
    assert stl_watertight(stl)


def test_binary_stl_whose_header_says_solid_reads_as_binary(tmp_path: Path) -> None:
    stl = write_binary(tmp_path / "cube.stl", cube((1, 2, 3), 10), header=b"solid exported")
    triangles = read_stl(stl)
    assert triangles.shape == (12, 3, 3)
    assert triangles.reshape(-1, 3).min(axis=0).tolist() == [1, 2, 3]
    metrics = mesh_metrics(stl, 1.0)
    assert (metrics.volume_mm3, metrics.bbox_mm, metrics.mass_g) == (1000, (10, 10, 10), 1)


def test_cube_with_a_missing_triangle_is_not_watertight(tmp_path: Path) -> None:
    closed = cube((0, 0, 0), 5)
    assert stl_watertight(write_ascii(tmp_path / "closed.stl", closed))
    assert not stl_watertight(write_ascii(tmp_path / "open.stl", closed[:-1]))


def test_flipped_triangle_is_still_watertight(tmp_path: Path) -> None:
    triangles = cube((0, 0, 0), 5)
    a, b, c = triangles[0]
    triangles[0] = (a, c, b)
    assert stl_watertight(write_ascii(tmp_path / "flipped.stl", triangles))


def test_edge_shared_by_four_triangles_is_not_watertight(tmp_path: Path) -> None:
    # Two cubes touching along one edge: a slicer cannot tell inside from outside there.
    touching = cube((0, 0, 0), 5) + cube((5, 5, 0), 5)
    assert not stl_watertight(write_binary(tmp_path / "touching.stl", touching))


def test_mesh_of_only_degenerate_triangles_is_not_watertight(tmp_path: Path) -> None:
    line: list[Triangle] = [((0, 0, 0), (1, 0, 0), (1, 0, 0)), ((1, 0, 0), (0, 0, 0), (0, 0, 0))]
    assert not stl_watertight(write_ascii(tmp_path / "line.stl", line))


def test_separate_bodies_are_counted_and_their_volumes_added(tmp_path: Path) -> None:
    stl = write_binary(tmp_path / "two.stl", cube((0, 0, 0), 10) + cube((20, 0, 0), 5))
    metrics = mesh_metrics(stl, 1.0)
    assert metrics.solids == 2
    assert metrics.volume_mm3 == pytest.approx(1000 + 125)
    assert metrics.bbox_mm == (25, 10, 10)


def test_bodies_are_counted_along_long_chains(tmp_path: Path) -> None:
    apart = [t for i in range(40) for t in cube((3.0 * i, 0, 0), 2)]
    assert mesh_metrics(write_binary(tmp_path / "apart.stl", apart), 1.0).solids == 40
    # Each cube shares a corner with the next: one body, 40 cubes long.
    chained = [t for i in range(40) for t in cube((2.0 * i, 2.0 * i, 2.0 * i), 2)]
    assert mesh_metrics(write_binary(tmp_path / "chained.stl", chained), 1.0).solids == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "neither a binary nor an ASCII STL"),
        (b"PK\x03\x04 this is a zip, not a mesh" * 10, "neither a binary nor an ASCII STL"),
        (b"solid x\nfacet normal 0 0 1\nouter loop\nvertex 1 2\n", "0 facets with 0 vertices"),
        (
            b"solid x\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 0 nan\n"
            b"vertex 0 1 0\nendloop\nendfacet\nendsolid x\n",
            "1 facets with 2 vertices",
        ),
        (b"binary".ljust(80) + struct.pack("<I", 0), "holds no triangles"),
    ],
    ids=["empty", "zip", "truncated-ascii", "nan-vertex", "binary-without-triangles"],
)
def test_garbage_is_refused_with_a_clear_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "garbage.stl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(message)):
        read_stl(path)


def test_truncated_binary_stl_is_refused(tmp_path: Path) -> None:
    path = write_binary(tmp_path / "cut.stl", cube((0, 0, 0), 1))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="neither a binary nor an ASCII STL"):
        read_stl(path)


def test_3mf_has_an_object_per_body_with_shared_vertices(tmp_path: Path) -> None:
    stl = write_binary(tmp_path / "two.stl", cube((0, 0, 0), 10) + cube((20, 0, 0), 5))
    three_mf = tmp_path / "two.3mf"
    write_3mf(stl, three_mf)
    with zipfile.ZipFile(three_mf) as package:
        assert sorted(package.namelist()) == [
            "3D/3dmodel.model",
            "[Content_Types].xml",
            "_rels/.rels",
        ]
        model = package.read("3D/3dmodel.model").decode()
    # A closed cube shares its 8 corners between its 12 triangles.
    assert re.findall(r"<object id=\"(\d)\"", model) == ["1", "2"]
    assert model.count("<vertex ") == 16
    assert model.count("<triangle ") == 24
    assert re.findall(r"<item objectid=\"(\d)\"/>", model) == ["1", "2"]
    # The same mesh packs into the same bytes.
    again = tmp_path / "again.3mf"
    write_3mf(stl, again)
    assert again.read_bytes() == three_mf.read_bytes()


def test_prusaslicer_reads_the_3mf_as_closed_objects(tmp_path: Path) -> None:
    stl = write_binary(tmp_path / "two.stl", cube((0, 0, 0), 10) + cube((20, 0, 0), 5))
    three_mf = tmp_path / "two.3mf"
    write_3mf(stl, three_mf)
    info = subprocess.run(
        ["prusa-slicer", "--info", str(three_mf)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    volumes = [float(v) for v in re.findall(r"^volume = ([\d.]+)$", info, re.MULTILINE)]
    assert sorted(volumes) == pytest.approx([125, 1000])
    assert re.findall(r"^manifold = (\w+)$", info, re.MULTILINE) == ["yes", "yes"]


def test_vertex_coordinates_survive_the_3mf_exactly(tmp_path: Path) -> None:
    # float32 values that print with many digits: 0.1, 1/3, 1e-3 steps.
    odd: list[Triangle] = [((0.1, 1 / 3, 0.001), (7.7, 1 / 3, 0.001), (0.1, 9.9, 0.001))]
    stl = write_binary(tmp_path / "odd.stl", odd)
    three_mf = tmp_path / "odd.3mf"
    write_3mf(stl, three_mf)
    with zipfile.ZipFile(three_mf) as package:
        model = package.read("3D/3dmodel.model").decode()
    coordinates = [float(v) for v in re.findall(r'[xyz]="([^"]+)"', model)]
    written = read_stl(stl).reshape(-1, 3)
    stored = sorted(map(tuple, np.array(coordinates, dtype=np.float32).reshape(-1, 3).tolist()))
    assert stored == sorted(map(tuple, written.astype(np.float32).tolist()))
