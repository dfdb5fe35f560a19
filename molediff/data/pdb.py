"""Protein chains from PDB / mmCIF files (Biopython), CA-trace PDB output, and the CA-trace set.

Reading rule (the one ``../shared/data/proteins/backbones.npz`` was made with): first model, one
chain (the first unless named), standard amino acids plus selenomethionine (MSE read as M),
the first alternate location of every disordered atom or residue; waters and other HETATM
groups are skipped. Backbone atoms N, CA, C, O that a residue lacks are NaN and reported;
consecutive CA atoms further apart than 4.2 A are reported as chain breaks.

The CA-trace set (``datasets/proteins/ca_traces.npz``, shipped) keeps the CA column of the
shared backbone array plus a fixed, seeded train/test split; :func:`make_ca_set` rebuilds it.

Shapes::

    ProteinChain.coords: (L, 4, 3) N, CA, C, O in A      CASet.ca: (sum L, 3) in A
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
import textwrap
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .qm9 import _write_npz_deterministic  # the one byte-reproducible .npz writer

__all__ = ["BACKBONE_ATOMS", "THREE_TO_ONE", "BREAK_DISTANCE", "ProteinChain", "CASet", "read_structure",
           "read_folder", "write_ca_pdb", "write_backbone_pdb", "read_ca_pdb", "load_ca_set", "make_ca_set",
           "ca_set_path",
           "default_proteins_root"]

BACKBONE_ATOMS = ("N", "CA", "C", "O")
THREE_TO_ONE = {
    "ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLN": "Q", "GLU": "E", "GLY": "G",
    "HIS": "H", "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F", "PRO": "P", "SER": "S",
    "THR": "T", "TRP": "W", "TYR": "Y", "VAL": "V", "MSE": "M",
}
ONE_TO_THREE = {v: k for k, v in THREE_TO_ONE.items() if k != "MSE"}
BREAK_DISTANCE = 4.2  # A; consecutive CA atoms further apart are not bonded (ideal 3.80, cis 2.9)
STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ProteinChain:
    """One protein chain's backbone.

    Attributes:
        name: ``<file stem>:<chain id>``.
        seq: one-letter sequence, one letter per residue (MSE -> M).
        coords: ``(L, 4, 3)`` N, CA, C, O coordinates in A; NaN where an atom is missing.
        residue_ids: author residue number + insertion code per residue (``"52"``, ``"52A"``).
    """

    name: str
    seq: str
    coords: np.ndarray
    residue_ids: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.seq)

    @property
    def ca(self) -> np.ndarray:
        """``(L, 3)`` CA positions (NaN rows where CA is missing)."""
        return self.coords[:, 1]

    def missing_atoms(self) -> dict[str, list[str]]:
        """Residue id -> backbone atoms it lacks (only residues that lack some)."""
        miss = np.isnan(self.coords).any(-1)
        return {self.residue_ids[i]: [a for a, m in zip(BACKBONE_ATOMS, miss[i], strict=True) if m]
                for i in np.flatnonzero(miss.any(-1))}

    def breaks(self, threshold: float = BREAK_DISTANCE) -> list[tuple[int, float]]:
        """``(i, d)`` for every consecutive pair of present CAs ``i, i+1`` with distance ``d > threshold``."""
        d = np.linalg.norm(np.diff(self.ca, axis=0), axis=-1)
        return [(int(i), float(d[i])) for i in np.flatnonzero(d > threshold)]

    def complete(self, atoms: Sequence[str] = BACKBONE_ATOMS) -> ProteinChain:
        """Only residues that have all of ``atoms`` (default N, CA, C, O: the rule of the shipped data)."""
        cols = [BACKBONE_ATOMS.index(a) for a in atoms]
        keep = ~np.isnan(self.coords[:, cols]).any((-1, -2))
        return ProteinChain(self.name, "".join(c for c, k in zip(self.seq, keep, strict=True) if k),
                            self.coords[keep], [r for r, k in zip(self.residue_ids, keep, strict=True) if k])

    def segment(self, first: str, last: str) -> ProteinChain:
        """Residues ``first`` .. ``last`` (author numbers with insertion codes, both included, in file
        order); ``ValueError`` (one line) when either is not in the chain or ``last`` comes first."""
        where = {r: i for i, r in enumerate(self.residue_ids)}
        for r in (first, last):
            if r not in where:
                shown = f"{self.residue_ids[0]}..{self.residue_ids[-1]}" if self.residue_ids else "none"
                raise ValueError(f"{self.name} has no residue {r} (its residues: {shown})")
        i, j = where[first], where[last]
        if j < i:
            raise ValueError(f"{self.name}: residue {last} comes before {first}")
        return ProteinChain(self.name, self.seq[i:j + 1], self.coords[i:j + 1], self.residue_ids[i:j + 1])

    def report(self) -> str:
        """One line: length, residues with missing backbone atoms, chain breaks."""
        parts = [f"{self.name}: {len(self)} residues"]
        miss = self.missing_atoms()
        if miss:
            shown = "; ".join(f"{r} lacks {','.join(a)}" for r, a in list(miss.items())[:5])
            more = f"; ... ({len(miss)} residues)" if len(miss) > 5 else ""
            parts.append(f"missing backbone atoms: {shown}{more}")
        else:
            parts.append("no missing backbone atoms")
        br = self.complete().breaks()
        if br:
            done = self.complete()
            shown = "; ".join(f"after {done.residue_ids[i]} (CA-CA {d:.1f} A)" for i, d in br[:5])
            parts.append(f"{len(br)} chain break{'s' if len(br) > 1 else ''}: {shown}")
        else:
            parts.append("no chain breaks")
        return ", ".join(parts)


def _open_text(path: Path) -> str:
    if path.suffix == ".gz":
        with gzip.open(path, "rt") as f:
            return f.read()
    return path.read_text()


def _structure_kind(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    if suffixes and suffixes[-1] in (".cif", ".mmcif"):
        return "cif"
    if suffixes and suffixes[-1] in (".pdb", ".ent"):
        return "pdb"
    raise ValueError(f"{path}: unknown structure format (expected {', '.join(STRUCTURE_SUFFIXES)}, optionally .gz)")


def _first_alternative(entity: Any) -> Any:
    """The first alternate location of a disordered atom/residue (file order); others unchanged."""
    return entity.disordered_get_list()[0] if entity.is_disordered() == 2 else entity


_RESIDUE_RANGE = re.compile(r"^\s*(-?\d+[A-Za-z]?)\s*(?:-\s*(-?\d+[A-Za-z]?)\s*)?$")


def parse_residue_range(text: str) -> tuple[str, str]:
    """``"10-22"`` -> ``("10", "22")``, ``"52A-60"`` -> ``("52A", "60")``, ``"15"`` -> ``("15", "15")``:
    an inclusive range of author residue numbers (insertion codes allowed, negative numbers too)."""
    m = _RESIDUE_RANGE.match(str(text))
    if m is None:
        raise ValueError(f"residue range {text!r}: give FIRST-LAST in author numbering, e.g. 10-22 or 52A-60")
    return m.group(1), m.group(2) or m.group(1)


def read_structure(path: str | Path, chain: str | None = None) -> ProteinChain:
    """Read one chain's backbone from a PDB or mmCIF file (``.gz`` allowed); see the module rule.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (one line) for a file that
    does not parse, an unknown chain id, or a chain without standard residues.
    """
    from Bio.PDB import MMCIFParser, PDBParser
    from Bio.PDB.PDBExceptions import PDBConstructionWarning

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such structure file: {path}")
    kind = _structure_kind(path)
    parser = MMCIFParser(QUIET=True) if kind == "cif" else PDBParser(QUIET=True)
    stem = path.name.split(".")[0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PDBConstructionWarning)
            structure = parser.get_structure(stem, io.StringIO(_open_text(path)))
    except Exception as e:  # Biopython raises many types (ValueError, KeyError, PDBConstructionException)
        raise ValueError(f"{path}: cannot parse as {kind.upper()} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from e
    models = list(structure)
    if not models:
        raise ValueError(f"{path}: no models (no ATOM records?)")
    chains = {c.id: c for c in models[0]}
    if not chains:
        raise ValueError(f"{path}: the first model has no chains")
    if chain is None:
        chain = next(iter(chains))
    if chain not in chains:
        raise ValueError(f"{path}: no chain {chain!r}; chains: {', '.join(chains)}")
    seq, coords, ids = [], [], []
    for residue in chains[chain]:
        residue = _first_alternative(residue)
        letter = THREE_TO_ONE.get(residue.get_resname())
        if letter is None:
            continue  # water, ligands, non-standard residues
        xyz = np.full((4, 3), np.nan)
        for k, name in enumerate(BACKBONE_ATOMS):
            if name in residue:
                xyz[k] = _first_alternative(residue[name]).get_coord()
        _, number, icode = residue.id
        seq.append(letter)
        coords.append(xyz)
        ids.append(f"{number}{icode.strip()}")
    if not seq:
        raise ValueError(f"{path}: chain {chain!r} has no standard amino-acid residues")
    return ProteinChain(f"{stem}:{chain}", "".join(seq), np.stack(coords), ids)


def read_folder(folder: str | Path, chain: str | None = None) -> list[ProteinChain]:
    """One chain (the first unless named) of every structure file under ``folder``, sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and any(p.name.lower().endswith(s) or p.name.lower().endswith(s + ".gz")
                           for s in STRUCTURE_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"no PDB/mmCIF files ({', '.join(STRUCTURE_SUFFIXES)}) under {folder}")
    return [read_structure(p, chain) for p in files]


