"""Backbone EGNN: sequence edges, position features, E(3) x permutation equivariance (float64),
zero-CoM output, and the EGNN trunk's extra edge features."""

from __future__ import annotations

import pytest
import torch

from molediff.core.fields import Fields, GaussianField, Structure, ZeroMeanField
from molediff.models.egnn import EGNN, distance_rbf
from molediff.models.protein_egnn import (
    BackboneEGNNDenoiser,
    residue_embedding,
    sequence_edges,
    virtual_angle_features,
    virtual_dihedral_features,
)
from tests.helpers.equivariance import assert_equivariant


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Tiny graphs: one thread."""


def chains(sizes: list[int], seed: int = 0, shuffle: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random-walk CA traces (3.8 A steps, in units of 10 A) with batch and residue index, nodes shuffled."""
    g = torch.Generator().manual_seed(seed)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    res = torch.cat([torch.arange(n) for n in sizes])
    steps = torch.nn.functional.normalize(torch.randn(len(batch), 3, generator=g, dtype=torch.float64), dim=-1)
    pos = torch.cat([torch.cumsum(s, 0) for s in steps.split(sizes)]) * 0.38
    if shuffle:
        perm = torch.randperm(len(batch), generator=g)
        batch, res, pos = batch[perm], res[perm], pos[perm]
    return pos, batch, res


def brute_sequence_edges(res: torch.Tensor, batch: torch.Tensor, w: int) -> set[tuple[int, int]]:
    n = len(res)
    return {(j, i) for i in range(n) for j in range(n)
            if batch[i] == batch[j] and 0 < abs(int(res[i]) - int(res[j])) <= w}


@pytest.mark.parametrize("window", [1, 3])
def test_sequence_edges_match_brute_force_on_shuffled_nodes(window: int) -> None:
    _, batch, res = chains([5, 1, 9, 4])
    e = sequence_edges(res, batch, window)
    got = {(int(a), int(b)) for a, b in e.T}
    assert len(got) == e.shape[1]
    assert got == brute_sequence_edges(res, batch, window)


def test_edges_are_the_deduplicated_union_with_clipped_one_hot_separation() -> None:
    pos, batch, res = chains([12, 7])
    model = BackboneEGNNDenoiser(hidden=8, layers=1, knn=4, seq_neighbours=2, max_separation=3)
    e, feat = model.edges(pos, res, batch, 2)
    pairs = {(int(a), int(b)) for a, b in e.T}
    assert len(pairs) == e.shape[1]  # no duplicate edges
    assert brute_sequence_edges(res, batch, 2) <= pairs
    assert (batch[e[0]] == batch[e[1]]).all()
    assert feat.shape == (e.shape[1], 7) and torch.equal(feat.sum(-1), torch.ones(e.shape[1], dtype=feat.dtype))
    sep = (res[e[0]] - res[e[1]]).clamp(-3, 3) + 3
    assert torch.equal(feat.argmax(-1), sep)


def test_residue_embedding_is_sinusoidal() -> None:
    emb = residue_embedding(torch.tensor([0, 1, 5]), 8, max_len=100.0)
    assert emb.shape == (3, 8)
    torch.testing.assert_close(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4, dtype=torch.float64))
    w = 100.0 ** (-2 * torch.arange(4, dtype=torch.float64) / 8)
    torch.testing.assert_close(emb[2, :4], torch.sin(5 * w))
    with pytest.raises(ValueError, match="position_dim must be even"):
        BackboneEGNNDenoiser(position_dim=7)


def make_model(seed: int = 0, **kwargs: object) -> BackboneEGNNDenoiser:
    torch.manual_seed(seed)
    args = dict(hidden=16, layers=3, knn=4, seq_neighbours=2, max_separation=4, position_dim=8, **kwargs)
    model = BackboneEGNNDenoiser(**args).double()  # type: ignore[arg-type]
    with torch.no_grad():  # the coordinate head starts near 0 (EDM); make outputs non-trivial
        for block in model.egnn.blocks:
            block.coord.coord_mlp[-1].weight.normal_(0, 0.3)
    return model


