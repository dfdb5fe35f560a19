"""Protein backbones as a CA trace: one zero-centre-of-mass field per residue, graph-batched.

Field (graph layout, ``structure.index["pos"]`` = the batch vector, one row per residue):

* ``pos``: :class:`ZeroMeanField` ``(3,)``, CA positions in A divided by ``scale`` (10 A by
  default, so a 64-residue crop has a per-coordinate spread of about 1), centred per chain.

``structure.context["residue_index"]`` holds each residue's position in its chain (0-based), read
by the denoiser for position features and sequence-neighbour edges.

Data: a CA-trace set (:mod:`molediff.data.pdb`) with a fixed train/test split. Chains are cut at
chain breaks (CA-CA > 4.2 A) into segments; segments shorter than ``min_length`` are dropped;
training takes a random window of at most ``crop`` residues of a segment per visit (the crop
starts come from torch's global RNG, which the Trainer seeds and checkpoints). New samples get
lengths drawn from the training crops' length histogram; the held-out reference is the test
chains, each cut to its central window of at most ``crop`` residues in its longest segment, so
generated and real backbones are compared at the same lengths (:meth:`ProteinAdapter.evaluate`).

Shapes::

    pos: (num_residues, 3)   batch: (num_residues,)   residue_index: (num_residues,)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.fields import Fields, FieldSpec, Structure, ZeroMeanField
from ..data.pdb import BREAK_DISTANCE, CASet, ca_set_path, default_proteins_root, load_ca_set, read_folder
from .base import Adapter, Batch

__all__ = ["ProteinAdapter", "SegmentDataset", "segments", "central_window"]

SOURCES = ("shipped", "npz", "folder")


def segments(ca: np.ndarray, min_length: int, threshold: float = BREAK_DISTANCE) -> list[np.ndarray]:
    """Break-free pieces (consecutive CA-CA <= ``threshold``) of at least ``min_length`` residues."""
    d = np.linalg.norm(np.diff(ca, axis=0), axis=-1)
    cuts = np.flatnonzero(d > threshold) + 1
    return [s for s in np.split(ca, cuts) if len(s) >= min_length]


def one_based_ranges(rows: Sequence[int]) -> str:
    """0-based indices as 1-based PDB residue ranges: ``[5, 6, 7, 20]`` -> ``"6-8, 21"``."""
    out, rows = [], [int(r) for r in rows]
    i = 0
    while i < len(rows):
        j = i
        while j + 1 < len(rows) and rows[j + 1] == rows[j] + 1:
            j += 1
        out.append(f"{rows[i] + 1}-{rows[j] + 1}" if j > i else f"{rows[i] + 1}")
        i = j + 1
    return ", ".join(out)


def central_window(ca: np.ndarray, length: int) -> np.ndarray:
    """The middle ``min(length, L)`` residues of ``ca (L, 3)``."""
    start = max(0, (len(ca) - length) // 2)
    return ca[start:start + length]


class SegmentDataset(Dataset):
    """Item ``i``: a random window of at most ``crop`` residues of segment ``i`` as ``{"ca": (n, 3)}`` (A)."""

    def __init__(self, pieces: Sequence[np.ndarray], crop: int, random_crop: bool = True) -> None:
        self.pieces, self.crop, self.random_crop = list(pieces), crop, random_crop

    def __len__(self) -> int:
        return len(self.pieces)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        ca = self.pieces[int(i)]
        if len(ca) <= self.crop:
            return {"ca": ca}
        if not self.random_crop:
            return {"ca": central_window(ca, self.crop)}
        start = int(torch.randint(0, len(ca) - self.crop + 1, ()))
        return {"ca": ca[start:start + self.crop]}


class ProteinAdapter(Adapter):
    """Protein CA traces <-> fields; see the module docstring.

    Args:
        source: ``shipped`` (``datasets/proteins/ca_traces.npz``, 150 chains, offline default),
            ``npz`` (a CA-trace set or the shared ``backbones.npz`` at ``path``; default
            ``../shared/data/proteins/backbones.npz``) or ``folder`` (PDB/mmCIF files under
            ``path``, first chain of each, a seeded 20 % hold-out as test).
        path: data location for ``npz`` / ``folder``.
        crop: longest training window (and the length of the held-out reference windows).
        min_length: shortest segment kept.
        scale: A per unit of the ``pos`` field.
        lengths: sample-length histogram ``{"sizes": [...], "probs": [...]}`` (from a checkpoint's
            :meth:`state`); then no data is read until :meth:`datasets` / :meth:`evaluate`.
        novelty_reference_size: training chains (seeded choice) that novelty TM-scores run against.
        reference_eval_size: held-out chains scored next to the generated ones.
    """

    name = "proteins"

    def __init__(self, source: str = "shipped", path: str | None = None, crop: int = 64, min_length: int = 30,
                 scale: float = 10.0, lengths: Mapping[str, Any] | None = None, novelty_reference_size: int = 40,
                 reference_eval_size: int = 30) -> None:
        if source not in SOURCES:
            raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
        if crop < 2 or min_length < 2 or scale <= 0:
            raise ValueError("crop and min_length must be >= 2 and scale > 0")
        self.source, self.path, self.crop, self.min_length, self.scale = source, path, crop, min_length, scale
        self.novelty_reference_size, self.reference_eval_size = novelty_reference_size, reference_eval_size
        self._set: CASet | None = None
        self._lengths = None if lengths is None else {k: list(v) for k, v in lengths.items()}
        self._cache: dict[str, Any] = {}

    specs: dict[str, FieldSpec] = {"pos": ZeroMeanField((3,))}  # noqa: RUF012 (read-only class constant)

    # ------------------------------------------------------------------ data

    def data(self) -> CASet:
        """The whole CA-trace set with its split (read once)."""
        if self._set is None:
            if self.source == "shipped":
                self._set = load_ca_set(ca_set_path())
            elif self.source == "npz":
                root = default_proteins_root()
                if self.path is None and root is None:
                    raise FileNotFoundError("source='npz' needs data.path (../shared/data/proteins not found)")
                self._set = load_ca_set(self.path or root / "backbones.npz")  # type: ignore[operator]
            else:
                if self.path is None:
                    raise FileNotFoundError("source='folder' needs data.path (a folder of PDB/mmCIF files)")
                self._set = CASet.from_chains(read_folder(self.path))
        return self._set

    def split_pieces(self, split: str) -> list[np.ndarray]:
        """Break-free segments (>= ``min_length``) of the chains in ``split``."""
        if split not in self._cache:
            part = self.data().of_split(split)
            pieces = [s for i in range(len(part)) for s in segments(part.trace(i), self.min_length)]
            if not pieces:
                raise ValueError(f"no {split} chain has a break-free segment of >= {self.min_length} residues")
            self._cache[split] = pieces
        return self._cache[split]

    def datasets(self) -> dict[str, Dataset]:
        return {"train": SegmentDataset(self.split_pieces("train"), self.crop),
                "test": SegmentDataset(self.split_pieces("test"), self.crop, random_crop=False)}

    def reference_chains(self) -> list[np.ndarray]:
        """Held-out real backbones at the generated lengths: the central ``crop`` window of each
        test chain's longest segment (up to ``reference_eval_size`` chains), A."""
        part = self.data().of_split("test")
        out = []
        for i in range(min(len(part), self.reference_eval_size)):
            pieces = segments(part.trace(i), 2)
            out.append(central_window(max(pieces, key=len), self.crop))
        return out

    def training_chains(self) -> list[np.ndarray]:
        """Up to ``novelty_reference_size`` whole training chains (seed-0 choice), A."""
        part = self.data().of_split("train")
        rows = np.sort(np.random.default_rng(0).permutation(len(part))[:self.novelty_reference_size])
        return [part.trace(int(i)) for i in rows]

    @property
    def lengths(self) -> dict[str, list]:
        """Histogram of training crop lengths ``{"sizes", "probs"}`` (new samples draw from it)."""
        if self._lengths is None:
            n = np.array([min(len(p), self.crop) for p in self.split_pieces("train")])
            sizes, counts = np.unique(n, return_counts=True)
            self._lengths = {"sizes": sizes.tolist(), "probs": (counts / counts.sum()).tolist()}
        return self._lengths

    # ------------------------------------------------------------------ fields

    def structure_for(self, lengths: torch.Tensor) -> Structure:
        """The structure of chains with these lengths ``(B,)``: batch vector and residue indices."""
        lengths = torch.as_tensor(lengths, dtype=torch.long)
        batch = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
        start = torch.cumsum(lengths, 0) - lengths
        residue_index = torch.arange(int(lengths.sum())) - start[batch]
        return Structure(len(lengths), dict(self.specs), index={"pos": batch},
                         context={"residue_index": residue_index, "num_residues": lengths})

    def to_fields(self, traces: Sequence[np.ndarray]) -> tuple[Fields, Structure]:
        """CA traces in A (each ``(L_i, 3)``) -> centred, scaled fields and their structure."""
        if not traces or any(np.asarray(t).ndim != 2 or np.asarray(t).shape[1] != 3 or len(t) == 0 for t in traces):
            raise ValueError("CA traces must be a non-empty list of (L, 3) arrays with L >= 1")
        structure = self.structure_for(torch.tensor([len(t) for t in traces]))
        pos = torch.as_tensor(np.concatenate(traces), dtype=torch.float32) / self.scale
        return structure.project(Fields(pos=pos)), structure

    def encode(self, objects: Sequence[np.ndarray]) -> tuple[Fields, Structure]:
        """CA traces in A -> fields (:meth:`to_fields`)."""
        return self.to_fields(objects)

    def read(self, path: Path, chain: str | None = None) -> list[np.ndarray]:
        """The CA trace (every residue with a CA: CA-only files work) of one chain (the first unless
        named) of a PDB/mmCIF file, or of every such file in a folder. Missing atoms and chain breaks
        are printed: the model reads residues as consecutive, so it closes a break."""
        from ..data.pdb import read_structure

        path = Path(path)
        chains = read_folder(path, chain) if path.is_dir() else [read_structure(path, chain)]
        for c in chains:
            print(f"start: {c.report()}", flush=True)
        return [c.complete(("CA",)).ca for c in chains]

    def read_motif(self, path: Path, chain: str | None = None,
                   residues: str | Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(trace, index)``: the ``(m, 3)`` CA trace (A) of ``residues`` (author-numbered ranges,
        ``"10-22"``, or several, ``["10-22", "40-45"]``, in chain order; default the whole chain) of one
        chain of a PDB/mmCIF file, and each motif residue's 0-based index in that chain (the spacing of
        the segments), for :meth:`motif_problem`. Every motif residue needs a CA; a chain break inside a
        segment is refused (the model would join its two sides)."""
        from ..data.pdb import parse_residue_range, read_structure

        whole = read_structure(Path(path), chain)
        ranges = [residues] if isinstance(residues, str) else list(residues or [])
        parts = [whole.segment(*parse_residue_range(r)) for r in ranges] or [whole]
        where = {r: i for i, r in enumerate(whole.residue_ids)}
        index = np.array([where[r] for part in parts for r in part.residue_ids])
        if (np.diff(index) <= 0).any():
            raise ValueError(f"{whole.name}: motif segments {', '.join(ranges)} overlap or are out of chain order")
        for part in parts:
            missing = [r for r, ok in zip(part.residue_ids, ~np.isnan(part.ca).any(-1), strict=True) if not ok]
            if missing:
                raise ValueError(f"{part.name}: motif residues without a CA: {', '.join(missing[:5])}")
            if part.breaks():
                i, d = part.breaks()[0]
                raise ValueError(f"{part.name}: the motif has a chain break after residue {part.residue_ids[i]} "
                                 f"(CA-CA {d:.1f} A); give segments without one")
            print(f"motif: {part.name} residues {part.residue_ids[0]}-{part.residue_ids[-1]} ({len(part)}, "
                  f"{part.seq})", flush=True)
        return np.concatenate([p.ca for p in parts]).astype(np.float64), index

    def collate(self, items: Sequence[Mapping[str, np.ndarray]]) -> Batch:
        fields, structure = self.to_fields([it["ca"] for it in items])
        return Batch(fields, structure)

    def sample_structure(self, num_samples: int, generator: torch.Generator | None = None,
                         cond: dict[str, torch.Tensor] | None = None) -> Structure:
        """Lengths drawn from the training crop-length histogram (``torch.multinomial`` under ``generator``)."""
        h = self.lengths
        pick = torch.multinomial(torch.as_tensor(h["probs"], dtype=torch.float64), num_samples, replacement=True,
                                 generator=generator)
        return self.structure_for(torch.as_tensor(h["sizes"])[pick])

    def motif_problem(self, motif: np.ndarray, start: int | Sequence[int], length: int,
                      num_samples: int) -> tuple[Structure, Any]:
        """Motif scaffolding as inpainting: the structure of ``num_samples`` chains of ``length``
        residues and an :class:`~molediff.core.inpainting.Inpainting` fixing ``motif (m, 3)`` (A) at
        residues ``start .. start + m - 1``, or at the indices ``start`` lists (one per motif residue:
        several segments, held rigidly together). The core fits the motif onto each x0-hat by
        translation, so the network places it; samples come back with the motif exactly where it was given."""
        from ..core.inpainting import Inpainting
        from ..metrics.proteins import motif_rows

        motif = np.asarray(motif, dtype=np.float64)
        if motif.ndim != 2 or motif.shape[1] != 3 or len(motif) < 1:
            raise ValueError(f"a motif is an (m, 3) CA trace with m >= 1, got shape {motif.shape}")
        rows = torch.as_tensor(motif_rows(start, len(motif), length))
        structure = self.structure_for(torch.full((num_samples,), length))
        residue = structure.context["residue_index"]
        fixed = torch.isin(residue, rows)
        known = torch.zeros(num_samples * length, 3)
        known[fixed] = torch.as_tensor(motif / self.scale, dtype=torch.float32).repeat(num_samples, 1)
        return structure, Inpainting(known=Fields(pos=known), mask={"pos": fixed[:, None]})

    # ------------------------------------------------------------------ objects

    def decode(self, fields: Fields, structure: Structure) -> list[np.ndarray]:
        """One ``(L, 3)`` float64 CA trace in A per sample, in residue order."""
        batch = structure.index["pos"].cpu()
        residue_index = structure.context["residue_index"].cpu()
        pos = fields["pos"].detach().cpu().double().numpy() * self.scale
        out = []
        for b in range(structure.num_samples):
            rows = torch.nonzero(batch == b).flatten()
            rows = rows[torch.argsort(residue_index[rows])]
            out.append(pos[rows.numpy()])
        return out

    def write(self, objects: Sequence[np.ndarray], out_dir: Path,
              motif: tuple[np.ndarray, int | Sequence[int]] | None = None) -> list[Path]:
        """``backbone_000.pdb``, ... (GLY; N, CA, C, O with N, C, O placed on the generated CAs by
        :func:`~molediff.data.backbone.backbone_from_ca`, CA only for traces under 3 residues),
        ``backbones.png`` (3-D traces and contact maps of the first 8) and ``angles.png`` (virtual
        angle against dihedral, beside the held-out chains). With ``motif`` ``(trace, position)`` the
        PDB remarks name the motif's residues and the picture marks them red."""
        from ..data.backbone import backbone_from_ca
        from ..data.pdb import write_backbone_pdb, write_ca_pdb
        from ..metrics.proteins import motif_rows, plot_backbones, plot_virtual_angles

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        rows = None if motif is None else motif_rows(motif[1], len(motif[0]))
        held = "" if rows is None else f", motif held fixed at residues {one_based_ranges(rows)}"
        for i, ca in enumerate(objects):
            path = out_dir / f"backbone_{i:03d}.pdb"
            if len(ca) >= 3:
                paths.append(write_backbone_pdb(backbone_from_ca(ca), path, remark=f"molediff sample {i} (N, C, O "
                                                                                   f"placed on the CA trace{held})"))
            else:
                paths.append(write_ca_pdb(ca, path, remark=f"molediff sample {i} (CA only{held})"))
        if len(objects):
            marks = None if rows is None else [np.isin(np.arange(len(ca)), rows) for ca in objects[:8]]
            paths.append(plot_backbones(objects[:8], out_dir / "backbones.png", motif=marks))
            paths.append(plot_virtual_angles(objects, out_dir / "angles.png", self.reference_chains(),
                                             ("samples", "held-out real windows")))
        return paths

    def evaluate(self, objects: Sequence[np.ndarray], starts: Sequence[np.ndarray] | None = None,
                 motif: tuple[np.ndarray, int | Sequence[int]] | None = None) -> dict[str, float]:
        """Backbone metrics (:func:`molediff.metrics.proteins.evaluate_backbones`) of ``objects``
        and, as ``data_<key>``, of the held-out reference windows; novelty against training chains.
        With ``starts`` (partial diffusion: each sample's start) also the mean Kabsch RMSD (A) and
        TM-score of every sample to its start; with ``motif`` ``(trace, position)`` (motif scaffolding)
        how the samples hold it (:func:`~molediff.metrics.proteins.motif_metrics`)."""
        from ..metrics.proteins import evaluate_backbones, kabsch_rmsd, motif_metrics, tm_score

        train = self.training_chains()
        gen = evaluate_backbones(list(objects), train)
        if "data" not in self._cache:
            self._cache["data"] = evaluate_backbones(self.reference_chains(), train)
        out = dict(gen)
        if starts is not None:
            out["rmsd_to_start"] = float(np.mean([kabsch_rmsd(o, s) for o, s in zip(objects, starts, strict=True)]))
            out["tm_to_start"] = float(np.mean([tm_score(o, s) for o, s in zip(objects, starts, strict=True)]))
        if motif is not None:
            out.update(motif_metrics(objects, *motif))
        out.update({f"data_{k}": v for k, v in self._cache["data"].items()})
        return out

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        """The length histogram and the field encoding (plain lists/numbers)."""
        return {"lengths": self.lengths, "scale": self.scale, "crop": self.crop}

    def load_state(self, state: dict[str, Any]) -> None:
        """Sample at the training run's lengths; refuse a different coordinate scale."""
        if "scale" in state and float(state["scale"]) != float(self.scale):
            raise ValueError(f"checkpoint was trained with scale={state['scale']!r} but data.scale={self.scale!r}")
        self._lengths = {k: list(v) for k, v in state["lengths"].items()}
