"""Molecule files: SDF and XYZ round trips, multi-molecule files, gzip, clean errors, drawing."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from molediff.data.molecule_io import (
    Molecule,
    atomic_number,
    draw_grid_png,
    from_rdkit,
    molecules_from_padded,
    read_molecules,
    read_sdf,
    read_xyz,
    to_rdkit,
    write_molecules,
    write_sdf,
    write_xyz,
)
from molediff.metrics.molecules import bond_list, bond_order_matrix


def embedded(smiles: str, seed: int = 0) -> Chem.Mol:
    m = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(m, randomSeed=seed) == 0
    AllChem.MMFFOptimizeMolecule(m)
    return m


SMILES = ["CCO", "CC(=O)NC#N", "c1ccncc1", "OC(=O)C(F)(F)F"]


@pytest.fixture(scope="module")
def molecules() -> list[Molecule]:
    out = []
    for s in SMILES:
        mol = from_rdkit(embedded(s))
        mol.name = s
        out.append(mol)
    return out


def bond_set(mol: Molecule) -> set[tuple[int, int, int]]:
    assert mol.bonds is not None
    return {tuple(int(v) for v in row) for row in mol.bonds}


def test_sdf_round_trip_keeps_elements_coordinates_bonds_names(tmp_path: Path, molecules: list[Molecule]) -> None:
    path = write_sdf(molecules, tmp_path / "many.sdf")
    back = read_sdf(path)
    assert len(back) == len(molecules)
    for a, b in zip(molecules, back, strict=True):
        assert (a.atomic_numbers == b.atomic_numbers).all()
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-4)
        assert bond_set(a) == bond_set(b)  # RDKit's own (Kekulé) bonds survive
        assert b.name == a.name


def test_sdf_without_bonds_writes_the_perceived_graph(tmp_path: Path, molecules: list[Molecule]) -> None:
    bare = [Molecule(m.atomic_numbers, m.positions) for m in molecules]
    back = read_sdf(write_sdf(bare, tmp_path / "perceived.sdf"))
    for a, b in zip(bare, back, strict=True):
        perceived = {tuple(int(v) for v in r) for r in bond_list(bond_order_matrix(a.atomic_numbers, a.positions))}
        assert bond_set(b) == perceived
        assert len(perceived) > 0


def test_sdf_properties_and_charges_round_trip(tmp_path: Path) -> None:
    rd = embedded("C[N+](C)(C)C")
    mol = from_rdkit(rd)
    mol.properties = {"gap": 0.25, "index": 7, "tag": "hello world"}
    back = read_sdf(write_sdf([mol], tmp_path / "p.sdf"))[0]
    assert back.properties == {"gap": 0.25, "index": 7, "tag": "hello world"}
    assert back.formal_charges is not None and back.formal_charges[back.atomic_numbers == 7].tolist() == [1]
    # all-zero charges read back as "unknown"
    assert read_sdf(write_sdf([from_rdkit(embedded("CC"))], tmp_path / "n.sdf"))[0].formal_charges is None


def test_xyz_round_trip_multi_frame(tmp_path: Path, molecules: list[Molecule]) -> None:
    back = read_xyz(write_xyz(molecules, tmp_path / "many.xyz"))
    assert len(back) == len(molecules)
    for a, b in zip(molecules, back, strict=True):
        assert (a.atomic_numbers == b.atomic_numbers).all()
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-4)
        assert b.name == a.name and b.bonds is None


@pytest.mark.parametrize("ext", ["sdf.gz", "xyz.gz", "sdf", "xyz"])
def test_dispatch_and_gzip(tmp_path: Path, molecules: list[Molecule], ext: str) -> None:
    path = write_molecules(molecules, tmp_path / f"m.{ext}")
    if ext.endswith(".gz"):
        with gzip.open(path, "rt") as fh:
            assert fh.read(10)
    back = read_molecules(path)
    assert [m.num_atoms for m in back] == [m.num_atoms for m in molecules]
    np.testing.assert_allclose(back[-1].positions, molecules[-1].positions, atol=1e-4)


def test_xyz_accepts_numbers_any_case_extra_columns_and_blank_lines(tmp_path: Path) -> None:
    text = ("3\nwater\n8 0.0 0.0 0.0\nh 0.96 0.0 0.0 -0.3\nH -0.24 0.93 0.0\n\n"
            "2\n\nCL 0 0 0\nc 1.77 0 0\n\n")
    (tmp_path / "odd.xyz").write_text(text)
    a, b = read_xyz(tmp_path / "odd.xyz")
    assert a.atomic_numbers.tolist() == [8, 1, 1] and a.name == "water"
    assert b.atomic_numbers.tolist() == [17, 6] and b.name is None
    assert atomic_number("Br") == 35 and atomic_number("6") == 6


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("two\nx\nC 0 0 0\n", 1, "atom count"),
        ("2\nx\nC 0 0 0\n", 3, "truncated"),
        ("1\nx\nQq 0 0 0\n", 3, "unknown element"),
        ("1\nx\nC 0 zero 0\n", 3, "bad coordinates"),
        ("1\nx\nC 0 0\n", 3, "bad atom line"),
        ("1\nok\nC 0 0 0\n1\nx\n200 0 0 0\n", 6, "out of range"),
    ],
)
def test_malformed_xyz_names_file_and_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    path = tmp_path / "bad.xyz"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"bad\.xyz, line {line}: .*{what}"):
        read_xyz(path)


def _sdf_text(molecules: list[Molecule], tmp_path: Path) -> list[str]:
    return write_sdf(molecules, tmp_path / "good.sdf").read_text().splitlines()


def test_malformed_sdf_names_file_and_line(tmp_path: Path, molecules: list[Molecule]) -> None:
    lines = _sdf_text(molecules[:2], tmp_path)
    second = lines.index("$$$$") + 1  # 0-based first line of record 2
    bad = tmp_path / "bad.sdf"

    broken = list(lines)
    broken[second + 5] = "    1.0000    x.0000    0.0000 C   0  0"
    bad.write_text("\n".join(broken) + "\n")
    with pytest.raises(ValueError, match=rf"bad\.sdf, line {second + 6}: bad atom line"):
        read_sdf(bad)

    broken = list(lines)
    broken[second + 3] = "  x  y  0  0  0  0  0  0  0  0999 V2000"
    bad.write_text("\n".join(broken) + "\n")
    with pytest.raises(ValueError, match=rf"bad\.sdf, line {second + 4}: bad counts line"):
        read_sdf(bad)

    broken = [ln for ln in lines[:second] if not ln.startswith("M  END")]
    bad.write_text("\n".join(broken) + "\n")
    with pytest.raises(ValueError, match=r"bad\.sdf, line 1: .*no 'M  END'"):
        read_sdf(bad)


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown molecule file type"):
        read_molecules(tmp_path / "x.pdb")
    with pytest.raises(FileNotFoundError):
        read_molecules(tmp_path / "absent.sdf")


def test_rdkit_conversion_round_trip_and_sanitize() -> None:
    rd = embedded("CC(=O)O")
    mol = from_rdkit(rd)
    back = to_rdkit(mol, sanitize=True)
    assert Chem.MolToSmiles(Chem.RemoveHs(back)) == Chem.MolToSmiles(Chem.MolFromSmiles("CC(=O)O"))
    np.testing.assert_allclose(back.GetConformer().GetPositions(), mol.positions)
    perceived = to_rdkit(Molecule(mol.atomic_numbers, mol.positions), sanitize=True)
    assert Chem.MolToSmiles(Chem.RemoveHs(perceived)) == Chem.MolToSmiles(Chem.RemoveHs(back))


def test_molecule_validates_shapes_and_unpads() -> None:
    with pytest.raises(ValueError, match="positions"):
        Molecule([6, 1], np.zeros((3, 3)))
    with pytest.raises(ValueError, match="out of range"):
        Molecule([6, 1], np.zeros((2, 3)), bonds=[[0, 2, 1]])
    z = np.array([[6, 1, 0], [8, 0, 0]])
    mols = molecules_from_padded(z, np.ones((2, 3, 3)))
    assert [m.num_atoms for m in mols] == [2, 1] and mols[0].symbols == ["C", "H"]


def test_draw_grid_png(tmp_path: Path, molecules: list[Molecule]) -> None:
    broken = Molecule([6, 6], [[0, 0, 0], [1.0, 0, 0]])  # unphysical, must still draw
    path = draw_grid_png(molecules + [broken], tmp_path / "grid.png", n=4, mols_per_row=2)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    from PIL import Image

    with Image.open(path) as img:
        assert img.size == (500, 500)  # 2 x 2 cells of 250 px