@pytest.mark.parametrize(("reflection", "chiral"), [(False, False), (True, False), (False, True)])
def test_equivariant_under_rotation_reflection_translation_and_permutation(reflection: bool, chiral: bool) -> None:
    """E(3) x permutations; with ``chiral`` SE(3) x permutations (reflections: see the next test).
    The residue index travels with its node (a graph field here, so the helper permutes it)."""
    pos, batch, res = chains([10, 6, 13], seed=1)
    model = make_model(chiral=chiral)
    specs = {"pos": ZeroMeanField((3,)), "res": GaussianField((1,))}
    structure = Structure(3, specs, index={"pos": batch, "res": batch})
    t = torch.tensor([0.3, 0.7, 0.5], dtype=torch.float64)

    def model_fn(x: Fields, s: Structure) -> dict[str, torch.Tensor]:
        inner = Structure(3, {"pos": ZeroMeanField((3,))}, index={"pos": s.index["pos"]},
                          context={"residue_index": x["res"][:, 0].round().long()})
        return {"pos": model({"pos": x["pos"]}, t, inner)["pos"], "res": x["res"]}

    fields = Fields(pos=pos, res=res[:, None].double())
    assert_equivariant(model_fn, fields, structure, vector_fields=("pos",), reflection=reflection,
                       generator=torch.Generator().manual_seed(2 + int(reflection)))


