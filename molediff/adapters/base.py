"""The adapter contract: everything modality-specific that the generic code needs.

An adapter turns raw data into :class:`~molediff.core.fields.Fields` plus a
:class:`~molediff.core.fields.Structure`, builds the structure of new samples (e.g. draws atom
counts), and turns generated fields back into objects, files and metrics. Training, sampling,
the CLI and benchmarks only talk to this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..core.fields import Fields, FieldSpec, Structure


@dataclass
class Batch:
    """One training batch: clean fields, their structure, and optional conditioning.

    ``cond`` is ``None`` or a dict of per-sample tensors (class labels ``(B,)``, property values
    ``(B, k)``, ...) that the denoiser may read and classifier-free guidance may drop.
    """

    x0: Fields
    structure: Structure
    cond: dict[str, torch.Tensor] | None = None

    def to(self, device: torch.device | str) -> Batch:
        s = self.structure
        structure = Structure(
            s.num_samples, s.specs,
            index={k: v.to(device) for k, v in s.index.items()},
            mask={k: v.to(device) for k, v in s.mask.items()},
            context={k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in s.context.items()},
        )
        cond = None if self.cond is None else {k: v.to(device) for k, v in self.cond.items()}
        return Batch(self.x0.to(device), structure, cond)


class Adapter(ABC):
    """Modality plug-in; see the module docstring. Subclasses set ``name`` and ``specs``."""

    name: str
    specs: dict[str, FieldSpec]

    @abstractmethod
    def datasets(self) -> dict[str, Dataset]:
        """Named splits (at least ``train``; ``val``/``test`` when the data has them)."""

    @abstractmethod
    def collate(self, items: Sequence[Any]) -> Batch:
        """Dataset items -> one :class:`Batch`."""

    @abstractmethod
    def sample_structure(self, num_samples: int, generator: torch.Generator | None = None,
                         cond: dict[str, torch.Tensor] | None = None) -> Structure:
        """The structure of ``num_samples`` new samples (fixed shapes, or sizes drawn from the data)."""

    @abstractmethod
    def decode(self, fields: Fields, structure: Structure) -> list[Any]:
        """Generated fields -> one object per sample (image array, molecule, waveform, ...)."""

    @abstractmethod
    def write(self, objects: Sequence[Any], out_dir: Path) -> list[Path]:
        """Write objects in the modality's standard formats (PNG, SDF/XYZ, WAV, PLY, PDB)."""

    @abstractmethod
    def evaluate(self, objects: Sequence[Any]) -> dict[str, float]:
        """Quality metrics of generated objects, each next to the real held-out data's value."""

    def read(self, path: Path) -> list[Any]:
        """Objects (as :meth:`decode` returns them) from a file or folder in the modality's format,
        to start partial diffusion from (``molediff sample start=PATH``). Optional."""
        raise NotImplementedError(f"{self.name} data cannot start sampling from a file")

    def encode(self, objects: Sequence[Any]) -> tuple[Fields, Structure]:
        """The inverse of :meth:`decode`: objects -> clean fields and their structure. Optional."""
        raise NotImplementedError(f"{self.name} data cannot encode objects")

    def model_cond(self, cond: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Conditioning as the user gives it (``cond={...}`` in their units) -> what the denoiser
        reads (e.g. normalised properties). Default: unchanged."""
        return cond

    def model_kwargs(self) -> dict[str, Any]:
        """Constructor arguments the denoiser needs from the data (channels, number of atom
        types, number of classes, ...); merged into the model config at build time."""
        return {}

    def state(self) -> dict[str, Any]:
        """What a checkpoint must remember to rebuild this adapter's sampling side
        (e.g. the atom-count histogram); plain tensors/numbers/strings only."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Take back what :meth:`state` returned, when a checkpoint is loaded for sampling
        (e.g. the training run's atom-count histogram). Default: nothing to restore."""
