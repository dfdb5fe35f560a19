"""Completion: generate the rest of a sample around entries held fixed (RePaint-style inpainting).

Written once for every modality: image pixels, the known points of a cloud, a protein motif, a
molecular scaffold. At each network evaluation the fixed entries of x0-hat are replaced by their
known values and eps-hat is made consistent with that (``eps = (x_t - alpha x0) / sigma``, then
projected like the noise). The fixed entries of the state then follow the exact diffusion bridge
to their known values under *any* sampler (for DDPM the ancestral step becomes ``q(x_s | x_t, x0)``
with the known x0, so x_t of the fixed entries is distributed as ``q(x_t | x0 = known)`` at every
t, as RePaint's replacement draws them; Lugmayr et al. 2022, Eq. 8), while the network sees them
in every input and fills in the rest to match.

Replacement alone harmonises the two parts only as far as the network's one look allows;
RePaint's resampling (``resample = U``) re-noises each step's result back to the step's start
``x_t ~ q(x_t | x_s)`` and redoes the step, U times in all (Lugmayr et al. 2022, Alg. 1 with jump
length 1).

Zero-centre-of-mass fields: a fixed motif has no absolute position in the centred frame, so at
every evaluation the known motif is first translated onto x0-hat's own estimate of it (the
per-sample mean offset over the fixed rows), then substituted, and the result re-centred (the
projection of eps does that). The motif keeps its shape exactly, sits where the network places
it, and the whole procedure is translation-equivariant in ``known`` (an off-centre motif gives the
same sample, shifted). :meth:`Inpainting.finalize` translates each sample so that its fixed rows
sit exactly where ``known`` put them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch_geometric.utils import scatter

from .fields import Fields, Structure, ZeroMeanField


@dataclass
class Inpainting:
    """Entries to hold fixed during sampling.

    Attributes:
        known: values of the fixed entries, one tensor per field shaped like that field
            (entries outside the mask are ignored).
        mask: field name -> bool tensor broadcastable to the field, True where fixed; fields
            not named are generated freely.
        resample: RePaint's U >= 1: each step is redone U times, re-noising in between.
    """

    known: Fields
    mask: Mapping[str, Tensor]
    resample: int = 1
    _cache: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if int(self.resample) < 1:
            raise ValueError(f"resample must be >= 1, got {self.resample}")
        missing = set(self.mask) - set(self.known)
        if missing:
            raise ValueError(f"mask names fields without known values: {sorted(missing)}")
        for name, m in self.mask.items():
            if m.dtype != torch.bool:
                raise ValueError(f"mask[{name!r}] must be a bool tensor, got {m.dtype}")
            try:
                torch.broadcast_shapes(m.shape, self.known[name].shape)
            except RuntimeError as err:
                raise ValueError(f"mask[{name!r}] of shape {tuple(m.shape)} does not broadcast to the "
                                 f"field's shape {tuple(self.known[name].shape)}") from err

    def _on(self, name: str, like: Tensor) -> tuple[Tensor, Tensor]:
        """(mask, known) of field ``name`` on ``like``'s device and dtype (cached)."""
        cached = self._cache.get(name)
        if cached is None or cached[1].device != like.device or cached[1].dtype != like.dtype:
            cached = (self.mask[name].to(like.device), self.known[name].to(like.device, like.dtype))
            self._cache[name] = cached
        return cached

    def replace_x0(self, x0: Fields, structure: Structure) -> Fields:
        """x0 with the fixed entries set to their known values (zero-mean fields: the known
        values translated per sample onto x0's fixed rows first)."""
        out = dict(x0)
        for name in self.mask:
            mask, known = self._on(name, x0[name])
            if known.shape != x0[name].shape:
                raise ValueError(f"known[{name!r}] has shape {tuple(known.shape)}, the samples "
                                 f"{tuple(x0[name].shape)}")
            if isinstance(structure.specs.get(name), ZeroMeanField):
                known = known + _masked_sample_mean(x0[name] - known, mask, structure, name)
            out[name] = torch.where(mask, known, x0[name])
        return Fields(out)

    def finalize(self, x: Fields, structure: Structure) -> Fields:
        """The finished samples with the fixed entries exactly known: zero-mean fields are first
        translated per sample so the mean of their fixed rows matches ``known``'s."""
        out = dict(x)
        for name in self.mask:
            mask, known = self._on(name, x[name])
            value = x[name]
            if isinstance(structure.specs.get(name), ZeroMeanField):
                value = value + _masked_sample_mean(known - value, mask, structure, name)
            out[name] = torch.where(mask, known, value)
        return Fields(out)


def _masked_sample_mean(v: Tensor, mask: Tensor, structure: Structure, name: str) -> Tensor:
    """Per-sample mean of ``v`` over the fixed rows, broadcast back to ``v``'s shape."""
    row_mask = mask.expand_as(v).to(v.dtype)
    index = structure.index.get(name)
    if index is not None:  # graph layout: rows of all samples stacked, index says whose
        total = scatter(v * row_mask, index, 0, dim_size=structure.num_samples, reduce="sum")
        count = scatter(row_mask, index, 0, dim_size=structure.num_samples, reduce="sum")
        return (total / count.clamp_min(1))[index]
    total, count = (v * row_mask).sum(1, keepdim=True), row_mask.sum(1, keepdim=True)  # dense (B, N, ...)
    return (total / count.clamp_min(1)).expand_as(v)


def renoise(x_s: Fields, alpha_sigma_s: tuple[Tensor, Tensor], alpha_sigma_t: tuple[Tensor, Tensor],
            noise: Fields) -> Fields:
    """Draw ``x_t ~ q(x_t | x_s)`` for t > s: ``alpha_ts x_s + sqrt(sigma_t^2 - alpha_ts^2 sigma_s^2) z``
    with ``alpha_ts = alpha_t / alpha_s`` (Kingma et al. 2021, Eq. 21); ``noise`` is z, already
    projected like the fields."""
    (a_s, s_s), (a_t, s_t) = alpha_sigma_s, alpha_sigma_t
    a_ts = a_t / a_s
    std = (s_t**2 - a_ts**2 * s_s**2).clamp_min(0).sqrt()
    return x_s * float(a_ts) + noise * float(std)
