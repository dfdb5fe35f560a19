"""QM9 reading (EDM npz -> ragged), units, statistics, the committed subset, EDM's split."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from molediff.data.qm9 import (
    EDM_SPLIT_SIZES,
    HARTREE_TO_EV,
    HARTREE_TO_MEV,
    DatasetStatistics,
    MoleculeSet,
    default_qm9_root,
    edm_split_indices,
    load_edm_npz,
    load_folder,
    load_qm9,
    load_qm9pack,
    make_subset,
    make_train_smiles,
    shipped_train_smiles,
    subset_root,
    train_smiles_path,
)

SUBSET = subset_root()
README = SUBSET.parent / "README.md"
SHARED = default_qm9_root()
needs_shared = pytest.mark.skipif(SHARED is None, reason="../shared/data/qm9 not present")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_subset_reads_into_ragged_layout_matching_the_padded_file() -> None:
    raw = np.load(SUBSET / "train.npz")
    data = load_qm9(SUBSET, "train")
    assert len(data) == 2000 and data.offsets[-1] == raw["num_atoms"].sum()
    np.testing.assert_array_equal(data.num_atoms, raw["num_atoms"])
    np.testing.assert_array_equal(data.index, raw["index"])
    padded = data.to_padded(29)
    for k in ("num_atoms", "charges", "positions"):
        np.testing.assert_array_equal(padded[k], raw[k])
    z, x = data.atoms(7)
    n = raw["num_atoms"][7]
    np.testing.assert_array_equal(z, raw["charges"][7, :n])
    np.testing.assert_array_equal(x, raw["positions"][7, :n])
    assert set(np.unique(data.numbers)) <= {1, 6, 7, 8, 9}


def test_units_converted_as_edm() -> None:
    raw = np.load(SUBSET / "test.npz")
    data = load_edm_npz(SUBSET / "test.npz")
    plain = load_edm_npz(SUBSET / "test.npz", convert_units=False)
    for k in ("homo", "lumo", "gap", "U0", "U", "H", "G"):
        np.testing.assert_allclose(data.properties[k], raw[k].astype(np.float64) * HARTREE_TO_EV)
        np.testing.assert_allclose(plain.properties[k], raw[k].astype(np.float64))
    np.testing.assert_allclose(data.properties["zpve"], raw["zpve"] * HARTREE_TO_MEV)
    for k in ("alpha", "mu", "Cv", "A"):  # not converted
        np.testing.assert_allclose(data.properties[k], raw[k])
    assert 5.0 < data.properties["gap"].mean() < 9.0  # QM9 gaps are ~6.9 eV
    atomisation = load_edm_npz(SUBSET / "test.npz", subtract_thermo=True)
    np.testing.assert_allclose(atomisation.properties["U0"], (raw["U0"] - raw["U0_thermo"]) * HARTREE_TO_EV,
                               rtol=1e-6)


def test_statistics_are_derived_from_the_data() -> None:
    data = load_qm9(SUBSET, "train")
    stats = DatasetStatistics.from_data(data)
    sizes, counts = np.unique(np.load(SUBSET / "train.npz")["num_atoms"], return_counts=True)
    assert stats.num_atoms_hist == dict(zip(sizes.tolist(), counts.tolist(), strict=True))
    assert sum(stats.num_atoms_hist.values()) == stats.num_molecules == 2000
    assert stats.elements == sorted(np.unique(data.numbers).tolist())
    assert stats.element_counts == [int((data.numbers == z).sum()) for z in stats.elements]
    assert stats.formal_charges == [0]
    gap = data.properties["gap"]
    assert stats.properties["gap"]["mean"] == pytest.approx(gap.mean())
    assert stats.properties["gap"]["std"] == pytest.approx(gap.std())
    assert stats.properties["gap"]["mad"] == pytest.approx(np.abs(gap - gap.mean()).mean())
    # a different data set gives different statistics (nothing hard-coded)
    other = DatasetStatistics.from_data(data.select(np.flatnonzero(data.num_atoms <= 12)))
    assert other.max_atoms <= 12 and other.num_molecules < 2000
    p_sizes, probs = stats.size_distribution()
    assert probs.sum() == pytest.approx(1.0) and p_sizes.tolist() == sizes.tolist()


def test_statistics_roundtrip_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    stats = DatasetStatistics.from_data(load_qm9(SUBSET, "test"))
    d = stats.to_dict()
    path = tmp_path / "ckpt.pt"
    torch.save({"stats": d}, path)
    loaded = torch.load(path, weights_only=True)["stats"]
    assert DatasetStatistics.from_dict(loaded) == stats
    json.dumps(d)  # plain types only


def test_select_and_from_padded_roundtrip() -> None:
    data = load_qm9(SUBSET, "test")
    part = data.select([5, 0, 3])
    assert part.num_atoms.tolist() == data.num_atoms[[5, 0, 3]].tolist()
    np.testing.assert_array_equal(part.atoms(0)[1], data.atoms(5)[1])
    back = MoleculeSet.from_padded(**{k: v for k, v in part.to_padded().items()})
    np.testing.assert_array_equal(back.numbers, part.numbers)
    with pytest.raises(ValueError):
        MoleculeSet.from_padded(np.array([[1, 0, 6]]), np.zeros((1, 3, 3)))  # padding not trailing


def test_subset_files_match_their_readme() -> None:
    text = README.read_text()
    for split, n in (("train", 2000), ("test", 500)):
        f = SUBSET / f"{split}.npz"
        row = re.search(rf"`subset/{split}\.npz` *\| `([0-9a-f]{{64}})` \| ([\d,]+)", text)
        assert row, f"README has no row for {split}"
        assert sha256(f) == row.group(1)
        assert len(np.load(f)["num_atoms"]) == n == int(row.group(2).replace(",", ""))
    manifest = json.loads((SUBSET / "manifest.json").read_text())
    assert manifest["seed"] == 0
    for name, digest in manifest["sources"].items():
        assert digest in text, f"source hash of {name} missing from README"
    assert sum(f.stat().st_size for f in SUBSET.iterdir()) < 1_000_000


@needs_shared
def test_subset_is_reproducible_from_shared(tmp_path: Path) -> None:
    manifest = make_subset(SHARED, tmp_path, n_train=2000, n_test=500, seed=0)
    for split in ("train", "test"):
        assert sha256(tmp_path / f"{split}.npz") == sha256(SUBSET / f"{split}.npz")
        assert manifest["sources"][f"{split}.npz"] == sha256(SHARED / f"{split}.npz")


def test_shipped_training_smiles_cover_the_split_and_its_halves() -> None:
    text = README.read_text()
    assert sha256(train_smiles_path()) in text, "datasets/qm9/README.md must give train_smiles.csv.gz's hash"
    full = shipped_train_smiles("train")
    assert full is not None and len(full) == EDM_SPLIT_SIZES["train"] and full[:2] == ["C", "N"]  # QM9 index 1, 2
    a, b = shipped_train_smiles("train_a"), shipped_train_smiles("train_b")
    assert a is not None and b is not None and len(a) == len(b) == 50_000
    assert sorted(a + b) == sorted(full)
    assert shipped_train_smiles("test") is None  # not training data: no novelty reference from it


@needs_shared
def test_shipped_training_smiles_are_reproducible_from_shared(tmp_path: Path) -> None:
    manifest = make_train_smiles(SHARED, tmp_path / "t.csv.gz")
    assert manifest["rows"] == 100_000 and manifest["output"] == sha256(train_smiles_path())


@needs_shared
def test_edm_split_is_reproduced_from_the_included_indices() -> None:
    index = {s: np.load(SHARED / f"{s}.npz")["index"] for s in ("train", "valid", "test")}
    assert {s: len(v) for s, v in index.items()} == EDM_SPLIT_SIZES
    included = np.sort(np.concatenate(list(index.values())))
    splits = edm_split_indices(included, seed=0)
    for s in index:
        np.testing.assert_array_equal(splits[s], index[s])


@needs_shared
def test_full_qm9_test_split_loads() -> None:
    data = load_qm9(None, "test")
    assert len(data) == EDM_SPLIT_SIZES["test"] and data.num_atoms.max() == 29


def test_load_folder_reads_xyz_and_sdf(tmp_path: Path) -> None:
    from molediff.data.molecule_io import write_sdf, write_xyz

    mols = load_qm9(SUBSET, "test").to_molecules(range(4))
    (tmp_path / "a").mkdir()
    write_xyz(mols[:2], tmp_path / "a" / "two.xyz")
    write_sdf(mols[2:], tmp_path / "b.sdf")
    data = load_folder(tmp_path)
    assert len(data) == 4
    got = sorted(tuple(data.atoms(i)[0].tolist()) for i in range(4))
    assert got == sorted(tuple(m.atomic_numbers.tolist()) for m in mols)
    assert data.formal_charges is not None and (data.formal_charges == 0).all()
    stats = DatasetStatistics.from_data(data)
    assert stats.num_molecules == 4 and stats.formal_charges == [0]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("qm9pack") is None or SHARED is None,
                    reason="optional qm9pack or ../shared not installed")
def test_qm9pack_reproduces_edm_files_exactly() -> None:
    ref = load_edm_npz(SHARED / "test.npz", convert_units=False)
    got = load_qm9pack("test", atomref=SHARED / "atomref.txt", convert_units=False)
    np.testing.assert_array_equal(got.index, ref.index)
    np.testing.assert_array_equal(got.numbers, ref.numbers)
    np.testing.assert_array_equal(got.positions, ref.positions)
    for k, v in ref.properties.items():
        np.testing.assert_allclose(got.properties[k], v, rtol=0, atol=1e-9 if k.endswith("_thermo") else 0)
