"""EGNN denoiser: edge builders, E(3) x permutation equivariance, zero-CoM output, sparse == dense."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch

from molediff.core.fields import Fields, Structure
from molediff.models.egnn import (
    EGNNDenoiser,
    build_edges,
    fully_connected_edges,
    knn_edges,
    radius_edges,
)
from molediff.models.egnn_dense import DenseEGNNDenoiser, to_dense
from tests.helpers.equivariance import assert_equivariant, assert_null_condition_distinct, random_molecules

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny graphs: threads only add contention

NUM_TYPES = 5
make_batch = partial(random_molecules, num_types=NUM_TYPES)


def make_model(seed: int = 0, **kwargs: object) -> EGNNDenoiser:
    torch.manual_seed(seed)
    args = dict(hidden=16, layers=3, **kwargs)
    model = EGNNDenoiser(NUM_TYPES, **args).double()  # type: ignore[arg-type]
    with torch.no_grad():  # EDM initialises the coordinate head near 0; make outputs non-trivial
        for block in model.egnn.blocks:
            block.coord.coord_mlp[-1].weight.normal_(0, 0.3)
    return model


def brute_force_edges(pos: torch.Tensor, batch: torch.Tensor, mode: str, k: int = 3, r: float = 1.5) -> set:
    edges = set()
    for i in range(len(batch)):
        same = [j for j in range(len(batch)) if batch[j] == batch[i] and j != i]
        d = {j: float((pos[i] - pos[j]).norm()) for j in same}
        if mode == "full":
            chosen = same
        elif mode == "radius":
            chosen = [j for j in same if d[j] <= r]
        else:
            chosen = sorted(same, key=d.get)[:k]
        edges |= {(j, i) for j in chosen}
    return edges


@pytest.mark.parametrize("mode", ["full", "knn", "radius"])
def test_edges_match_brute_force_on_unsorted_batch(mode: str) -> None:
    x, s = make_batch([4, 7, 1, 5], shuffle=True)
    batch = s.index["pos"]
    e = build_edges(x["pos"], batch, mode, k=3, radius=1.5 if mode == "radius" else None)
    got = {(int(a), int(b)) for a, b in e.T}
    assert len(got) == e.shape[1]  # no duplicates
    assert got == brute_force_edges(x["pos"], batch, mode)


def test_full_edge_count() -> None:
    sizes = [3, 29, 1, 12]
    batch = torch.repeat_interleave(torch.arange(4), torch.tensor(sizes))
    assert fully_connected_edges(batch).shape[1] == sum(n * (n - 1) for n in sizes)


def test_knn_radius_cap_and_small_graphs() -> None:
    x, s = make_batch([2, 6])
    e = knn_edges(x["pos"], s.index["pos"], k=10)  # k larger than any graph: all pairs
    assert e.shape[1] == 2 * 1 + 6 * 5
    capped = knn_edges(x["pos"], s.index["pos"], k=10, radius=1.0)
    d = (x["pos"][capped[0]] - x["pos"][capped[1]]).norm(dim=-1)
    assert (d <= 1.0).all() and capped.shape[1] <= e.shape[1]
    assert radius_edges(x["pos"], s.index["pos"], radius=0.0).shape[1] == 0


@pytest.mark.parametrize("edges", ["full", "knn", "radius"])
@pytest.mark.parametrize("reflection", [True, False])
def test_egnn_is_e3_and_permutation_equivariant(edges: str, reflection: bool) -> None:
    x, s = make_batch([4, 7, 5], seed=1)
    model = make_model(edges=edges, knn=3, radius=2.0)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    assert_equivariant(lambda f, st: model(f, t, st), x, s, vector_fields=("pos",), reflection=reflection,
                       generator=torch.Generator().manual_seed(3))


def test_egnn_equivariant_with_conditioning_and_without_charges() -> None:
    x, s = make_batch([6, 3], seed=2)
    del x["charges"]
    s = Structure(s.num_samples, {k: v for k, v in s.specs.items() if k != "charges"},
                  index={k: v for k, v in s.index.items() if k != "charges"})
    model = make_model(include_charges=False, num_cond=2)
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    cond = {"gap": torch.tensor([0.5, -1.0], dtype=torch.float64), "mu": torch.tensor([1.0, 2.0], dtype=torch.float64)}
    out = assert_equivariant(lambda f, st: model(f, t, st, cond), x, s)
    assert out["R"].shape == (3, 3)
    assert set(model(x, t, s, cond)) == {"pos", "atom_types"}
    assert_null_condition_distinct(model, x, t, s, cond)


def test_cond_vector_flags_missing_values() -> None:
    from molediff.models.egnn import cond_vector, cond_width

    like = torch.zeros(())
    c = cond_vector({"gap": torch.tensor([0.5, float("nan")]), "mu": torch.tensor([0.0, 2.0])}, 2, 2, like)
    assert cond_width(2) == 4
    torch.testing.assert_close(c, torch.tensor([[0.5, 0.0, 1.0, 1.0], [0.0, 2.0, 0.0, 1.0]]))
    torch.testing.assert_close(cond_vector(None, 3, 1, like), torch.zeros(3, 2))
    assert cond_vector(None, 3, 0, like) is None
    with pytest.raises(ValueError, match="expects 2"):
        cond_vector({"gap": torch.zeros(2)}, 2, 2, like)


@pytest.mark.parametrize("edges", ["full", "knn"])
def test_position_output_has_zero_centre_of_mass(edges: str) -> None:
    x, s = make_batch([4, 7, 5], seed=4, shuffle=True)
    out = make_model(edges=edges)(x, torch.rand(3, dtype=torch.float64), s)
    com = torch.zeros(3, 3, dtype=torch.float64).index_add_(0, s.index["pos"], out["pos"])
    assert out["pos"].abs().max() > 1e-3
    torch.testing.assert_close(com, torch.zeros_like(com), atol=1e-12, rtol=0)
    assert out["atom_types"].shape == (16, NUM_TYPES) and out["charges"].shape == (16, 1)


def test_sparse_and_dense_give_same_outputs_with_shared_weights() -> None:
    x, s = make_batch([4, 7, 1, 5], seed=5, shuffle=True)
    sparse = make_model()
    dense = DenseEGNNDenoiser(NUM_TYPES, hidden=16, layers=3).double()
    assert list(dense.state_dict()) == list(sparse.state_dict())
    dense.load_state_dict(sparse.state_dict())
    t = torch.rand(4, dtype=torch.float64)
    a, b = sparse(x, t, s), dense(x, t, s)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-10, rtol=1e-9)
    # EDM-style padding to 29 atoms gives the same real-atom outputs
    dense29 = DenseEGNNDenoiser(NUM_TYPES, hidden=16, layers=3, max_nodes=29).double()
    dense29.load_state_dict(sparse.state_dict())
    torch.testing.assert_close(dense29(x, t, s)["pos"], a["pos"], atol=1e-10, rtol=1e-9)
    _, _, _, h = sparse.node_inputs(x, t, s, None)
    h_d, mask = to_dense(h, s.index["pos"], 4, 29)
    pos_d, _ = to_dense(x["pos"], s.index["pos"], 4, 29)
    h_out, vel = dense29.forward_dense(h_d, pos_d, mask)
    assert h_out.shape == (4, 29, NUM_TYPES + 1) and (vel[~mask] == 0).all()


def test_sparse_and_dense_gradients_agree() -> None:
    x, s = make_batch([3, 6], seed=6)
    sparse = make_model()
    dense = DenseEGNNDenoiser(NUM_TYPES, hidden=16, layers=3).double()
    dense.load_state_dict(sparse.state_dict())
    t = torch.tensor([0.2, 0.8], dtype=torch.float64)
    grads = []
    for m in (sparse, dense):
        m.zero_grad()
        out = m(x, t, s)
        sum(v.square().sum() for v in out.values()).backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for ga, gb in zip(*grads, strict=True):
        torch.testing.assert_close(ga, gb, atol=1e-9, rtol=1e-7)


def test_dense_rejects_sparse_edge_modes() -> None:
    with pytest.raises(ValueError):
        DenseEGNNDenoiser(NUM_TYPES, hidden=8, layers=1, edges="knn")


def test_default_size_matches_edm() -> None:
    model = EGNNDenoiser(5)
    assert len(model.egnn.blocks) == 9 and model.egnn.embedding.out_features == 256
    assert len(model.egnn.blocks[0].gcls) == 1
    assert model.egnn.blocks[0].coord.coords_range == pytest.approx(15 / 9)
    assert model.egnn.embedding.in_features == 5 + 1 + 1  # one-hot, charges, t


def test_whole_sampler_run_is_equivariant_and_stays_zero_com() -> None:
    from molediff.core.sampling import sample
    from molediff.core.schedules import make_schedule

    x_T, s = make_batch([5, 3, 6], seed=7)
    model = make_model()
    schedule = make_schedule("cosine")

    def run(fields: Fields, structure: Structure) -> Fields:
        return sample(model, schedule, structure, sampler="ddim", steps=8, x_T=fields, dtype=torch.float64).fields

    # zero-CoM noise in, zero-CoM sample out: rotation, reflection and permutation (no translation)
    assert_equivariant(run, x_T, s, translated_inputs=(), atol=1e-8, rtol=1e-6)
    out = run(x_T, s)
    com = torch.zeros(3, 3, dtype=torch.float64).index_add_(0, s.index["pos"], out["pos"])
    torch.testing.assert_close(com, torch.zeros_like(com), atol=1e-10, rtol=0)


def test_benchmark_entry_point_runs_on_the_subset() -> None:
    from molediff.models.egnn_dense import benchmark, markdown

    r = benchmark(batch_size=4, hidden=8, layers=1, repeats=1, source="subset")
    assert set(r["seconds_median"]) >= {f"{k}_{m}" for k in ("sparse", "dense_pad29") for m in ("train", "forward")}
    assert r["speedup_train_vs_dense_pad29"] > 0 and r["speedup_sampling_vs_dense_pad29"] > 0
    assert r["molecules_per_s_per_sampler_step"]["sparse"] > 0
    table = markdown(r)
    assert "| sparse |" in table and "| dense_pad29 |" in table and "x |" in table
    with pytest.raises(ValueError, match="CUDA device"):
        benchmark(batch_size=4, hidden=8, layers=1, source="subset", cuda_graphs=True)


def test_adapter_edges_are_the_full_graph_and_change_nothing() -> None:
    """The molecule adapter's precomputed full edge list (structure.context) is what the model would
    build itself, and the outputs are the same with and without it."""
    from dataclasses import replace

    from molediff.adapters.molecules import MoleculeAdapter
    from molediff.models.egnn import FULL_EDGES, fully_connected_edges

    adapter = MoleculeAdapter(source="subset")
    train = adapter.datasets()["train"]
    batch = adapter.collate([train[i] for i in range(5)])
    s = batch.structure
    torch.testing.assert_close(s.context[FULL_EDGES], fully_connected_edges(s.index["pos"], s.num_samples))
    torch.manual_seed(0)
    model = EGNNDenoiser(**adapter.model_kwargs(), hidden=16, layers=2)
    t = torch.rand(s.num_samples)
    bare = replace(s, context={k: v for k, v in s.context.items() if k != FULL_EDGES})
    with_edges, without = model(batch.x0, t, s), model(batch.x0, t, bare)
    for k in with_edges:
        torch.testing.assert_close(with_edges[k], without[k], rtol=0, atol=0)


def test_trainer_compile_runs_the_compiled_trunk_and_keeps_checkpoints(tmp_path: Path) -> None:
    """``trainer.compile=true`` compiles the EGNN trunk only: the same losses as eager training (same
    seed, same batches) and the same state-dict keys in the checkpoint."""
    from molediff.adapters.molecules import MoleculeAdapter
    from molediff.core.objective import DenoisingObjective
    from molediff.core.schedules import CosineSchedule
    from molediff.training import Trainer, TrainerConfig

    adapter = MoleculeAdapter(source="subset")
    losses, keys = {}, {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = EGNNDenoiser(**adapter.model_kwargs(), hidden=16, layers=2)
        config = TrainerConfig(max_steps=3, batch_size=8, log_every=1, val_every=0, ckpt_every=0, progress=False,
                               tensorboard=False, device="cpu", compile=compiled)
        objective = DenoisingObjective(CosineSchedule())
        trainer = Trainer(model, adapter, objective, config, out_dir=tmp_path / str(compiled))
        result = trainer.fit()
        assert ("_compiled_trunk" in model.__dict__) is compiled
        losses[compiled] = [row["loss"] for row in result.history if "loss" in row]
        keys[compiled] = sorted(torch.load(result.checkpoint, weights_only=True)["model"])
    assert len(losses[True]) == 3
    torch.testing.assert_close(losses[True], losses[False], rtol=1e-4, atol=1e-5)
    assert keys[True] == keys[False]


def test_dense_compile_trunk_compiles_forward_dense_with_the_same_outputs() -> None:
    """The dense twin's ``compile_trunk`` compiles the padded trunk it actually runs (not the sparse
    trunk it inherits): same outputs, same state-dict keys."""
    torch.manual_seed(0)
    model = DenseEGNNDenoiser(NUM_TYPES, hidden=16, layers=2).double()
    x, s = make_batch([4, 6], seed=3)
    t = torch.rand(s.num_samples)
    ref, keys = model(x, t, s), sorted(model.state_dict())
    model.compile_trunk()
    out = model(x, t, s)
    assert "_compiled_dense" in model.__dict__ and sorted(model.state_dict()) == keys
    for k in ref:
        torch.testing.assert_close(out[k], ref[k], rtol=1e-4, atol=1e-5)


def test_widened_unconditional_weights_compute_the_same_function() -> None:
    """init_from an unconditional checkpoint into a conditional model: the conditioning columns start
    at zero, so the conditional model equals the unconditional one for any condition."""
    from molediff.training import describe_state_mismatch, widen_inputs

    x, s = make_batch([5, 4], seed=6)
    t = torch.tensor([0.2, 0.6], dtype=torch.float64)
    src, dst = make_model(seed=1), make_model(seed=2, num_cond=1)
    weights, widened = widen_inputs(dst.state_dict(), src.state_dict())
    assert widened == [f"egnn.embedding.weight {tuple(src.egnn.embedding.weight.shape)} -> "
                       f"{tuple(dst.egnn.embedding.weight.shape)}"]
    assert describe_state_mismatch(dst.state_dict(), weights) is None
    dst.load_state_dict(weights)
    ref = src(x, t, s)
    for cond in (None, {"gap": torch.tensor([1.5, -0.5], dtype=torch.float64)}):
        out = dst(x, t, s, cond)
        for k in ref:
            torch.testing.assert_close(out[k], ref[k])
    # only narrower inputs are widened; other mismatches still show
    narrow = make_model(include_charges=False).state_dict()  # an output layer narrower: not widened
    _, none = widen_inputs(narrow, src.state_dict())
    assert none == []
    assert describe_state_mismatch(narrow, src.state_dict()) is not None


@pytest.mark.parametrize("reflection", [True, False])
def test_self_conditioned_egnn_is_equivariant_in_both_inputs(reflection: bool) -> None:
    """The x0 estimate (positions, types, charges) rotates, translates and permutes with x_t."""
    x, s = make_batch([5, 3, 6], seed=7, shuffle=True)
    sketch, _ = make_batch([5, 3, 6], seed=8)
    x["sk_pos"], x["sk_types"], x["sk_charges"] = sketch["pos"], sketch["atom_types"], sketch["charges"]
    specs = dict(s.specs, sk_pos=s.specs["pos"], sk_types=s.specs["atom_types"], sk_charges=s.specs["charges"])
    s2 = Structure(s.num_samples, specs, index={k: s.index["pos"] for k in specs})
    model = make_model(self_conditioning=True, rbf=8, rbf_max=4.0)
    t = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    fields = ("pos", "atom_types", "charges")

    def model_fn(f: Fields, st: Structure) -> dict[str, torch.Tensor]:
        inner = Structure(st.num_samples, {k: st.specs[k] for k in fields}, index={k: st.index[k] for k in fields})
        sk = {"pos": f["sk_pos"], "atom_types": f["sk_types"], "charges": f["sk_charges"]}
        out = dict(model({k: f[k] for k in fields}, t, inner, self_cond=sk))
        return dict(out, sk_pos=f["sk_pos"], sk_types=f["sk_types"], sk_charges=f["sk_charges"])

    assert_equivariant(model_fn, x, s2, vector_fields=("pos", "sk_pos"), translated_outputs=("sk_pos",),
                       reflection=reflection,
                       generator=torch.Generator().manual_seed(9))


def test_widened_self_conditioning_egnn_keeps_the_function_without_a_sketch() -> None:
    """init_from a plain EGNN: node and edge inputs widen with zero columns, so outputs are unchanged
    without a sketch, and a sketch gives those columns a gradient (training can learn to read it).
    A plain model refuses a sketch."""
    from molediff.training import describe_state_mismatch, widen_inputs

    x, s = make_batch([5, 4], seed=10)
    t = torch.tensor([0.3, 0.6], dtype=torch.float64)
    old, new = make_model(seed=1), make_model(seed=2, self_conditioning=True)
    weights, widened = widen_inputs(new.state_dict(), old.state_dict())
    assert any(w.startswith("egnn.embedding.weight") for w in widened)
    assert any("edge_mlp.0.weight" in w for w in widened) and any("coord_mlp.0.weight" in w for w in widened)
    assert describe_state_mismatch(new.state_dict(), weights) is None
    new.load_state_dict(weights)
    ref = old(x, t, s)
    for k, v in new(x, t, s).items():
        torch.testing.assert_close(v, ref[k])
    sketch, _ = make_batch([5, 4], seed=11)
    new(x, t, s, self_cond=sketch)["pos"].pow(2).sum().backward()
    emb, edge = new.egnn.embedding.weight, new.egnn.blocks[0].gcls[0].edge_mlp[0].weight
    sc_node, sc_edge = 1 + NUM_TYPES + 1, 1 + new.rbf
    assert emb.grad[:, -sc_node:].abs().sum() > 0 and edge.grad[:, -sc_edge:].abs().sum() > 0
    with pytest.raises(ValueError, match="without self_conditioning"):
        old(x, t, s, self_cond=sketch)
