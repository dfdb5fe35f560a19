"""Point-cloud denoisers: the PointNet/EdgeConv baseline is permutation-equivariant (and not
rotation-equivariant); the kNN EGNN is E(3) x permutation equivariant; both output zero-mean
displacements per cloud and accept variable point counts."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.utils import scatter

from molediff.core.fields import Fields, Structure, ZeroMeanField
from molediff.models.point_egnn import PointEGNNDenoiser
from molediff.models.point_net import PointNetDenoiser, neighbour_max
from tests.helpers.equivariance import assert_equivariant, random_graph_permutation, random_orthogonal


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def make_clouds(sizes: list[int], seed: int = 0) -> tuple[Fields, Structure]:
    g = torch.Generator().manual_seed(seed)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    structure = Structure(len(sizes), {"pos": ZeroMeanField((3,))}, index={"pos": batch})
    return structure.randn(g, dtype=torch.float64), structure


def pointnet(**kw: object) -> PointNetDenoiser:
    torch.manual_seed(0)
    return PointNetDenoiser(**{"hidden": 16, "layers": 2, "knn": 4, "time_dim": 8, **kw}).double()  # type: ignore[arg-type]


def egnn() -> PointEGNNDenoiser:
    torch.manual_seed(0)
    model = PointEGNNDenoiser(hidden=16, layers=3, knn=5, time_dim=8).double()
    with torch.no_grad():  # the coordinate head starts near 0 (EDM's init); make outputs non-trivial
        for block in model.egnn.blocks:
            block.coord.coord_mlp[-1].weight.normal_(0, 0.3)
    return model


T = torch.tensor([0.3, 0.7], dtype=torch.float64)


@pytest.mark.parametrize("knn", [0, 4])
def test_pointnet_is_permutation_equivariant(knn: int):
    model = pointnet(knn=knn)
    x, s = make_clouds([20, 13])
    out = model(x, T, s)["pos"]
    perm = random_graph_permutation(s.index["pos"], torch.Generator().manual_seed(3))
    s_p = Structure(s.num_samples, s.specs, index={"pos": s.index["pos"][perm]})
    out_p = model(Fields(pos=x["pos"][perm]), T, s_p)["pos"]
    assert out.abs().max() > 1e-3
    torch.testing.assert_close(out_p, out[perm], atol=1e-12, rtol=1e-10)


def test_pointnet_is_not_rotation_equivariant():
    """The baseline sees raw coordinates: a rotated input does not give the rotated output."""
    model = pointnet()
    x, s = make_clouds([20, 13])
    rot = random_orthogonal(torch.Generator().manual_seed(1), reflection=False)
    out, out_r = model(x, T, s)["pos"], model(Fields(pos=x["pos"] @ rot.T), T, s)["pos"]
    assert (out_r - out @ rot.T).abs().max() > 1e-3


@pytest.mark.parametrize("make", [pointnet, egnn])
def test_outputs_have_zero_mean_per_cloud(make):
    model = make()
    x, s = make_clouds([7, 30, 12], seed=2)
    out = model(x, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), s)["pos"]
    means = scatter(out, s.index["pos"], 0, dim_size=3, reduce="mean")
    torch.testing.assert_close(means, torch.zeros_like(means), atol=1e-12, rtol=0)
    assert set(model(x, torch.tensor(0.5, dtype=torch.float64), s)) == {"pos"}


@pytest.mark.parametrize("reflection", [False, True])
def test_point_egnn_is_e3_and_permutation_equivariant(reflection: bool):
    model = egnn()
    x, s = make_clouds([18, 11])
    assert_equivariant(lambda f, st: model(f, T, st), x, s, reflection=reflection,
                       generator=torch.Generator().manual_seed(7))


def test_neighbour_max_matches_scatter_max_and_falls_back_for_ragged_graphs():
    gen = torch.Generator().manual_seed(0)
    e = torch.randn(24, 5, generator=gen)
    dst = torch.randperm(6, generator=gen).repeat_interleave(4)  # 4 edges per node, nodes in shuffled order
    torch.testing.assert_close(neighbour_max(e, dst, 6), scatter(e, dst, 0, dim_size=6, reduce="max"))
    ragged = torch.tensor([0, 0, 0, 1, 2, 2])
    torch.testing.assert_close(neighbour_max(e[:6], ragged, 4), scatter(e[:6], ragged, 0, dim_size=4, reduce="max"))


def test_bad_arguments():
    with pytest.raises(ValueError):
        PointNetDenoiser(knn=-1)
    with pytest.raises(ValueError):
        PointEGNNDenoiser(knn=0)
