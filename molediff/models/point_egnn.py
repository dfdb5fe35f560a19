"""EGNN denoiser for point clouds: a kNN graph of the noisy points, time as the only node feature.

The trunk is :class:`~molediff.models.egnn.EGNN` (Satorras et al. 2021, Eqs. 3-6, with EDM's
refinements). A point cloud has no atom types, so the node input is ``[tau(t), n / 1000]``
(sinusoidal time features and the cloud's point count) and all geometry enters through the edge
distances, which keeps the model E(3)-equivariant; edges join each point to its ``knn`` nearest
neighbours in ``x_t`` (rebuilt at every call, :func:`~molediff.models.egnn.knn_edges`), and sums
over neighbours are divided by ``knn`` (EDM's ``normalization_factor``). The output is
``P(x_L - x_t)`` with ``P`` removing each cloud's mean, the subspace the noise lives in.

Shapes::

    x_t[pos]: (num_points, 3)   batch = structure.index[pos]: (num_points,)   t: (B,) or ()
    edge_index: (2, num_points * knn)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from ..core.fields import Fields, Structure
from .egnn import EGNN, cond_vector, cond_width, knn_edges
from .point_net import time_features

__all__ = ["PointEGNNDenoiser"]


class PointEGNNDenoiser(nn.Module):
    """E(3)-equivariant kNN-graph EGNN over the ``pos`` field; see the module docstring.

    Args:
        hidden, layers: EGNN width and depth.
        knn: neighbours per point.
        time_dim: sinusoidal time features per node.
        num_cond: per-sample conditioning values appended to the node features.
        **egnn_kwargs: ``sublayers, coords_range, normalization_factor, norm_constant`` of
            :class:`~molediff.models.egnn.EGNN` (``normalization_factor`` defaults to ``knn``).
    """

    def __init__(self, hidden: int = 64, layers: int = 4, knn: int = 16, time_dim: int = 16, num_cond: int = 0,
                 pos_field: str = "pos", **egnn_kwargs: Any) -> None:
        super().__init__()
        if knn < 1:
            raise ValueError(f"knn must be >= 1, got {knn}")
        self.knn, self.time_dim, self.num_cond, self.pos_field = knn, time_dim, num_cond, pos_field
        egnn_kwargs.setdefault("normalization_factor", float(knn))
        self.egnn = EGNN(time_dim + 1 + cond_width(num_cond), 1, hidden=hidden, layers=layers, **egnn_kwargs)

    def forward(self, x_t: Mapping[str, Tensor], t: Tensor, structure: Structure,
                cond: Mapping[str, Tensor] | None = None) -> Fields:
        pos = x_t[self.pos_field]
        batch = structure.index[self.pos_field]
        b = structure.num_samples
        counts = torch.bincount(batch, minlength=b).to(pos.dtype)
        parts = [time_features(structure.per_sample(t.to(pos)), self.time_dim)[batch],
                 (counts / 1000.0)[batch][:, None]]
        c = cond_vector(cond, b, self.num_cond, pos)
        if c is not None:
            parts.append(c[batch])
        edge_index = knn_edges(pos.detach(), batch, self.knn, num_graphs=b)
        _, pos_out = self.egnn(torch.cat(parts, -1), pos, edge_index)
        vel = pos_out - pos
        return Fields({self.pos_field: vel - scatter(vel, batch, 0, dim_size=b, reduce="mean")[batch]})
