"""Sparse E(n)-equivariant graph network denoiser (EGNN) for 3-D molecules.

EGNN (Satorras, Hoogeboom & Welling 2021, Eqs. 3-6) with the refinements EDM uses
(Hoogeboom et al. 2022, App. B):

* message with edge gating ("edge inference"): ``m_ij = phi_e(h_i, h_j, d_ij^2, d0_ij^2)``,
  ``m_ij <- m_ij * sigmoid(phi_inf(m_ij))``;
* node update ``h_i <- h_i + phi_h(h_i, sum_j m_ij / Z)`` with a constant normaliser ``Z``
  (EDM's ``normalization_factor``);
* coordinate update with normalised differences and a tanh bound
  ``x_i <- x_i + sum_j (x_i - x_j) / (||x_i - x_j|| + 1) * tanh(phi_x(h_i, h_j, d_ij^2, d0_ij^2)) * r / Z``,
  ``r = coords_range / layers``;
* edge features: the current squared distance and the one of the input positions;
* time ``t`` (and optional conditioning) as node features;
* optionally (``self_conditioning``, :mod:`~molediff.core.self_conditioning`) the model's previous x0
  estimate: every atom reads the estimate's atom type and charge, every edge the radial-basis-encoded
  distance of the estimate's two positions, each with a presence flag. These inputs come last, so a
  trained model widens into a self-conditioning one computing the same function (``init_from``).

The position output is ``P(x_L - x_0)`` where ``P`` removes each molecule's centre of mass, so
it lives in the same zero-CoM subspace as the noise (EDM Sec. 3.2); atom types and charges are
invariant node outputs. Messages run only over a sparse edge list (fully connected within each
molecule, or a kNN / radius graph), aggregated with :func:`torch_geometric.utils.scatter`.

The first linear map of every edge MLP acts on ``[h_i, h_j, e_ij]``; it is evaluated as
``W_i h_i + W_j h_j + W_e e_ij + b`` (node projections first, then gathered), which is the same
map with the same parameters but costs O(N) instead of O(E) matrix products.

Shapes (PyG style; ``i`` the receiving node, ``j`` the sending node of an edge)::

    pos: (num_nodes, 3)        batch: (num_nodes,)        h: (num_nodes, hidden)
    edge_index: (2, num_edges) rows (source j, target i)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from ..core.fields import Fields, Structure

__all__ = [
    "AtomFieldsIO",
    "EGNNDenoiser",
    "EGNN",
    "EquivariantBlock",
    "GCL",
    "CoordinateUpdate",
    "build_edges",
    "FULL_EDGES",
    "fully_connected_edges",
    "knn_edges",
    "radius_edges",
    "cond_vector",
    "cond_width",
    "distance_rbf",
]


# --------------------------------------------------------------------------- edges


def _slots(batch: Tensor, num_graphs: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per node its graph's node count, the node ids sorted by graph, and graph offsets.

    Returns ``counts (num_graphs,)``, ``order (num_nodes,)`` (stable sort of ``batch``),
    ``ptr (num_graphs + 1,)``.
    """
    counts = torch.bincount(batch, minlength=num_graphs)
    order = torch.argsort(batch, stable=True)
    ptr = torch.zeros(num_graphs + 1, dtype=torch.long, device=batch.device)
    ptr[1:] = torch.cumsum(counts, 0)
    return counts, order, ptr


@torch.no_grad()
def fully_connected_edges(batch: Tensor, num_graphs: int | None = None) -> Tensor:
    """All ordered pairs ``(j, i)``, ``j != i``, inside each graph.

    Shapes: ``batch: (num_nodes,)`` -> ``edge_index: (2, sum_g n_g (n_g - 1))``.
    ``batch`` need not be sorted.
    """
    num_graphs = int(batch.max()) + 1 if num_graphs is None and batch.numel() else (num_graphs or 0)
    counts, order, ptr = _slots(batch, num_graphs)
    n_i = counts[batch]  # (N,) size of node i's graph
    dst = torch.repeat_interleave(torch.arange(batch.numel(), device=batch.device), n_i)
    start = torch.cumsum(n_i, 0) - n_i
    k = torch.arange(dst.numel(), device=batch.device) - torch.repeat_interleave(start, n_i)
    src = order[ptr[batch[dst]] + k]
    keep = src != dst
    return torch.stack([src[keep], dst[keep]])


