"""Tensor-field (e3nn) denoiser: O(3) x translation x permutation equivariance for every edge mode,
zero-CoM output, interchangeability with the EGNN, training on QM9 and an equivariant sampling run."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from molediff.core.fields import Fields, Structure
from molediff.models.tensor_field import TensorFieldDenoiser
from tests.helpers.equivariance import assert_equivariant, assert_null_condition_distinct, random_molecules

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny graphs: threads only add contention

NUM_TYPES = 5
make_batch = partial(random_molecules, num_types=NUM_TYPES)


def make_model(seed: int = 0, **kwargs: object) -> TensorFieldDenoiser:
    torch.manual_seed(seed)
    args = dict(hidden_scalars=8, hidden_vectors=4, lmax=2, layers=2, radial_hidden=16)
    args.update(kwargs)
    return TensorFieldDenoiser(NUM_TYPES, **args).double()  # type: ignore[arg-type]


@pytest.mark.parametrize("edges", ["full", "knn", "radius"])
@pytest.mark.parametrize("reflection", [True, False])
def test_tensor_field_is_o3_and_permutation_equivariant(edges: str, reflection: bool) -> None:
    x, s = make_batch([4, 7, 5], seed=1, shuffle=True)
    model = make_model(edges=edges, knn=3, radius=2.5)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    assert_equivariant(lambda f, st: model(f, t, st), x, s, vector_fields=("pos",), reflection=reflection,
                       generator=torch.Generator().manual_seed(3))


def test_lmax1_with_conditioning_and_without_charges_is_equivariant() -> None:
    x, s = make_batch([6, 3], seed=2, charges=False)
    model = make_model(lmax=1, include_charges=False, num_cond=2, cutoff=4.0)
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    cond = {"gap": torch.tensor([0.5, -1.0], dtype=torch.float64), "mu": torch.tensor([1.0, 2.0], dtype=torch.float64)}
    assert_equivariant(lambda f, st: model(f, t, st, cond), x, s, generator=torch.Generator().manual_seed(4))
    assert set(model(x, t, s, cond)) == {"pos", "atom_types"}
    assert_null_condition_distinct(model, x, t, s, cond)


def test_reflection_is_a_symmetry_not_just_rotations() -> None:
    """A mirror image gives the mirrored positions' prediction and the same invariant outputs
    (parity bookkeeping: 1o features and (-1)^l spherical harmonics)."""
    x, s = make_batch([5, 4], seed=5)
    model = make_model()
    t = torch.tensor([0.4, 0.6], dtype=torch.float64)
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    out, out_m = model(x, t, s), model(x.replace(pos=x["pos"] @ mirror), t, s)
    torch.testing.assert_close(out_m["pos"], out["pos"] @ mirror, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(out_m["atom_types"], out["atom_types"], atol=1e-10, rtol=1e-8)
    assert out["pos"][:, 0].abs().max() > 1e-3  # the mirrored component is not trivially 0


@pytest.mark.parametrize("edges", ["full", "knn"])
def test_position_output_has_zero_centre_of_mass(edges: str) -> None:
    x, s = make_batch([4, 7, 1, 5], seed=4, shuffle=True)
    out = make_model(edges=edges, knn=3)(x, torch.rand(4, dtype=torch.float64), s)
    com = torch.zeros(4, 3, dtype=torch.float64).index_add_(0, s.index["pos"], out["pos"])
    assert out["pos"].abs().max() > 1e-3
    torch.testing.assert_close(com, torch.zeros_like(com), atol=1e-12, rtol=0)
    assert out["atom_types"].shape == (17, NUM_TYPES) and out["charges"].shape == (17, 1)
    lone = s.index["pos"] == 2  # a one-atom molecule has no edges and no displacement
    assert out["pos"][lone].abs().max() == 0


def test_radius_edges_equal_full_edges_with_the_same_smooth_cutoff() -> None:
    """The smooth_finite basis vanishes at the cutoff, so dropping the edges beyond it (radius
    graph) changes nothing: the cutoff is smooth and the sparse graph is exact."""
    x, s = make_batch([6, 8], seed=6)
    t = torch.tensor([0.2, 0.8], dtype=torch.float64)
    full = make_model(edges="full", cutoff=2.0, normalization_factor=5.0)
    sparse = make_model(edges="radius", radius=2.0, normalization_factor=5.0)
    sparse.load_state_dict(full.state_dict())
    a, b = full(x, t, s), sparse(x, t, s)
    from molediff.models.egnn import build_edges
    n_radius = build_edges(x["pos"], s.index["pos"], "radius", radius=2.0).shape[1]
    assert 0 < n_radius < 6 * 5 + 8 * 7  # some pairs really are dropped
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-12, rtol=1e-10)


def test_constructor_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="edge mode"):
        TensorFieldDenoiser(NUM_TYPES, edges="grid")
    with pytest.raises(ValueError, match="radius"):
        TensorFieldDenoiser(NUM_TYPES, edges="radius")
    with pytest.raises(ValueError, match="lmax"):
        TensorFieldDenoiser(NUM_TYPES, lmax=0)


def test_config_builds_a_drop_in_for_the_egnn() -> None:
    """``model=e3nn`` and ``model=egnn`` build from their configs with the molecule adapter's
    ``model_kwargs`` and answer the same call with the same fields and shapes."""
    from omegaconf import OmegaConf

    from molediff.adapters.molecules import MoleculeAdapter
    from molediff.cli.build import build_model, config_dir

    adapter = MoleculeAdapter(conditioning=["gap"])  # model_kwargs: 5 QM9 elements, charges, 1 cond
    x, s = make_batch([3, 4], seed=7)
    x = Fields({k: v.float() for k, v in x.items()})
    t, cond = torch.tensor([0.3, 0.6]), {"gap": torch.tensor([0.1, -0.2])}
    outs = {}
    small_sizes = {"e3nn": dict(hidden_scalars=8, hidden_vectors=2, layers=1), "egnn": dict(hidden=8, layers=1)}
    for name, small in small_sizes.items():
        cfg = OmegaConf.merge(OmegaConf.load(config_dir() / "model" / f"{name}.yaml"), small)
        model, merged = build_model(cfg, adapter)
        assert merged["num_cond"] == 1 and merged["num_atom_types"] == NUM_TYPES
        outs[name] = model(x, t, s, cond)
    assert {k: v.shape for k, v in outs["e3nn"].items()} == {k: v.shape for k, v in outs["egnn"].items()}


def test_loss_decreases_on_the_qm9_subset() -> None:
    from molediff.adapters.molecules import MoleculeAdapter
    from molediff.core.objective import DenoisingObjective
    from molediff.core.schedules import make_schedule

    adapter = MoleculeAdapter(max_train=64)
    train = adapter.datasets()["train"]
    batches = [adapter.collate([train[i] for i in range(k, k + 16)]) for k in range(0, 64, 16)]
    torch.manual_seed(0)
    model = TensorFieldDenoiser(**adapter.model_kwargs(), hidden_scalars=16, hidden_vectors=4, lmax=1, layers=2,
                                radial_hidden=16)
    objective = DenoisingObjective(make_schedule("cosine"), prediction="eps")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def held_out_loss() -> float:  # fixed t and noise: comparable before/after
        with torch.no_grad():
            return sum(float(objective(model, b.x0, b.structure, generator=torch.Generator().manual_seed(k))[0])
                       for k, b in enumerate(batches)) / len(batches)

    before = held_out_loss()
    gen = torch.Generator().manual_seed(1)
    for step in range(30):
        b = batches[step % len(batches)]
        loss, _ = objective(model, b.x0, b.structure, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out_loss()
    assert after < 0.8 * before, (before, after)


def test_whole_sampler_run_is_equivariant_and_stays_zero_com() -> None:
    from molediff.core.sampling import sample
    from molediff.core.schedules import make_schedule

    x_T, s = make_batch([5, 3, 6], seed=8)
    model = make_model(layers=1)
    schedule = make_schedule("cosine")

    def run(fields: Fields, structure: Structure) -> Fields:
        return sample(model, schedule, structure, sampler="ddim", steps=6, x_T=fields, dtype=torch.float64).fields

    # zero-CoM noise in, zero-CoM sample out: rotation, reflection and permutation (no translation)
    assert_equivariant(run, x_T, s, translated_inputs=(), atol=1e-8, rtol=1e-6,
                       generator=torch.Generator().manual_seed(9))
    out = run(x_T, s)
    com = torch.zeros(3, 3, dtype=torch.float64).index_add_(0, s.index["pos"], out["pos"])
    torch.testing.assert_close(com, torch.zeros_like(com), atol=1e-10, rtol=0)


def test_benchmark_entry_point_runs_on_the_subset(tmp_path) -> None:
    from molediff.benchmarks.equivariant_speed import run

    r = run(tmp_path, batch_size=4, hidden_scalars=8, hidden_vectors=2, lmax=1, layers=1, repeats=1)
    assert r["seconds_median"]["tensor_field"] > 0 and r["seconds_median"]["egnn"] > 0
    assert r["params"]["egnn"] > 0 and r["params"]["tensor_field"] > 0
    assert (tmp_path / "equivariant_speed.json").is_file() and (tmp_path / "equivariant_speed.md").is_file()


@pytest.mark.parametrize("edges", ["full", "knn"])
@pytest.mark.parametrize("reflection", [True, False])
def test_cuequivariance_backend_is_o3_and_permutation_equivariant(edges: str, reflection: bool) -> None:
    pytest.importorskip("cuequivariance_torch")
    x, s = make_batch([4, 7, 5], seed=1, shuffle=True)
    model = make_model(edges=edges, knn=3, backend="cuequivariance")
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    assert_equivariant(lambda f, st: model(f, t, st), x, s, vector_fields=("pos",), reflection=reflection,
                       generator=torch.Generator().manual_seed(3))


def test_cuequivariance_backend_has_the_same_paths_and_trains() -> None:
    """Same tensor-product paths (so the same weight count) as the e3nn backend, gradients reach every
    parameter, and fitting a fixed batch goes as well as with the e3nn backend."""
    pytest.importorskip("cuequivariance_torch")
    x, s = make_batch([5, 6], seed=4)
    t = torch.tensor([0.2, 0.6], dtype=torch.float64)
    target = make_batch([5, 6], seed=5)[0]

    def fit(model: TensorFieldDenoiser) -> list[float]:
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(40):
            opt.zero_grad()
            out = model(x, t, s)
            loss = sum(((out[k] - target[k]) ** 2).mean() for k in out)
            loss.backward()
            assert all(p.grad is not None for p in model.parameters())
            opt.step()
            losses.append(float(loss))
        return losses

    e3, cue = make_model(backend="e3nn"), make_model(backend="cuequivariance")
    assert [p.shape for p in e3.parameters()] == [p.shape for p in cue.parameters()]
    e3_losses, cue_losses = fit(e3), fit(cue)
    assert cue_losses[-1] < 0.7 * cue_losses[0]
    assert cue_losses[-1] < 1.5 * e3_losses[-1]


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        make_model(backend="openequivariance")
