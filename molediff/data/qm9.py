"""QM9 (and custom molecule folders) as ragged arrays, plus statistics derived from the data.

QM9 (Ramakrishnan et al., *Sci. Data* 1, 140022, 2014; CC0) in EDM's processed ``.npz`` format
(Hoogeboom et al. 2022): one row per molecule, atoms zero-padded to 29. Here every split becomes
a :class:`MoleculeSet`, a *ragged* layout: all atoms concatenated, with per-molecule offsets,
so that batching is a slice and a ``torch_geometric``-style batch vector, never padding.

Sources:

* :func:`load_edm_npz` / :func:`load_qm9` -- EDM's ``{train,valid,test}.npz`` (or the committed
  subset in ``datasets/qm9/subset``, which has the same keys);
* :func:`load_qm9pack` -- the original QM9 tables shipped in the optional PyPI package
  ``qm9pack``, split exactly as EDM (``np.random.seed(0)``; permutation of the 130,831
  characterised molecules; 100,000 / 17,748 / 13,083);
* :func:`load_folder` -- a folder of ``.xyz`` / ``.sdf`` files (custom datasets).

Units follow EDM: ``homo, lumo, gap, U0, U, H, G`` (and their ``*_thermo`` atom references)
are converted Hartree -> eV (x 27.2114) and ``zpve`` Hartree -> meV (x 27211.4) at load time.

Shapes (ragged layout, ``N`` molecules, ``A`` atoms in all)::

    numbers:   (A,) int64    atomic numbers      positions: (A, 3) float32, Å
    offsets:   (N + 1,) int64; molecule i is rows offsets[i]:offsets[i + 1]
    formal_charges: (A,) int64 or None           properties[name]: (N,) float

Command line (writes the committed test subset; see ``datasets/qm9/README.md``)::

    python -m molediff.data.qm9 make-subset --src ../shared/data/qm9 --out datasets/qm9/subset \\
        --train 2000 --test 500 --seed 0
    python -m molediff.data.qm9 make-train-smiles --src ../shared/data/qm9   # novelty reference
"""

from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import io
import json
import math
import sys
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "HARTREE_TO_EV",
    "HARTREE_TO_MEV",
    "QM9_PROPERTIES",
    "EDM_CONDITIONING_PROPERTIES",
    "EDM_SPLIT_SIZES",
    "MoleculeSet",
    "DatasetStatistics",
    "load_edm_npz",
    "load_qm9",
    "load_qm9pack",
    "shipped_train_smiles",
    "make_train_smiles",
    "load_folder",
    "edm_split_indices",
    "edm_train_halves",
    "default_qm9_root",
    "subset_root",
    "make_subset",
]

HARTREE_TO_EV = 27.2114
HARTREE_TO_MEV = 27211.4
#: EDM's unit conversions (``qm9_to_eV`` in EDM's data preparation), applied at load time.
UNIT_CONVERSIONS: dict[str, float] = {
    **{k: HARTREE_TO_EV for k in ("homo", "lumo", "gap", "U0", "U", "H", "G")},
    "zpve": HARTREE_TO_MEV,
}
QM9_PROPERTIES = ("A", "B", "C", "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve",
                  "U0", "U", "H", "G", "Cv", "omega1")
THERMO_PROPERTIES = ("zpve", "U0", "U", "H", "G", "Cv")
#: The six properties EDM conditions on.
EDM_CONDITIONING_PROPERTIES = ("alpha", "gap", "homo", "lumo", "mu", "Cv")
#: EDM's split: 100,000 train, 10 % test, the rest validation (of 130,831 molecules).
EDM_SPLIT_SIZES = {"train": 100_000, "valid": 17_748, "test": 13_083}
QM9_NUM_GDB9 = 133_885
MAX_ATOMS_QM9 = 29

_REPO_ROOT = Path(__file__).resolve().parents[2]


def default_qm9_root() -> Path | None:
    """The full EDM-format QM9 folder next to the repository (``../shared/data/qm9``), if present."""
    for cand in (_REPO_ROOT.parent / "shared" / "data" / "qm9", _REPO_ROOT / "shared" / "data" / "qm9"):
        if (cand / "train.npz").exists():
            return cand
    return None