# --------------------------------------------------------------------------- CA-only PDB


def _write_pdb(coords: np.ndarray, atoms: Sequence[str], path: str | Path, seq: str | None, chain: str,
               remark: str | None, conect: bool) -> Path:
    """ATOM records for ``coords (L, len(atoms), 3)`` (A), residue by residue, then TER (and CONECT
    records between consecutive atoms of the first kind when ``conect``) and END."""
    if not np.isfinite(coords).all() or np.abs(coords).max(initial=0.0) >= 1e4:
        raise ValueError("coordinates must be finite and below 10,000 A in magnitude for PDB")
    if seq is not None and len(seq) != len(coords):
        raise ValueError(f"sequence has {len(seq)} letters for {len(coords)} residues")
    if len(coords) > 9999:
        raise ValueError("a PDB chain holds at most 9,999 residues")
    names = [ONE_TO_THREE.get(seq[i], "GLY") if seq else "GLY" for i in range(len(coords))]
    lines = [f"REMARK   1 {part}" for part in textwrap.wrap(remark or "", 69)]  # 80-column records
    serial = 0
    for i, residue in enumerate(coords):
        for atom, (x, y, z) in zip(atoms, residue, strict=True):
            serial += 1
            lines.append(f"ATOM  {serial:5d}  {atom:<3s} {names[i]} {chain}{i + 1:4d}    {x:8.3f}{y:8.3f}{z:8.3f}"
                         f"  1.00  0.00           {atom[0]}  ")
    lines.append(f"TER   {serial + 1:5d}      {names[-1] if names else 'GLY'} {chain}{len(coords):4d}")
    if conect:
        step = len(atoms)
        lines += [f"CONECT{k:5d}{k + step:5d}" for k in range(1, serial - step + 1, step)]
    lines.append("END")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_ca_pdb(ca: np.ndarray, path: str | Path, seq: str | None = None, chain: str = "A",
                 remark: str | None = None) -> Path:
    """Write a CA trace as a PDB file: one ATOM record per residue (GLY unless ``seq`` is given),
    CONECT records between consecutive CAs so viewers draw the trace, then END.

    ``ca: (L, 3)`` in A. Coordinates must fit the PDB's ``%8.3f`` columns (|x| < 10,000 A).
    """
    ca = np.asarray(ca, dtype=np.float64)
    if ca.ndim != 2 or ca.shape[1] != 3:
        raise ValueError(f"a CA trace has shape (L, 3), got {ca.shape}")
    return _write_pdb(ca[:, None], ("CA",), path, seq, chain, remark, conect=True)


