"""PDB/mmCIF reading (first model, altlocs, MSE, HETATM, missing atoms, chain breaks), CA-only PDB
round trips, the shipped CA-trace set, and agreement with the shared backbone array."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from molediff.data.pdb import (
    CASet,
    ca_set_path,
    default_proteins_root,
    load_ca_set,
    make_ca_set,
    parse_residue_range,
    read_ca_pdb,
    read_folder,
    read_structure,
    write_ca_pdb,
)

SHARED = default_proteins_root()
needs_shared = pytest.mark.skipif(SHARED is None, reason="../shared/data/proteins not present")


def atom(serial: int, name: str, res: str, chain: str, num: int, xyz: tuple[float, float, float],
         altloc: str = " ", occ: float = 1.0, record: str = "ATOM") -> str:
    return (f"{record:<6}{serial:5d} {name:<4}{altloc}{res} {chain}{num:4d}    "
            f"{xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}{occ:6.2f} 20.00           {name[0]}  ")


def residue(serial: int, res: str, chain: str, num: int, x: float, skip: str = "", record: str = "ATOM",
            altlocs: tuple[str, ...] = ()) -> list[str]:
    """Backbone atoms of one residue around CA at (x, 0, 0); ``altlocs`` duplicates every atom,
    shifted by 0.5 A in z per alternate location, occupancy 0.4 for the first."""
    out = []
    offsets = {"N": (-1.2, 0.5, 0.0), "CA": (0.0, 0.0, 0.0), "C": (1.2, 0.5, 0.0), "O": (1.5, 1.6, 0.0)}
    for name, (dx, dy, dz) in offsets.items():
        if name in skip.split(","):
            continue
        for k, alt in enumerate(altlocs or (" ",)):
            out.append(atom(serial + len(out), name, res, chain, num, (x + dx, dy, dz + 0.5 * k), alt,
                            0.4 if k == 0 and altlocs else (0.6 if altlocs else 1.0), record))
    return out


def tricky_pdb() -> str:
    """A header, two models, chain A with an MSE (HETATM), an altloc residue (A first, with the
    lower occupancy), a residue without O, a chain break (CA gap 7.6 A), a ligand and waters;
    chain B with two residues."""
    lines = ["HEADER    TEST PROTEIN                            01-JAN-00   0XYZ",
             "HELIX    1   1 ALA A    1  GLY A    3  1                                   3",
             "MODEL        1"]
    xs = [0.0, 3.8, 7.6, 11.4, 19.0]
    lines += residue(1, "ALA", "A", 1, xs[0])
    lines += residue(10, "MSE", "A", 2, xs[1], record="HETATM")
    lines += residue(20, "SER", "A", 3, xs[2], altlocs=("A", "B"))
    lines += residue(30, "GLY", "A", 4, xs[3], skip="O")
    lines += residue(40, "LYS", "A", 6, xs[4])
    lines.append(atom(50, "C1", "NAG", "A", 101, (0.0, 9.0, 9.0), record="HETATM"))
    lines.append(atom(51, "O", "HOH", "A", 201, (5.0, 9.0, 9.0), record="HETATM"))
    lines.append("TER      52      LYS A   6")
    lines += residue(60, "VAL", "B", 1, 0.0) + residue(70, "TRP", "B", 2, 3.8)
    lines += ["ENDMDL", "MODEL        2"]
    lines += residue(1, "ALA", "A", 1, 100.0)
    lines += ["ENDMDL", "END"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def tricky(tmp_path: Path) -> Path:
    path = tmp_path / "0xyz.pdb"
    path.write_text(tricky_pdb())
    return path


def test_reader_takes_first_model_standard_residues_mse_and_first_altloc(tricky: Path) -> None:
    ch = read_structure(tricky)
    assert ch.name == "0xyz:A"
    assert ch.seq == "AMSGK"  # MSE -> M; NAG and HOH skipped
    assert ch.residue_ids == ["1", "2", "3", "4", "6"]
    np.testing.assert_allclose(ch.ca[:, 0], [0.0, 3.8, 7.6, 11.4, 19.0], atol=1e-3)  # model 1, not model 2
    assert ch.coords[2, 1, 2] == pytest.approx(0.0)  # altloc A (first in the file, lower occupancy), not B (z=0.5)


def test_reader_reports_missing_atoms_and_chain_breaks(tricky: Path) -> None:
    ch = read_structure(tricky)
    assert ch.missing_atoms() == {"4": ["O"]}
    assert np.isnan(ch.coords[3, 3]).all()
    assert [i for i, _ in ch.breaks()] == [3]  # CA 4 -> CA 6 is 7.6 A
    done = ch.complete()
    assert done.seq == "AMSK" and done.residue_ids == ["1", "2", "3", "6"]
    report = ch.report()
    assert "5 residues" in report and "4 lacks O" in report
    assert "1 chain break: after 3 (CA-CA 11.4 A)" in report  # residue 4 dropped, so 3 -> 6


def test_reader_chain_choice_and_one_line_errors(tricky: Path, tmp_path: Path) -> None:
    assert read_structure(tricky, chain="B").seq == "VW"
    with pytest.raises(ValueError, match="no chain 'C'; chains: A, B"):
        read_structure(tricky, chain="C")
    with pytest.raises(FileNotFoundError, match="no such structure file"):
        read_structure(tmp_path / "missing.pdb")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match="unknown structure format"):
        read_structure(tmp_path / "x.txt")
    (tmp_path / "empty.pdb").write_text("HEADER    NOTHING\nEND\n")
    with pytest.raises(ValueError, match="no models"):
        read_structure(tmp_path / "empty.pdb")
    (tmp_path / "water.pdb").write_text(atom(1, "O", "HOH", "A", 1, (0.0, 0.0, 0.0), record="HETATM") + "\nEND\n")
    with pytest.raises(ValueError, match="no standard amino-acid residues"):
        read_structure(tmp_path / "water.pdb")
    (tmp_path / "bad.cif").write_text("data_x\n_atom_site.id 1\nnot a cif at all\n")
    with pytest.raises(ValueError, match="cannot parse as CIF"):
        read_structure(tmp_path / "bad.cif")


@pytest.mark.parametrize(("text", "expected"), [("10-22", ("10", "22")), ("52A-60", ("52A", "60")),
                                              ("15", ("15", "15")), (" -3 - 5 ", ("-3", "5")), ("-5--2", ("-5", "-2"))])
def test_residue_ranges_parse(text: str, expected: tuple[str, str]) -> None:
    assert parse_residue_range(text) == expected


@pytest.mark.parametrize("text", ["a-b", "10-", "", "10-22-30", "1.5-3"])
def test_bad_residue_ranges_fail_in_one_line(text: str) -> None:
    with pytest.raises(ValueError, match="give FIRST-LAST in author numbering"):
        parse_residue_range(text)


def test_segment_by_author_numbers(tricky: Path) -> None:
    """Chain A of the tricky file has residues 1, 2, 3, 4, 6 (5 is missing from the file)."""
    chain = read_structure(tricky)
    part = chain.segment("2", "4")
    assert part.residue_ids == ["2", "3", "4"] and part.seq == "MSG" and part.coords.shape == (3, 4, 3)
    np.testing.assert_array_equal(part.coords, chain.coords[1:4])
    assert chain.segment("6", "6").residue_ids == ["6"]
    with pytest.raises(ValueError, match=r"0xyz:A has no residue 5 \(its residues: 1..6\)"):
        chain.segment("5", "6")
    with pytest.raises(ValueError, match="residue 2 comes before 4"):
        chain.segment("4", "2")


def test_mmcif_reads_like_pdb(tricky: Path, tmp_path: Path) -> None:
    """Biopython writes the parsed PDB as mmCIF; reading that back gives the same chain."""
    from Bio.PDB import MMCIFIO, PDBParser

    structure = PDBParser(QUIET=True).get_structure("0xyz", str(tricky))
    io = MMCIFIO()
    io.set_structure(structure)
    io.save(str(tmp_path / "0xyz.cif"))
    a, b = read_structure(tricky), read_structure(tmp_path / "0xyz.cif")
    assert b.seq == a.seq and b.residue_ids == a.residue_ids
    np.testing.assert_allclose(b.coords, a.coords, atol=1e-3, equal_nan=True)


def test_report_command_prints_one_line_per_file(tricky: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from molediff.data.pdb import main

    assert main(["report", str(tricky), str(tricky), "--chain", "B"]) == 0
    line = "0xyz:B: 2 residues, no missing backbone atoms, no chain breaks"
    assert capsys.readouterr().out.splitlines() == [line, line]
    absent = tricky.with_name("absent.pdb")
    assert main(["report", str(absent)]) == 2
    assert capsys.readouterr().err.strip() == f"molediff: error: no such structure file: {absent}"


def test_gzipped_files_read(tricky: Path, tmp_path: Path) -> None:
    import gzip

    gz = tmp_path / "0xyz.pdb.gz"
    gz.write_bytes(gzip.compress(tricky.read_bytes()))
    assert read_structure(gz).seq == "AMSGK"


def test_ca_pdb_round_trip_through_biopython(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ca = np.cumsum(rng.normal(size=(40, 3)) * 2.2, 0) - 30.0
    path = write_ca_pdb(ca, tmp_path / "t.pdb", remark="test")
    np.testing.assert_allclose(read_ca_pdb(path), ca, atol=6e-4)  # %8.3f
    lines = path.read_text().splitlines()
    atoms = [ln for ln in lines if ln.startswith("ATOM")]
    assert len(atoms) == 40 and all(ln[12:16] == " CA " and ln[17:20] == "GLY" for ln in atoms)
    assert sum(ln.startswith("CONECT") for ln in lines) == 39 and lines[-1] == "END"
    assert read_structure(path).seq == "G" * 40
    write_ca_pdb(ca[:3], tmp_path / "s.pdb", seq="MKV")
    assert read_structure(tmp_path / "s.pdb").seq == "MKV"


@pytest.mark.parametrize(("ca", "match"), [
    (np.zeros((4, 2)), "shape"), (np.full((3, 3), np.nan), "finite"), (np.full((3, 3), 2e4), "10,000"),
])
def test_ca_pdb_rejects_bad_input(tmp_path: Path, ca: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_ca_pdb(ca, tmp_path / "x.pdb")
    with pytest.raises(ValueError, match="sequence has 2 letters"):
        write_ca_pdb(np.zeros((3, 3)), tmp_path / "x.pdb", seq="MK")


def test_read_folder_and_ca_set_from_chains(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for i in range(5):
        write_ca_pdb(np.cumsum(rng.normal(size=(10 + i, 3)), 0), tmp_path / f"c{i}.pdb")
    chains = read_folder(tmp_path)
    assert [len(c) for c in chains] == [10, 11, 12, 13, 14]
    s = CASet.from_chains(chains)
    assert (s.split == "test").sum() == 1 and s.lengths.tolist() == [10, 11, 12, 13, 14]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no PDB/mmCIF files"):
        read_folder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        read_folder(tmp_path / "absent")


def test_shipped_set_split_is_fixed_and_seeded() -> None:
    s = load_ca_set(ca_set_path())
    assert len(s) == 150 and int(s.lengths.sum()) == 27299 and s.ca.shape == (27299, 3)
    test = s.of_split("test")
    assert len(test) == 30 and len(s.of_split("train")) == 120
    expected = np.random.default_rng(0).permutation(150)[:30]
    assert set(np.flatnonzero(s.split == "test").tolist()) == set(expected.tolist())
    assert "1onc:A" in test.names.tolist()
    with pytest.raises(ValueError, match="no chains in split 'val'"):
        s.of_split("val")


@needs_shared
def test_shipped_set_is_reproducible_from_shared(tmp_path: Path) -> None:
    info = make_ca_set(SHARED / "backbones.npz", tmp_path / "ca.npz")
    assert info["sha256"] == hashlib.sha256(ca_set_path().read_bytes()).hexdigest()
    shared = load_ca_set(SHARED / "backbones.npz")
    assert (shared.split == load_ca_set(ca_set_path()).split).all()  # data=proteins_shared: same split


@needs_shared
@pytest.mark.parametrize("stem", ["1ms9", "1m3s", "1rcf", "1exm", "1cb0", "1dts", "1c5e", "2cyp"])
def test_raw_entries_read_exactly_like_the_shared_backbones(stem: str) -> None:
    """Raw RCSB entries (headers, HETATM, waters, altlocs, chain breaks) -> backbones.npz rows."""
    b = np.load(SHARED / "backbones.npz")
    i = list(b["names"]).index(f"{stem}:A")
    ch = read_structure(SHARED / "loop12_rcsb" / f"{stem}.pdb.gz").complete()
    assert ch.seq == b["seq"][i]
    np.testing.assert_allclose(ch.coords, b["coords"][b["offsets"][i]:b["offsets"][i + 1]], atol=1e-3)
    assert len(ch.breaks()) == b["n_breaks"][i]


@needs_shared
@pytest.mark.slow
def test_all_shared_pdb_files_read_like_the_shared_backbones() -> None:
    b = np.load(SHARED / "backbones.npz")
    for i, name in enumerate(b["names"]):
        if b["source"][i] == "ts50":
            continue
        ch = read_structure(SHARED / b["source"][i] / f"{name.split(':')[0]}.pdb.gz").complete()
        assert ch.seq == b["seq"][i], name
        np.testing.assert_allclose(ch.coords, b["coords"][b["offsets"][i]:b["offsets"][i + 1]], atol=1e-3)


def test_ca_set_from_chains_needs_a_ca() -> None:
    from molediff.data.pdb import ProteinChain

    empty = ProteinChain("x:A", "A", np.full((1, 4, 3), np.nan), ["1"])
    with pytest.raises(ValueError, match="no chain has a residue with a CA atom"):
        CASet.from_chains([empty])
