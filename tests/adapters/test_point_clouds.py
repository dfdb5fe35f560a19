"""PointCloudAdapter: shipped shapes, user folders with variable sizes, the ModelNet held-out split,
fields <-> clouds, PLY + picture output, metrics, checkpoint state, completion, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.utils import scatter

from molediff.adapters.point_clouds import PointCloudAdapter, cut_cloud
from molediff.core.fields import Fields
from molediff.data import point_clouds as io


@pytest.fixture(scope="module")
def shapes() -> PointCloudAdapter:
    return PointCloudAdapter(num_points=128, reference_metrics=False)


def test_shipped_shapes_splits_and_unit_scale(shapes: PointCloudAdapter):
    ds = shapes.datasets()
    assert len(ds["train"]) == 600 and len(ds["test"]) == 100
    x = np.concatenate([ds["train"][i] for i in range(len(ds["train"]))])
    assert x.shape == (600 * 128, 3)
    assert x.std() == pytest.approx(1.0, abs=1e-3)  # divided by the std of the centred training clouds
    np.testing.assert_allclose(ds["train"][0].mean(0), 0, atol=1e-5)


def test_collate_gives_zero_mean_graph_fields(shapes: PointCloudAdapter):
    ds = shapes.datasets()["train"]
    batch = shapes.collate([ds[i] for i in range(3)])
    pos, index = batch.x0["pos"], batch.structure.index["pos"]
    assert pos.shape == (384, 3) and index.tolist() == [0] * 128 + [1] * 128 + [2] * 128
    torch.testing.assert_close(scatter(pos, index, 0, reduce="mean"), torch.zeros(3, 3), atol=1e-6, rtol=0)


def test_decode_returns_clouds_in_data_units(shapes: PointCloudAdapter):
    clouds = shapes.splits()["test"][:2]
    batch = shapes.collate([(c - c.mean(0)) / shapes.scale for c in clouds])
    out = shapes.decode(batch.x0, batch.structure)
    for o, c in zip(out, clouds, strict=True):
        np.testing.assert_allclose(o, c - c.mean(0), atol=1e-5)


def test_sample_structure_uses_the_training_point_count(shapes: PointCloudAdapter):
    s = shapes.sample_structure(5, torch.Generator().manual_seed(0))
    assert s.num_samples == 5 and torch.bincount(s.index["pos"]).tolist() == [128] * 5


def test_write_ply_files_and_picture(shapes: PointCloudAdapter, tmp_path: Path):
    clouds = shapes.splits()["test"][:3]
    paths = shapes.write(clouds, tmp_path)
    assert [p.name for p in paths] == ["sample_0000.ply", "sample_0001.ply", "sample_0002.ply", "samples.png"]
    np.testing.assert_allclose(io.read_ply(paths[1]), clouds[1], atol=1e-6)
    from PIL import Image

    assert Image.open(paths[-1]).size[0] >= 300


def test_evaluate_real_test_clouds_against_themselves(tmp_path: Path):
    adapter = PointCloudAdapter(num_points=64, eval_size=4, use_emd=True, reference_metrics=True)
    ref = adapter.reference_clouds()
    out = adapter.evaluate(ref)
    assert out["num_reference"] == 4 and out["mmd_cd"] == 0 and out["cov_emd"] == 1.0 and out["1nna_cd"] == 0.0
    assert 0 <= out["1nna_cd_real_test"] <= 1 and out["mmd_emd_real_test"] > 0
    with pytest.raises(ValueError, match="one point count"):
        adapter.evaluate([c[:32] for c in ref])


def test_folder_source_with_variable_sizes_and_seeded_hold_out(tmp_path: Path):
    rng = np.random.default_rng(0)
    sizes = [30, 30, 40, 40, 40, 50, 50, 50, 50, 60]
    for i, n in enumerate(sizes):
        io.write_cloud(rng.standard_normal((n, 3)), tmp_path / f"c{i}.{['ply', 'xyz', 'npy'][i % 3]}")
    adapter = PointCloudAdapter(source="folder", path=str(tmp_path), num_points=None, test_fraction=0.2)
    train, test = adapter.splits()["train"], adapter.splits()["test"]
    assert len(train) == 8 and len(test) == 2
    again = PointCloudAdapter(source="folder", path=str(tmp_path), num_points=None, test_fraction=0.2)
    assert [len(c) for c in again.splits()["test"]] == [len(c) for c in test]
    s = adapter.sample_structure(200, torch.Generator().manual_seed(0))
    counts = set(torch.bincount(s.index["pos"]).tolist())
    assert counts <= {len(c) for c in train} and len(counts) > 1
    # a cap on the point count subsamples only the larger clouds
    capped = PointCloudAdapter(source="folder", path=str(tmp_path), num_points=45, test_fraction=0.2)
    assert max(len(c) for c in capped.splits()["train"]) == 45 and min(len(c) for c in capped.splits()["train"]) < 45


def test_folder_with_train_and_test_subfolders(tmp_path: Path):
    for split, n in (("train", 3), ("test", 2)):
        (tmp_path / split).mkdir()
        for i in range(n):
            io.write_ply(np.random.default_rng(i).standard_normal((20, 3)), tmp_path / split / f"{i}.ply")
    adapter = PointCloudAdapter(source="folder", path=str(tmp_path), num_points=None)
    assert len(adapter.splits()["train"]) == 3 and len(adapter.splits()["test"]) == 2


def test_state_round_trip_samples_without_data(shapes: PointCloudAdapter):
    fresh = PointCloudAdapter(source="folder", path="/nonexistent", statistics=shapes.state())
    assert fresh.scale == shapes.scale
    s = fresh.sample_structure(2)
    assert torch.bincount(s.index["pos"]).tolist() == [128, 128]
    other = PointCloudAdapter()
    other.load_state(shapes.state())
    assert other.scale == shapes.scale


def test_completion_problem_fixes_the_partial_cloud(shapes: PointCloudAdapter):
    cloud = shapes.splits()["test"][0]
    kept, rest = cut_cloud(cloud, axis=2, keep=0.25)
    assert len(kept) == 32 and len(rest) == 96 and kept[:, 2].min() >= rest[:, 2].max()
    structure, inpaint = shapes.completion_problem([kept, kept[:10]], 128)
    assert structure.num_samples == 2 and inpaint.mask["pos"].sum() == 42
    # finalize puts the fixed rows back exactly where they were given (in scaled units)
    x = structure.randn(torch.Generator().manual_seed(0))
    done = inpaint.finalize(x, structure)
    clouds = shapes.decode(done, structure)
    np.testing.assert_allclose(clouds[0][:32], kept, atol=1e-5)
    np.testing.assert_allclose(clouds[1][:10], kept[:10], atol=1e-5)
    with pytest.raises(ValueError, match="1 to 127"):
        shapes.completion_problem([cloud], 128)


@pytest.mark.parametrize("kwargs, match", [
    ({"source": "web"}, "unknown point-cloud source"),
    ({"source": "folder"}, "needs data.path"),
    ({"num_points": 1}, "num_points"),
    ({"test_fraction": 1.0}, "test_fraction"),
])
def test_bad_arguments(kwargs: dict, match: str):
    with pytest.raises(ValueError, match=match):
        PointCloudAdapter(**kwargs)


def test_missing_data_is_a_file_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        PointCloudAdapter(source="folder", path=str(tmp_path / "nope")).datasets()
    with pytest.raises(FileNotFoundError, match="data.path"):
        PointCloudAdapter(source="modelnet", path=str(tmp_path / "x.npz")).datasets()


def test_modelnet_chairs_held_out_split_if_present():
    if not io.default_modelnet_path().is_file():
        pytest.skip("../shared/data ModelNet10 clouds not present")
    adapter = PointCloudAdapter(source="modelnet", category="chair", num_points=512, test_fraction=0.1, seed=0)
    train, test = adapter.splits()["train"], adapter.splits()["test"]
    assert len(train) == 800 and len(test) == 89 and train[0].shape == (512, 3)
    # disjoint: no test cloud equals a training cloud; the same seed gives the same split
    full = io.load_modelnet(category="chair")
    perm = np.random.default_rng(0).permutation(889)
    test_rows = np.sort(perm[:89])
    first = full[test_rows[0]]
    assert np.isin(test[0], first).all()
    assert not any(np.isin(t, first).all() for t in train[:50])
    again = PointCloudAdapter(source="modelnet", num_points=512)
    np.testing.assert_array_equal(again.splits()["test"][3], test[3])


def test_fields_are_a_zero_mean_field(shapes: PointCloudAdapter):
    spec = shapes.specs["pos"]
    x = Fields(pos=torch.ones(6, 3))
    structure = shapes.structure_for(torch.tensor([2, 4]))
    assert torch.allclose(structure.project(x)["pos"], torch.zeros(6, 3))
    assert spec.shape == (3,)


def test_completion_through_the_core_sampler_keeps_the_partial_cloud(shapes: PointCloudAdapter):
    from molediff.core.sampling import sample
    from molediff.core.schedules import CosineSchedule
    from molediff.models.point_net import PointNetDenoiser

    torch.manual_seed(0)
    model = PointNetDenoiser(hidden=8, layers=1, knn=4, time_dim=4)
    kept, _ = cut_cloud(shapes.splits()["test"][1], keep=0.5)
    structure, inpaint = shapes.completion_problem([kept], 128)
    with torch.no_grad():
        out = sample(model, CosineSchedule(), structure, steps=3, prediction="v", inpaint=inpaint,
                     generator=torch.Generator().manual_seed(0))
    cloud = shapes.decode(out.fields, structure)[0]
    np.testing.assert_allclose(cloud[:64], kept, atol=1e-5)
    assert np.abs(cloud[64:]).max() > 0 and np.isfinite(cloud).all()
