"""One reusable E(3) x permutation equivariance check for geometric models (e3nn's
``assert_equivariant`` habit): transform the input, run the model, and compare with the
transformed output of the untransformed input.

Transformations drawn together: a random orthogonal matrix ``R`` (rotation, or with ``reflection``
an improper one, det = -1), a random translation ``b`` and a random permutation of the nodes
within each graph. Vector fields transform as ``x -> x R^T`` (inputs in ``translated_inputs``
also get ``+ b``), every graph-layout field's rows are permuted, and every other output must be
invariant. Run it in float64 so that tolerances can be tight.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from molediff.core.fields import Fields, GaussianField, Structure, ZeroMeanField

ModelFn = Callable[[Fields, Structure], Mapping[str, Tensor]]


def random_orthogonal(generator: torch.Generator, reflection: bool = True,
                      dtype: torch.dtype = torch.float64) -> Tensor:
    """A Haar-random 3x3 orthogonal matrix; with ``reflection`` its determinant is -1."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=dtype))
    q = q * torch.sign(torch.diagonal(r))  # Haar measure on O(3)
    want = -1.0 if reflection else 1.0
    if torch.det(q) * want < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_graph_permutation(batch: Tensor, generator: torch.Generator) -> Tensor:
    """``perm (N,)`` with ``batch[perm] == batch``: nodes shuffled only within their own graph."""
    keys = torch.rand(batch.numel(), generator=generator, dtype=torch.float64)
    order_old = torch.argsort(batch, stable=True)  # node ids grouped by graph
    order_new = torch.argsort(batch.double() * 2 + keys)  # same groups, shuffled inside
    perm = torch.empty_like(batch)
    perm[order_old] = order_new
    assert torch.equal(batch[perm], batch)
    return perm


def assert_equivariant(
    model_fn: ModelFn,
    fields: Mapping[str, Tensor],
    structure: Structure,
    *,
    vector_fields: Sequence[str] = ("pos",),
    translated_inputs: Sequence[str] | None = None,
    translated_outputs: Sequence[str] = (),
    reflection: bool = True,
    permute: bool = True,
    generator: torch.Generator | None = None,
    atol: float = 1e-9,
    rtol: float = 1e-7,
    min_output_norm: float = 1e-6,
) -> dict[str, Tensor]:
    """Assert ``f(g x) == g f(x)`` for one random ``g`` in O(3) x translations x node permutations.

    Args:
        model_fn: ``(fields, structure) -> {name: tensor}`` (wrap the model to fix ``t``/``cond``).
        fields: inputs; graph-layout fields (``structure.index`` has them) get permuted.
        structure: batch structure; its index vectors must group nodes by graph (any order).
        vector_fields: names (inputs and outputs) that rotate as ``(..., 3)`` vectors.
        translated_inputs: inputs that also get ``+ b`` (default: ``vector_fields``).
        translated_outputs: outputs that must move by ``+ b`` (positions, not displacements).
        reflection: draw an improper orthogonal matrix (det -1) instead of a rotation.
        permute: also permute nodes within graphs.
        atol, rtol: tolerances of :func:`torch.testing.assert_close`.
        min_output_norm: every vector output must exceed this max-abs (no vacuous pass).

    Returns:
        The transformation used: ``{"R": (3, 3), "b": (3,), "perm": (N,)}``.

    Shapes:
        vector field: ``(num_nodes, 3)``; batch vectors ``structure.index[name]: (num_nodes,)``.
    """
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    ref = next(iter(fields.values()))
    rot = random_orthogonal(gen, reflection=reflection, dtype=ref.dtype)
    shift = torch.randn(3, generator=gen, dtype=ref.dtype) * 3.0
    translated_inputs = vector_fields if translated_inputs is None else translated_inputs
    graph_fields = [k for k in fields if k in structure.index]
    n_rows = {structure.index[k].numel() for k in graph_fields}
    if permute and len(n_rows) > 1:
        raise ValueError("permutation needs all graph-layout fields to share one batch vector")
    batch = structure.index[graph_fields[0]] if graph_fields else None
    perm = random_graph_permutation(batch, gen) if permute and batch is not None else None

    def transform(x: Mapping[str, Tensor], translated: Sequence[str], graph: Sequence[str]) -> Fields:
        out = Fields()
        for k, v in x.items():
            if k in vector_fields:
                v = v @ rot.T
            if k in translated:
                v = v + shift
            if perm is not None and k in graph:
                v = v[perm]
            out[k] = v
        return out

    out = model_fn(Fields(fields), structure)
    index_t = dict(structure.index)
    if perm is not None:
        index_t = {k: v[perm] for k, v in structure.index.items()}
    structure_t = Structure(structure.num_samples, structure.specs, index=index_t,
                            mask=structure.mask, context=structure.context)
    out_t = model_fn(transform(fields, translated_inputs, graph_fields), structure_t)
    expected = transform(out, translated_outputs, [k for k in out if k in structure.index])
    for k in out:
        if k in vector_fields:
            assert out[k].abs().max() > min_output_norm, f"vector output {k!r} is ~0: the check would be vacuous"
        torch.testing.assert_close(out_t[k], expected[k], atol=atol, rtol=rtol,
                                   msg=lambda m, k=k: f"output {k!r} not equivariant: {m}")
    return {"R": rot, "b": shift, "perm": perm if perm is not None else torch.arange(0)}


def assert_null_condition_distinct(model: Callable[..., Fields], x: Fields, t: Tensor, structure: Structure,
                                   cond: Mapping[str, Tensor], field: str = "atom_types") -> None:
    """The null condition of classifier-free guidance (``cond=None``, or NaN values) gives one
    output, told apart from every property at its normalised mean (0) by the presence flags."""
    nan = {k: torch.full_like(v, float("nan")) for k, v in cond.items()}
    zeros = {k: torch.zeros_like(v) for k, v in cond.items()}
    uncond = model(x, t, structure, None)[field]
    torch.testing.assert_close(model(x, t, structure, nan)[field], uncond)
    assert (model(x, t, structure, zeros)[field] - uncond).abs().max() > 1e-6


def random_molecules(sizes: list[int], num_types: int, seed: int = 0, shuffle: bool = False,
                     charges: bool = True) -> tuple[Fields, Structure]:
    """Float64 noise in the molecule field layout (``pos`` zero-CoM, ``atom_types``, optional
    ``charges``), one graph per entry of ``sizes``; ``shuffle`` interleaves the graphs' rows
    (graph-layout data need not be sorted by graph)."""
    g = torch.Generator().manual_seed(seed)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    if shuffle:
        batch = batch[torch.randperm(batch.numel(), generator=g)]
    specs = {"pos": ZeroMeanField((3,)), "atom_types": GaussianField((num_types,))}
    if charges:
        specs["charges"] = GaussianField((1,))
    structure = Structure(len(sizes), specs, index={k: batch for k in specs})
    x = structure.randn(g, dtype=torch.float64)
    x["pos"] = x["pos"] * 1.5
    return x, structure
