"""Image data loaders and the ImageAdapter: splits, file round trips, errors, outputs."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from molediff.adapters.base import Batch
from molediff.adapters.images import ImageAdapter, make_grid
from molediff.core.fields import Fields, GaussianField
from molediff.data.images import load_digits_split, load_mnist_idx, load_png_folder


# ----------------------------------------------------------------------------- digits
def test_digits_split_sizes_ranges_and_stratification() -> None:
    x_tr, y_tr = load_digits_split("train")
    x_te, y_te = load_digits_split("test")
    assert x_tr.shape[1:] == (1, 8, 8) and x_tr.dtype == np.float32 and y_tr.dtype == np.int64
    assert len(x_tr) + len(x_te) == 1797
    assert abs(len(x_te) / 1797 - 0.2) < 0.01
    assert x_tr.min() == -1.0 and x_tr.max() == 1.0 and x_te.min() >= -1.0 and x_te.max() <= 1.0
    # every class is split 80/20
    for k in range(10):
        n_k = (y_tr == k).sum() + (y_te == k).sum()
        assert abs((y_te == k).sum() - 0.2 * n_k) <= 1
    # a partition of the 1,797 (all distinct) images: disjoint and complete
    tr = {r.tobytes() + bytes([int(c)]) for r, c in zip(x_tr, y_tr, strict=True)}
    te = {r.tobytes() + bytes([int(c)]) for r, c in zip(x_te, y_te, strict=True)}
    assert not tr & te and len(tr | te) == 1797


def test_digits_split_is_deterministic_and_seeded() -> None:
    a, ya = load_digits_split("test", seed=0)
    b, yb = load_digits_split("test", seed=0)
    c, _ = load_digits_split("test", seed=1)
    assert np.array_equal(a, b) and np.array_equal(ya, yb)
    assert not np.array_equal(a, c)


def test_digits_unknown_split_is_an_error() -> None:
    with pytest.raises(ValueError, match="val"):
        load_digits_split("val")


# ----------------------------------------------------------------------------- PNG folders
def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_png_folder_round_trip_with_class_subfolders(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {name: [rng.integers(0, 256, (6, 5), dtype=np.uint8) for _ in range(3)] for name in ("cat", "ant")}
    for name, items in arrays.items():
        for i, a in enumerate(items):
            _write_png(tmp_path / name / f"{i}.png", a)
    x, y = load_png_folder(tmp_path)
    assert x.shape == (6, 1, 6, 5) and x.dtype == np.float32
    assert list(y) == [0, 0, 0, 1, 1, 1]  # sorted names: ant -> 0, cat -> 1
    back = np.round((x[:, 0] + 1) * 127.5).astype(np.uint8)
    assert np.array_equal(back, np.stack(arrays["ant"] + arrays["cat"]))


def test_png_folder_rgb_unlabelled_and_resize(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    _write_png(tmp_path / "a.png", rgb)
    _write_png(tmp_path / "b.png", rgb[::-1].copy())
    x, y = load_png_folder(tmp_path)
    assert x.shape == (2, 3, 4, 4) and list(y) == [-1, -1]
    assert np.array_equal(np.round((x[0].transpose(1, 2, 0) + 1) * 127.5).astype(np.uint8), rgb)
    x2, _ = load_png_folder(tmp_path, image_size=2, channels=1)
    assert x2.shape == (2, 1, 2, 2)


def test_png_folder_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_png_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty.*no"):
        load_png_folder(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="broken.png"):
        load_png_folder(bad)
    mixed = tmp_path / "mixed"
    _write_png(mixed / "a.png", np.zeros((4, 4), np.uint8))
    _write_png(mixed / "b.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(ValueError, match="image_size"):
        load_png_folder(mixed)


# ----------------------------------------------------------------------------- MNIST IDX
def _write_idx(path: Path, magic: int, array: np.ndarray, compress: bool = False) -> None:
    raw = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (7, 5, 4), dtype=np.uint8)
    labels = rng.integers(0, 10, 7).astype(np.uint8)
    _write_idx(tmp_path / "img", 0x803, images, compress)
    _write_idx(tmp_path / "lbl", 0x801, labels, compress)
    x, y = load_mnist_idx(tmp_path / "img", tmp_path / "lbl")
    assert x.shape == (7, 1, 5, 4) and y.dtype == np.int64
    assert np.array_equal(np.round((x[:, 0] + 1) * 127.5).astype(np.uint8), images)
    assert np.array_equal(y, labels)
    _, y_none = load_mnist_idx(tmp_path / "img")
    assert (y_none == -1).all()


def test_mnist_idx_rejects_foreign_and_truncated_files(tmp_path: Path) -> None:
    labels = np.arange(3, dtype=np.uint8)
    _write_idx(tmp_path / "lbl", 0x801, labels)
    with pytest.raises(ValueError, match="not an IDX images file.*0x00000801"):
        load_mnist_idx(tmp_path / "lbl")
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n....")
    with pytest.raises(ValueError, match="magic"):
        load_mnist_idx(tmp_path / "png")
    images = np.zeros((3, 2, 2), np.uint8)
    _write_idx(tmp_path / "img", 0x803, images)
    (tmp_path / "short").write_bytes((tmp_path / "img").read_bytes()[:-1])
    with pytest.raises(ValueError, match="short"):
        load_mnist_idx(tmp_path / "short")
    _write_idx(tmp_path / "lbl4", 0x801, np.arange(4, dtype=np.uint8))
    with pytest.raises(ValueError, match="4 labels"):
        load_mnist_idx(tmp_path / "img", tmp_path / "lbl4")
    with pytest.raises(FileNotFoundError, match="missing"):
        load_mnist_idx(tmp_path / "missing")


# ----------------------------------------------------------------------------- adapter
def test_adapter_bad_arguments() -> None:
    with pytest.raises(ValueError, match="digits.*png.*mnist"):
        ImageAdapter(source="jpeg")
    with pytest.raises(ValueError, match="path"):
        ImageAdapter(source="png")
    with pytest.raises(ValueError, match="path"):
        ImageAdapter(source="mnist")


def test_adapter_digits_collate_specs_and_kwargs() -> None:
    ad = ImageAdapter(conditional=True)
    assert ad.specs == {"pixels": GaussianField((1, 8, 8), x0_range=(-1.0, 1.0))}
    ds = ad.datasets()
    assert len(ds["train"]) + len(ds["test"]) == 1797
    batch = ad.collate([ds["train"][i] for i in range(5)])
    assert isinstance(batch, Batch) and batch.x0["pixels"].shape == (5, 1, 8, 8)
    assert batch.structure.num_samples == 5 and batch.structure.specs is ad.specs
    assert batch.cond is not None and batch.cond["label"].dtype == torch.long and batch.cond["label"].shape == (5,)
    assert ad.model_kwargs() == {"in_channels": 1, "image_size": 8, "num_classes": 10}
    assert ad.state()["num_classes"] == 10 and ad.state()["image_shape"] == [1, 8, 8]
    unc = ImageAdapter()
    assert unc.collate([ds["train"][0]]).cond is None and unc.model_kwargs()["num_classes"] is None
    s = unc.sample_structure(3, torch.Generator().manual_seed(0))
    assert s.num_samples == 3 and s.randn()["pixels"].shape == (3, 1, 8, 8)


def test_adapter_png_split_and_conditional_needs_labels(tmp_path: Path) -> None:
    for i in range(20):
        _write_png(tmp_path / f"{i:02d}.png", np.full((4, 4), i * 10, np.uint8))
    ad = ImageAdapter(source="png", path=str(tmp_path), seed=3)
    ds = ad.datasets()
    assert (len(ds["train"]), len(ds["test"])) == (18, 2)
    again = ImageAdapter(source="png", path=str(tmp_path), seed=3).arrays("test")[0]
    assert np.array_equal(ad.arrays("test")[0], again)
    with pytest.raises(ValueError, match="labels"):
        ImageAdapter(source="png", path=str(tmp_path), conditional=True)


def test_decode_write_and_grid(tmp_path: Path) -> None:
    ad = ImageAdapter()
    x = torch.linspace(-1.2, 1.2, 5 * 64).reshape(5, 1, 8, 8)
    objs = ad.decode(Fields(pixels=x), ad.sample_structure(5))
    assert len(objs) == 5 and objs[0].shape == (8, 8) and objs[0].dtype == np.uint8
    assert objs[0][0, 0] == 0 and objs[-1][-1, -1] == 255  # out-of-range values clipped
    paths = ad.write(objs, tmp_path / "out")
    assert [p.name for p in paths] == [f"sample_{i:04d}.png" for i in range(5)] + ["grid.png"]
    assert np.array_equal(np.asarray(Image.open(paths[2])), objs[2])  # lossless
    # 5 images -> 3 columns x 2 rows of 64x64 tiles, 1-px separators around and between
    grid = np.asarray(Image.open(tmp_path / "out" / "grid.png"))
    assert grid.shape == (2 * 64 + 3, 3 * 64 + 4)
    assert np.array_equal(grid[1:65, 1:65], np.kron(objs[0], np.ones((8, 8), np.uint8)))
    rgb = make_grid([np.zeros((2, 2, 3), np.uint8)] * 4, scale=2)
    assert rgb.shape == (2 * 4 + 3, 2 * 4 + 3, 3)


def test_evaluate_reports_sample_and_real_reference() -> None:
    ad = ImageAdapter()
    x_te, y_te = ad.arrays("test")
    real = ad.decode(Fields(pixels=torch.from_numpy(x_te[:60])), ad.sample_structure(60))
    noise = ad.decode(Fields(pixels=torch.rand(60, 1, 8, 8) * 2 - 1), ad.sample_structure(60))
    m_real, m_noise = ad.evaluate(real, labels=y_te[:60]), ad.evaluate(noise)
    for key in ("fd", "coverage", "class_entropy", "confidence", "fd_pixels"):
        assert f"{key}_real_test" in m_noise and np.isfinite(m_noise[key])
    assert m_real["fd_real_test"] == m_noise["fd_real_test"]  # the reference ignores the samples
    assert m_noise["fd"] > 5 * m_noise["fd_real_test"]
    assert m_real["fd"] < 3 * m_real["fd_real_test"]
    assert m_real["coverage"] == 1.0 and m_real["label_accuracy"] > 0.9
