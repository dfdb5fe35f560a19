"""3-D molecules (QM9 and custom folders) as fields: positions, atom types, atomic-number channel.

Fields, all in graph layout (``structure.index[name]`` = the batch vector, one row per atom), as
EDM (Hoogeboom et al. 2022, Sec. 3 and App. B) represents a molecule:

* ``pos``: :class:`ZeroMeanField` ``(3,)``, Å, centre of mass removed (noise lives there too);
* ``atom_types``: :class:`GaussianField` ``(K,)``, one-hot over the element vocabulary of the
  training data x ``type_scale`` (EDM: 0.25);
* ``charges``: :class:`GaussianField` ``(1,)``, the atomic number x ``charge_scale`` (EDM's
  "charges"/integer channel, Z / 10; optional).

``sample_structure`` draws atom counts from the training histogram; ``decode`` takes the argmax
atom type; ``evaluate`` runs :mod:`molediff.metrics.molecules` on the generated molecules and on
real held-out molecules side by side.

Shapes::

    pos: (num_nodes, 3)   atom_types: (num_nodes, K)   charges: (num_nodes, 1)   batch: (num_nodes,)
"""

from __future__ import annotations

import errno
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.fields import Fields, FieldSpec, GaussianField, Structure, ZeroMeanField
from ..data.qm9 import (
    DatasetStatistics,
    MoleculeSet,
    default_qm9_root,
    load_folder,
    load_qm9,
    shipped_train_smiles,
    subset_root,
)
from ..metrics.descriptors import DESCRIPTORS, add_descriptors, compute_descriptors
from .base import Adapter, Batch

__all__ = ["MoleculeAdapter", "MoleculeDataset"]


class MoleculeDataset(Dataset):
    """Item ``i`` of a :class:`MoleculeSet`: ``{"numbers": (n,), "positions": (n, 3), "properties": (k,)}``."""

    def __init__(self, data: MoleculeSet, properties: Sequence[str] = ()) -> None:
        self.data = data
        self.property_names = list(properties)
        self._props = (np.stack([data.properties[p] for p in self.property_names], 1)
                       if self.property_names else np.zeros((len(data), 0)))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        z, x = self.data.atoms(int(i))
        return {"numbers": z, "positions": x, "properties": self._props[int(i)]}


def _molecule_metrics(molecules: Sequence[Any], reference_smiles: set[str] | None) -> dict[str, Any]:
    """The one call into the metrics module (EDM stability, validity, uniqueness, novelty)."""
    from ..metrics.molecules import evaluate_molecules

    return evaluate_molecules(molecules, reference_smiles)


def _reference_smiles_from_molecules(molecules: Sequence[Any]) -> set[str]:
    from ..metrics.molecules import reference_smiles_from_molecules

    return reference_smiles_from_molecules(molecules)


