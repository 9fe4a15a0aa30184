"""Read STL meshes, measure them and package them as 3MF, with numpy only.

Mesh-only providers (a text-to-mesh cloud) have no B-rep to measure, and the service
checks every STL before it slices it; neither should need the CAD kernel for that.
"""

from pathlib import Path
import re
import zipfile

import numpy as np
import numpy.typing as npt

from kittyai.contract.cad import PartMetrics

type Triangles = npt.NDArray[np.float64]
type Vertices = npt.NDArray[np.float64]
type Faces = npt.NDArray[np.intp]

BINARY_HEADER_BYTES = 80
BINARY_COUNT_BYTES = 4
# Per triangle: a normal and three vertices as float32, and a 16-bit attribute.
BINARY_TRIANGLE = np.dtype([("normal", "<f4", (3,)), ("vertices", "<f4", (3, 3)), ("attr", "<u2")])
# A closed surface's every edge borders one triangle on each side.
TRIANGLES_PER_CLOSED_EDGE = 2
_3MF_CORE = "http://schemas.microsoft.com/3dmanufacturing/core/2015/02"
_3MF_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels"'
    ' ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="model"'
    ' ContentType="application/vnd.ms-package.3dmanufacturing-3dmodel+xml"/>'
    "</Types>"
)
_3MF_RELATIONSHIPS = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rel0" Target="/3D/3dmodel.model"'
    ' Type="http://schemas.microsoft.com/3dmanufacturing/2013/01/3dmodel"/>'
    "</Relationships>"
)
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_VERTEX = re.compile(rf"vertex\s+({_FLOAT})\s+({_FLOAT})\s+({_FLOAT})".encode())


def read_stl(path: Path) -> Triangles:
    """Return the triangles of a binary or ASCII STL file.

    Args:
        path: The STL file.

    Returns:
        An array of shape (n, 3, 3): n triangles, three vertices each, x y z in mm.

    Raises:
        ValueError: The file is no STL, or holds no triangles.
    """
    data = path.read_bytes()
    triangles = _read_binary(data)
    if triangles is None:
        triangles = _read_ascii(data, path)
    if len(triangles) == 0:
        raise ValueError(f"{path.name} holds no triangles")
    if not np.isfinite(triangles).all():
        raise ValueError(f"{path.name} has vertices that are not finite numbers")
    return triangles


def stl_watertight(path: Path) -> bool:
    """Return whether the STL's surface is closed: every edge shared by exactly two triangles.

    Vertices with identical coordinates are merged first. Triangle orientation is not
    checked: slicers repair flipped normals, not holes.
    """
    vertices, faces = _indexed(read_stl(path))
    if len(faces) == 0:
        return False
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges.sort(axis=1)
    # One number per undirected edge: unique over a flat array is fast.
    _, uses = np.unique(edges[:, 0] * len(vertices) + edges[:, 1], return_counts=True)
    return bool((uses == TRIANGLES_PER_CLOSED_EDGE).all())


def mesh_metrics(path: Path, density_g_cm3: float) -> PartMetrics:
    """Return the volume, extents, mass and number of separate bodies of an STL.

    Args:
        path: A closed STL mesh.
        density_g_cm3: The material's density.

    Raises:
        ValueError: The file is no STL, or encloses no volume.
    """
    triangles = read_stl(path)
    # Sum of the signed volumes of the tetrahedra each triangle spans with the origin.
    signed = np.einsum("ij,ij->i", triangles[:, 0], np.cross(triangles[:, 1], triangles[:, 2]))
    volume = abs(float(signed.sum())) / 6
    if volume <= 0:
        raise ValueError(f"{path.name} encloses no volume")
    vertices = triangles.reshape(-1, 3)
    extents = vertices.max(axis=0) - vertices.min(axis=0)
    return part_metrics(
        volume,
        (float(extents[0]), float(extents[1]), float(extents[2])),
        density_g_cm3,
        solids=int(_bodies(_indexed(triangles)[1]).max()) + 1,
    )


def part_metrics(
    volume_mm3: float,
    extents_mm: tuple[float, float, float],
    density_g_cm3: float,
    *,
    solids: int,
) -> PartMetrics:
    """Return the metrics of a part, rounded the same way whether a mesh or a B-rep was measured.

    Volume and mass keep six significant digits, finer than any measurement the part
    will get; extents keep micrometres.
    """
    x, y, z = extents_mm
    return PartMetrics(
        volume_mm3=float(f"{volume_mm3:.6g}"),
        bbox_mm=(round(x, 3), round(y, 3), round(z, 3)),
        mass_g=float(f"{volume_mm3 / 1000 * density_g_cm3:.6g}"),
        solids=solids,
    )