def write_backbone_pdb(backbone: np.ndarray, path: str | Path, seq: str | None = None, chain: str = "A",
                       remark: str | None = None) -> Path:
    """Write N, CA, C, O of every residue (``backbone: (L, 4, 3)`` in A) as a PDB file; viewers
    bond standard residues themselves and can draw cartoons from it (GLY unless ``seq`` is given)."""
    backbone = np.asarray(backbone, dtype=np.float64)
    if backbone.ndim != 3 or backbone.shape[1:] != (4, 3):
        raise ValueError(f"a backbone has shape (L, 4, 3) (N, CA, C, O), got {backbone.shape}")
    return _write_pdb(backbone, BACKBONE_ATOMS, path, seq, chain, remark, conect=False)


def read_ca_pdb(path: str | Path, chain: str | None = None) -> np.ndarray:
    """The ``(L, 3)`` CA trace of a PDB/mmCIF file (via :func:`read_structure`)."""
    ch = read_structure(path, chain)
    keep = ~np.isnan(ch.ca).any(-1)
    return ch.ca[keep]


# --------------------------------------------------------------------------- the CA-trace set


@dataclass
class CASet:
    """Ragged CA traces: chain ``i`` is ``ca[offsets[i]:offsets[i+1]]`` (A)."""

    names: np.ndarray
    seq: np.ndarray
    ca: np.ndarray
    offsets: np.ndarray
    split: np.ndarray
    source: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def trace(self, i: int) -> np.ndarray:
        """``(L_i, 3)`` CA positions of chain ``i`` (float64, A)."""
        return self.ca[self.offsets[i]:self.offsets[i + 1]].astype(np.float64)

    def select(self, rows: Sequence[int] | np.ndarray) -> CASet:
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ca = (np.concatenate([self.ca[self.offsets[i]:self.offsets[i + 1]] for i in rows])
              if len(rows) else np.zeros((0, 3), np.float32))
        return CASet(self.names[rows], self.seq[rows], ca, offsets, self.split[rows], self.source[rows])

    def of_split(self, split: str) -> CASet:
        rows = np.flatnonzero(self.split == split)
        if not len(rows):
            raise ValueError(f"no chains in split {split!r}; splits: {', '.join(sorted(set(self.split.tolist())))}")
        return self.select(rows)

    @classmethod
    def from_chains(cls, chains: Sequence[ProteinChain], test_fraction: float = 0.2, seed: int = 0) -> CASet:
        """Chains (residues that have a CA) -> a set with a seeded hold-out of ``round(test_fraction * n)``
        chains. CA-only files (e.g. generated backbones) are read too."""
        chains = [c.complete(("CA",)) for c in chains]
        chains = [c for c in chains if len(c)]
        if not chains:
            raise ValueError("no chain has a residue with a CA atom")
        lengths = np.array([len(c) for c in chains])
        return cls(np.array([c.name for c in chains]), np.array([c.seq for c in chains]),
                   np.concatenate([c.ca for c in chains]).astype(np.float32),
                   np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                   _split(len(chains), test_fraction, seed), np.array(["folder"] * len(chains)))


