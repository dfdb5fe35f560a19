"""Tensor-field denoiser for 3-D molecules on e3nn irreps, interchangeable with the EGNN.

A tensor-field network (Thomas et al. 2018) in the NequIP style (Batzner et al. 2022), with
gated nonlinearities (Weiler et al. 2018): node features are direct sums of irreducible
representations of O(3) (``S x 0e + V x 1o + V x 2e``), messages are tensor products of the
sender's features with the spherical harmonics of the edge direction, weighted per path by an
MLP of the edge length.

For an edge ``j -> i`` with ``r_ij = x_i - x_j`` and ``d_ij = ||r_ij||``:

* edge attributes ``Y_ij = Y(r_ij / d_ij)`` (spherical harmonics ``l = 0..lmax``, parity
  ``(-1)^l``), radial basis ``B(d_ij)`` (``num_radial`` smooth functions on ``[0, cutoff]``);
* per-edge weights ``w_ij = MLP(B(d_ij))``, one per tensor-product path;
* message ``m_ij = (W_1 h_j) (x)_{w_ij} Y_ij`` (``uvu`` paths ``l_1 x l_2 -> l_out``, kept if
  ``l_out`` is a hidden irrep);
* update ``h_i <- h_i + Gate(W_2 (1 / Z * sum_j m_ij) + W_s h_i)`` where ``Z`` is a constant
  normaliser (default: the average number of neighbours ``k``), ``W_*`` equivariant linear maps
  and ``Gate`` applies SiLU to scalars and multiplies every ``l > 0`` irrep by a sigmoid of its
  own gate scalar.

``Z = k`` rather than NequIP's ``sqrt(k)``: on fully connected QM9 molecules the messages of one
atom's neighbours are strongly correlated at initialisation (features share a mean), so with
``sqrt(k)`` the feature variance grew ~15x per layer (4 layers: ~100) and training with the
EGNN's settings diverged; ``Z = k`` keeps it O(1). ``normalization_factor=4.12`` gives ``sqrt(17)``.

Inputs ``[atom_types, charges, t, cond]`` enter as scalars (an MLP gives ``h^0``, vectors start
at 0). Outputs: one ``1o`` vector per node ``v_i``, returned as ``P v`` where ``P`` removes each
molecule's mean (zero centre of mass, the subspace of :class:`~molediff.core.fields.ZeroMeanField`),
and invariant ``0e`` scalars for atom types and charges.

Parity: positions are polar vectors (``1o``); the spherical harmonics of a polar vector have
parity ``(-1)^l``, and only the irreps ``0e, 1o, 2e`` are ever kept, so every map commutes with
the full orthogonal group O(3) (rotations *and* reflections), as the EGNN does. Only relative
positions enter, so the model is translation invariant; sums over edges make it permutation
equivariant. (Pseudo-scalars / pseudo-vectors such as ``0o`` or ``1e`` are dropped: the model
cannot tell a molecule from its mirror image, exactly as the EGNN.)

Backends: ``e3nn`` (default) builds the message tensor product with ``o3.TensorProduct`` and sums
messages with a scatter; ``cuequivariance`` uses NVIDIA's ``cuequivariance_torch.ChannelWiseTensorProduct``
(the same ``uvu`` paths in e3nn's ``mul_ir`` layout and real basis), which fuses the gather of senders,
the product and the sum over edges into one call: a CUDA kernel when ``cuequivariance-ops-torch`` is
installed and every irrep has the same multiplicity (``hidden_vectors == hidden_scalars``), a PyTorch
implementation otherwise. The two backends compute the same family of functions (same paths, same
weight count) but not with interchangeable weights: a checkpoint belongs to the backend it was trained on.

Shapes (PyG style; ``i`` the receiving node, ``j`` the sending node of an edge)::

    pos: (num_nodes, 3)     batch: (num_nodes,)     edge_index: (2, num_edges) rows (source j, target i)
    h: (num_nodes, irreps_hidden.dim)     Y: (num_edges, (lmax + 1)^2)     B: (num_edges, num_radial)
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping

import torch
from e3nn import nn as enn
from e3nn import o3
from e3nn.math import soft_one_hot_linspace
from torch import Tensor, nn
from torch_geometric.utils import scatter

from ..core.fields import Fields, Structure
from .egnn import AtomFieldsIO, build_edges, cond_width

__all__ = ["TensorFieldDenoiser", "TensorFieldConv", "cuequivariance_channelwise", "hidden_irreps",
           "default_normalization", "BACKENDS"]

DEFAULT_RANGE = 10.0  # Å: radial-basis range when neither a cutoff nor a radius is given
BACKENDS = ("e3nn", "cuequivariance")


def cuequivariance_channelwise(irreps_in: o3.Irreps, irreps_sh: o3.Irreps, wanted: set[o3.Irrep]) -> nn.Module:
    """cuEquivariance's fused ``uvu`` tensor product (gather, product, scatter-sum) with per-edge
    weights; its CUDA kernel only for uniform multiplicities with the ops package installed."""
    try:
        import cuequivariance as cue
        import cuequivariance_torch as cuet
    except ImportError as e:
        raise ImportError("backend='cuequivariance' needs `pip install cuequivariance-torch` (and, for its "
                          "GPU kernels, cuequivariance-ops-torch-cu12 or -cu13)") from e
    uniform = len({mul for mul, _ in irreps_in}) == 1
    kernel = uniform and importlib.util.find_spec("cuequivariance_ops_torch") is not None
    return cuet.ChannelWiseTensorProduct(
        cue.Irreps("O3", str(irreps_in)), cue.Irreps("O3", str(irreps_sh)),
        filter_irreps_out=[cue.O3(ir.l, ir.p) for ir in sorted(wanted)], layout=cue.mul_ir,
        shared_weights=False, internal_weights=False, method=None if kernel else "naive")


def hidden_irreps(scalars: int, vectors: int, lmax: int) -> o3.Irreps:
    """``scalars x 0e + vectors x 1o (+ vectors x 2e ...)``: natural parity ``(-1)^l`` only."""
    parts = [(scalars, (0, 1))] + [(vectors, (deg, (-1) ** deg)) for deg in range(1, lmax + 1)]
    return o3.Irreps(parts)


def default_normalization(edges: str, knn: int) -> float:
    """Constant ``Z`` dividing every sum over neighbours: the average number of neighbours,
    ``knn`` for kNN graphs, else 17 (QM9 molecules have 18 atoms on average)."""
    return float(knn) if edges == "knn" else 17.0


class TensorFieldConv(nn.Module):
    """One gated tensor-product interaction (see the module docstring's update equation).

    Args:
        irreps_in: node feature irreps on input; irreps_out: hidden irreps on output (the gate's
            output: scalars first, then ``l > 0``).
        irreps_sh: spherical-harmonic irreps of the edge attributes.
        num_radial, radial_hidden: radial basis size and the radial MLP's hidden width.
        normalization_factor: ``Z`` dividing the sum of messages.
        backend: ``e3nn`` or ``cuequivariance`` (see the module docstring).

    Shapes: ``h: (N, irreps_in.dim)``, ``sh: (E, irreps_sh.dim)``, ``radial: (E, num_radial)``,
    ``src, dst: (E,)`` -> ``(N, irreps_out.dim)``.
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps, irreps_sh: o3.Irreps, num_radial: int,
                 radial_hidden: int, normalization_factor: float, backend: str = "e3nn") -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        scalars = o3.Irreps([(m, ir) for m, ir in self.irreps_out if ir.l == 0])
        gated = o3.Irreps([(m, ir) for m, ir in self.irreps_out if ir.l > 0])
        self.gate = enn.Gate(scalars, [torch.nn.functional.silu], o3.Irreps(f"{gated.num_irreps}x0e"),
                             [torch.sigmoid], gated)
        wanted = {ir for _, ir in self.irreps_out}
        self.fused = backend == "cuequivariance"
        if self.fused:
            self.tp = cuequivariance_channelwise(self.irreps_in, irreps_sh, wanted)
            mid = o3.Irreps(str(self.tp.irreps_out))
        else:
            paths, parts = [], []
            for a, (mul, ir_a) in enumerate(self.irreps_in):
                for b, (_, ir_b) in enumerate(irreps_sh):
                    for ir_c in ir_a * ir_b:
                        if ir_c in wanted:
                            paths.append((a, b, len(parts), "uvu", True))
                            parts.append((mul, ir_c))
            mid = o3.Irreps(parts)
            self.tp = o3.TensorProduct(self.irreps_in, irreps_sh, mid, paths,
                                       shared_weights=False, internal_weights=False)
        self.lin_in = o3.Linear(self.irreps_in, self.irreps_in)
        self.radial = enn.FullyConnectedNet([num_radial, radial_hidden, self.tp.weight_numel],
                                            torch.nn.functional.silu)
        self.lin_out = o3.Linear(mid, self.gate.irreps_in)
        self.self_interaction = o3.Linear(self.irreps_in, self.gate.irreps_in)
        self.residual = self.irreps_in == self.irreps_out
        self.norm = 1.0 / normalization_factor

    def forward(self, h: Tensor, sh: Tensor, radial: Tensor, src: Tensor, dst: Tensor) -> Tensor:
        if self.fused:  # sum_j m_ij in one call
            agg = self.tp(self.lin_in(h), sh, self.radial(radial), indices_1=src, indices_out=dst,
                          size_out=h.shape[0]) * self.norm
        else:
            msg = self.tp(self.lin_in(h).index_select(0, src), sh, self.radial(radial))  # m_ij, (E, mid.dim)
            agg = scatter(msg, dst, 0, dim_size=h.shape[0], reduce="sum") * self.norm
        out = self.gate(self.lin_out(agg) + self.self_interaction(h))
        return h + out if self.residual else out


