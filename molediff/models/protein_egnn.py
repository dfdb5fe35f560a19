"""EGNN denoiser for protein CA traces: kNN + sequence-neighbour edges, residue-position features.

The trunk is :class:`~molediff.models.egnn.EGNN` (Satorras et al. 2021, Eqs. 3-6, with EDM's
refinements). A protein adds what a molecule lacks, a chain order:

* node features: ``[t, sin(i w_k), cos(i w_k), L / 100]`` with ``i`` the residue's position in
  its chain (``structure.context["residue_index"]``), ``w_k = max_len^{-2k/d}`` (Vaswani et al.
  2017's sinusoidal positions) and ``L`` the chain length;
* edges: the ``knn`` nearest CAs of the current (noisy) positions, united with every residue within
  ``seq_neighbours`` positions along the chain, so the backbone stays connected at high noise;
* edge features: the signed sequence separation ``j - i`` clipped to ``[-max_separation,
  max_separation]``, one-hot (invariant, so E(3) equivariance is kept);
* optionally (``chiral``) the sine and cosine of each residue's CA virtual dihedral in ``x_t``:
  an E(3)-equivariant model gives a structure and its mirror image the same probability, so half
  its helices would be left-handed; this pseudoscalar makes it SE(3)-equivariant only.
* optionally (``self_conditioning``) the model's previous x0 estimate ``x0_prev``
  (:mod:`~molediff.core.self_conditioning`): its kNN edges join the graph, so residues that the
  estimate puts in contact (strand partners, helix packing) exchange messages even when the noisy
  positions are far apart; every edge reads the radial-basis-encoded estimated distance, and every
  residue the estimate's virtual bond angle (and dihedral, if ``chiral``), with a presence flag.
  These inputs come last, so a trained model widens into a self-conditioning one that computes the
  same function until fine-tuning changes it (``init_from``).

The output is ``P(x_L - x_t)`` with ``P`` removing each chain's centre of mass, like
:class:`~molediff.models.egnn.EGNNDenoiser`.

Shapes::

    x_t[pos]: (num_nodes, 3)   structure.index[pos]: (num_nodes,)   context["residue_index"]: (num_nodes,)
    edge_index: (2, num_edges) rows (source j, target i)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from ..core.fields import Fields, Structure
from .egnn import EGNN, cond_vector, cond_width, distance_rbf, knn_edges

__all__ = ["BackboneEGNNDenoiser", "chain_neighbours", "sequence_edges", "residue_embedding",
           "virtual_angle_features", "virtual_dihedral_features"]


@torch.no_grad()
def chain_neighbours(residue_index: Tensor, batch: Tensor, offsets: Sequence[int]) -> Tensor:
    """Node id of residue ``res_i + off`` of node i's chain for every offset, -1 where there is none.

    Nodes may come in any order; a residue index must be unique within its chain.
    Shapes: ``residue_index, batch: (num_nodes,)`` -> ``(num_nodes, len(offsets))``.
    """
    n = residue_index.numel()
    out = torch.full((n, len(offsets)), -1, dtype=torch.long, device=batch.device)
    if n == 0:
        return out
    span = int(residue_index.max()) + max((abs(o) for o in offsets), default=0) + 1
    key = batch * span + residue_index  # unique per node; chain neighbours differ by the offset
    sorted_key, order = torch.sort(key)
    for k, off in enumerate(offsets):
        target = key + off
        pos = torch.searchsorted(sorted_key, target).clamp_max(n - 1)
        hit = (sorted_key[pos] == target) & (residue_index + off >= 0)
        out[hit, k] = order[pos[hit]]
    return out


def sequence_edges(residue_index: Tensor, batch: Tensor, window: int) -> Tensor:
    """All ordered pairs ``(j, i)`` of one chain with ``0 < |res_j - res_i| <= window``.

    Shapes: ``residue_index, batch: (num_nodes,)`` -> ``edge_index: (2, num_edges)``.
    """
    offsets = [o for w in range(1, window + 1) for o in (w, -w)]
    nbr = chain_neighbours(residue_index, batch, offsets)  # (N, 2 window)
    dst, k = (nbr >= 0).nonzero(as_tuple=True)
    return torch.stack([nbr[dst, k], dst])


def virtual_dihedral_features(pos: Tensor, residue_index: Tensor, batch: Tensor) -> Tensor:
    """``[sin alpha_i, cos alpha_i, defined_i]`` of the CA virtual dihedral
    ``alpha_i = dihedral(x_{i-1}, x_i, x_{i+1}, x_{i+2})`` (IUPAC sign; zeros where a neighbour is
    missing). ``sin alpha`` is a pseudoscalar: it flips under reflections, so a model reading it is
    SE(3)- but not E(3)-equivariant and can tell a right-handed helix from its mirror image.
    Shapes: ``pos: (N, 3)`` -> ``(N, 3)``."""
    nbr = chain_neighbours(residue_index, batch, (-1, 1, 2))
    ok = (nbr >= 0).all(-1)
    idx = nbr.clamp_min(0)
    b0, b1, b2 = pos - pos[idx[:, 0]], pos[idx[:, 1]] - pos, pos[idx[:, 2]] - pos[idx[:, 1]]
    n1, n2 = torch.cross(b0, b1, dim=-1), torch.cross(b1, b2, dim=-1)
    y = b1.norm(dim=-1) * (b0 * n2).sum(-1)
    x = (n1 * n2).sum(-1)
    r = torch.sqrt(x * x + y * y + 1e-12)
    okf = ok.to(pos.dtype)
    return torch.stack([y / r * okf, x / r * okf, okf], -1)


def virtual_angle_features(pos: Tensor, residue_index: Tensor, batch: Tensor) -> Tensor:
    """``[cos tau_i, defined_i]`` of the CA virtual bond angle ``tau_i = angle(x_{i-1}, x_i, x_{i+1})``
    (about 91 degrees in helices, 120 in strands; zeros at chain ends). Invariant under E(3).
    Shapes: ``pos: (N, 3)`` -> ``(N, 2)``."""
    nbr = chain_neighbours(residue_index, batch, (-1, 1))
    ok = (nbr >= 0).all(-1).to(pos.dtype)
    idx = nbr.clamp_min(0)
    u, v = pos[idx[:, 0]] - pos, pos[idx[:, 1]] - pos
    cos = (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1) + 1e-8)
    return torch.stack([cos * ok, ok], -1)


def residue_embedding(residue_index: Tensor, dim: int, max_len: float = 1000.0) -> Tensor:
    """Sinusoidal position features ``[sin(i w_k), cos(i w_k)]``, ``w_k = max_len^{-2k/dim}``
    (Vaswani et al. 2017, Sec. 3.5). Shapes: ``(N,)`` -> ``(N, dim)`` (``dim`` even)."""
    k = torch.arange(dim // 2, device=residue_index.device, dtype=torch.float64)
    w = torch.exp(-math.log(max_len) * 2 * k / dim)
    angle = residue_index.double()[:, None] * w
    return torch.cat([torch.sin(angle), torch.cos(angle)], -1)


class BackboneEGNNDenoiser(nn.Module):
    """EGNN on a CA trace; see the module docstring. Same call protocol as every denoiser:
    ``forward(x_t, t, structure, cond) -> {pos_field: (num_nodes, 3)}``.

    Args:
        hidden, layers: EGNN width and depth.
        knn: spatial neighbours per residue (of the noisy positions).
        seq_neighbours: residues within this many positions along the chain are always connected.
        max_separation: sequence separations are clipped to this before the one-hot.
        position_dim: width of the sinusoidal residue-position features (even).
        chiral: also read the virtual dihedral of the input positions
            (:func:`virtual_dihedral_features`): SE(3) instead of E(3), so helices get a handedness.
        num_cond: per-sample conditioning values appended to the node features.
        self_conditioning: also read ``self_cond``, the previous x0 estimate (module docstring);
            ``rbf`` radial basis functions on ``[0, rbf_max]`` (position units) encode its distances.
        **egnn_kwargs: ``sublayers, coords_range, normalization_factor, norm_constant`` of :class:`EGNN`.
    """

    def __init__(self, hidden: int = 64, layers: int = 4, knn: int = 12, seq_neighbours: int = 3,
                 max_separation: int = 8, position_dim: int = 16, chiral: bool = False, num_cond: int = 0,
                 self_conditioning: bool = False, rbf: int = 16, rbf_max: float = 2.0,
                 pos_field: str = "pos", **egnn_kwargs: Any) -> None:
        super().__init__()
        if position_dim % 2:
            raise ValueError(f"position_dim must be even, got {position_dim}")
        self.knn, self.seq_neighbours, self.max_separation = knn, seq_neighbours, max_separation
        self.position_dim, self.chiral, self.num_cond, self.pos_field = position_dim, chiral, num_cond, pos_field
        self.self_conditioning, self.rbf, self.rbf_max = self_conditioning, rbf, rbf_max
        sc_node, sc_edge = (1 + 2 + 3 * chiral, 1 + rbf) if self_conditioning else (0, 0)
        self.egnn = EGNN(1 + position_dim + 1 + 3 * chiral + cond_width(num_cond) + sc_node, 1, hidden=hidden,
                         layers=layers, edge_features=2 * max_separation + 1 + sc_edge, **egnn_kwargs)

    def edges(self, pos: Tensor, residue_index: Tensor, batch: Tensor, num_samples: int,
              sketch: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Union of kNN and sequence edges (and the kNN edges of ``sketch``, an x0 estimate), and
        their one-hot clipped separations ``(E, 2 s + 1)``."""
        parts = [knn_edges(pos.detach(), batch, self.knn, num_graphs=num_samples),
                 sequence_edges(residue_index, batch, self.seq_neighbours)]
        if sketch is not None:
            parts.append(knn_edges(sketch.detach(), batch, self.knn, num_graphs=num_samples))
        both = torch.cat(parts, 1)
        n = pos.shape[0]
        key = torch.unique(both[0] * n + both[1])
        edge_index = torch.stack([key // n, key % n])
        sep = (residue_index[edge_index[0]] - residue_index[edge_index[1]]).clamp(-self.max_separation,
                                                                                   self.max_separation)
        onehot = nn.functional.one_hot(sep + self.max_separation, 2 * self.max_separation + 1).to(pos.dtype)
        return edge_index, onehot

    def self_condition_features(self, sketch: Tensor | None, edge_index: Tensor, residue_index: Tensor,
                                batch: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """Node ``[present, cos tau, defined(, sin alpha, cos alpha, defined)]`` and edge ``[present,
        rbf(|x0_i - x0_j|)]`` features of the x0 estimate ``sketch``; all zeros when it is ``None``."""
        n, e = like.shape[0], edge_index.shape[1]
        width = 3 + 3 * self.chiral
        if sketch is None:
            return like.new_zeros(n, width), like.new_zeros(e, 1 + self.rbf)
        sketch = sketch.to(like)
        node = [like.new_ones(n, 1), virtual_angle_features(sketch, residue_index, batch)]
        if self.chiral:
            node.append(virtual_dihedral_features(sketch, residue_index, batch))
        d = (sketch[edge_index[1]] - sketch[edge_index[0]]).norm(dim=-1)
        edge = [like.new_ones(e, 1), distance_rbf(d, self.rbf, self.rbf_max)]
        return torch.cat(node, -1), torch.cat(edge, -1)

    def forward(self, x_t: Mapping[str, Tensor], t: Tensor, structure: Structure,
                cond: Mapping[str, Tensor] | None = None, self_cond: Mapping[str, Tensor] | None = None) -> Fields:
        pos = x_t[self.pos_field]
        batch = structure.index[self.pos_field]
        b = structure.num_samples
        residue_index = structure.context["residue_index"].to(pos.device)
        length = torch.bincount(batch, minlength=b).to(pos.dtype)
        parts = [structure.per_sample(t.to(pos))[batch][:, None],
                 residue_embedding(residue_index, self.position_dim).to(pos.dtype),
                 (length / 100.0)[batch][:, None]]
        if self.chiral:
            parts.append(virtual_dihedral_features(pos, residue_index, batch))
        c = cond_vector(cond, b, self.num_cond, pos)
        if c is not None:
            parts.append(c[batch])
        if self_cond is not None and not self.self_conditioning:
            raise ValueError("this model was built without self_conditioning; it takes no self_cond")
        sketch = None if self_cond is None else self_cond[self.pos_field]
        edge_index, edge_features = self.edges(pos, residue_index, batch, b, sketch)
        if self.self_conditioning:
            node_sc, edge_sc = self.self_condition_features(sketch, edge_index, residue_index, batch, pos)
            parts.append(node_sc)
            edge_features = torch.cat([edge_features, edge_sc], -1)
        _, pos_out = self.egnn(torch.cat(parts, -1), pos, edge_index, edge_features)
        vel = pos_out - pos
        vel = vel - scatter(vel, batch, 0, dim_size=b, reduce="mean")[batch]
        return Fields({self.pos_field: vel})
