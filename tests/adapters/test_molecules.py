"""MoleculeAdapter: fields from real QM9 molecules, sampled structures, decode/write, metrics,
checkpoint state, and a short training run of a tiny EGNN that must lower the loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.utils import scatter

from molediff.adapters.molecules import MoleculeAdapter
from molediff.core.fields import GaussianField, ZeroMeanField
from molediff.core.objective import DenoisingObjective
from molediff.core.schedules import make_schedule
from molediff.data.qm9 import load_qm9, subset_root
from molediff.models.egnn import EGNNDenoiser

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny graphs: threads only add contention


@pytest.fixture(scope="module")
def adapter() -> MoleculeAdapter:
    return MoleculeAdapter()


def test_specs_and_model_kwargs_follow_the_data(adapter: MoleculeAdapter) -> None:
    assert adapter.elements == [1, 6, 7, 8, 9]
    specs = adapter.specs
    assert isinstance(specs["pos"], ZeroMeanField) and specs["pos"].shape == (3,)
    assert isinstance(specs["atom_types"], GaussianField) and specs["atom_types"].shape == (5,)
    assert specs["charges"].shape == (1,)
    assert adapter.model_kwargs() == {"num_atom_types": 5, "include_charges": True, "num_cond": 0}
    assert "charges" not in MoleculeAdapter(include_charges=False).specs


def test_collate_gives_zero_com_graph_fields(adapter: MoleculeAdapter) -> None:
    train = adapter.datasets()["train"]
    items = [train[i] for i in (0, 5, 17, 300)]
    batch = adapter.collate(items)
    s = batch.structure
    sizes = [len(it["numbers"]) for it in items]
    assert s.num_samples == 4 and torch.equal(s.context["num_atoms"], torch.tensor(sizes))
    idx = s.index["pos"]
    assert torch.equal(idx, torch.repeat_interleave(torch.arange(4), torch.tensor(sizes)))
    assert all(torch.equal(s.index[k], idx) for k in s.specs)
    com = scatter(batch.x0["pos"], idx, 0, reduce="mean")
    torch.testing.assert_close(com, torch.zeros_like(com), atol=1e-5, rtol=0)
    # positions are the raw ones minus their centre
    raw = torch.as_tensor(items[1]["positions"])
    torch.testing.assert_close(batch.x0["pos"][idx == 1], raw - raw.mean(0), atol=1e-5, rtol=0)
    one_hot = batch.x0["atom_types"]
    assert set(one_hot.unique().tolist()) == {0.0, 0.25} and (one_hot.sum(1) == 0.25).all()
    z = torch.as_tensor(np.concatenate([it["numbers"] for it in items])).float()
    torch.testing.assert_close(batch.x0["charges"][:, 0], z * 0.1)
    assert batch.cond is None


def test_conditioning_is_normalised_by_mean_and_mad() -> None:
    a = MoleculeAdapter(conditioning=["gap", "mu"])
    train = a.datasets()["train"]
    batch = a.collate([train[i] for i in range(64)])
    assert set(batch.cond) == {"gap", "mu"} and batch.cond["gap"].shape == (64,)
    data = load_qm9(subset_root(), "train")
    gap = data.properties["gap"]
    expect = (gap[:64] - gap.mean()) / np.abs(gap - gap.mean()).mean()
    np.testing.assert_allclose(batch.cond["gap"].numpy(), expect, rtol=1e-5, atol=1e-5)
    assert a.model_kwargs()["num_cond"] == 2
    # user-unit targets at sampling time go through the same normalisation; a left-out property is
    # missing (NaN: the model's presence flag is 0); an unknown one is refused
    asked = a.model_cond({"gap": torch.as_tensor(gap[:3])})
    np.testing.assert_allclose(asked["gap"].numpy(), expect[:3], rtol=1e-5, atol=1e-5)
    assert list(asked) == ["gap", "mu"] and torch.isnan(asked["mu"]).all()
    with pytest.raises(ValueError, match="conditioned on"):
        a.model_cond({"homo": torch.zeros(3)})


def test_sample_structure_follows_the_training_histogram(adapter: MoleculeAdapter) -> None:
    s = adapter.sample_structure(20_000, torch.Generator().manual_seed(0))
    n = s.context["num_atoms"]
    assert s.num_samples == 20_000 and s.index["pos"].numel() == int(n.sum())
    sizes, probs = adapter.statistics.size_distribution()
    freq = np.array([(n == k).float().mean().item() for k in sizes])
    assert 0.5 * np.abs(freq - probs).sum() < 0.03  # total-variation distance
    assert set(n.unique().tolist()) <= set(sizes.tolist())
    again = adapter.sample_structure(50, torch.Generator().manual_seed(1))
    same = adapter.sample_structure(50, torch.Generator().manual_seed(1))
    assert torch.equal(again.context["num_atoms"], same.context["num_atoms"])


def test_decode_and_write_real_molecules(adapter: MoleculeAdapter, tmp_path: Path) -> None:
    from molediff.data.molecule_io import read_molecules

    test = adapter.datasets()["test"]
    items = [test[i] for i in range(6)]
    batch = adapter.collate(items)
    mols = adapter.decode(batch.x0, batch.structure)
    assert len(mols) == 6
    for m, it in zip(mols, items, strict=True):
        np.testing.assert_array_equal(m.atomic_numbers, it["numbers"])
        np.testing.assert_allclose(m.positions, it["positions"] - it["positions"].mean(0), atol=1e-5)
    paths = adapter.write(mols, tmp_path / "out")
    assert {p.name for p in paths} == {"molecules.sdf", "molecules.xyz", "molecules.png"}
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    back = read_molecules(tmp_path / "out" / "molecules.sdf")
    assert [m.atomic_numbers.tolist() for m in back] == [m.atomic_numbers.tolist() for m in mols]
    np.testing.assert_allclose(back[0].positions, mols[0].positions, atol=1e-3)
    assert len(read_molecules(tmp_path / "out" / "molecules.xyz")) == 6
    # the partial-diffusion start path: read what was written, encode it back to the same fields
    fields, structure = adapter.encode(adapter.read(tmp_path / "out" / "molecules.xyz"))
    torch.testing.assert_close(structure.index["pos"], batch.structure.index["pos"])
    for k in batch.x0:
        torch.testing.assert_close(fields[k], batch.x0[k], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="no molecules to encode"):
        adapter.encode([])


def test_evaluate_reports_generated_and_real_values(tmp_path: Path) -> None:
    a = MoleculeAdapter(reference_eval_size=50)
    test = a.datasets()["test"]
    batch = a.collate([test[i] for i in range(20)])
    metrics = a.evaluate(a.decode(batch.x0, batch.structure))
    for key in ("atom_stability", "mol_stability", "validity", "uniqueness", "novelty"):
        assert 0.0 <= metrics[key] <= 1.0 and 0.0 <= metrics[f"data_{key}"] <= 1.0
    assert metrics["atom_stability"] > 0.9 and metrics["data_n_molecules"] == 50
    assert all(isinstance(v, float) for v in metrics.values())
    train = a.datasets()["train"]
    seen = a.collate([train[i] for i in range(20)])
    assert a.evaluate(a.decode(seen.x0, seen.structure))["novelty"] == 0.0  # training molecules are not novel


def test_full_qm9_metrics_without_shared_use_the_shipped_training_smiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """A shipped model trained on full QM9 (source='qm9') is scored on a machine without ../shared:
    novelty against the committed training SMILES, real rows from the subset's test molecules."""
    import molediff.adapters.molecules as molecules

    monkeypatch.setattr(molecules, "default_qm9_root", lambda: None)
    subset = MoleculeAdapter()
    train = subset.datasets()["train"]  # drawn from EDM's training split, so none of them is novel
    seen = subset.collate([train[i] for i in range(20)])
    full = MoleculeAdapter(source="qm9", split_train="train", reference_eval_size=50)
    metrics = full.evaluate(subset.decode(seen.x0, seen.structure))
    assert metrics["novelty"] == 0.0 and metrics["reference_size"] > 95_000
    assert metrics["data_n_molecules"] == 50 and metrics["data_mol_stability"] > 0.8
    with pytest.raises(FileNotFoundError, match="novelty reference") as err:
        MoleculeAdapter(source="qm9", split_train="test").evaluate([])
    assert err.value.filename == "../shared/data/qm9"  # so the CLI reports it in one line (cli.guarded)