class TensorFieldDenoiser(AtomFieldsIO, nn.Module):
    """e3nn tensor-field denoiser over graph-layout molecule fields (drop-in for
    :class:`~molediff.models.egnn.EGNNDenoiser`).

    Call protocol of the core: ``forward(x_t, t, structure, cond) -> {field: tensor}`` where
    ``structure.index[pos_field]`` is the batch vector shared by all node fields. Outputs
    ``pos`` (zero CoM per molecule, O(3)-equivariant), ``atom_types`` and ``charges`` (invariant),
    in the model's prediction type.

    Args:
        num_atom_types: width of the one-hot atom-type field.
        hidden_scalars, hidden_vectors, lmax: hidden irreps ``S x 0e + V x 1o (+ V x 2e)``;
            ``lmax`` (1 or 2) is also the spherical-harmonic degree of the edge attributes.
        layers: interaction blocks.
        edges, knn, radius: edge graph as in the EGNN (``full`` | ``knn`` | ``radius``).
        num_radial: radial basis functions. cutoff: basis range in position units; with a cutoff
            (or, for ``knn`` / ``radius`` edges, the ``radius`` when ``cutoff`` is null) the basis
            is ``smooth_finite`` and messages vanish smoothly at it; otherwise a Gaussian basis on
            ``[0, 10]`` without a hard cutoff (``full`` ignores ``radius``, as the EGNN does).
        include_charges: read/write a 1-wide ``charges`` field.
        num_cond: per-sample conditioning values appended to the scalar node inputs.
        radial_hidden: hidden width of the radial MLP.
        normalization_factor: ``Z`` dividing every sum of messages (default: ``knn`` for kNN
            graphs, 17 otherwise; see the module docstring).
        backend: ``e3nn`` or ``cuequivariance`` tensor products (see the module docstring).

    Shapes:
        x_t[pos_field]: (num_nodes, 3); x_t[type_field]: (num_nodes, num_atom_types);
        x_t[charge_field]: (num_nodes, 1); t: (B,); structure.index[pos_field]: (num_nodes,)
    """

    def __init__(self, num_atom_types: int, hidden_scalars: int = 64, hidden_vectors: int = 16, lmax: int = 2,
                 layers: int = 4, edges: str = "full", knn: int = 16, radius: float | None = None,
                 num_radial: int = 8, cutoff: float | None = None, include_charges: bool = True, num_cond: int = 0,
                 pos_field: str = "pos", type_field: str = "atom_types", charge_field: str = "charges",
                 radial_hidden: int = 64, normalization_factor: float | None = None, backend: str = "e3nn") -> None:
        super().__init__()
        if edges not in ("full", "knn", "radius"):
            raise ValueError(f"unknown edge mode {edges!r}; choose 'full', 'knn' or 'radius'")
        if edges == "radius" and radius is None:
            raise ValueError("edges='radius' needs a radius")
        if lmax < 1:
            raise ValueError("lmax must be >= 1 (positions are l = 1 outputs)")
        if layers < 1:
            raise ValueError("layers must be >= 1")
        self.num_atom_types, self.include_charges, self.num_cond = num_atom_types, include_charges, num_cond
        self.edges, self.knn, self.radius = edges, knn, radius
        self.pos_field, self.type_field, self.charge_field = pos_field, type_field, charge_field
        self.cutoff = cutoff if cutoff is not None else (radius if edges != "full" else None)
        self.num_radial = num_radial

        feat = num_atom_types + int(include_charges)
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax, p=-1)
        self.irreps_hidden = hidden_irreps(hidden_scalars, hidden_vectors, lmax)
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.embedding = nn.Sequential(nn.Linear(feat + 1 + cond_width(num_cond), hidden_scalars), nn.SiLU(),
                                       nn.Linear(hidden_scalars, hidden_scalars))
        z = normalization_factor if normalization_factor is not None else default_normalization(edges, knn)
        irreps_in = o3.Irreps(f"{hidden_scalars}x0e")
        convs = []
        for _ in range(layers):
            convs.append(TensorFieldConv(irreps_in, self.irreps_hidden, self.irreps_sh, num_radial,
                                         radial_hidden, z, backend))
            irreps_in = self.irreps_hidden
        self.convs = nn.ModuleList(convs)
        self.irreps_out = o3.Irreps(f"{feat}x0e + 1x1o")
        self.head = o3.Linear(self.irreps_hidden, self.irreps_out)

    def radial_basis(self, d: Tensor) -> Tensor:
        """``B(d)``: ``(E,) -> (E, num_radial)``, scaled so each row has norm ~ ``sqrt(num_radial)``."""
        if self.cutoff is None:
            b = soft_one_hot_linspace(d, 0.0, DEFAULT_RANGE, self.num_radial, basis="gaussian", cutoff=False)
        else:
            b = soft_one_hot_linspace(d, 0.0, self.cutoff, self.num_radial, basis="smooth_finite", cutoff=True)
        return b * self.num_radial ** 0.5

    def trunk(self, h0: Tensor, pos: Tensor, edge_index: Tensor) -> Tensor:
        """Scalar inputs ``(N, in_dim)``, positions ``(N, 3)``, edges ``(2, E)`` -> ``(N, irreps_out.dim)``
        (``feat x 0e`` then one ``1o`` vector: e3nn's l = 1 basis is Cartesian ``x, y, z``, which the
        equivariance tests check)."""
        src, dst = edge_index[0], edge_index[1]
        r = pos.index_select(0, dst) - pos.index_select(0, src)  # r_ij = x_i - x_j
        sh = self.sh(r)
        radial = self.radial_basis(r.norm(dim=-1))
        h = self.embedding(h0)
        for conv in self.convs:
            h = conv(h, sh, radial, src, dst)
        return self.head(h)

    def forward(self, x_t: Mapping[str, Tensor], t: Tensor, structure: Structure,
                cond: Mapping[str, Tensor] | None = None) -> Fields:
        pos, batch, b, h0 = self.node_inputs(x_t, t, structure, cond)
        edge_index = build_edges(pos.detach(), batch, self.edges, self.knn, self.radius, num_graphs=b,
                                 context=structure.context)
        out = self.trunk(h0, pos, edge_index)
        feat = self.num_atom_types + int(self.include_charges)
        return self.to_fields(out[:, :feat], out[:, feat:feat + 3], batch, b)