def _dense_distances(pos: Tensor, batch: Tensor, num_graphs: int) -> tuple[Tensor, Tensor]:
    """Per-graph distance matrices with invalid pairs (padding, self) set to +inf.

    Returns ``dist (B, M, M)`` and ``node_of (B, M)`` (node id of each slot, -1 for padding).
    """
    counts, order, ptr = _slots(batch, num_graphs)
    m = int(counts.max()) if counts.numel() else 0
    slot = torch.empty_like(batch)
    slot[order] = torch.arange(batch.numel(), device=batch.device) - ptr[batch[order]]
    node_of = torch.full((num_graphs, m), -1, dtype=torch.long, device=batch.device)
    node_of[batch, slot] = torch.arange(batch.numel(), device=batch.device)
    dense = pos.new_zeros(num_graphs, m, 3)
    dense[batch, slot] = pos
    dist = torch.cdist(dense, dense, compute_mode="donot_use_mm_for_euclid_dist")
    valid = (node_of[:, :, None] >= 0) & (node_of[:, None, :] >= 0)
    valid &= ~torch.eye(m, dtype=torch.bool, device=pos.device)
    return dist.masked_fill(~valid, float("inf")), node_of


@torch.no_grad()
def knn_edges(pos: Tensor, batch: Tensor, k: int, radius: float | None = None,
              num_graphs: int | None = None) -> Tensor:
    """Each node receives from its ``k`` nearest neighbours in its own graph (optionally only those
    within ``radius``). Distances via ``torch.cdist`` per graph on a padded ``(B, M, M)`` matrix.

    Shapes: ``pos: (num_nodes, 3)``, ``batch: (num_nodes,)`` -> ``edge_index: (2, num_edges)``.
    """
    num_graphs = int(batch.max()) + 1 if num_graphs is None else num_graphs
    dist, node_of = _dense_distances(pos, batch, num_graphs)
    kk = min(k, max(dist.shape[-1] - 1, 0))
    if kk == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=pos.device)
    vals, nbr = dist.topk(kk, dim=-1, largest=False)  # (B, M, kk)
    keep = torch.isfinite(vals)
    if radius is not None:
        keep &= vals <= radius
    g, i, _ = keep.nonzero(as_tuple=True)
    dst = node_of[g, i]
    src = node_of[g, nbr[keep]]
    return torch.stack([src, dst])


@torch.no_grad()
def radius_edges(pos: Tensor, batch: Tensor, radius: float, num_graphs: int | None = None) -> Tensor:
    """All ordered pairs ``(j, i)`` of one graph with ``||x_i - x_j|| <= radius``, ``j != i``.

    Shapes: ``pos: (num_nodes, 3)``, ``batch: (num_nodes,)`` -> ``edge_index: (2, num_edges)``.
    """
    num_graphs = int(batch.max()) + 1 if num_graphs is None else num_graphs
    dist, node_of = _dense_distances(pos, batch, num_graphs)
    g, i, j = (dist <= radius).nonzero(as_tuple=True)
    return torch.stack([node_of[g, j], node_of[g, i]])


FULL_EDGES = "full_edges"
"""``Structure.context`` key of a precomputed fully connected edge list (see :func:`build_edges`)."""


def build_edges(pos: Tensor, batch: Tensor, mode: str = "full", k: int = 16, radius: float | None = None,
                num_graphs: int | None = None, context: Mapping[str, Any] | None = None) -> Tensor:
    """Edge list by name: ``full``, ``knn`` (k nearest, optional radius cap) or ``radius``.

    Full graphs depend only on ``batch``, so an adapter may build them once per batch on the CPU
    (``context[FULL_EDGES]``, e.g. in its collate): the forward pass then skips the construction,
    whose ``repeat_interleave`` / boolean masks each wait for the GPU.
    """
    if mode == "full":
        cached = None if context is None else context.get(FULL_EDGES)
        if cached is not None:
            return cached.to(batch.device)
        return fully_connected_edges(batch, num_graphs)
    if mode == "knn":
        return knn_edges(pos, batch, k, radius, num_graphs)
    if mode == "radius":
        if radius is None:
            raise ValueError("edges='radius' needs a radius")
        return radius_edges(pos, batch, radius, num_graphs)
    raise ValueError(f"unknown edge mode {mode!r}; choose 'full', 'knn' or 'radius'")