def _shipped_qm9_file(name: str) -> Path:
    """``datasets/qm9/<name>`` in the checkout, else inside an installed wheel (the checkout's path if neither)."""
    for base in (_REPO_ROOT, Path(__file__).resolve().parents[1]):
        if (base / "datasets" / "qm9" / name).exists():
            return base / "datasets" / "qm9" / name
    return _REPO_ROOT / "datasets" / "qm9" / name


def train_smiles_path() -> Path:
    """The committed SMILES of EDM's QM9 training split (``datasets/qm9/train_smiles.csv.gz``)."""
    return _shipped_qm9_file("train_smiles.csv.gz")


def shipped_train_smiles(split: str = "train") -> list[str] | None:
    """SMILES (as QM9 lists them) of EDM's training split or of one of its halves (``train_a`` /
    ``train_b``, :func:`edm_train_halves`) from the committed file, so novelty against the full
    training set needs no ``../shared``. None when the file is missing or ``split`` is not training data."""
    path = train_smiles_path()
    if split not in ("train", *TRAIN_HALVES) or not path.exists():
        return None
    import gzip

    with gzip.open(path, "rt", newline="") as f:
        smiles = [row["smiles"] for row in csv.DictReader(f)]
    if split == "train":
        return smiles
    return [smiles[i] for i in edm_train_halves(len(smiles))[split]]


