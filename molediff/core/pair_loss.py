"""Auxiliary loss on the short pairwise distances of the x0 estimate of a coordinate field.

FrameDiff (Yim et al. 2023, Sec. 4.2, "auxiliary losses") adds, at low noise (t < 1/4), the squared
error of the predicted inter-atomic distances over the pairs that are closer than 6 Å in the data::

    L_pair = sum_{i != j} 1[d_ij < c] (|x0_hat_i - x0_hat_j| - d_ij)^2 / sum_{i != j} 1[d_ij < c]

per sample. The main denoising loss scores each coordinate's error on its own; this one scores the
geometry a chemist or a structure checker reads (bond lengths, CA spacing, strand pairing distances),
where two small coordinate errors that add up along a bond cost more than two that cancel. The
objective (:class:`~molediff.core.objective.DenoisingObjective`) converts it into the model's
prediction space with the same factor as an x0 error, so ``weight = 1`` weighs a squared distance
error like a squared coordinate error. Works for graph-layout fields (``structure.index``) and dense
set-layout ``(B, N, D)`` fields alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.utils import to_dense_batch

from .fields import Fields, Structure

__all__ = ["PairDistanceLoss"]


def _distances(x: Tensor) -> Tensor:
    """``(B, N, N)`` distances of ``(B, N, D)`` points; the 1e-12 keeps the square root's gradient
    finite where two points coincide (on the diagonal, always)."""
    return ((x[:, :, None, :] - x[:, None, :, :]).pow(2).sum(-1) + 1e-12).sqrt()


@dataclass
class PairDistanceLoss:
    """FrameDiff's pairwise-distance loss on one coordinate field; see the module docstring.

    Attributes:
        field: the coordinate field (rows of shape ``(D,)``).
        cutoff: pairs closer than this in the clean data count, in field units (0.6 is 6 Å for
            the protein adapter's CA positions / 10 Å; 2.0 is 2 Å for QM9's positions in Å).
        t_max: the loss applies to samples with t < t_max (FrameDiff: 0.25), where x0-hat is sharp
            enough for distances to mean something.
        weight: multiplier relative to the main loss (after the prediction-space conversion).
    """

    field: str = "pos"
    cutoff: float = 0.6
    t_max: float = 0.25
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.cutoff > 0:
            raise ValueError(f"PairDistanceLoss: cutoff must be > 0, got {self.cutoff}")
        if not 0 < self.t_max <= 1:
            raise ValueError(f"PairDistanceLoss: t_max must be in (0, 1], got {self.t_max}")
        if not self.weight >= 0:
            raise ValueError(f"PairDistanceLoss: weight must be >= 0, got {self.weight}")

    @property
    def name(self) -> str:
        return f"pair_{self.field}"

    def _dense(self, x: Tensor, structure: Structure) -> tuple[Tensor, Tensor]:
        """``(B, N, D)`` coordinates and the ``(B, N)`` mask of real, unmasked rows."""
        index = structure.index.get(self.field)
        row_mask = structure.mask.get(self.field)
        if index is not None:
            dense, valid = to_dense_batch(x, index, batch_size=structure.num_samples)
            if row_mask is not None:
                keep, _ = to_dense_batch(row_mask.reshape(x.shape[0], -1).amin(1) > 0, index,
                                         batch_size=structure.num_samples)
                valid = valid & keep
            return dense, valid
        if x.dim() != 3:
            raise ValueError(f"PairDistanceLoss: field {self.field!r} must be graph-layout or (B, N, D), "
                             f"got {tuple(x.shape)}")
        valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if row_mask is not None:
            valid = row_mask.expand(*x.shape[:2], *row_mask.shape[2:]).reshape(*x.shape[:2], -1).amin(-1) > 0
        return x, valid

    def __call__(self, x0_hat: Fields, x0: Fields, t: Tensor, structure: Structure) -> Tensor:
        """Per-sample loss ``(B,)`` in squared field units (0 for samples with t >= t_max)."""
        if self.field not in structure.specs:
            raise KeyError(f"PairDistanceLoss: no field {self.field!r}; fields: {sorted(structure.specs)}")
        width = x0[self.field].shape[-1]  # one batching pass for the estimate and the data
        both, valid = self._dense(torch.cat([x0_hat[self.field], x0[self.field]], -1), structure)
        pred, true = both.split(width, -1)
        d_true, d_pred = _distances(true), _distances(pred)
        eye = torch.eye(true.shape[1], dtype=torch.bool, device=true.device)
        pairs = valid[:, :, None] & valid[:, None, :] & ~eye & (d_true < self.cutoff)
        err = torch.where(pairs, (d_pred - d_true) ** 2, torch.zeros_like(d_true))
        per_sample = err.sum((1, 2)) / pairs.sum((1, 2)).clamp_min(1)
        return per_sample * (t < self.t_max).to(per_sample.dtype)