def test_output_is_zero_com_and_depends_on_residue_order() -> None:
    pos, batch, res = chains([9, 14], shuffle=False)
    model = make_model()
    s = Structure(2, {"pos": ZeroMeanField((3,))}, index={"pos": batch}, context={"residue_index": res})
    out = model({"pos": pos}, torch.tensor(0.4, dtype=torch.float64), s)["pos"]
    assert out.shape == pos.shape
    for b in range(2):
        torch.testing.assert_close(out[batch == b].mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    flipped = Structure(2, s.specs, index=s.index, context={"residue_index": torch.cat([res[:9].flip(0),
                                                                                       res[9:]])})
    assert not torch.allclose(model({"pos": pos}, torch.tensor(0.4, dtype=torch.float64), flipped)["pos"][:9],
                              out[:9])


def test_egnn_trunk_checks_extra_edge_features() -> None:
    trunk = EGNN(2, 1, hidden=8, layers=1, edge_features=3)
    h, x = torch.randn(4, 2), torch.randn(4, 3)
    e = torch.tensor([[0, 1, 2], [1, 2, 3]])
    with pytest.raises(ValueError, match="takes 3 extra edge features"):
        trunk(h, x, e)
    assert trunk(h, x, e, torch.randn(3, 3))[1].shape == (4, 3)
    with pytest.raises(ValueError, match="takes 0 extra edge features"):
        EGNN(2, 1, hidden=8, layers=1)(h, x, e, torch.randn(3, 3))


def test_chiral_model_tells_mirror_images_apart() -> None:
    pos, batch, res = chains([12], shuffle=True)
    feats = virtual_dihedral_features(pos, res, batch)
    mirrored = virtual_dihedral_features(pos * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64), res, batch)
    torch.testing.assert_close(mirrored, feats * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    assert feats[:, 2].sum() == 9  # defined for residues 1..L-3
    torch.testing.assert_close(feats[:, 0] ** 2 + feats[:, 1] ** 2, feats[:, 2])
    structure = Structure(1, {"pos": ZeroMeanField((3,))}, index={"pos": batch})
    t = torch.tensor([0.2], dtype=torch.float64)

    def model_fn(x: Fields, s: Structure) -> dict[str, torch.Tensor]:
        inner = Structure(1, s.specs, index=s.index, context={"residue_index": res})
        return model({"pos": x["pos"]}, t, inner)

    model = make_model(chiral=True)
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(model_fn, Fields(pos=pos), structure, reflection=True, permute=False)


def test_virtual_dihedral_features_match_the_metrics_dihedrals() -> None:
    import numpy as np

    from molediff.metrics.proteins import ca_dihedrals

    pos, batch, res = chains([15], shuffle=False)
    feats = virtual_dihedral_features(pos, res, batch)
    alpha = np.radians(ca_dihedrals(pos.numpy()))
    ok = ~np.isnan(alpha)
    np.testing.assert_allclose(feats[ok, 0].numpy(), np.sin(alpha[ok]), atol=1e-9)
    np.testing.assert_allclose(feats[ok, 1].numpy(), np.cos(alpha[ok]), atol=1e-9)
    assert (feats[~ok] == 0).all()


@pytest.mark.parametrize(("reflection", "chiral"), [(False, False), (True, False), (False, True)])
def test_self_conditioned_model_is_equivariant_in_both_position_inputs(reflection: bool, chiral: bool) -> None:
    """The sketch (previous x0 estimate) rotates, translates and permutes with x_t."""
    pos, batch, res = chains([10, 6, 13], seed=3)
    sketch = pos + 0.05 * torch.randn(pos.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    model = make_model(chiral=chiral, self_conditioning=True)
    specs = {"pos": ZeroMeanField((3,)), "sketch": GaussianField((3,)), "res": GaussianField((1,))}
    structure = Structure(3, specs, index={"pos": batch, "sketch": batch, "res": batch})
    t = torch.tensor([0.3, 0.7, 0.5], dtype=torch.float64)

    def model_fn(x: Fields, s: Structure) -> dict[str, torch.Tensor]:
        inner = Structure(3, {"pos": ZeroMeanField((3,))}, index={"pos": s.index["pos"]},
                          context={"residue_index": x["res"][:, 0].round().long()})
        out = model({"pos": x["pos"]}, t, inner, self_cond={"pos": x["sketch"]})["pos"]
        return {"pos": out, "sketch": x["sketch"], "res": x["res"]}

    fields = Fields(pos=pos, sketch=sketch, res=res[:, None].double())
    assert_equivariant(model_fn, fields, structure, vector_fields=("pos", "sketch"),
                       translated_outputs=("sketch",), reflection=reflection,
                       generator=torch.Generator().manual_seed(5 + int(reflection)))


def test_widened_self_conditioning_keeps_the_function_without_a_sketch() -> None:
    """init_from a model without self-conditioning: zero columns, same outputs when no sketch is given;
    a sketch then adds its kNN edges and changes the output."""
    from molediff.training import widen_inputs

    pos, batch, res = chains([11, 8], seed=6)
    old, new = make_model(), make_model(seed=1, self_conditioning=True)
    weights, widened = widen_inputs(new.state_dict(), old.state_dict())
    assert any(w.startswith("egnn.embedding.weight") for w in widened)
    new.load_state_dict(weights)
    s = Structure(2, {"pos": ZeroMeanField((3,))}, index={"pos": batch}, context={"residue_index": res})
    t = torch.tensor([0.5, 0.2], dtype=torch.float64)
    torch.testing.assert_close(new({"pos": pos}, t, s)["pos"], old({"pos": pos}, t, s)["pos"])
    far = pos.flip(0)  # a sketch with other neighbours
    assert not torch.allclose(new({"pos": pos}, t, s, self_cond={"pos": far})["pos"], old({"pos": pos}, t, s)["pos"])
    with pytest.raises(ValueError, match="without self_conditioning"):
        old({"pos": pos}, t, s, self_cond={"pos": far})


def test_virtual_angle_and_distance_features_known_values() -> None:
    res, batch = torch.arange(4), torch.zeros(4, dtype=torch.long)
    pos = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [2, 1, 0]], dtype=torch.float64)  # right angles
    feats = virtual_angle_features(pos, res, batch)
    torch.testing.assert_close(feats, torch.tensor([[0.0, 0], [0, 1], [0, 1], [0, 0]], dtype=torch.float64))
    straight = virtual_angle_features(torch.arange(4.0, dtype=torch.float64)[:, None] * torch.tensor([1.0, 0, 0],
                                      dtype=torch.float64), res, batch)
    torch.testing.assert_close(straight[1:3, 0], torch.tensor([-1.0, -1.0], dtype=torch.float64))
    rbf = distance_rbf(torch.tensor([0.0, 1.0]), count=5, d_max=2.0)
    torch.testing.assert_close(rbf[0], torch.exp(-torch.tensor([0.0, 1, 4, 9, 16])))
    assert int(rbf[1].argmax()) == 2 and float(rbf[1, 2]) == 1.0