def write_3mf(stl_path: Path, three_mf_path: Path) -> None:
    """Write the STL's mesh as a 3MF package, one object per separate body, in mm.

    Unlike an STL, a 3MF mesh shares its vertices between triangles: slicers read it as
    closed, and put each body (an enclosure and its lid) on the bed as its own object.
    The same STL gives the same bytes.

    Raises:
        ValueError: The STL is unreadable or holds only degenerate triangles.
    """
    vertices, faces = _indexed(read_stl(stl_path))
    if len(faces) == 0:
        raise ValueError(f"{stl_path.name} holds only degenerate triangles")
    bodies = _bodies(faces)
    objects: list[str] = []
    for body in range(int(bodies.max()) + 1):
        used, local = np.unique(faces[bodies == body], return_inverse=True)
        # Nine significant digits carry a float32 coordinate exactly.
        vertex_rows = "".join(
            f'<vertex x="{x:.9g}" y="{y:.9g}" z="{z:.9g}"/>' for x, y, z in vertices[used].tolist()
        )
        triangle_rows = "".join(
            f'<triangle v1="{a}" v2="{b}" v3="{c}"/>' for a, b, c in local.reshape(-1, 3).tolist()
        )
        objects.append(
            f'<object id="{body + 1}" type="model"><mesh><vertices>{vertex_rows}</vertices>'
            f"<triangles>{triangle_rows}</triangles></mesh></object>"
        )
    items = "".join(f'<item objectid="{body + 1}"/>' for body in range(len(objects)))
    model = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<model unit="millimeter" xml:lang="en-US" xmlns="{_3MF_CORE}">'
        f"<resources>{''.join(objects)}</resources><build>{items}</build></model>"
    )
    with zipfile.ZipFile(three_mf_path, "w", zipfile.ZIP_DEFLATED) as package:
        for name, text in (
            ("[Content_Types].xml", _3MF_CONTENT_TYPES),
            ("_rels/.rels", _3MF_RELATIONSHIPS),
            ("3D/3dmodel.model", model),
        ):
            # A fixed timestamp: the same mesh gives the same package, byte for byte.
            entry = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            package.writestr(entry, text, compress_type=zipfile.ZIP_DEFLATED)


def _read_binary(data: bytes) -> Triangles | None:
    """Return the triangles of a binary STL, or None when `data` is not one.

    The size decides, not the header: many CAD programs start binary headers with
    "solid" too.
    """
    header = BINARY_HEADER_BYTES + BINARY_COUNT_BYTES
    if len(data) < header:
        return None
    count = int.from_bytes(data[BINARY_HEADER_BYTES:header], "little")
    if len(data) != header + count * BINARY_TRIANGLE.itemsize:
        return None
    records = np.frombuffer(data, dtype=BINARY_TRIANGLE, count=count, offset=header)
    return records["vertices"].astype(np.float64)


def _read_ascii(data: bytes, path: Path) -> Triangles:
    """Return the triangles of an ASCII STL."""
    if not data.lstrip().startswith(b"solid"):
        raise ValueError(f"{path.name} is neither a binary nor an ASCII STL")
    vertices = _VERTEX.findall(data)
    facets = data.count(b"endfacet")
    if facets == 0 or len(vertices) != 3 * facets:
        raise ValueError(
            f"{path.name} is not a valid ASCII STL: {facets} facets with {len(vertices)} vertices"
        )
    return np.array(vertices, dtype=np.float64).reshape(-1, 3, 3)


def _indexed(triangles: Triangles) -> tuple[Vertices, Faces]:
    """Return the distinct vertices and the triangles as indices into them.

    Vertices with identical coordinates merge; triangles left with a repeated vertex
    are dropped.
    """
    corners = triangles.reshape(-1, 3)
    # Sorting the coordinates once is several times faster than np.unique(axis=0).
    order = np.lexsort((corners[:, 2], corners[:, 1], corners[:, 0]))
    ordered = corners[order]
    starts = np.ones(len(ordered), dtype=bool)
    starts[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    indices = np.empty(len(ordered), dtype=np.intp)
    indices[order] = np.cumsum(starts) - 1
    faces: Faces = indices.reshape(-1, 3)
    a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
    distinct: Faces = faces[(a != b) & (b != c) & (c != a)]
    return ordered[starts], distinct


def _bodies(faces: Faces) -> Faces:
    """Return for each face which separate body (sharing a vertex joins) it belongs to.

    Bodies are numbered from 0 in the order of their smallest vertex index. Union-find
    by label propagation: every vertex holds the smallest vertex index it is known to
    be connected with, which is always a vertex of its own body. Each round, a
    triangle's vertices and the vertices they pointed to take the triangle's smallest
    label, then labels jump to their label's label; at the fixed point every body has
    one label.
    """
    labels = np.arange(int(faces.max()) + 1)
    while True:
        previous = labels.copy()
        smallest = np.repeat(labels[faces].min(axis=1), 3)
        np.minimum.at(labels, labels[faces].ravel(), smallest)
        np.minimum.at(labels, faces.ravel(), smallest)
        labels = labels[labels]
        if np.array_equal(labels, previous):
            break
    _, body = np.unique(labels[faces[:, 0]], return_inverse=True)
    numbered: Faces = body
    return numbered