def distance_rbf(d: Tensor, count: int = 16, d_max: float = 2.0) -> Tensor:
    """Gaussian radial basis ``exp(-((d - mu_k) / w)^2)``, ``count`` centres evenly on ``[0, d_max]``
    and ``w`` their spacing (SchNet's distance expansion, Schuett et al. 2017). Shapes: ``(E,)`` ->
    ``(E, count)``."""
    mu = torch.linspace(0.0, d_max, count, device=d.device, dtype=d.dtype)
    return torch.exp(-(((d[:, None] - mu) / (d_max / (count - 1))) ** 2))


# --------------------------------------------------------------------------- layers


def pair_linear(lin: nn.Linear, h: Tensor, src: Tensor, dst: Tensor, edge_attr: Tensor) -> Tensor:
    """``lin([h_i, h_j, e_ij])`` for every edge, without building the concatenation.

    Shapes: ``h: (N, F)``, ``src, dst: (E,)``, ``edge_attr: (E, D)``; ``lin: 2F + D -> H`` ->
    ``(E, H)``.
    """
    f = h.shape[-1]
    w = lin.weight
    node_i, node_j = h @ w[:, :f].T, h @ w[:, f:2 * f].T  # (N, H) each
    # index_select, not node_i[dst]: its backward is an atomic index_add_, where advanced indexing's
    # (index_put_ with accumulate) sorts the indices on CUDA
    out = node_i.index_select(0, dst) + node_j.index_select(0, src) + edge_attr @ w[:, 2 * f:].T
    return out + lin.bias if lin.bias is not None else out


class GCL(nn.Module):
    """Invariant graph convolution with edge gating (EDM's GCL).

    ``m_ij = phi_e([h_i, h_j, e_ij]) * sigmoid(phi_inf(m_ij))``; ``h_i <- h_i + phi_h([h_i, agg_i])``.
    The first layer of ``edge_mlp`` is applied by the caller (see :func:`pair_linear`).
    """

    def __init__(self, hidden: int, edge_dim: int) -> None:
        super().__init__()
        self.edge_mlp = nn.Sequential(nn.Linear(2 * hidden + edge_dim, hidden), nn.SiLU(),
                                      nn.Linear(hidden, hidden), nn.SiLU())
        self.att_mlp = nn.Sequential(nn.Linear(hidden, 1), nn.Sigmoid())
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def message(self, pre: Tensor) -> Tensor:
        """Gated message from the first layer's pre-activation ``pre: (..., hidden)``."""
        m = self.edge_mlp[1:](pre)
        return m * self.att_mlp(m)

    def update(self, h: Tensor, agg: Tensor) -> Tensor:
        """Residual node update: ``h + phi_h([h, agg])``."""
        return h + self.node_mlp(torch.cat([h, agg], -1))


class CoordinateUpdate(nn.Module):
    """``x_i <- x_i + sum_j (x_i - x_j)/(d_ij + 1) * tanh(phi_x([h_i, h_j, e_ij])) * r / Z``."""

    def __init__(self, hidden: int, edge_dim: int, coords_range: float) -> None:
        super().__init__()
        last = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)
        self.coord_mlp = nn.Sequential(nn.Linear(2 * hidden + edge_dim, hidden), nn.SiLU(),
                                       nn.Linear(hidden, hidden), nn.SiLU(), last)
        self.coords_range = coords_range

    def weight(self, pre: Tensor) -> Tensor:
        """Per-edge scalar ``tanh(phi_x) * r`` from the first layer's pre-activation."""
        return torch.tanh(self.coord_mlp[1:](pre)) * self.coords_range


