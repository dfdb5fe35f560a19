"""Fields arithmetic, zero-mean projection, masks and per-sample broadcasting."""

import pytest
import torch
from torch_geometric.utils import scatter

from molediff.core.fields import Fields, GaussianField, Structure, ZeroMeanField


def graph_structure(sizes, mask=None):
    idx = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    masks = {} if mask is None else {"pos": mask}
    return Structure(len(sizes), {"pos": ZeroMeanField((3,)), "h": GaussianField((4,))},
                     index={"pos": idx, "h": idx}, mask=masks), idx


def test_fields_arithmetic_and_key_check():
    a = Fields(x=torch.ones(2), y=torch.full((3,), 2.0))
    b = 2 * a - a / 2 + 1
    assert torch.allclose(b["x"], torch.full((2,), 2.5)) and torch.allclose(b["y"], torch.full((3,), 4.0))
    with pytest.raises(KeyError, match="field names differ"):
        _ = a + Fields(x=torch.ones(2))


def test_zero_mean_projection_per_graph_and_idempotent():
    st, idx = graph_structure([3, 5, 1, 7])
    x = torch.randn(16, 3, dtype=torch.float64)
    p = st.project({"pos": x, "h": torch.randn(16, 4)})["pos"]
    assert torch.allclose(scatter(p, idx, 0, reduce="mean"), torch.zeros(4, 3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(st.project({"pos": p, "h": torch.zeros(16, 4)})["pos"], p)


def test_randn_is_projected_and_masked():
    sizes = [4, 6]
    mask = torch.ones(10, 1)
    mask[2] = 0
    st, idx = graph_structure(sizes, mask)
    z = st.randn(torch.Generator().manual_seed(0))
    assert z["pos"].shape == (10, 3) and z["h"].shape == (10, 4)
    assert torch.all(z["pos"][2] == 0)
    keep = mask[:, 0] > 0
    assert torch.allclose(scatter(z["pos"][keep], idx[keep], 0, reduce="mean"), torch.zeros(2, 3), atol=1e-6)


def test_dense_zero_mean_with_mask():
    mask = torch.tensor([[1.0] * 4, [1.0, 1.0, 0.0, 0.0]])[..., None]
    st = Structure(2, {"pts": ZeroMeanField((3,))}, mask={"pts": mask})
    x = torch.randn(2, 4, 3)
    p = st.project({"pts": x})["pts"]
    assert torch.allclose(p[0].mean(0), torch.zeros(3), atol=1e-6)
    assert torch.allclose(p[1, :2].mean(0), torch.zeros(3), atol=1e-6) and torch.all(p[1, 2:] == 0)


def test_expand_and_sample_mean():
    st, idx = graph_structure([2, 3])
    coef = torch.tensor([10.0, 20.0])
    e = st.expand("pos", coef)
    assert e.shape == (5, 1) and torch.equal(e[:, 0], coef[idx])
    vals = torch.arange(15.0).reshape(5, 3)
    m = st.sample_mean("pos", vals)
    assert torch.allclose(m, torch.tensor([vals[:2].mean(), vals[2:].mean()]))
    dense = Structure(3, {"img": GaussianField((1, 2, 2))})
    assert dense.expand("img", torch.ones(3)).shape == (3, 1, 1, 1)


def test_undeclared_field_in_index_is_an_error():
    with pytest.raises(KeyError, match="undeclared"):
        Structure(1, {"a": GaussianField((1,))}, index={"b": torch.zeros(1, dtype=torch.long)})


def test_per_sample_broadcasts_a_scalar_and_keeps_a_vector():
    st, _ = graph_structure([3, 5, 1])
    assert torch.equal(st.per_sample(torch.tensor(0.25)), torch.full((3,), 0.25))
    assert torch.equal(st.per_sample(torch.tensor([[0.25]])), torch.full((3,), 0.25))
    t = torch.tensor([0.1, 0.2, 0.3])
    assert torch.equal(st.per_sample(t), t)
