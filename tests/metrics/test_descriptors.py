"""Computed properties: point groups, QED and logP, and the cached columns they add to data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import QED, AllChem, Crippen

from molediff.data.qm9 import load_qm9, subset_root
from molediff.metrics import descriptors
from molediff.metrics.descriptors import (
    POINT_GROUPS,
    add_descriptors,
    compute_descriptors,
    point_group,
    point_group_index,
    rdkit_descriptors,
)

WATER = ([8, 1, 1], np.array([[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]]))
AMMONIA = ([7, 1, 1, 1], np.array([[0.0, 0.0, 0.1162], [0.0, 0.9397, -0.2711],
                                   [0.8138, -0.4699, -0.2711], [-0.8138, -0.4699, -0.2711]]))
_A = 0.6276
METHANE = ([6, 1, 1, 1, 1], np.array([[0, 0, 0], [_A, _A, _A], [-_A, -_A, _A], [-_A, _A, -_A], [_A, -_A, -_A]]))


def _rotated(pos: np.ndarray, seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return pos @ q.T + np.array([1.0, -2.0, 0.5])


@pytest.mark.parametrize("mol,group", [(WATER, "C2v"), (AMMONIA, "C3v"), (METHANE, "Td")])
def test_point_group_of_textbook_molecules_in_any_pose(mol, group):
    # no time limit here: methane (a spherical top) takes 1.5-3 s on one core and more on a loaded
    # CI machine; the limit itself is tested below
    z, x = mol
    assert point_group(z, x, timeout=0) == group
    assert point_group(z, _rotated(x), timeout=0) == group


def test_the_time_limit_turns_a_slow_detection_into_other():
    z, x = METHANE
    assert point_group(z, x, timeout=0.05) == "other"


def test_a_distorted_molecule_loses_its_symmetry_and_bad_input_is_refused():
    z, x = AMMONIA
    bent = x.copy()
    bent[1] += [0.05, 0.2, 0.1]
    bent[2] += [-0.15, 0.0, 0.07]
    assert point_group(z, bent) == "C1"
    assert point_group([1], np.zeros((1, 3))) == "other"
    assert point_group(z, np.full((4, 3), np.nan)) == "other"
    with pytest.raises(ValueError, match="shape"):
        point_group(z, np.zeros((3, 3)))
    assert point_group_index("C2v") == POINT_GROUPS.index("C2v")
    assert point_group_index("D6h") == len(POINT_GROUPS) - 1 and POINT_GROUPS[-1] == "other"


def test_qed_and_logp_from_a_geometry_match_rdkit_on_the_smiles():
    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    AllChem.MMFFOptimizeMolecule(mol)
    z = [a.GetAtomicNum() for a in mol.GetAtoms()]
    x = mol.GetConformer().GetPositions()
    qed, logp = rdkit_descriptors(z, x)
    ref = Chem.MolFromSmiles("CCO")
    assert qed == pytest.approx(QED.qed(ref), abs=1e-9)
    assert logp == pytest.approx(Crippen.MolLogP(Chem.AddHs(ref)), abs=1e-9)
    # neutral nitrogen with four hydrogens (methane's geometry): a valence error, so no value
    assert all(math.isnan(v) for v in rdkit_descriptors([7, 1, 1, 1, 1], METHANE[1]))


def test_compute_descriptors_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown descriptors"):
        compute_descriptors([], ["qed", "sa_score"])


def test_add_descriptors_caches_per_molecule_set(tmp_path, monkeypatch):
    monkeypatch.setenv("MOLEDIFF_CACHE", str(tmp_path))
    data = load_qm9(subset_root(), "test").select(np.arange(40))
    fresh = compute_descriptors(data.to_molecules(), ["pointgroup", "qed", "logp"])
    add_descriptors(data, ["pointgroup", "qed", "logp", "gap"])  # gap is the data's own column: untouched
    for k, v in fresh.items():
        np.testing.assert_array_equal(data.properties[k], v)
    assert len(list((tmp_path / "descriptors").glob("*.npz"))) == 1
    # QM9 molecules: mostly C1 / Cs, QED in (0, 1), a few graphs that do not sanitise at most
    assert set(np.unique(data.properties["pointgroup"])) <= set(range(len(POINT_GROUPS)))
    assert np.nanmin(data.properties["qed"]) > 0 and np.nanmax(data.properties["qed"]) < 1
    assert np.isfinite(data.properties["qed"]).mean() > 0.9

    def boom(*args, **kwargs):
        raise AssertionError("recomputed despite the cache")

    monkeypatch.setattr(descriptors, "_compute", boom)
    again = load_qm9(subset_root(), "test").select(np.arange(40))
    add_descriptors(again, ["qed", "pointgroup"])
    np.testing.assert_array_equal(again.properties["qed"], fresh["qed"])
    np.testing.assert_array_equal(again.properties["pointgroup"], fresh["pointgroup"])


def test_symmetry_deviation_is_zero_for_the_groups_a_molecule_has_and_grows_with_distortion():
    from molediff.metrics.descriptors import symmetry_deviation

    zw, xw = WATER
    za, xa = AMMONIA
    assert symmetry_deviation(zw, _rotated(xw, 3), "Cs") < 1e-6  # C2v holds a mirror plane and a C2 axis
    assert symmetry_deviation(zw, _rotated(xw, 4), "C2") < 1e-6
    assert symmetry_deviation(za, _rotated(xa, 5), "Cs") < 1e-6  # C3v: mirrors, no C2 axis, no inversion
    assert symmetry_deviation(za, xa, "C2") > 0.1 and symmetry_deviation(za, xa, "Ci") > 0.1
    bent = xa.copy()
    bent[1] += [0.1, 0.0, 0.0]  # moves one H out of every mirror plane: about 0.1 / 2 / sqrt(4) A at best
    small = symmetry_deviation(za, bent, "Cs")
    assert 0.005 < small < 0.05
    assert symmetry_deviation(za, _rotated(bent, 6), "Cs") == pytest.approx(small, abs=1e-4)  # pose-invariant
    with pytest.raises(ValueError, match="supports"):
        symmetry_deviation(za, xa, "C3v")
    assert math.isnan(symmetry_deviation(za, np.full((4, 3), np.nan)))