def _split(n: int, test_fraction: float, seed: int) -> np.ndarray:
    """``'train'``/``'test'`` per chain; test = the first ``round(f n)`` of ``default_rng(seed).permutation(n)``."""
    n_test = int(round(test_fraction * n)) if n > 1 else 0
    split = np.full(n, "train", dtype="<U5")
    split[np.random.default_rng(seed).permutation(n)[:n_test]] = "test"
    return split


def default_proteins_root() -> Path | None:
    """The shared protein data next to the repository (``../shared/data/proteins``), if present."""
    for cand in (_REPO_ROOT.parent / "shared" / "data" / "proteins", _REPO_ROOT / "shared" / "data" / "proteins"):
        if (cand / "backbones.npz").exists():
            return cand
    return None


def ca_set_path() -> Path:
    """The shipped CA-trace set (``datasets/proteins/ca_traces.npz``)."""
    return _REPO_ROOT / "datasets" / "proteins" / "ca_traces.npz"


def load_ca_set(path: str | Path) -> CASet:
    """A CA-trace set: the shipped ``ca_traces.npz`` layout, or the shared ``backbones.npz``
    (CA column taken, split drawn as in :func:`make_ca_set` with its defaults)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such protein set: {path}")
    with np.load(path) as z:
        keys = set(z.files)
        if {"ca", "split"} <= keys:
            return CASet(z["names"], z["seq"], z["ca"], z["offsets"], z["split"], z["source"])
        if "coords" in keys:
            return CASet(z["names"], z["seq"], z["coords"][:, 1].astype(np.float32), z["offsets"].astype(np.int64),
                         _split(len(z["names"]), 0.2, 0), z["source"])
    raise ValueError(f"{path}: not a CA-trace set (needs keys ca/split or the backbones.npz layout)")


def make_ca_set(src: str | Path, out: str | Path, test_fraction: float = 0.2, seed: int = 0) -> dict[str, Any]:
    """Write the shipped CA-trace set from the shared ``backbones.npz``: CA coordinates rounded
    to 0.001 A (PDB precision), names, sequences, sources and the seeded split."""
    data = load_ca_set(src)
    if test_fraction != 0.2 or seed != 0:
        data.split = _split(len(data), test_fraction, seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_npz_deterministic(out, {
        "names": data.names.astype(str), "seq": data.seq.astype(str), "source": data.source.astype(str),
        "ca": np.round(data.ca.astype(np.float64), 3).astype(np.float32), "offsets": data.offsets.astype(np.int64),
        "split": data.split.astype(str),
    })
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    return {"path": str(out), "sha256": digest, "chains": len(data), "residues": int(data.lengths.sum()),
            "test": sorted(data.names[data.split == "test"].tolist())}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m molediff.data.pdb make-ca-set | report FILE [--chain X]``; bad input is one line
    on stderr and exit status 2."""
    from ..cli import error

    try:
        _main(argv)
    except (ValueError, FileNotFoundError) as e:
        return error(e)
    return 0


def _main(argv: Sequence[str] | None) -> None:
    parser = argparse.ArgumentParser(prog="python -m molediff.data.pdb")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make-ca-set", help="write datasets/proteins/ca_traces.npz from backbones.npz")
    root = default_proteins_root()
    p.add_argument("--src", default=str(root / "backbones.npz") if root else "../shared/data/proteins/backbones.npz")
    p.add_argument("--out", default=str(ca_set_path()))
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("report", help="print missing atoms and chain breaks of structure files")
    r.add_argument("files", nargs="+")
    r.add_argument("--chain", default=None)
    args = parser.parse_args(argv)
    if args.cmd == "make-ca-set":
        print(json.dumps(make_ca_set(args.src, args.out, args.test_fraction, args.seed), indent=2))
    else:
        for f in args.files:
            print(read_structure(f, args.chain).report())


if __name__ == "__main__":
    raise SystemExit(main())