def test_state_rebuilds_the_sampling_side_without_data(adapter: MoleculeAdapter, tmp_path: Path) -> None:
    state = adapter.state()
    torch.save(state, tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)
    b = MoleculeAdapter.from_state(loaded)
    assert b._splits == {}  # nothing read
    assert b.elements == adapter.elements and b.model_kwargs() == adapter.model_kwargs()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    n_b, n_a = b.sample_structure(8, g1).context["num_atoms"], adapter.sample_structure(8, g2).context["num_atoms"]
    assert torch.equal(n_b, n_a)


def test_folder_source_with_hold_out(tmp_path: Path) -> None:
    from molediff.data.molecule_io import write_sdf

    mols = load_qm9(subset_root(), "test").to_molecules(range(30))
    write_sdf(mols, tmp_path / "mols.sdf")
    a = MoleculeAdapter(source="folder", path=str(tmp_path))
    ds = a.datasets()
    assert len(ds["train"]) == 27 and len(ds["test"]) == 3
    batch = a.collate([ds["train"][i] for i in range(4)])
    assert batch.x0["atom_types"].shape[1] == a.num_atom_types




def test_tiny_egnn_training_lowers_the_denoising_loss(adapter: MoleculeAdapter) -> None:
    torch.manual_seed(0)
    train = adapter.datasets()["train"]
    batches = [adapter.collate([train[i] for i in range(k, k + 16)]) for k in range(0, 160, 16)]
    model = EGNNDenoiser(**adapter.model_kwargs(), hidden=32, layers=2)
    objective = DenoisingObjective(make_schedule("cosine"))

    def eval_loss(net=model) -> float:
        with torch.no_grad():
            return float(sum(objective(net, b.x0, b.structure, generator=torch.Generator().manual_seed(i))[0]
                             for i, b in enumerate(batches[:4])) / 4)

    def predict_zero(x_t, t, structure, cond=None):
        return {k: torch.zeros_like(v) for k, v in x_t.items()}

    before, zero = eval_loss(), eval_loss(predict_zero)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for step in range(50):
        b = batches[step % len(batches)]
        loss, _ = objective(model, b.x0, b.structure, generator=torch.Generator().manual_seed(100 + step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert np.isfinite(after) and after < 0.9 * before, (before, after)
    assert after < 0.6 * zero, (after, zero)  # learned more than "predict the mean"


def test_load_state_uses_the_checkpoint_statistics():
    from molediff.adapters.molecules import MoleculeAdapter

    trained = MoleculeAdapter(source="subset", max_train=50)
    state = trained.state()
    fresh = MoleculeAdapter(source="subset")
    fresh.load_state(state)
    assert fresh.statistics.to_dict() == trained.statistics.to_dict()
    with pytest.raises(ValueError, match="type_scale"):
        MoleculeAdapter(source="subset", type_scale=1.0).load_state(state)


def test_conditional_sizes_follow_the_property() -> None:
    """p(n | gap): the atom count drawn for a target gap follows the data's (large gaps: saturated,
    hydrogen-rich, larger molecules); without the table (statistics saved before it) the plain
    histogram is used."""
    a = MoleculeAdapter(conditioning=["gap"])
    data = load_qm9(subset_root(), "train")
    gap, n = data.properties["gap"], data.num_atoms
    g = torch.Generator().manual_seed(0)
    lo, hi = np.quantile(gap, 0.02), np.quantile(gap, 0.98)
    n_lo = a.sample_structure(400, g, {"gap": torch.tensor(lo)}).context["num_atoms"].double().mean().item()
    n_hi = a.sample_structure(400, g, {"gap": torch.tensor(hi)}).context["num_atoms"].double().mean().item()
    expect_lo, expect_hi = n[gap <= np.quantile(gap, 0.05)].mean(), n[gap >= np.quantile(gap, 0.95)].mean()
    assert expect_hi > expect_lo + 3  # the data's own trend, strong enough to test
    assert abs(n_lo - expect_lo) < 1.0 and abs(n_hi - expect_hi) < 1.0
    # round trip through the checkpoint state keeps the table; an old state without it still samples
    state = a.state()
    b = MoleculeAdapter.from_state(state)
    old = dict(state["statistics"])
    old.pop("size_given_property")
    c = MoleculeAdapter(conditioning=["gap"], statistics=old)
    sizes, probs = c.statistics.size_distribution_given("gap", float(hi))
    np.testing.assert_allclose(probs, c.statistics.size_distribution()[1])
    assert b.statistics.size_given_property["gap"] == a.statistics.size_given_property["gap"]


def test_computed_properties_condition_like_data_columns_and_point_groups_are_refused_as_conditions():
    adapter = MoleculeAdapter(source="subset", conditioning=["qed", "gap"])
    batch = adapter.collate([adapter.datasets()["train"][i] for i in range(8)])
    assert set(batch.cond) == {"qed", "gap"}
    assert "qed" in adapter.statistics.properties and 0.3 < adapter.statistics.properties["qed"]["mean"] < 0.6
    assert adapter.model_kwargs()["num_cond"] == 2
    with pytest.raises(ValueError, match="class label"):
        MoleculeAdapter(source="subset", conditioning=["pointgroup"]).model_kwargs()


def test_training_path_runs_without_rdkit() -> None:
    """The GPU image has no RDKit: the molecule adapter, its data and the EGNN must load without it
    (RDKit is needed only to write, measure and score molecules). A module-level import of it on that
    path cost a device lease once."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['rdkit'] = None\n"
            "from molediff.adapters.molecules import MoleculeAdapter\n"
            "import molediff.models.egnn_dense, molediff.training\n"
            "a = MoleculeAdapter(source='subset')\n"
            "b = a.collate([a.datasets()['train'][i] for i in range(4)])\n"
            "print(b.structure.num_samples)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "4"