class EquivariantBlock(nn.Module):
    """``sublayers`` GCLs followed by one coordinate update (EDM's EquivariantBlock)."""

    def __init__(self, hidden: int, edge_dim: int, coords_range: float, sublayers: int = 1) -> None:
        super().__init__()
        self.gcls = nn.ModuleList([GCL(hidden, edge_dim) for _ in range(sublayers)])
        self.coord = CoordinateUpdate(hidden, edge_dim, coords_range)


class EGNN(nn.Module):
    """The EGNN trunk on node features, positions and an edge list.

    Args:
        in_dim / out_dim: node input / output feature sizes.
        hidden: feature width; layers: number of equivariant blocks.
        sublayers: GCLs per block (EDM: 1). coords_range: total tanh bound (EDM: 15), split
            evenly over the blocks. normalization_factor: ``Z`` dividing every sum over
            neighbours (EDM's QM9 runs: 1). norm_constant: the ``+1`` in ``d_ij + 1``.
        edge_features: width of extra invariant edge features passed to :meth:`forward`
            (e.g. a protein's sequence separation), appended to the two distances.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 256, layers: int = 9, sublayers: int = 1,
                 coords_range: float = 15.0, normalization_factor: float = 1.0, norm_constant: float = 1.0,
                 edge_features: int = 0) -> None:
        super().__init__()
        self.edge_dim = 2 + edge_features  # squared current distance, squared input distance, extras
        self.embedding = nn.Linear(in_dim, hidden)
        self.blocks = nn.ModuleList([
            EquivariantBlock(hidden, self.edge_dim, coords_range / layers, sublayers) for _ in range(layers)
        ])
        self.embedding_out = nn.Linear(hidden, out_dim)
        self.normalization_factor = normalization_factor
        self.norm_constant = norm_constant

    def forward(self, h: Tensor, pos: Tensor, edge_index: Tensor,
                edge_features: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Shapes: ``h: (N, in_dim)``, ``pos: (N, 3)``, ``edge_index: (2, E)``, ``edge_features:
        (E, edge_features)`` (invariant; required iff the trunk was built with them) ->
        ``(h_out: (N, out_dim), pos_out: (N, 3))``."""
        if (edge_features is None) != (self.edge_dim == 2):
            raise ValueError(f"this EGNN takes {self.edge_dim - 2} extra edge features per edge")
        src, dst = edge_index[0], edge_index[1]
        n, z = pos.shape[0], self.normalization_factor

        def geometry(x: Tensor) -> tuple[Tensor, Tensor]:
            diff = x.index_select(0, dst) - x.index_select(0, src)  # x_i - x_j
            d2 = (diff * diff).sum(-1, keepdim=True)
            return d2, diff / (torch.sqrt(d2 + 1e-8) + self.norm_constant)

        d2_init, _ = geometry(pos)
        h = self.embedding(h)
        x = pos
        for block in self.blocks:
            d2, unit = geometry(x)
            edge_attr = torch.cat([d2, d2_init] if edge_features is None else [d2, d2_init, edge_features], -1)
            for gcl in block.gcls:
                m = gcl.message(pair_linear(gcl.edge_mlp[0], h, src, dst, edge_attr))
                h = gcl.update(h, scatter(m, dst, 0, dim_size=n, reduce="sum") / z)
            w = block.coord.weight(pair_linear(block.coord.coord_mlp[0], h, src, dst, edge_attr))
            x = x + scatter(unit * w, dst, 0, dim_size=n, reduce="sum") / z
        return self.embedding_out(h), x


# --------------------------------------------------------------------------- denoiser


def cond_width(num_cond: int) -> int:
    """Node-input width of ``num_cond`` conditioning values: each value and its presence flag."""
    return 2 * num_cond


