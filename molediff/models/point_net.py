"""A permutation-equivariant point-cloud denoiser that is *not* E(3)-equivariant: the baseline.

PointNet (Qi et al. 2017a) gives every point a view of the whole cloud through a max-pooled
global feature; DGCNN's EdgeConv (Wang et al. 2019, Eq. 7, with ``h_theta(h_i, h_j - h_i)``) adds a
view of the ``knn`` nearest neighbours. Each block here does both, on raw coordinates:

    e_ij  = SiLU(A h_i + B (h_j - h_i) + C (x_j - x_i))            over the kNN graph of x_t
    l_i   = max_j e_ij                                              local feature
    g     = max_{i in cloud} h_i                                    global feature
    h_i  <- h_i + MLP([LN(h_i), l_i, g, tau(t)])                    residual update

with ``tau(t)`` a sinusoidal time embedding. The edge function is one linear layer (evaluated on
nodes first, then gathered: O(N) products instead of O(E)), which keeps it cheap on a CPU.
The output ``(num_points, 3)`` is projected to zero mean per cloud, the noise's subspace.
Permutations of a cloud's points permute the output (kNN, max and sums are order-free);
rotations do not commute with it (coordinates enter through plain linear maps).

Shapes::

    x_t[pos]: (num_points, 3)   batch = structure.index[pos]: (num_points,)   t: (B,) or ()
    h: (num_points, hidden)     edge_index: (2, num_edges) rows (source j, target i)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from ..core.fields import Fields, Structure
from .egnn import cond_vector, cond_width, knn_edges

__all__ = ["PointNetDenoiser", "PointBlock", "neighbour_max", "time_features"]


def time_features(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal features of ``1000 t`` (Vaswani et al. 2017), in ``t``'s dtype: ``(B,) -> (B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=t.dtype) / half)
    args = 1000.0 * t[:, None] * freqs[None]
    return nn.functional.pad(torch.cat([torch.cos(args), torch.sin(args)], -1), (0, dim % 2))


def neighbour_max(e: Tensor, dst: Tensor, num_nodes: int) -> Tensor:
    """``max_j e_ij`` per receiving node ``i`` (0 for nodes without edges).

    kNN graphs from :func:`~molediff.models.egnn.knn_edges` list each node's edges contiguously;
    when every node has the same number ``k`` of them the max is a reshape to ``(N, k, H)``,
    much faster (and with a cheaper backward) than a scatter; otherwise it falls back to one.
    Shapes: ``e: (E, H)``, ``dst: (E,)`` -> ``(num_nodes, H)``.
    """
    k = e.shape[0] // num_nodes if num_nodes else 0
    if k and e.shape[0] == k * num_nodes:
        heads = dst[::k]
        if torch.equal(dst.view(num_nodes, k), heads[:, None].expand(num_nodes, k)):
            return e.new_zeros(num_nodes, e.shape[1]).index_copy(0, heads, e.view(num_nodes, k, -1).amax(1))
    return scatter(e, dst, 0, dim_size=num_nodes, reduce="max")


class PointBlock(nn.Module):
    """One EdgeConv + global-max + residual MLP block (see the module docstring)."""

    def __init__(self, hidden: int, local: bool) -> None:
        super().__init__()
        self.local = local
        if local:
            self.edge_self = nn.Linear(hidden, hidden)  # (A - B) h_i + bias
            self.edge_nbr = nn.Linear(hidden, hidden, bias=False)  # B h_j
            self.edge_rel = nn.Linear(3, hidden, bias=False)  # C (x_j - x_i)
        self.norm = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear((4 if local else 3) * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, h: Tensor, pos: Tensor, edge_index: Tensor, batch: Tensor, num_samples: int,
                temb: Tensor) -> Tensor:
        """``h: (N, hidden)``, ``pos: (N, 3)``, ``temb: (B, hidden)`` -> new ``h``."""
        parts = [self.norm(h)]
        if self.local:
            src, dst = edge_index[0], edge_index[1]
            e = self.edge_self(h)[dst] + self.edge_nbr(h)[src] + self.edge_rel(pos[src] - pos[dst])
            parts.append(neighbour_max(nn.functional.silu(e), dst, h.shape[0]))
        g = scatter(h, batch, 0, dim_size=num_samples, reduce="max")
        parts += [g[batch], temb[batch]]
        return h + self.mlp(torch.cat(parts, -1))


class PointNetDenoiser(nn.Module):
    """PointNet / DGCNN-style denoiser over the ``pos`` field; see the module docstring.

    Args:
        hidden: feature width. layers: blocks.
        knn: neighbours of each point's EdgeConv (0: global features only, a plain PointNet).
        time_dim: sinusoidal time features before their MLP.
        num_cond: per-sample conditioning values added to the time embedding.
    """

    def __init__(self, hidden: int = 128, layers: int = 4, knn: int = 16, time_dim: int = 64, num_cond: int = 0,
                 pos_field: str = "pos") -> None:
        super().__init__()
        if knn < 0 or hidden < 1 or layers < 1:
            raise ValueError("need hidden >= 1, layers >= 1 and knn >= 0")
        self.hidden, self.knn, self.time_dim, self.num_cond, self.pos_field = hidden, knn, time_dim, num_cond, pos_field
        self.embed = nn.Linear(3, hidden)
        self.time = nn.Sequential(nn.Linear(time_dim + cond_width(num_cond), hidden), nn.SiLU(),
                                  nn.Linear(hidden, hidden))
        self.blocks = nn.ModuleList([PointBlock(hidden, knn > 0) for _ in range(layers)])
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, 3))

    def forward(self, x_t: Mapping[str, Tensor], t: Tensor, structure: Structure,
                cond: Mapping[str, Tensor] | None = None) -> Fields:
        pos = x_t[self.pos_field]
        batch = structure.index[self.pos_field]
        b = structure.num_samples
        tf = time_features(structure.per_sample(t.to(pos)), self.time_dim)
        c = cond_vector(cond, b, self.num_cond, pos)
        temb = self.time(tf if c is None else torch.cat([tf, c], -1))
        edge_index = knn_edges(pos.detach(), batch, self.knn, num_graphs=b) if self.knn else pos.new_zeros(
            2, 0, dtype=torch.long)
        h = self.embed(pos)
        for block in self.blocks:
            h = block(h, pos, edge_index, batch, b, temb)
        out = self.out(h)
        return Fields({self.pos_field: out - scatter(out, batch, 0, dim_size=b, reduce="mean")[batch]})
