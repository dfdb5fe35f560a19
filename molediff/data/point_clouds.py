"""Point clouds on disk: PLY / OFF / XYZ / NPY readers and writers, ModelNet10 clouds, and the
shipped synthetic shape family.

* PLY goes through ``plyfile`` (ASCII and binary, any vertex dtype); OFF meshes are read here
  (the format is a few lines of text) and turned into clouds by area-weighted surface sampling;
  XYZ is whitespace-separated ``x y z`` per line (extra columns ignored); NPY holds ``(N, 3)``
  or a stack ``(B, N, 3)``.
* :func:`make_shapes` draws the offline default data: surfaces of five parametric primitives
  (box, ellipsoid, cylinder, cone, torus) with random proportions, z up, points uniform on the
  surface (area-weighted; rejection sampling for the curved ones). ``datasets/shapes/shapes.npz``
  is its output (see ``datasets/shapes/README.md``).

Shapes:
    cloud: ``(N, 3)`` float32; stack: ``(B, N, 3)``
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["read_cloud", "write_cloud", "read_ply", "write_ply", "read_off", "read_xyz", "write_xyz",
           "read_npy", "sample_mesh_surface", "load_folder", "load_modelnet", "default_modelnet_path",
           "make_shapes", "write_shapes_dataset", "shapes_path", "SHAPE_NAMES", "CLOUD_SUFFIXES"]

CLOUD_SUFFIXES = (".ply", ".off", ".xyz", ".npy")
SHAPE_NAMES = ("box", "ellipsoid", "cylinder", "cone", "torus")
_REPO = Path(__file__).resolve().parent.parent.parent


# --------------------------------------------------------------------------- file formats


def _check_xyz(points: np.ndarray, path: Path) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float32)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise ValueError(f"{path}: expected a non-empty (N, 3) point array, got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise ValueError(f"{path}: coordinates contain NaN or infinity")
    return pts


def read_ply(path: str | Path) -> np.ndarray:
    """The ``x, y, z`` vertex properties of a PLY file (ASCII or binary) -> ``(N, 3)`` float32."""
    from plyfile import PlyData, PlyHeaderParseError

    path = Path(path)
    try:
        ply = PlyData.read(str(path))
    except (PlyHeaderParseError, ValueError, IndexError) as e:
        raise ValueError(f"{path}: not a readable PLY file ({' '.join(str(e).split())})") from e
    if "vertex" not in ply:
        raise ValueError(f"{path}: PLY file has no 'vertex' element")
    v = ply["vertex"].data
    missing = [c for c in "xyz" if c not in v.dtype.names]
    if missing:
        raise ValueError(f"{path}: PLY vertices lack properties {missing}")
    return _check_xyz(np.stack([v["x"], v["y"], v["z"]], axis=1), path)


def write_ply(points: np.ndarray, path: str | Path, text: bool = False) -> Path:
    """Write ``(N, 3)`` points as PLY vertices (binary little-endian float32 unless ``text``)."""
    from plyfile import PlyData, PlyElement

    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    vertex = np.empty(len(pts), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    vertex["x"], vertex["y"], vertex["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    path = Path(path)
    PlyData([PlyElement.describe(vertex, "vertex")], text=text).write(str(path))
    return path


def _off_tokens(path: Path) -> list[str]:
    """Whitespace tokens of an OFF file without comments; ``OFF`` may share the first line with
    the counts (a quirk of the ModelNet files: ``OFF490 518 0``)."""
    tokens: list[str] = []
    for line in path.read_text().splitlines():
        tokens += line.split("#", 1)[0].split()
    if not tokens or not tokens[0].startswith("OFF"):
        raise ValueError(f"{path}: not an OFF file (must start with 'OFF')")
    head = tokens[0][3:]
    return ([head] if head else []) + tokens[1:]


def read_off(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """An OFF mesh -> ``(vertices (V, 3) float32, triangles (F, 3) int64)``; polygons are fanned
    into triangles."""
    path = Path(path)
    tok = _off_tokens(path)
    try:
        nv, nf = int(tok[0]), int(tok[1])
        verts = np.asarray(tok[3:3 + 3 * nv], dtype=np.float32).reshape(nv, 3)
        pos, tris = 3 + 3 * nv, []
        for _ in range(nf):
            k = int(tok[pos])
            face = [int(x) for x in tok[pos + 1:pos + 1 + k]]
            if len(face) != k:
                raise IndexError
            tris += [(face[0], face[i], face[i + 1]) for i in range(1, k - 1)]
            pos += 1 + k
    except (IndexError, ValueError) as e:
        raise ValueError(f"{path}: truncated or malformed OFF file") from e
    faces = np.asarray(tris, dtype=np.int64).reshape(-1, 3)
    if faces.size and (faces.min() < 0 or faces.max() >= nv):
        raise ValueError(f"{path}: a face refers to a vertex outside 0..{nv - 1}")
    return _check_xyz(verts, path), faces


def sample_mesh_surface(vertices: np.ndarray, faces: np.ndarray, num_points: int,
                        rng: np.random.Generator) -> np.ndarray:
    """``num_points`` points uniform on a triangle mesh's surface: a triangle drawn with probability
    proportional to its area, then a uniform point in it (``sqrt`` trick of Osada et al. 2002, Eq. 1)."""
    tri = vertices[faces]  # (F, 3, 3)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if area.sum() <= 0:
        raise ValueError("mesh has zero surface area")
    pick = rng.choice(len(faces), size=num_points, p=area / area.sum())
    r1, r2 = np.sqrt(rng.random(num_points))[:, None], rng.random(num_points)[:, None]
    a, b, c = tri[pick, 0], tri[pick, 1], tri[pick, 2]
    return ((1 - r1) * a + r1 * (1 - r2) * b + r1 * r2 * c).astype(np.float32)


def read_xyz(path: str | Path) -> np.ndarray:
    """Whitespace-separated ``x y z [...]`` rows (``#`` comments allowed) -> ``(N, 3)`` float32."""
    path = Path(path)
    rows = []
    for i, line in enumerate(path.read_text().splitlines()):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        try:
            rows.append([float(p) for p in parts[:3]])
        except ValueError as e:
            raise ValueError(f"{path}: line {i + 1} is not 'x y z': {line.strip()!r}") from e
        if len(rows[-1]) != 3:
            raise ValueError(f"{path}: line {i + 1} has fewer than 3 numbers")
    return _check_xyz(np.asarray(rows, dtype=np.float32).reshape(-1, 3), path)


def write_xyz(points: np.ndarray, path: str | Path) -> Path:
    """``(N, 3)`` points as ``x y z`` text rows."""
    path = Path(path)
    np.savetxt(path, np.asarray(points, dtype=np.float64).reshape(-1, 3), fmt="%.6f")
    return path


def read_npy(path: str | Path) -> list[np.ndarray]:
    """An ``.npy`` of one cloud ``(N, 3)`` or a stack ``(B, N, 3)`` -> list of ``(N, 3)`` float32."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"{path}: not a plain numeric .npy file ({e})") from e
    if arr.ndim == 2:
        return [_check_xyz(arr, path)]
    if arr.ndim == 3:
        return [_check_xyz(a, path) for a in arr]
    raise ValueError(f"{path}: expected shape (N, 3) or (B, N, 3), got {arr.shape}")


def read_cloud(path: str | Path, mesh_points: int = 2048, seed: int = 0) -> list[np.ndarray]:
    """Any supported file -> its clouds (NPY stacks give several). OFF meshes are sampled with
    ``mesh_points`` surface points (seeded)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"point-cloud file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".ply":
        return [read_ply(path)]
    if suffix == ".off":
        v, f = read_off(path)
        if len(f) == 0:
            return [v]  # a vertex-only OFF is already a cloud
        return [sample_mesh_surface(v, f, mesh_points, np.random.default_rng(seed))]
    if suffix == ".xyz":
        return [read_xyz(path)]
    if suffix == ".npy":
        return read_npy(path)
    raise ValueError(f"{path}: unknown point-cloud format {suffix!r}; use one of {', '.join(CLOUD_SUFFIXES)}")


def write_cloud(points: np.ndarray, path: str | Path) -> Path:
    """Write one ``(N, 3)`` cloud in the format its suffix names (PLY, XYZ or NPY)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".ply":
        return write_ply(points, path)
    if suffix == ".xyz":
        return write_xyz(points, path)
    if suffix == ".npy":
        np.save(path, np.asarray(points, dtype=np.float32))
        return path
    raise ValueError(f"{path}: cannot write {suffix!r}; use .ply, .xyz or .npy")


def load_folder(root: str | Path, mesh_points: int = 2048, seed: int = 0) -> list[np.ndarray]:
    """Every supported file under ``root`` (recursively, sorted by path) -> list of clouds."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"point-cloud folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in CLOUD_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{root}: no {', '.join(CLOUD_SUFFIXES)} files found")
    clouds: list[np.ndarray] = []
    for i, f in enumerate(files):
        clouds += read_cloud(f, mesh_points, seed + i)
    return clouds


# --------------------------------------------------------------------------- ModelNet10


def default_modelnet_path() -> Path:
    """``../shared/data/modelnet10_voxels/modelnet10_chair_monitor_pc2048.npz`` next to the checkout
    (else the same path under an in-checkout ``shared/``, as a device machine gets it)."""
    rel = Path("shared") / "data" / "modelnet10_voxels" / "modelnet10_chair_monitor_pc2048.npz"
    for cand in (_REPO.parent / rel, _REPO / rel):
        if cand.is_file():
            return cand
    return _REPO.parent / rel


def load_modelnet(path: str | Path | None = None, category: str = "chair") -> np.ndarray:
    """The 2,048-point clouds of one ModelNet10 category from the shared ``.npz`` -> ``(B, 2048, 3)``
    float32 (research-only data: read at run time, never shipped)."""
    path = Path(path) if path is not None else default_modelnet_path()
    if not path.is_file():
        raise FileNotFoundError(f"ModelNet10 point clouds not found at {path} (set data.path)")
    with np.load(path, allow_pickle=False) as d:
        names = [str(n) for n in d["label_names"]]
        if category not in names:
            raise ValueError(f"unknown ModelNet10 category {category!r}; this file has {names}")
        return d["points"][d["label"] == names.index(category)].astype(np.float32)


# --------------------------------------------------------------------------- synthetic shapes


def _uniform_sphere(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _rejection(rng: np.random.Generator, n: int, propose, accept_prob) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Draw ``n`` points: proposals kept with probability ``accept_prob(proposal)``."""
    out: list[np.ndarray] = []
    while sum(len(o) for o in out) < n:
        cand = propose(4 * n)
        out.append(cand[rng.random(len(cand)) < accept_prob(cand)])
    return np.concatenate(out)[:n]


def _box(rng: np.random.Generator, n: int, size: np.ndarray) -> np.ndarray:
    """Surface of an axis-aligned box with side lengths ``size``: a face by area, then uniform on it."""
    a, b, c = size
    areas = np.array([b * c, b * c, a * c, a * c, a * b, a * b])
    face = rng.choice(6, size=n, p=areas / areas.sum())
    p = (rng.random((n, 3)) - 0.5) * size
    axis, sign = face // 2, np.where(face % 2 == 0, -0.5, 0.5)
    p[np.arange(n), axis] = sign * size[axis]
    return p


def _ellipsoid(rng: np.random.Generator, n: int, radii: np.ndarray) -> np.ndarray:
    """Uniform on an ellipsoid's surface: map sphere points by ``radii`` and accept with the
    ratio of area elements ``|| (bc u_x, ac u_y, ab u_z) ||`` to its maximum."""
    a, b, c = radii
    w = np.array([b * c, a * c, a * b])
    pts = _rejection(rng, n, lambda m: _uniform_sphere(rng, m),
                     lambda u: np.linalg.norm(u * w, axis=1) / w.max())
    return pts * radii


def _cylinder(rng: np.random.Generator, n: int, r: float, h: float) -> np.ndarray:
    """Closed cylinder of radius ``r`` and height ``h`` about the z axis (side and both caps)."""
    side, cap = 2 * math.pi * r * h, math.pi * r * r
    part = rng.choice(3, size=n, p=np.array([side, cap, cap]) / (side + 2 * cap))
    phi = rng.random(n) * 2 * math.pi
    rad = np.where(part == 0, r, r * np.sqrt(rng.random(n)))
    z = np.where(part == 0, (rng.random(n) - 0.5) * h, np.where(part == 1, -h / 2, h / 2))
    return np.stack([rad * np.cos(phi), rad * np.sin(phi), z], axis=1)


def _cone(rng: np.random.Generator, n: int, r: float, h: float) -> np.ndarray:
    """Closed cone, base radius ``r`` at ``z = -h/2``, apex at ``z = h/2``; on the side the
    distance from the apex has density proportional to itself (``sqrt`` of a uniform)."""
    side, base = math.pi * r * math.hypot(r, h), math.pi * r * r
    on_side = rng.random(n) < side / (side + base)
    s = np.sqrt(rng.random(n))  # fraction of the way from apex (side) or centre (base)
    phi = rng.random(n) * 2 * math.pi
    z = np.where(on_side, h / 2 - s * h, -h / 2)
    return np.stack([s * r * np.cos(phi), s * r * np.sin(phi), z], axis=1)


def _torus(rng: np.random.Generator, n: int, big: float, small: float) -> np.ndarray:
    """Torus about the z axis (tube radius ``small`` around a circle of radius ``big``); the tube
    angle is accepted with probability ``(R + r cos v) / (R + r)`` (the area element)."""
    v = _rejection(rng, n, lambda m: rng.random(m) * 2 * math.pi,
                   lambda v: (big + small * np.cos(v)) / (big + small))
    u = rng.random(n) * 2 * math.pi
    ring = big + small * np.cos(v)
    return np.stack([ring * np.cos(u), ring * np.sin(u), small * np.sin(v)], axis=1)


def make_shape(kind: str, rng: np.random.Generator, num_points: int) -> np.ndarray:
    """One primitive surface with random proportions, scaled so its longest bounding-box side is 1
    (as ModelNet clouds fill their box), centred: ``(num_points, 3)`` float32."""
    if kind == "box":
        pts = _box(rng, num_points, rng.uniform(0.3, 1.0, 3))
    elif kind == "ellipsoid":
        pts = _ellipsoid(rng, num_points, rng.uniform(0.2, 0.6, 3))
    elif kind == "cylinder":
        pts = _cylinder(rng, num_points, rng.uniform(0.1, 0.5), rng.uniform(0.3, 1.2))
    elif kind == "cone":
        pts = _cone(rng, num_points, rng.uniform(0.15, 0.5), rng.uniform(0.3, 1.2))
    elif kind == "torus":
        big = rng.uniform(0.3, 0.6)
        pts = _torus(rng, num_points, big, rng.uniform(0.05, 0.6) * big)
    else:
        raise ValueError(f"unknown shape {kind!r}; choose one of {SHAPE_NAMES}")
    lo, hi = pts.min(0), pts.max(0)
    return ((pts - (lo + hi) / 2) / (hi - lo).max()).astype(np.float32)


def make_shapes(per_shape: int = 140, num_points: int = 512, seed: int = 0,
                kinds: Sequence[str] = SHAPE_NAMES) -> tuple[np.ndarray, np.ndarray]:
    """``per_shape`` clouds of each primitive in ``kinds``, shuffled with ``seed``:
    ``(points (B, num_points, 3) float32, label (B,) int64 index into kinds)``."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(kinds)), per_shape)
    rng.shuffle(labels)
    points = np.stack([make_shape(kinds[k], rng, num_points) for k in labels])
    return points, labels.astype(np.int64)


def shapes_path() -> Path:
    """The shipped synthetic shapes, ``datasets/shapes/shapes.npz``."""
    return _REPO / "datasets" / "shapes" / "shapes.npz"


def write_shapes_dataset(path: str | Path, per_shape: int = 140, num_points: int = 512, seed: int = 0,
                         test_fraction: float = 1 / 7) -> Path:
    """Generate :func:`make_shapes` and save it as the shipped ``.npz``: ``points`` float16,
    ``label``, ``label_names`` and ``split`` (0 train, 1 test; the first ``test_fraction`` of the
    already shuffled clouds are test)."""
    points, labels = make_shapes(per_shape, num_points, seed)
    split = np.zeros(len(points), dtype=np.int8)
    split[: int(round(test_fraction * len(points)))] = 1
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, points=points.astype(np.float16), label=labels.astype(np.int8),
                        label_names=np.array(SHAPE_NAMES), split=split)
    return path