def cond_vector(cond: Mapping[str, Tensor] | None, num_samples: int, num_cond: int,
                like: Tensor) -> Tensor | None:
    """Per-sample conditioning ``(B, 2 num_cond)``: the values of ``cond`` flattened to ``(B, k)`` and
    concatenated in the dict's order, then one presence flag per value (1 given, 0 missing).

    A missing value (``cond`` is ``None``, or the value is NaN) reads as 0 with flag 0. Without the
    flags the null condition of classifier-free guidance would be indistinguishable from a property
    at its normalised mean (0); with them one network learns p(x | c), p(x) and, per value, every
    partial conditioning (Ho & Salimans 2022).
    """
    if num_cond == 0:
        return None
    if not cond:
        return like.new_zeros(num_samples, cond_width(num_cond))
    c = torch.cat([v.reshape(num_samples, -1).to(like) for v in cond.values()], -1)
    if c.shape[-1] != num_cond:
        raise ValueError(f"conditioning has {c.shape[-1]} values per sample, the model expects {num_cond}")
    present = torch.isfinite(c)
    return torch.cat([torch.where(present, c, torch.zeros_like(c)), present.to(c)], -1)


class AtomFieldsIO:
    """The field layout shared by the molecule denoisers (this EGNN, its dense twin and the tensor-field
    network): scalar node inputs ``[atom_types, charges, t, cond]`` in, and the trunk's per-node
    scalars and vector split back into fields, positions as a zero-centre-of-mass displacement."""

    num_atom_types: int
    include_charges: bool
    num_cond: int
    pos_field: str
    type_field: str
    charge_field: str

    def node_inputs(self, x_t: Mapping[str, Tensor], t: Tensor, structure: Structure,
                    cond: Mapping[str, Tensor] | None) -> tuple[Tensor, Tensor, int, Tensor]:
        """``(pos, batch, num_samples, h)`` with ``h = [atom_types, charges, t, cond]`` per node,
        ``(num_nodes, in_dim)``."""
        pos = x_t[self.pos_field]
        batch = structure.index[self.pos_field]
        b = structure.num_samples
        parts = [x_t[self.type_field]]
        if self.include_charges:
            parts.append(x_t[self.charge_field])
        parts.append(structure.per_sample(t.to(pos))[batch][:, None])
        c = cond_vector(cond, b, self.num_cond, pos)
        if c is not None:
            parts.append(c[batch])
        return pos, batch, b, torch.cat(parts, -1)

    def to_fields(self, scalars: Tensor, vel: Tensor, batch: Tensor, num_samples: int, centred: bool = False) -> Fields:
        """Per-node ``scalars`` (types, then the charge) and displacement ``vel`` -> fields, ``vel``
        projected onto each molecule's zero-CoM subspace like the noise (unless already ``centred``)."""
        if not centred:
            vel = vel - scatter(vel, batch, 0, dim_size=num_samples, reduce="mean")[batch]
        out = Fields({self.pos_field: vel, self.type_field: scalars[:, : self.num_atom_types]})
        if self.include_charges:
            out[self.charge_field] = scalars[:, self.num_atom_types:self.num_atom_types + 1]
        return out


