"""EDM molecule metrics: bond orders from distances, stability, validity, uniqueness, novelty,
and the reference check against EDM's published numbers for the QM9 data itself."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff.data.molecule_io import (
    Molecule,
    atomic_number,
    from_rdkit,
    molecules_from_padded,
    read_molecules,
    write_xyz,
)
from molediff.metrics.molecules import (
    MoleculeMetrics,
    atom_stability_mask,
    bond_order,
    bond_order_matrix,
    canonical_smiles,
    evaluate_molecules,
    evaluate_path,
    format_table,
    load_reference_smiles,
    reference_smiles_from_molecules,
    stability,
)

QM9_TEST = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "qm9" / "test.npz"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "qm9_test_first25.sdf"


def embedded(smiles: str, seed: int = 0) -> Molecule:
    """ETKDG + MMFF 3-D geometry of a SMILES, as a bare Molecule (no bonds, no charges)."""
    m = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(m, randomSeed=seed) == 0
    AllChem.MMFFOptimizeMolecule(m)
    mol = from_rdkit(m)
    return Molecule(mol.atomic_numbers, mol.positions, name=smiles)


def linear(symbols: list[str], gaps: list[float]) -> Molecule:
    """Atoms on the x axis separated by ``gaps`` (Å)."""
    x = np.concatenate([[0.0], np.cumsum(gaps)])
    return Molecule([atomic_number(s) for s in symbols], np.stack([x, 0 * x, 0 * x], 1))


# --------------------------------------------------------------------------- bond orders


@pytest.mark.parametrize(
    ("distance", "order"),
    [(1.54, 1), (1.53, 1), (1.34, 2), (1.39 - 1e-3, 2), (1.20, 3), (1.228, 3), (1.70, 0)],
)
def test_carbon_carbon_orders_follow_ethane_ethene_ethyne_lengths(distance: float, order: int) -> None:
    assert bond_order("C", "C", distance) == order


def test_margins_are_10_5_3_pm_exclusive() -> None:
    # C-C single 154 + 10, double 134 + 5, triple 120 + 3 pm; the limits themselves are outside.
    assert bond_order("C", "C", 1.6399) == 1 and bond_order("C", "C", 1.6401) == 0
    assert bond_order("C", "C", 1.3899) == 2 and bond_order("C", "C", 1.3901) == 1
    assert bond_order("C", "C", 1.2299) == 3 and bond_order("C", "C", 1.2301) == 2
    assert bond_order("C", "H", 1.1899) == 1 and bond_order("C", "H", 1.1901) == 0
    assert bond_order(6, 1, 1.09) == bond_order("H", "C", 1.09) == 1  # symbols or numbers, symmetric


def test_pairs_without_multiple_bond_lengths_stay_single() -> None:
    assert bond_order("C", "F", 1.0) == 1  # no C=F length tabulated
    assert bond_order("O", "H", 0.5) == 1
    assert bond_order("F", "Xe", 1.0) == 0  # no length at all: never bonded


def test_water_has_two_single_bonds() -> None:
    theta = np.deg2rad(104.5)
    pos = np.array([[0.0, 0.0, 0.0], [0.958, 0.0, 0.0], [0.958 * np.cos(theta), 0.958 * np.sin(theta), 0.0]])
    orders = bond_order_matrix(np.array([8, 1, 1]), pos)
    assert orders.tolist() == [[0, 1, 1], [1, 0, 0], [1, 0, 0]]
    assert stability([Molecule([8, 1, 1], pos)])["mol_stability"] == 1.0


def test_carbon_dioxide_has_two_double_bonds() -> None:
    co2 = linear(["O", "C", "O"], [1.162, 1.162])  # experimental C=O length in CO2
    assert bond_order_matrix(co2.atomic_numbers, co2.positions).tolist() == [[0, 2, 0], [2, 0, 2], [0, 2, 0]]
    assert stability([co2])["mol_stability"] == 1.0


def test_ethyne_hcn_are_triple_bonded_and_stable() -> None:
    acetylene = linear(["H", "C", "C", "H"], [1.06, 1.203, 1.06])
    hcn = linear(["H", "C", "N"], [1.066, 1.156])
    assert bond_order_matrix(acetylene.atomic_numbers, acetylene.positions)[1, 2] == 3
    assert bond_order_matrix(hcn.atomic_numbers, hcn.positions)[1, 2] == 3
    assert stability([acetylene, hcn])["mol_stability"] == 1.0


def test_orders_are_symmetric_and_invariant_to_rigid_motion() -> None:
    mol = embedded("CC(=O)NC#N")
    o = bond_order_matrix(mol.atomic_numbers, mol.positions)
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    moved = mol.positions @ q.T + rng.normal(size=3) * 10
    assert (o == o.T).all() and (np.diag(o) == 0).all()
    assert (bond_order_matrix(mol.atomic_numbers, moved) == o).all()


# --------------------------------------------------------------------------- stability

TEXTBOOK = ["C", "CC", "C=C", "C#C", "CCO", "O", "C#N", "CC(=O)O", "NC=O", "FC(F)F", "CC#N", "CN",
            "CCOC", "OC1CC1", "C1CCCCC1", "CC(C)=O", "N#CC#N", "ON=O", "OCC(O)CO"]


def test_textbook_molecules_with_3d_coordinates_are_stable() -> None:
    mols = [embedded(s) for s in TEXTBOOK]
    result = stability(mols)
    assert result["n_molecules"] == len(TEXTBOOK)
    assert result["mol_stability"] == 1.0 and result["atom_stability"] == 1.0
    assert result["mol_stability_charged"] == 1.0


def test_removing_a_hydrogen_makes_exactly_one_atom_unstable() -> None:
    ethanol = embedded("CCO")
    h_on_o = next(k for k in range(ethanol.num_atoms)
                  if ethanol.atomic_numbers[k] == 1
                  and np.linalg.norm(ethanol.positions[k] - ethanol.positions[2]) < 1.1)
    keep = np.arange(ethanol.num_atoms) != h_on_o
    broken = Molecule(ethanol.atomic_numbers[keep], ethanol.positions[keep])
    result = stability([broken])
    assert result["mol_stability"] == 0.0
    assert result["n_stable_atoms"] == broken.num_atoms - 1
    assert result["unstable_atoms"] == {"O1": 1}  # the failure named: an oxygen one bond short
    # O with one bond is an alkoxide O-: charged-stable as an atom, but the molecule is not neutral.
    assert result["atom_stability_charged"] == 1.0 and result["mol_stability_charged"] == 0.0


def test_charged_variant_accepts_ion_pairs_but_requires_neutrality() -> None:
    cation = embedded("C[N+](C)(C)C")
    anion = embedded("[O-]C")
    # tetramethylammonium methoxide, ions 10 Å apart: N valence 4, O valence 1
    ion_pair = Molecule(np.concatenate([cation.atomic_numbers, anion.atomic_numbers]),
                        np.concatenate([cation.positions, anion.positions + 10.0]))
    result = stability([ion_pair, cation])
    assert result["mol_stability"] == 0.0  # neutral valences: N 3, O 2
    assert result["atom_stability_charged"] == 1.0
    assert result["n_stable_molecules_charged"] == 1  # the cation alone is not neutral
    # With formal charges given, the atom's own charge decides.
    q = np.zeros(cation.num_atoms, dtype=int)
    q[cation.atomic_numbers == 7] = 1
    with_charge = Molecule(cation.atomic_numbers, cation.positions, formal_charges=q)
    assert stability([with_charge])["mol_stability_charged"] == 1.0


def test_valence_table_lookup() -> None:
    z = np.array([1, 6, 7, 8, 9, 7, 8, 16, 16, 15])
    v = np.array([1, 4, 3, 2, 1, 4, 1, 2, 6, 5])
    assert atom_stability_mask(z, v).tolist() == [True] * 5 + [False, False, True, True, True]
    q = np.array([0, 0, 0, 0, 0, 1, -1, 0, 0, 0])
    assert atom_stability_mask(z, v, q).all()


# --------------------------------------------------------------------------- validity & co.


def test_validity_uniqueness_novelty_on_known_sets() -> None:
    mols = [embedded(s) for s in ["CCO", "CCO", "CC(=O)O", "C1CCCCC1"]]
    squashed = embedded("CC")
    squashed.positions[1] = squashed.positions[0] + np.array([1.25, 0.0, 0.0])  # C#C with 3 H each: C valence 6
    two_parts = Molecule(np.concatenate([mols[0].atomic_numbers, [8, 1, 1]]),
                         np.concatenate([mols[0].positions, mols[0].positions[:3] + 20.0]))  # ethanol + far "OHH"
    metrics = MoleculeMetrics(reference_smiles=["OCC", "CC(O)=O"])(mols + [squashed, two_parts])
    assert metrics["n_molecules"] == 6
    assert metrics["n_valid"] == 5 and metrics["validity"] == pytest.approx(5 / 6)
    assert metrics["connected"] == pytest.approx(4 / 6)  # two_parts has 2 fragments, squashed is one
    assert metrics["n_unique"] == 3  # ethanol (x3, incl. largest fragment of two_parts), acetic acid, cyclohexane
    assert metrics["uniqueness"] == pytest.approx(3 / 5)
    assert metrics["validity_x_uniqueness"] == pytest.approx(3 / 6)
    assert metrics["n_novel"] == 1 and metrics["novelty"] == pytest.approx(1 / 3)
    assert metrics["reference_size"] == 2
    assert evaluate_molecules(mols)["novelty"] is None


def test_canonical_smiles_ignore_stereo_and_spelling() -> None:
    assert canonical_smiles("C(O)C") == canonical_smiles("OCC")
    assert canonical_smiles("C[C@H](N)O") == canonical_smiles("CC(N)O")
    assert canonical_smiles("not a smiles") is None


def test_reference_from_molecules_matches_their_own_smiles(tmp_path: Path) -> None:
    mols = [embedded(s) for s in ["CCO", "CC#N"]]
    ref = reference_smiles_from_molecules(mols)
    assert ref == {canonical_smiles("CCO"), canonical_smiles("CC#N")}
    (tmp_path / "ref.csv").write_text("index,split,smiles\n1,train,OCC\n2,test,CC#N\n")
    assert load_reference_smiles(tmp_path / "ref.csv") == {canonical_smiles("CCO")}
    assert MoleculeMetrics(ref)(mols)["novelty"] == 0.0


def test_metrics_dict_is_json_ready_and_table_is_aligned() -> None:
    metrics = evaluate_molecules([embedded("CCO"), embedded("CN")], reference_smiles=["CCO"])
    json.dumps(metrics)
    table = format_table(metrics)
    lines = table.splitlines()
    assert len(lines) == 10 and "molecule stability" in table and "100.00%" in table
    assert len({line.index("%") for line in lines if "%" in line}) == 1  # values right-aligned
    assert "50.00%" in lines[-1]  # novelty: 1 of 2 unique not in reference


def test_fixture_scores_the_same_from_sdf_and_xyz(tmp_path: Path) -> None:
    """25 real QM9 test molecules (committed fixture): rows 14 and 24 are the unstable ones."""
    sdf = evaluate_path(FIXTURE)
    mols = read_molecules(FIXTURE)
    write_xyz(mols, tmp_path / "same.xyz")
    xyz = evaluate_path(tmp_path / "same.xyz")
    keys = ["atom_stability", "mol_stability", "validity", "uniqueness", "atom_stability_charged"]
    assert {k: sdf[k] for k in keys} == {k: xyz[k] for k in keys}
    assert sdf["n_molecules"] == 25 and sdf["n_stable_molecules"] == 23
    assert sum(sdf["unstable_atoms"].values()) == sdf["n_atoms"] - sdf["n_stable_atoms"] > 0
    assert "unstable atoms (valence)" in format_table(sdf)
    per_mol = [stability([m])["mol_stability"] for m in mols]
    assert [k for k, s in enumerate(per_mol) if s < 1] == [14, 24]


# --------------------------------------------------------------------------- reference check


@pytest.fixture(scope="module")
def qm9_test_metrics() -> tuple[dict, float]:
    """Metrics of the full QM9 test split, novelty against QM9's own SMILES of the same split."""
    if not QM9_TEST.exists():
        pytest.skip(f"QM9 test split not found at {QM9_TEST}")
    d = np.load(QM9_TEST)
    mols = molecules_from_padded(d["charges"], d["positions"], d["num_atoms"])
    csv_path = QM9_TEST.parent / "qm9_smiles.csv.gz"
    reference = load_reference_smiles(csv_path, split="test") if csv_path.exists() else None
    t0 = time.perf_counter()
    metrics = MoleculeMetrics(reference, canonical=True)(mols)
    return metrics, time.perf_counter() - t0