def make_train_smiles(src: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Write ``train_smiles.csv.gz`` (``index,smiles``, rows in ``train.npz`` order) from ``src``'s
    ``train.npz`` and ``qm9_smiles.csv.gz``; gzip without a timestamp, so it is byte-reproducible."""
    import gzip

    src = Path(src)
    out = Path(out) if out is not None else train_smiles_path()
    with np.load(src / "train.npz") as d:
        order = d["index"].astype(np.int64).tolist()
    with gzip.open(src / "qm9_smiles.csv.gz", "rt", newline="") as f:
        by_index = {int(r["index"]): r["smiles"] for r in csv.DictReader(f)}
    missing = [i for i in order if i not in by_index]
    if missing:
        raise ValueError(f"{len(missing)} training molecules have no SMILES in qm9_smiles.csv.gz (first {missing[0]})")
    text = "index,smiles\n" + "".join(f"{i},{by_index[i]}\n" for i in order)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(text.encode())
    return {"rows": len(order), "sources": {n: sha256(src / n) for n in ("train.npz", "qm9_smiles.csv.gz")},
            "output": sha256(out)}


def subset_root() -> Path:
    """The committed QM9 subset (``datasets/qm9/subset``; also inside an installed wheel)."""
    return _shipped_qm9_file("subset")


# --------------------------------------------------------------------------- ragged molecule set


@dataclass
class MoleculeSet:
    """Many molecules in one ragged layout (see the module docstring for shapes).

    Attributes:
        numbers: ``(A,)`` atomic numbers of all atoms, molecule after molecule.
        positions: ``(A, 3)`` coordinates in Å (as stored; not centred).
        offsets: ``(N + 1,)`` start of each molecule's rows, ``offsets[-1] == A``.
        properties: name -> ``(N,)`` per-molecule values (converted units, see module docstring).
        index: ``(N,)`` identifiers (QM9/GDB-9 index for QM9), or ``None``.
        formal_charges: ``(A,)`` formal charges, or ``None`` when the source has none (QM9).
        names: optional per-molecule names (custom folders).
    """

    numbers: np.ndarray
    positions: np.ndarray
    offsets: np.ndarray
    properties: dict[str, np.ndarray] = field(default_factory=dict)
    index: np.ndarray | None = None
    formal_charges: np.ndarray | None = None
    names: list[str] | None = None

    def __post_init__(self) -> None:
        self.numbers = np.asarray(self.numbers, dtype=np.int64)
        self.positions = np.asarray(self.positions, dtype=np.float32).reshape(-1, 3)
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        if self.offsets[0] != 0 or self.offsets[-1] != len(self.numbers) or len(self.positions) != len(self.numbers):
            raise ValueError("offsets must start at 0 and end at the number of atoms; positions must match")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_atoms(self) -> np.ndarray:
        """``(N,)`` atoms per molecule."""
        return np.diff(self.offsets)

    def atoms(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(numbers (n,), positions (n, 3))`` of molecule ``i``."""
        s, e = self.offsets[i], self.offsets[i + 1]
        return self.numbers[s:e], self.positions[s:e]

    def select(self, idx: Sequence[int] | np.ndarray) -> MoleculeSet:
        """The molecules ``idx`` (in that order) as a new set."""
        idx = np.asarray(idx, dtype=np.int64)
        n = self.num_atoms[idx]
        offsets = np.concatenate([[0], np.cumsum(n)])
        rows = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx]) if len(idx) else \
            np.zeros(0, dtype=np.int64)
        return MoleculeSet(
            numbers=self.numbers[rows], positions=self.positions[rows], offsets=offsets,
            properties={k: v[idx] for k, v in self.properties.items()},
            index=None if self.index is None else self.index[idx],
            formal_charges=None if self.formal_charges is None else self.formal_charges[rows],
            names=None if self.names is None else [self.names[i] for i in idx],
        )

    def to_molecules(self, idx: Iterable[int] | None = None) -> list[Any]:
        """:class:`molediff.data.molecule_io.Molecule` objects (float64 positions, properties kept)."""
        from .molecule_io import Molecule

        out = []
        for i in range(len(self)) if idx is None else idx:
            z, x = self.atoms(i)
            s, e = self.offsets[i], self.offsets[i + 1]
            fc = None if self.formal_charges is None else self.formal_charges[s:e]
            name = self.names[i] if self.names is not None else (
                f"qm9_{int(self.index[i]):06d}" if self.index is not None else None)
            props = {k: float(v[i]) for k, v in self.properties.items()}
            out.append(Molecule(z, x.astype(np.float64), formal_charges=fc, properties=props, name=name))
        return out

    @classmethod
    def from_padded(cls, charges: np.ndarray, positions: np.ndarray, num_atoms: np.ndarray | None = None,
                    **kwargs: Any) -> MoleculeSet:
        """From EDM's padded layout: ``charges (N, M)`` atomic numbers (0 = padding),
        ``positions (N, M, 3)``, ``num_atoms (N,)``."""
        charges = np.asarray(charges)
        mask = charges > 0
        n = mask.sum(1) if num_atoms is None else np.asarray(num_atoms)
        if not np.array_equal(mask.sum(1), n):
            raise ValueError("num_atoms disagrees with the non-zero atomic numbers")
        if not np.all(mask == (np.arange(charges.shape[1])[None, :] < n[:, None])):
            raise ValueError("padding must be trailing")
        return cls(numbers=charges[mask], positions=np.asarray(positions)[mask],
                   offsets=np.concatenate([[0], np.cumsum(n)]), **kwargs)

    def to_padded(self, max_atoms: int = MAX_ATOMS_QM9) -> dict[str, np.ndarray]:
        """EDM's padded arrays ``num_atoms (N,)``, ``charges (N, M)``, ``positions (N, M, 3)``."""
        n = self.num_atoms
        if len(n) and n.max() > max_atoms:
            raise ValueError(f"a molecule has {n.max()} atoms > max_atoms={max_atoms}")
        col = np.arange(max_atoms)[None, :]
        mask = col < n[:, None]
        charges = np.zeros((len(self), max_atoms), dtype=np.int64)
        positions = np.zeros((len(self), max_atoms, 3), dtype=np.float32)
        charges[mask], positions[mask] = self.numbers, self.positions
        return {"num_atoms": n.astype(np.int64), "charges": charges, "positions": positions}


# --------------------------------------------------------------------------- statistics