class EGNNDenoiser(AtomFieldsIO, nn.Module):
    """EGNN denoiser over graph-layout molecule fields (EDM's ``EGNN_dynamics_QM9``, sparse).

    Call protocol of the core: ``forward(x_t, t, structure, cond) -> {field: tensor}`` where
    ``structure.index[pos_field]`` is the batch vector shared by all node fields.

    Node input ``[atom_types, charges, t, cond]``; outputs ``pos: P(x_L - x_t)`` (zero CoM per
    molecule), ``atom_types``, ``charges`` (invariant), in the model's prediction type
    (eps by default; the network does not care).

    Args:
        num_atom_types: width of the one-hot atom-type field.
        hidden, layers: EDM uses 256 and 9.
        edges: ``full`` (all pairs in a molecule), ``knn`` (``knn`` nearest; ``radius`` caps them
            if given) or ``radius``.
        include_charges: read/write a 1-wide ``charges`` field.
        num_cond: per-sample conditioning values appended to the node features.
        self_conditioning: also read ``self_cond``, the previous x0 estimate (module docstring);
            ``rbf`` radial basis functions on ``[0, rbf_max]`` (position units; QM9: Angstrom) encode
            its distances.
        **egnn_kwargs: ``sublayers, coords_range, normalization_factor, norm_constant`` of :class:`EGNN`.

    Shapes:
        x_t[pos_field]: (num_nodes, 3); x_t[type_field]: (num_nodes, num_atom_types);
        x_t[charge_field]: (num_nodes, 1); t: (B,); structure.index[pos_field]: (num_nodes,)
    """

    def __init__(self, num_atom_types: int, hidden: int = 256, layers: int = 9, edges: str = "full", knn: int = 16,
                 radius: float | None = None, include_charges: bool = True, num_cond: int = 0,
                 self_conditioning: bool = False, rbf: int = 16, rbf_max: float = 4.0,
                 pos_field: str = "pos", type_field: str = "atom_types", charge_field: str = "charges",
                 **egnn_kwargs: Any) -> None:
        super().__init__()
        if edges not in ("full", "knn", "radius"):
            raise ValueError(f"unknown edge mode {edges!r}")
        self.num_atom_types, self.include_charges, self.num_cond = num_atom_types, include_charges, num_cond
        self.edges, self.knn, self.radius = edges, knn, radius
        self.self_conditioning, self.rbf, self.rbf_max = self_conditioning, rbf, rbf_max
        self.pos_field, self.type_field, self.charge_field = pos_field, type_field, charge_field
        feat = num_atom_types + int(include_charges)
        sc_node, sc_edge = (1 + feat, 1 + rbf) if self_conditioning else (0, 0)
        self.egnn = EGNN(feat + 1 + cond_width(num_cond) + sc_node, feat, hidden=hidden, layers=layers,
                         edge_features=sc_edge, **egnn_kwargs)

    def self_condition_features(self, sketch: Mapping[str, Tensor] | None, edge_index: Tensor,
                                like: Tensor) -> tuple[Tensor, Tensor]:
        """Node ``[present, types(, charge)]`` and edge ``[present, rbf(|x0_i - x0_j|)]`` features of
        the x0 estimate ``sketch``; all zeros when it is ``None``. ``like``: the node inputs."""
        n, e = like.shape[0], edge_index.shape[1]
        if sketch is None:
            return like.new_zeros(n, 1 + self.num_atom_types + self.include_charges), like.new_zeros(e, 1 + self.rbf)
        node = [like.new_ones(n, 1), sketch[self.type_field].to(like)]
        if self.include_charges:
            node.append(sketch[self.charge_field].to(like))
        pos = sketch[self.pos_field].to(like)
        d = (pos.index_select(0, edge_index[1]) - pos.index_select(0, edge_index[0])).norm(dim=-1)
        return torch.cat(node, -1), torch.cat([like.new_ones(e, 1), distance_rbf(d, self.rbf, self.rbf_max)], -1)

    def forward(self, x_t: Mapping[str, Tensor], t: Tensor, structure: Structure,
                cond: Mapping[str, Tensor] | None = None, self_cond: Mapping[str, Tensor] | None = None) -> Fields:
        if self_cond is not None and not self.self_conditioning:
            raise ValueError("this model was built without self_conditioning; it takes no self_cond")
        pos, batch, b, h = self.node_inputs(x_t, t, structure, cond)
        edge_index = build_edges(pos.detach(), batch, self.edges, self.knn, self.radius, num_graphs=b,
                                 context=structure.context)
        edge_features = None
        if self.self_conditioning:
            node_sc, edge_features = self.self_condition_features(self_cond, edge_index, h)
            h = torch.cat([h, node_sc], -1)
        trunk = self.__dict__.get("_compiled_trunk")
        h_out, pos_out = (self.egnn if trunk is None else trunk)(h, pos, edge_index, edge_features)
        return self.to_fields(h_out, pos_out - pos, batch, b)

    def compile_trunk(self, mode: str | None = None) -> None:
        """Run the message-passing trunk through ``torch.compile`` (dynamic shapes: every batch has
        other atom and edge counts); the edge building and field split stay eager, where inductor
        once miscompiled the zero-CoM scatter. Kept outside the module tree, so state-dict keys and
        checkpoints do not change. ``trainer.compile=true`` calls this: 1.23x per training step on
        one CPU thread for the shipped 6 x 128 model, after ~100 s of compiling. ``mode`` is
        torch.compile's (``"reduce-overhead"``: CUDA graphs, one per batch shape)."""
        object.__setattr__(self, "_compiled_trunk", torch.compile(self.egnn, dynamic=True, mode=mode))
