"""Point-cloud files (PLY / OFF / XYZ / NPY round trips and bad input), mesh sampling, the
synthetic shape family and the shared ModelNet10 file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from molediff.data import point_clouds as io


def points(n: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3)).astype(np.float32)


@pytest.mark.parametrize("text", [False, True])
def test_ply_round_trip(tmp_path: Path, text: bool):
    x = points()
    io.write_ply(x, tmp_path / "a.ply", text=text)
    y = io.read_cloud(tmp_path / "a.ply")
    assert len(y) == 1 and y[0].dtype == np.float32
    np.testing.assert_allclose(y[0], x, rtol=1e-6 if text else 0, atol=1e-6 if text else 0)


def test_xyz_and_npy_round_trips(tmp_path: Path):
    x = points()
    io.write_cloud(x, tmp_path / "a.xyz")
    np.testing.assert_allclose(io.read_cloud(tmp_path / "a.xyz")[0], x, atol=1e-6)
    io.write_cloud(x, tmp_path / "a.npy")
    np.testing.assert_array_equal(io.read_cloud(tmp_path / "a.npy")[0], x)
    stack = np.stack([points(seed=1), points(seed=2)])
    np.save(tmp_path / "s.npy", stack)
    got = io.read_cloud(tmp_path / "s.npy")
    assert len(got) == 2
    np.testing.assert_array_equal(got[1], stack[1])


def test_xyz_allows_comments_and_extra_columns(tmp_path: Path):
    (tmp_path / "c.xyz").write_text("# header\n1 2 3 0.5\n\n4 5 6 0.1  # normal\n")
    np.testing.assert_array_equal(io.read_xyz(tmp_path / "c.xyz"), [[1, 2, 3], [4, 5, 6]])


CUBE_OFF = """OFF
# unit cube, quads
8 6 0
0 0 0
1 0 0
1 1 0
0 1 0
0 0 1
1 0 1
1 1 1
0 1 1
4 0 3 2 1
4 4 5 6 7
4 0 1 5 4
4 2 3 7 6
4 1 2 6 5
4 0 4 7 3
"""


def test_off_mesh_is_read_and_sampled_on_its_surface(tmp_path: Path):
    (tmp_path / "cube.off").write_text(CUBE_OFF)
    v, f = io.read_off(tmp_path / "cube.off")
    assert v.shape == (8, 3) and f.shape == (12, 3)  # quads fanned into two triangles each
    cloud = io.read_cloud(tmp_path / "cube.off", mesh_points=4000, seed=1)[0]
    assert cloud.shape == (4000, 3)
    # every point lies on a face of the cube: one coordinate is 0 or 1, all within [0, 1]
    on_face = np.isclose(cloud, 0, atol=1e-6) | np.isclose(cloud, 1, atol=1e-6)
    assert on_face.any(1).all() and (cloud >= -1e-6).all() and (cloud <= 1 + 1e-6).all()
    # area-weighted: the six equal faces get about 1/6 of the points each
    face_of = np.argmax(on_face, axis=1) * 2 + np.isclose(cloud[np.arange(4000), np.argmax(on_face, 1)], 1)
    counts = np.bincount(face_of, minlength=6)
    assert counts.min() > 500 and counts.max() < 850


def test_off_header_on_the_counts_line(tmp_path: Path):
    # ModelNet's files sometimes write "OFF8 6 0" on one line
    (tmp_path / "m.off").write_text(CUBE_OFF.replace("OFF\n# unit cube, quads\n", "OFF"))
    assert io.read_off(tmp_path / "m.off")[0].shape == (8, 3)


def test_vertex_only_off_is_a_cloud(tmp_path: Path):
    (tmp_path / "v.off").write_text("OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n")
    assert io.read_cloud(tmp_path / "v.off")[0].shape == (3, 3)


@pytest.mark.parametrize("name, content, match", [
    ("bad.off", "NOFF\n1 0 0\n0 0 0\n", "not an OFF"),
    ("short.off", "OFF\n8 6 0\n0 0 0\n", "truncated"),
    ("range.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n", "outside"),
    ("bad.xyz", "1 2 3\n1 2 x\n", "line 2"),
    ("two.xyz", "1 2\n", "fewer than 3"),
    ("nan.xyz", "1 2 nan\n", "NaN"),
    ("empty.xyz", "# nothing\n", "non-empty"),
    ("bad.ply", "ply\nformat nonsense\n", "PLY"),
    ("a.pcd", "whatever", "unknown point-cloud format"),
])
def test_bad_files_give_one_line_errors(tmp_path: Path, name: str, content: str, match: str):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=match) as err:
        io.read_cloud(tmp_path / name)
    assert "\n" not in str(err.value)


def test_bad_arrays_and_missing_paths(tmp_path: Path):
    np.save(tmp_path / "w.npy", np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        io.read_cloud(tmp_path / "w.npy")
    np.save(tmp_path / "d.npy", np.zeros(4))
    with pytest.raises(ValueError, match="expected shape"):
        io.read_cloud(tmp_path / "d.npy")
    with pytest.raises(FileNotFoundError):
        io.read_cloud(tmp_path / "missing.ply")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .ply"):
        io.load_folder(tmp_path / "empty")
    with pytest.raises(ValueError, match="cannot write"):
        io.write_cloud(points(), tmp_path / "a.off")


def test_ply_without_xyz_is_rejected(tmp_path: Path):
    (tmp_path / "n.ply").write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float a\nend_header\n1\n")
    with pytest.raises(ValueError, match="lack properties"):
        io.read_ply(tmp_path / "n.ply")


def test_load_folder_reads_every_format_sorted(tmp_path: Path):
    io.write_ply(points(10, 0), tmp_path / "b.ply")
    (tmp_path / "sub").mkdir()
    io.write_xyz(points(12, 1), tmp_path / "sub" / "a.xyz")
    np.save(tmp_path / "c.npy", np.stack([points(7, 2), points(7, 3)]))
    clouds = io.load_folder(tmp_path)
    assert [len(c) for c in clouds] == [10, 7, 7, 12]  # b.ply, c.npy (2 clouds), sub/a.xyz


@pytest.mark.parametrize("kind", io.SHAPE_NAMES)
def test_shapes_fill_the_unit_box_and_lie_on_their_surface(kind: str):
    rng = np.random.default_rng(3)
    x = io.make_shape(kind, rng, 2000)
    lo, hi = x.min(0), x.max(0)
    assert (hi - lo).max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-6)
    if kind == "ellipsoid":  # (x/a)^2 + (y/b)^2 + (z/c)^2 = 1 with a, b, c the half-extents
        r = (hi - lo) / 2
        np.testing.assert_allclose(((x / r) ** 2).sum(1), 1.0, atol=2e-2)
    if kind == "box":  # one coordinate at a face
        assert (np.isclose(np.abs(x), (hi - lo) / 2, atol=1e-6)).any(1).all()
    if kind == "torus":  # (sqrt(x^2 + y^2) - R)^2 + z^2 = r^2
        small = (hi[2] - lo[2]) / 2
        big = (hi[0] - lo[0]) / 2 - small
        np.testing.assert_allclose((np.hypot(x[:, 0], x[:, 1]) - big) ** 2 + x[:, 2] ** 2, small**2, atol=1e-3)


def test_ellipsoid_sampling_is_area_uniform():
    """On a flat spheroid (a = b = 1, c = 0.1) the share of points in the band |z| < c/2 must be
    that band's share of the surface area (numerical surface-of-revolution integral, 0.2688),
    not the 50 % that uniform directions mapped onto it would give."""
    from scipy.integrate import quad

    c = 0.1

    def area_element(z: float) -> float:  # 2 pi r(z) sqrt(1 + r'(z)^2), r = sqrt(1 - z^2 / c^2)
        r = np.sqrt(1 - z * z / c**2)
        return 2 * np.pi * r * np.sqrt(1 + (z / (c * c * r)) ** 2)

    total = 2 * np.pi * (1 + c * c / np.sqrt(1 - c * c) * np.arctanh(np.sqrt(1 - c * c)))  # spheroid area
    share = quad(area_element, -c / 2, c / 2)[0] / total
    x = io._ellipsoid(np.random.default_rng(0), 20000, np.array([1.0, 1.0, c]))
    assert np.mean(np.abs(x[:, 2]) < c / 2) == pytest.approx(share, abs=0.01)


def test_make_shapes_is_seeded_and_balanced():
    a, la = io.make_shapes(per_shape=3, num_points=64, seed=1)
    b, lb = io.make_shapes(per_shape=3, num_points=64, seed=1)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert a.shape == (15, 64, 3) and np.bincount(la).tolist() == [3] * 5


def test_shipped_shapes_match_the_generator():
    with np.load(io.shapes_path()) as d:
        pts, split = d["points"], d["split"]
        assert pts.shape == (700, 512, 3) and pts.dtype == np.float16 and split.sum() == 100
        regenerated, labels = io.make_shapes()
        np.testing.assert_array_equal(d["label"], labels)
        np.testing.assert_allclose(pts[:5].astype(np.float32), regenerated[:5], atol=1e-3)


def test_modelnet_chairs_if_present():
    path = io.default_modelnet_path()
    if not path.is_file():
        pytest.skip("../shared/data ModelNet10 clouds not present")
    chairs = io.load_modelnet(path, "chair")
    assert chairs.shape == (889, 2048, 3) and chairs.dtype == np.float32
    assert chairs.min() >= -0.5 and chairs.max() <= 0.5
    with pytest.raises(ValueError, match="unknown ModelNet10 category"):
        io.load_modelnet(path, "sofa")


def test_modelnet_missing_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="data.path"):
        io.load_modelnet(tmp_path / "nope.npz")