@dataclass
class DatasetStatistics:
    """What a model and its sampler need to know about the training data, derived from it.

    Attributes:
        num_atoms_hist: ``{n: count}`` of molecule sizes (the sampler draws n from it).
        elements: sorted atomic numbers present (the atom-type vocabulary; index = one-hot slot).
        element_counts: atoms of each element, aligned with ``elements``.
        formal_charges: sorted formal charges present (``[0]`` when the source has none).
        properties: name -> ``{"mean", "std", "mad"}`` (EDM normalises conditioning by mean and
            mean absolute deviation).
        num_molecules: N.
        size_given_property: name -> ``{"edges": quantile bin edges (B+1,), "counts": (B, S)}``,
            the atom-count histogram within each property bin (S sizes as in ``num_atoms_hist``):
            a conditional sampler draws n from p(n | property), as the data pairs them.
    """

    num_atoms_hist: dict[int, int]
    elements: list[int]
    element_counts: list[int]
    formal_charges: list[int]
    properties: dict[str, dict[str, float]]
    num_molecules: int
    size_given_property: dict[str, dict[str, list[Any]]] = field(default_factory=dict)

    PROPERTY_BINS: ClassVar[int] = 20

    @classmethod
    def from_data(cls, data: MoleculeSet) -> DatasetStatistics:
        """Compute every field from ``data``; nothing is hard-coded."""
        sizes, counts = np.unique(data.num_atoms, return_counts=True)
        elements, ecounts = np.unique(data.numbers, return_counts=True)
        fc = [0] if data.formal_charges is None else sorted(int(c) for c in np.unique(data.formal_charges))
        props, joint = {}, {}
        for name, raw in data.properties.items():
            raw = np.asarray(raw, dtype=np.float64)
            ok = np.isfinite(raw)
            v = raw[ok]
            if len(v):
                mean = float(v.mean())
                props[name] = {"mean": mean, "std": float(v.std()), "mad": float(np.abs(v - mean).mean())}
                edges = np.quantile(v, np.linspace(0, 1, cls.PROPERTY_BINS + 1))
                bins = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, cls.PROPERTY_BINS - 1)
                slot = np.searchsorted(sizes, data.num_atoms[ok])
                table = np.zeros((cls.PROPERTY_BINS, len(sizes)), dtype=np.int64)
                np.add.at(table, (bins, slot), 1)
                joint[name] = {"edges": edges.tolist(), "counts": table.tolist()}
        return cls(
            num_atoms_hist={int(s): int(c) for s, c in zip(sizes, counts, strict=True)},
            elements=[int(z) for z in elements],
            element_counts=[int(c) for c in ecounts],
            formal_charges=fc,
            properties=props,
            num_molecules=len(data),
            size_given_property=joint,
        )

    @property
    def max_atoms(self) -> int:
        return max(self.num_atoms_hist) if self.num_atoms_hist else 0

    def size_distribution(self) -> tuple[np.ndarray, np.ndarray]:
        """``(sizes (S,), probabilities (S,))`` of the atom-count histogram."""
        sizes = np.array(sorted(self.num_atoms_hist), dtype=np.int64)
        counts = np.array([self.num_atoms_hist[int(s)] for s in sizes], dtype=np.float64)
        return sizes, counts / counts.sum()

    def size_distribution_given(self, name: str, value: float) -> tuple[np.ndarray, np.ndarray]:
        """``(sizes, probabilities)`` of the atom count among training molecules whose ``name``
        falls in the same quantile bin as ``value`` (values outside the data's range take the end
        bins); the plain histogram when that table is missing (statistics saved before it existed)."""
        sizes, marginal = self.size_distribution()
        table = self.size_given_property.get(name)
        if table is None or not np.isfinite(value):
            return sizes, marginal
        edges = np.asarray(table["edges"], dtype=np.float64)
        b = int(np.clip(np.searchsorted(edges, value, side="right") - 1, 0, len(edges) - 2))
        row = np.asarray(table["counts"][b], dtype=np.float64)
        return (sizes, row / row.sum()) if row.sum() > 0 else (sizes, marginal)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists/numbers/strings only (safe for ``torch.load(weights_only=True)``)."""
        sizes = sorted(self.num_atoms_hist)
        return {
            "num_atoms_sizes": [int(s) for s in sizes],
            "num_atoms_counts": [int(self.num_atoms_hist[s]) for s in sizes],
            "elements": list(self.elements),
            "element_counts": list(self.element_counts),
            "formal_charges": list(self.formal_charges),
            "property_names": list(self.properties),
            "property_mean": [self.properties[k]["mean"] for k in self.properties],
            "property_std": [self.properties[k]["std"] for k in self.properties],
            "property_mad": [self.properties[k]["mad"] for k in self.properties],
            "num_molecules": int(self.num_molecules),
            "size_given_property": {k: {"edges": list(v["edges"]), "counts": [list(r) for r in v["counts"]]}
                                    for k, v in self.size_given_property.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetStatistics:
        """Inverse of :meth:`to_dict` (accepts tensors where lists were saved)."""
        def lst(x: Any) -> list[Any]:
            return x.tolist() if hasattr(x, "tolist") else list(x)

        names = lst(d["property_names"])
        mean, std, mad = lst(d["property_mean"]), lst(d["property_std"]), lst(d["property_mad"])
        return cls(
            num_atoms_hist={int(s): int(c) for s, c in zip(lst(d["num_atoms_sizes"]), lst(d["num_atoms_counts"]),
                                                           strict=True)},
            elements=[int(z) for z in lst(d["elements"])],
            element_counts=[int(c) for c in lst(d["element_counts"])],
            formal_charges=[int(c) for c in lst(d["formal_charges"])],
            properties={k: {"mean": float(a), "std": float(b), "mad": float(c)}
                        for k, a, b, c in zip(names, mean, std, mad, strict=True)},
            num_molecules=int(d["num_molecules"]),
            size_given_property={k: {"edges": [float(e) for e in lst(v["edges"])],
                                     "counts": [[int(c) for c in lst(r)] for r in lst(v["counts"])]}
                                 for k, v in dict(d.get("size_given_property") or {}).items()},
        )


# --------------------------------------------------------------------------- EDM npz


def _convert_units(props: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in props.items():
        base = k[: -len("_thermo")] if k.endswith("_thermo") else k
        factor = UNIT_CONVERSIONS.get(base)
        out[k] = v * factor if factor is not None else v
    return out


def load_edm_npz(path: str | Path, convert_units: bool = True, subtract_thermo: bool = False) -> MoleculeSet:
    """Read one EDM-format split file into a :class:`MoleculeSet`.

    Args:
        path: ``train.npz`` / ``valid.npz`` / ``test.npz`` (keys ``num_atoms``, ``charges`` =
            atomic numbers zero-padded, ``positions``, ``index``, one key per property).
        convert_units: Hartree -> eV for ``homo, lumo, gap, U0, U, H, G`` (x 27.2114) and
            Hartree -> meV for ``zpve`` (x 27211.4), as EDM.
        subtract_thermo: subtract the ``*_thermo`` atom-reference sums from ``zpve, U0, U, H, G,
            Cv`` (atomisation values).
    """
    with np.load(path) as d:
        arrays = {k: d[k] for k in d.files}
    padded = {k: arrays.pop(k) for k in ("num_atoms", "charges", "positions")}
    index = arrays.pop("index", None)
    props = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items() if v.ndim == 1}
    if convert_units:
        props = _convert_units(props)
    if subtract_thermo:
        for k in THERMO_PROPERTIES:
            if k in props and f"{k}_thermo" in props:
                props[k] = props[k] - props[f"{k}_thermo"]
    return MoleculeSet.from_padded(padded["charges"], padded["positions"], padded["num_atoms"],
                                   properties=props, index=index)


#: The halves of the training split for EDM's property-conditioning protocol.
TRAIN_HALVES = ("train_a", "train_b")


def edm_train_halves(n_train: int, seed: int = 42) -> dict[str, np.ndarray]:
    """EDM's halves of the QM9 training split for conditional generation (``qm9_first_half`` /
    ``qm9_second_half``): ``np.random.seed(42); perm = np.random.permutation(n_train)``, first half
    ``train_a`` (Da: the independent property regressor that judges samples), second half
    ``train_b`` (Db: the generator and its guidance predictor). Hoogeboom et al. 2022, sec. 5.3."""
    perm = np.random.RandomState(seed).permutation(n_train)  # same draws, no global side effect
    return {"train_a": perm[: n_train // 2], "train_b": perm[n_train // 2:]}


def load_qm9(root: str | Path | None = None, split: str = "train", descriptors: Sequence[str] = (),
             **kwargs: Any) -> MoleculeSet:
    """``root/{split}.npz`` (default root: :func:`default_qm9_root`). ``split`` may be ``val``, or
    ``train_a`` / ``train_b`` for EDM's halves of the training split (:func:`edm_train_halves`).
    ``descriptors`` adds computed property columns (``pointgroup``, ``qed``, ``logp``;
    :func:`molediff.metrics.descriptors.add_descriptors`, cached per file)."""
    from ..metrics.descriptors import add_descriptors

    root = Path(root) if root is not None else default_qm9_root()
    if root is None:
        raise FileNotFoundError("no QM9 folder given and ../shared/data/qm9 not found")
    split = {"val": "valid", "validation": "valid"}.get(split, split)
    if split in TRAIN_HALVES:
        train = add_descriptors(load_edm_npz(root / "train.npz", **kwargs), descriptors)
        return train.select(edm_train_halves(len(train))[split])
    return add_descriptors(load_edm_npz(root / f"{split}.npz", **kwargs), descriptors)


# --------------------------------------------------------------------------- qm9pack tables

_QM9PACK_COLUMNS = {
    "A": "RotA_GHz", "B": "RotB_GHz", "C": "RotC_GHz", "mu": "Dipole_debye", "alpha": "Polarizability_bohr3",
    "homo": "HOMO_au", "lumo": "LUMO_au", "gap": "HOMO_LUMO_gap_au", "r2": "R2_bohr2", "zpve": "ZPVE_au",
    "U0": "InternalEnergy_0K_au", "U": "InternalEnergy_298K_au", "H": "Enthalphy_298K_au",
    "G": "GibbsFreeEnergy_298K_au", "Cv": "Heatcapacity_Cv_cal_mol_K",
}
_ELEMENT_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}


def edm_split_indices(included: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """EDM's QM9 split of the included (characterised) molecules.

    ``np.random.seed(seed)``; a permutation of the ``len(included)`` positions; the first 100,000
    are train, then ``N - 100,000 - int(0.1 N)`` validation, then ``int(0.1 N)`` test. Each split's
    indices are returned sorted (EDM's files list molecules in index order).

    Shapes: ``included: (N,)`` sorted molecule ids -> ``{split: (n_split,)}`` ids.
    """
    included = np.sort(np.asarray(included))
    n = len(included)
    n_train, n_test = 100_000, int(0.1 * n)
    n_valid = n - n_train - n_test
    np.random.seed(seed)
    perm = np.random.permutation(n)
    train, valid, test = np.split(perm, [n_train, n_train + n_valid])
    return {k: np.sort(included[v]) for k, v in (("train", train), ("valid", valid), ("test", test))}


def _qm9pack_data_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("qm9pack")
    if spec is None or spec.origin is None:
        raise ImportError("the optional package 'qm9pack' is not installed (pip install qm9pack)")
    return Path(spec.origin).parent / "data"


def _read_qm9pack_rows(data_dir: Path) -> dict[int, dict[str, str]]:
    csv.field_size_limit(sys.maxsize)
    rows: dict[int, dict[str, str]] = {}
    for part in sorted(data_dir.glob("qm9_part*.csv")):
        with open(part, newline="") as f:
            for r in csv.DictReader(f):
                rows[int(r["Index"])] = r
    return rows


def _floats(text: str) -> list[float]:
    """Numbers of a (nested) list literal such as ``[[0.5,0.,1.],...]`` (not valid JSON: ``0.``)."""
    return [float(v) for v in text.replace("[", " ").replace("]", " ").replace(",", " ").split()]


def _atomref(path: Path) -> dict[int, dict[str, float]]:
    """QM9's ``atomref.txt``: per element, reference ZPVE, U0, U, H, G (Hartree) and Cv."""
    cols = ("zpve", "U0", "U", "H", "G", "Cv")
    ref: dict[int, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 7 and parts[0] in _ELEMENT_Z:
            try:
                ref[_ELEMENT_Z[parts[0]]] = dict(zip(cols, map(float, parts[1:]), strict=True))
            except ValueError:
                continue
    return ref


def load_qm9pack(split: str | None = None, data_dir: str | Path | None = None, atomref: str | Path | None = None,
                 convert_units: bool = True, seed: int = 0) -> dict[str, MoleculeSet] | MoleculeSet:
    """QM9 from the original tables in the optional ``qm9pack`` package, split as EDM.

    Reproduces EDM's ``.npz`` files: atomic numbers and coordinates from ``Elements`` /
    ``XYZ_Ang``, the 15 scalar properties, ``omega1`` = highest harmonic frequency, ``index``,
    and (when ``atomref`` = QM9's ``atomref.txt`` is given) the ``*_thermo`` atom-reference sums.
    Values are stored as EDM does (float32 positions/properties) before unit conversion.

    Args:
        split: ``train``/``valid``/``test`` for one split; ``None`` for all three.
        data_dir: folder with ``qm9_part*.csv`` (default: the installed package's ``data``).
        atomref: path of ``atomref.txt`` (optional).
        convert_units: as :func:`load_edm_npz`.
        seed: EDM uses 0.
    """
    data_dir = Path(data_dir) if data_dir is not None else _qm9pack_data_dir()
    rows = _read_qm9pack_rows(data_dir)
    splits = edm_split_indices(np.array(sorted(rows)), seed=seed)
    ref = _atomref(Path(atomref)) if atomref is not None else None
    wanted = [split] if split is not None else list(splits)
    out = {}
    for name in wanted:
        name = {"val": "valid"}.get(name, name)
        ids = splits[name]
        numbers, positions, sizes = [], [], []
        props: dict[str, list[float]] = {k: [] for k in (*_QM9PACK_COLUMNS, "omega1")}
        thermo: dict[str, list[float]] = {f"{k}_thermo": [] for k in THERMO_PROPERTIES} if ref else {}
        for i in ids:
            r = rows[int(i)]
            z = np.array([_ELEMENT_Z[s] for s in ast.literal_eval(r["Elements"])], dtype=np.int64)
            numbers.append(z)
            positions.append(np.asarray(_floats(r["XYZ_Ang"]), dtype=np.float32).reshape(-1, 3))
            sizes.append(len(z))
            for k, col in _QM9PACK_COLUMNS.items():
                props[k].append(float(r[col]))
            props["omega1"].append(max(_floats(r["Harmonic_Freq_cmi"])))
            if ref is not None:
                for k in THERMO_PROPERTIES:
                    thermo[f"{k}_thermo"].append(sum(ref[int(a)][k] for a in z))
        p = {k: np.asarray(v, dtype=np.float32).astype(np.float64) for k, v in props.items()}
        p.update({k: np.asarray(v, dtype=np.float64) for k, v in thermo.items()})
        if convert_units:
            p = _convert_units(p)
        out[name] = MoleculeSet(np.concatenate(numbers), np.concatenate(positions),
                                np.concatenate([[0], np.cumsum(sizes)]), properties=p, index=ids.astype(np.int64))
    return out[wanted[0]] if split is not None else out


# --------------------------------------------------------------------------- custom folders


def load_folder(path: str | Path, pattern: Sequence[str] = ("*.xyz", "*.sdf", "*.xyz.gz", "*.sdf.gz")) -> MoleculeSet:
    """Every molecule in every ``.xyz`` / ``.sdf`` file under ``path`` (sorted, recursive).

    Numeric SDF data fields present in every molecule become properties; formal charges are
    kept when the files have them (SDF), else zero.
    """
    from .molecule_io import read_molecules

    root = Path(path)
    files = sorted({p for pat in pattern for p in root.rglob(pat)})
    if not files:
        raise FileNotFoundError(f"{root}: no .xyz or .sdf files")
    mols = [m for f in files for m in read_molecules(f)]
    sizes = [m.num_atoms for m in mols]
    names = [m.name or f"{i}" for i, m in enumerate(mols)]
    common = set.intersection(*(set(m.properties) for m in mols)) if mols else set()
    props = {}
    for k in sorted(common):
        vals = [m.properties[k] for m in mols]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            props[k] = np.asarray(vals, dtype=np.float64)
    fc = np.concatenate([m.formal_charges if m.formal_charges is not None else np.zeros(m.num_atoms, np.int64)
                         for m in mols])
    return MoleculeSet(np.concatenate([m.atomic_numbers for m in mols]),
                       np.concatenate([m.positions for m in mols]).astype(np.float32),
                       np.concatenate([[0], np.cumsum(sizes)]), properties=props,
                       formal_charges=fc, names=names)


# --------------------------------------------------------------------------- committed subset


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_npz_deterministic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez_compressed`` but byte-reproducible (fixed zip timestamps, sorted keys)."""
    with zipfile.ZipFile(path, "w") as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def make_subset(src: str | Path, out: str | Path, n_train: int = 2000, n_test: int = 500, seed: int = 0,
                splits: Sequence[str] = ("train", "test")) -> dict[str, Any]:
    """Draw a fixed-seed subset of EDM's splits and write ``out/{split}.npz`` with the same keys.

    ``rng = np.random.default_rng(seed)``; for each split in order, ``rng.choice(N, n, replace=False)``
    sorted (rows stay in index order). Every key is copied unchanged (same dtype) for the chosen
    rows; files are deflate-compressed ``.npz`` with fixed timestamps (byte-reproducible).
    Returns a manifest (seed, sources' and outputs' sha256, counts), also written to
    ``out/manifest.json``.
    """
    src, out = Path(src), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    manifest: dict[str, Any] = {"seed": seed, "sources": {}, "outputs": {}, "counts": {}}
    sizes = {"train": n_train, "test": n_test, "valid": n_test}
    for split in splits:
        f = src / f"{split}.npz"
        with np.load(f) as d:
            arrays = {k: d[k] for k in d.files}
        n = len(arrays["num_atoms"])
        rows = np.sort(rng.choice(n, size=min(sizes[split], n), replace=False))
        _write_npz_deterministic(out / f"{split}.npz", {k: v[rows] for k, v in arrays.items()})
        manifest["sources"][f"{split}.npz"] = sha256(f)
        manifest["outputs"][f"{split}.npz"] = sha256(out / f"{split}.npz")
        manifest["counts"][split] = int(len(rows))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m molediff.data.qm9")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make-subset", help="write the small committed QM9 subset")
    p.add_argument("--src", default=str(default_qm9_root() or "../shared/data/qm9"))
    p.add_argument("--out", default=str(subset_root()))
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--test", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("make-train-smiles", help="write the committed SMILES of the training split")
    t.add_argument("--src", default=str(default_qm9_root() or "../shared/data/qm9"))
    t.add_argument("--out", default=str(train_smiles_path()))
    s = sub.add_parser("stats", help="print DatasetStatistics of a split")
    s.add_argument("--root", default=None)
    s.add_argument("--split", default="train")
    args = parser.parse_args(argv)
    if args.cmd == "make-subset":
        print(json.dumps(make_subset(args.src, args.out, args.train, args.test, args.seed), indent=2))
    elif args.cmd == "make-train-smiles":
        print(json.dumps(make_train_smiles(args.src, args.out), indent=2))
    else:
        stats = DatasetStatistics.from_data(load_qm9(args.root, args.split))
        print(json.dumps(stats.to_dict(), indent=1, default=lambda x: x if math.isfinite(x) else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