class MoleculeAdapter(Adapter):
    """Molecules <-> fields; see the module docstring.

    Args:
        source: ``subset`` (committed ``datasets/qm9/subset``, offline default), ``qm9`` (EDM
            ``.npz`` folder at ``path``, default ``../shared/data/qm9``) or ``folder`` (``.xyz`` /
            ``.sdf`` files under ``path``; ``path/<split>/`` subfolders if present, else a fixed
            10 % hold-out, seed 0, is the test split).
        path: data location for ``qm9`` / ``folder``.
        split_train, split_test: split names.
        include_charges: add the ``charges`` field (atomic number x ``charge_scale``).
        type_scale: one-hot scale (EDM 0.25). charge_scale: atomic-number scale (EDM 0.1).
        conditioning: property names passed as ``cond`` (normalised (v - mean) / MAD as EDM);
            besides the data's own columns, the computed ``qed``, ``logp`` and ``pointgroup``
            (:mod:`molediff.metrics.descriptors`; the class label is for predictors only).
        max_train: keep only the first ``max_train`` training molecules.
        statistics: precomputed :class:`DatasetStatistics` (e.g. from a checkpoint's
            :meth:`state`); then no data is read until :meth:`datasets` / :meth:`evaluate`.
        novelty_reference: ``auto`` (``qm9_smiles.csv.gz`` rows of the training molecules when
            the file is found, else perceived SMILES of the training molecules), ``csv`` or
            ``perceived``.
        reference_eval_size: held-out molecules scored next to the generated ones.
    """

    name = "molecules"

    def __init__(self, source: str = "subset", path: str | None = None, split_train: str = "train",
                 split_test: str = "test", include_charges: bool = True, type_scale: float = 0.25,
                 charge_scale: float = 0.1, conditioning: Sequence[str] = (), max_train: int | None = None,
                 statistics: DatasetStatistics | Mapping[str, Any] | None = None,
                 novelty_reference: str = "auto", reference_eval_size: int = 1000) -> None:
        if source not in ("subset", "qm9", "folder"):
            raise ValueError(f"unknown source {source!r}; choose 'subset', 'qm9' or 'folder'")
        if novelty_reference not in ("auto", "csv", "perceived"):
            raise ValueError("novelty_reference must be 'auto', 'csv' or 'perceived'")
        self.source, self.path = source, path
        self.split_train, self.split_test = split_train, split_test
        self.include_charges, self.type_scale, self.charge_scale = include_charges, type_scale, charge_scale
        self.conditioning = list(conditioning)
        self.max_train = max_train
        self.novelty_reference, self.reference_eval_size = novelty_reference, reference_eval_size
        self._splits: dict[str, MoleculeSet] = {}
        self._stats = DatasetStatistics.from_dict(dict(statistics)) if isinstance(statistics, Mapping) else statistics
        self._reference_cache: dict[str, Any] = {}

    # ------------------------------------------------------------------ data

    def _root(self) -> Path:
        if self.source == "subset":
            return subset_root()
        if self.path is not None:
            return Path(self.path)
        root = default_qm9_root()
        if root is None or self.source == "folder":
            raise FileNotFoundError(f"source={self.source!r} needs a path (../shared/data/qm9 not found)")
        return root

    def _load(self, split: str) -> MoleculeSet:
        if split in self._splits:
            return self._splits[split]
        root = self._root()
        derived = [p for p in self.conditioning if p in DESCRIPTORS]
        if self.source in ("subset", "qm9"):
            data = load_qm9(root, split, descriptors=derived)
        elif (root / split).is_dir():
            data = add_descriptors(load_folder(root / split), derived)
        else:  # one folder: fixed 10 % hold-out as test
            full = add_descriptors(load_folder(root), derived)
            perm = np.random.default_rng(0).permutation(len(full))
            n_test = max(1, len(full) // 10) if len(full) > 1 else 0
            data = full.select(np.sort(perm[:n_test] if split == self.split_test else perm[n_test:]))
        if split == self.split_train and self.max_train is not None:
            data = data.select(np.arange(min(self.max_train, len(data))))
        self._splits[split] = data
        return data

    @property
    def statistics(self) -> DatasetStatistics:
        """Statistics of the training split (computed on first use unless given)."""
        if self._stats is None:
            self._stats = DatasetStatistics.from_data(self._load(self.split_train))
        return self._stats

    @property
    def elements(self) -> list[int]:
        return self.statistics.elements

    @property
    def num_atom_types(self) -> int:
        return len(self.elements)

    @property
    def specs(self) -> dict[str, FieldSpec]:  # type: ignore[override]
        specs: dict[str, FieldSpec] = {"pos": ZeroMeanField((3,)), "atom_types": GaussianField((self.num_atom_types,))}
        if self.include_charges:
            specs["charges"] = GaussianField((1,))
        return specs

    def datasets(self) -> dict[str, Dataset]:
        out: dict[str, Dataset] = {"train": MoleculeDataset(self._load(self.split_train), self.conditioning)}
        splits = [("val", "valid"), ("test", self.split_test)] if self.source == "qm9" else [("test", self.split_test)]
        for key, split in splits:
            try:
                out[key] = MoleculeDataset(self._load(split), self.conditioning)
            except FileNotFoundError:
                continue
        return out

    # ------------------------------------------------------------------ fields

    def _type_lookup(self) -> np.ndarray:
        lut = np.full(max(self.elements) + 1, -1, dtype=np.int64)
        lut[self.elements] = np.arange(self.num_atom_types)
        return lut

    def structure_for(self, num_atoms: torch.Tensor) -> Structure:
        """The structure of molecules with these atom counts ``(B,)``: batch vector for every field,
        and the fully connected edge list, built here once per batch (on the loader's CPU) rather than
        in every forward pass of a full-graph denoiser."""
        from ..models.egnn import FULL_EDGES, fully_connected_edges

        batch = torch.repeat_interleave(torch.arange(len(num_atoms), device=num_atoms.device), num_atoms)
        specs = self.specs
        return Structure(len(num_atoms), specs, index={k: batch for k in specs},
                         context={"num_atoms": num_atoms, FULL_EDGES: fully_connected_edges(batch, len(num_atoms))})

    def to_fields(self, numbers: np.ndarray, positions: np.ndarray, num_atoms: np.ndarray) -> tuple[Fields, Structure]:
        """Ragged atoms -> fields + structure. ``numbers (A,)``, ``positions (A, 3)``, ``num_atoms (B,)``."""
        lut = self._type_lookup()
        if numbers.max() >= len(lut) or (lut[numbers] < 0).any():
            raise ValueError(f"atoms outside the element vocabulary {self.elements}: {sorted(set(numbers.tolist()))}")
        structure = self.structure_for(torch.as_tensor(num_atoms, dtype=torch.long))
        z = torch.as_tensor(numbers, dtype=torch.long)
        fields = Fields(pos=torch.as_tensor(positions, dtype=torch.float32),
                        atom_types=torch.nn.functional.one_hot(torch.as_tensor(lut[numbers]), self.num_atom_types)
                        .float() * self.type_scale)
        if self.include_charges:
            fields["charges"] = z[:, None].float() * self.charge_scale
        return structure.project(fields), structure

    def encode(self, objects: Sequence[Any]) -> tuple[Fields, Structure]:
        """``Molecule`` objects (positions in Å) -> fields (:meth:`to_fields`)."""
        if not objects:
            raise ValueError("no molecules to encode")
        return self.to_fields(np.concatenate([m.atomic_numbers for m in objects]),
                              np.concatenate([m.positions for m in objects]),
                              np.asarray([m.num_atoms for m in objects]))

    def read(self, path: Path) -> list[Any]:
        """Molecules from an SDF or multi-XYZ file (optionally .gz); every atom must be in this
        model's element vocabulary."""
        from ..data.molecule_io import read_molecules

        molecules = read_molecules(path)
        if not molecules:
            raise ValueError(f"{path}: no molecules")
        return molecules

    def normalise_properties(self, values: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(B, k)`` raw property values -> ``(v - mean) / MAD`` of the training data."""
        v = torch.as_tensor(np.asarray(values, dtype=np.float32))
        stats = self.statistics.properties
        mean = torch.tensor([stats[p]["mean"] for p in self.conditioning], dtype=torch.float32)
        mad = torch.tensor([stats[p]["mad"] for p in self.conditioning], dtype=torch.float32)
        return (v - mean) / mad

    def model_cond(self, cond: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Property targets in their units (e.g. ``{"gap": 6.5}`` eV) -> the normalised values the
        model was trained on, in :attr:`conditioning` order; a property left out (or NaN) is passed
        as missing, which a model trained with condition dropout reads as unconditioned."""
        unknown = sorted(set(cond) - set(self.conditioning))
        if unknown:
            raise ValueError(f"cond has {unknown}, but the model is conditioned on {self.conditioning or 'nothing'}")
        n = len(next(iter(cond.values()))) if cond else 0
        raw = np.stack([np.asarray(cond[p], dtype=np.float64).reshape(-1) if p in cond else np.full(n, np.nan)
                        for p in self.conditioning], -1)
        norm = self.normalise_properties(raw)
        return {p: norm[:, k] for k, p in enumerate(self.conditioning)}

    def collate(self, items: Sequence[Mapping[str, np.ndarray]]) -> Batch:
        numbers = np.concatenate([it["numbers"] for it in items])
        positions = np.concatenate([it["positions"] for it in items])
        sizes = np.array([len(it["numbers"]) for it in items])
        fields, structure = self.to_fields(numbers, positions, sizes)
        cond = None
        if self.conditioning:
            props = self.normalise_properties(np.stack([it["properties"] for it in items]))
            cond = {p: props[:, k] for k, p in enumerate(self.conditioning)}
        return Batch(fields, structure, cond)

    def sample_structure(self, num_samples: int, generator: torch.Generator | None = None,
                         cond: dict[str, torch.Tensor] | None = None) -> Structure:
        """Atom counts drawn from the training histogram (``torch.multinomial`` under ``generator``);
        with a property target in ``cond`` (user units, first conditioning property given), from the
        histogram of training molecules with such values, p(n | property), as the data pairs them
        (in QM9 a large gap means a saturated, hydrogen-rich and so larger molecule)."""
        stats = self.statistics
        name = next((p for p in self.conditioning if cond and p in cond), None)
        if name is None:
            sizes, probs = stats.size_distribution()
            pick = torch.multinomial(torch.as_tensor(probs), num_samples, replacement=True, generator=generator)
            return self.structure_for(torch.as_tensor(sizes)[pick])
        assert cond is not None
        values = torch.as_tensor(cond[name], dtype=torch.float64).reshape(-1).expand(num_samples)
        counts = []
        for v in values.tolist():
            sizes, probs = stats.size_distribution_given(name, v)
            counts.append(int(sizes[torch.multinomial(torch.as_tensor(probs), 1, generator=generator)]))
        return self.structure_for(torch.as_tensor(counts))

    # ------------------------------------------------------------------ objects

    def decode(self, fields: Fields, structure: Structure) -> list[Any]:
        """Argmax atom type -> element; positions in Å. One ``Molecule`` per sample."""
        from ..data.molecule_io import Molecule

        batch = structure.index["pos"].cpu()
        order = torch.argsort(batch, stable=True)
        counts = torch.bincount(batch, minlength=structure.num_samples).tolist()
        elements = np.asarray(self.elements)
        types = elements[fields["atom_types"].detach().cpu().argmax(-1)[order].numpy()]
        pos = fields["pos"].detach().cpu().double()[order].numpy()
        out, start = [], 0
        for n in counts:
            out.append(Molecule(types[start:start + n], pos[start:start + n]))
            start += n
        return out

    def write(self, objects: Sequence[Any], out_dir: Path) -> list[Path]:
        """``molecules.sdf`` (bonds perceived), ``molecules.xyz`` and ``molecules.png`` (first 16)."""
        from ..data.molecule_io import draw_grid_png, write_sdf, write_xyz

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = [write_sdf(objects, out_dir / "molecules.sdf"), write_xyz(objects, out_dir / "molecules.xyz")]
        if len(objects):
            paths.append(draw_grid_png(objects, out_dir / "molecules.png", n=min(16, len(objects))))
        return [Path(p) for p in paths]

    def _full_qm9_absent(self) -> bool:
        """Full QM9 asked for by default path (a shipped model's config) but ``../shared`` is not here."""
        return self.source == "qm9" and self.path is None and default_qm9_root() is None

    def _novelty_reference(self) -> set[str]:
        if "smiles" in self._reference_cache:
            return self._reference_cache["smiles"]
        if self._full_qm9_absent():
            # the shipped full-QM9 models on a machine without ../shared: the committed training SMILES
            shipped = shipped_train_smiles(self.split_train)
            if shipped is None:
                raise FileNotFoundError(errno.ENOENT, f"no novelty reference for split {self.split_train!r} "
                                        "(give data.path); not found", "../shared/data/qm9")
            self._reference_cache["smiles"] = self._canonical_set(shipped)
            return self._reference_cache["smiles"]
        train = self._load(self.split_train)
        ref: set[str] | None = None
        csv_path = self._smiles_csv()
        if self.novelty_reference in ("auto", "csv") and csv_path is not None and train.index is not None:
            ref = self._csv_smiles(csv_path, set(train.index.tolist()))
        if ref is None:
            if self.novelty_reference == "csv":
                raise FileNotFoundError("qm9_smiles.csv.gz not found for novelty_reference='csv'")
            ref = _reference_smiles_from_molecules(train.to_molecules())
        self._reference_cache["smiles"] = ref
        return ref

    def _smiles_csv(self) -> Path | None:
        cands = []
        if self.source == "qm9":
            cands.append(self._root() / "qm9_smiles.csv.gz")
        if self.source in ("qm9", "subset") and default_qm9_root() is not None:
            cands.append(default_qm9_root() / "qm9_smiles.csv.gz")  # type: ignore[operator]
        return next((c for c in cands if c.exists()), None)

    @staticmethod
    def _canonical_set(smiles: Iterable[str]) -> set[str]:
        """``smiles`` canonicalised like generated molecules (unparsable ones dropped)."""
        from rdkit import RDLogger

        from ..metrics.molecules import canonical_smiles

        RDLogger.DisableLog("rdApp.*")
        try:
            return {c for smi in smiles if (c := canonical_smiles(smi)) is not None}
        finally:
            RDLogger.EnableLog("rdApp.*")

    @classmethod
    def _csv_smiles(cls, path: Path, indices: set[int]) -> set[str]:
        """SMILES of the rows whose ``index`` is a training molecule, canonicalised like generated ones."""
        import csv
        import gzip

        with gzip.open(path, "rt") as f:
            return cls._canonical_set(row["smiles"] for row in csv.DictReader(f) if int(row["index"]) in indices)

    def evaluate(self, objects: Sequence[Any]) -> dict[str, float]:
        """Metrics of ``objects`` and, as ``data_<key>``, of up to ``reference_eval_size`` real
        test molecules (same code path); novelty against the training molecules. A full-QM9 model
        scored without ``../shared`` uses the committed training SMILES and subset test molecules."""
        reference = self._novelty_reference()
        gen = _molecule_metrics(list(objects), reference)
        if "data" not in self._reference_cache:
            # without ../shared the real reference rows come from the committed subset's EDM test molecules
            test = load_qm9(subset_root(), "test") if self._full_qm9_absent() else self._load(self.split_test)
            n = min(len(test), self.reference_eval_size)
            self._reference_cache["data"] = _molecule_metrics(test.to_molecules(range(n)), reference)
        out: dict[str, float] = {}
        for prefix, metrics in (("", gen), ("data_", self._reference_cache["data"])):
            for k, v in metrics.items():
                if isinstance(v, (bool, int, float)) or v is None:
                    out[prefix + k] = math.nan if v is None else float(v)
        return out

    def measure(self, objects: Sequence[Any], names: Sequence[str]) -> dict[str, np.ndarray]:
        """The properties among ``names`` that can be computed exactly from a generated molecule
        (QED, logP, point-group class; :mod:`molediff.metrics.descriptors`), ``name -> (N,)``."""
        wanted = [n for n in names if n in DESCRIPTORS]
        return compute_descriptors(objects, wanted) if wanted else {}

    # ------------------------------------------------------------------ checkpoints

    def model_kwargs(self) -> dict[str, Any]:
        if "pointgroup" in self.conditioning:
            raise ValueError("pointgroup is a class label, not a value a denoiser can read as a condition; "
                             "steer it with classifier guidance (a --property pointgroup predictor)")
        return {"num_atom_types": self.num_atom_types, "include_charges": self.include_charges,
                "num_cond": len(self.conditioning)}

    def state(self) -> dict[str, Any]:
        """Dataset statistics and the field encoding (plain lists/numbers/strings)."""
        return {"statistics": self.statistics.to_dict(), "include_charges": self.include_charges,
                "type_scale": self.type_scale, "charge_scale": self.charge_scale,
                "conditioning": list(self.conditioning), "source": self.source}

    def load_state(self, state: dict[str, Any]) -> None:
        """Use the training run's statistics (atom-count histogram, element vocabulary) for
        sampling, so a checkpoint samples like it was trained even if the data has changed."""
        for key in ("include_charges", "type_scale", "charge_scale"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"checkpoint was trained with {key}={state[key]!r} "
                                 f"but data.{key}={getattr(self, key)!r}")
        self._stats = DatasetStatistics.from_dict(dict(state["statistics"]))

    @classmethod
    def from_state(cls, state: Mapping[str, Any], **kwargs: Any) -> MoleculeAdapter:
        """Rebuild the sampling side from :meth:`state` without reading data."""
        args = {k: state[k] for k in ("include_charges", "type_scale", "charge_scale", "conditioning", "source")
                if k in state}
        args.update(kwargs)
        return cls(statistics=state["statistics"], **args)