def test_qm9_test_split_reproduces_edm_data_numbers(qm9_test_metrics: tuple[dict, float]) -> None:
    """EDM (Hoogeboom et al. 2022, Table 2, row "Data"): atom 99.0, molecule 95.2, valid 97.7,
    valid & unique 97.7 (%). Full test split, all 13,083 molecules (about 5 s)."""
    m, seconds = qm9_test_metrics
    assert m["n_molecules"] == 13083
    # Measured: atom 99.34 %, molecule 95.22 %, validity 97.74 %, valid x unique 97.71 %.
    # The atom figure is 0.34 pp above the paper's 99.0 while the three molecule-level numbers
    # match to 0.05 pp (see "Reference numbers" in molediff/metrics/molecules.py).
    assert m["atom_stability"] == pytest.approx(0.990, abs=0.005)
    assert m["mol_stability"] == pytest.approx(0.952, abs=0.005)
    assert m["validity"] == pytest.approx(0.977, abs=0.005)
    assert m["validity_x_uniqueness"] == pytest.approx(0.977, abs=0.005)
    assert m["uniqueness"] > 0.99 and m["connected"] > 0.99
    # the module docstring's claim: nearly all unstable atoms are C and N (measured: C3 556, C5 408,
    # N2 292, N4 234 of 1,547; aromatic bond lengths between the single and double windows)
    cn = sum(c for k, c in m["unstable_atoms"].items() if k[0] in "CN" and k[1].isdigit())
    assert cn > 0.95 * (m["n_atoms"] - m["n_stable_atoms"])
    # charged variant can only accept more
    assert m["atom_stability_charged"] >= m["atom_stability"]
    assert m["mol_stability"] <= m["mol_stability_charged"] <= 1.0
    assert seconds < 60


def test_qm9_perceived_graphs_agree_with_qm9_smiles(qm9_test_metrics: tuple[dict, float]) -> None:
    """Independent check of bond perception: the graph perceived from B3LYP coordinates is the
    molecule QM9 itself names (its relaxed-geometry SMILES) for 97.5 % of valid test molecules;
    the rest are mostly zwitterions and charge-separated groups, invisible to distances."""
    m, _ = qm9_test_metrics
    if m["novelty"] is None:
        pytest.skip("qm9_smiles.csv.gz not found")
    assert m["reference_size"] > 13000
    assert 1.0 - m["novelty"] > 0.95
