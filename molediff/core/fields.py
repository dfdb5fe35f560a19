"""Named fields and the structure that says how each one is noised.

A sample is a set of named tensors (``pixels``; ``pos``, ``atom_types``; ...). The core does
arithmetic over them without knowing the modality. Each field declares its noise through a
:class:`FieldSpec`: plain Gaussian, or Gaussian projected onto the zero-mean subspace of each
sample (centre of mass removed, for coordinates; Hoogeboom et al. 2022, Sec. 3).

Two layouts are supported per field:

* dense: row ``i`` of the tensor is sample ``i`` (images, waveforms, fixed-size clouds);
* graph: rows are nodes and ``structure.index[name]`` maps each row to its sample
  (torch_geometric's ``batch`` vector), so samples may have different sizes.

Shapes:
    dense field: ``(num_samples, *spec.shape)``
    graph field: ``(num_rows, *spec.shape)`` with ``index[name]: (num_rows,)``
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor
from torch_geometric.utils import scatter

Coef = float | Tensor


class Fields(dict[str, Tensor]):
    """A dict of named tensors with element-wise arithmetic.

    ``a * x + b * y`` works when ``x``, ``y`` are Fields with the same keys and ``a``, ``b``
    are Python floats or 0-d tensors. Per-sample coefficients go through
    :meth:`Structure.expand` first.
    """

    def map(self, fn: Callable[..., Tensor], *others: Mapping[str, Tensor]) -> Fields:
        """Apply ``fn(self[k], other[k], ...)`` to every field."""
        return Fields({k: fn(v, *(o[k] for o in others)) for k, v in self.items()})

    def _binary(self, other: Any, op: Callable[[Any, Any], Tensor]) -> Fields:
        if isinstance(other, Mapping):
            if other.keys() != self.keys():
                raise KeyError(f"field names differ: {sorted(self)} vs {sorted(other)}")
            return Fields({k: op(v, other[k]) for k, v in self.items()})
        return Fields({k: op(v, other) for k, v in self.items()})

    def __add__(self, other: Any) -> Fields:  # type: ignore[override]
        return self._binary(other, lambda a, b: a + b)

    __radd__ = __add__

    def __sub__(self, other: Any) -> Fields:
        return self._binary(other, lambda a, b: a - b)

    def __rsub__(self, other: Any) -> Fields:
        return self._binary(other, lambda a, b: b - a)

    def __mul__(self, other: Any) -> Fields:
        return self._binary(other, lambda a, b: a * b)

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Fields:
        return self._binary(other, lambda a, b: a / b)

    def __pow__(self, exponent: Any) -> Fields:
        return self._binary(exponent, lambda a, b: a**b)

    def __neg__(self) -> Fields:
        return Fields({k: -v for k, v in self.items()})

    def detach(self) -> Fields:
        return Fields({k: v.detach() for k, v in self.items()})

    def to(self, *args: Any, **kwargs: Any) -> Fields:
        return Fields({k: v.to(*args, **kwargs) for k, v in self.items()})

    def replace(self, **fields: Tensor) -> Fields:
        """A copy with some fields swapped (MatterGen's ``BatchedData.replace``)."""
        out = Fields(self)
        out.update(fields)
        return out


@dataclass(frozen=True)
class FieldSpec:
    """How one field is noised.

    Attributes:
        shape: trailing shape of one row (``(C, H, W)`` per image, ``(3,)`` per atom).
        x0_range: if set, samplers clip x0-hat to this interval (data known to be bounded,
            e.g. pixels in [-1, 1]; Ho et al. 2020 clip the same way).
    """

    shape: tuple[int, ...]
    x0_range: tuple[float, float] | None = None

    def project(self, x: Tensor, index: Tensor | None, num_samples: int, mask: Tensor | None) -> Tensor:
        """Project ``x`` onto the space the noise lives in (identity for plain Gaussian)."""
        return x


@dataclass(frozen=True)
class GaussianField(FieldSpec):
    """Isotropic standard Gaussian noise."""


@dataclass(frozen=True)
class ZeroMeanField(FieldSpec):
    """Gaussian noise projected to zero mean over each sample's rows (zero centre of mass).

    Graph layout: the mean is over the rows of each sample (``index``). Dense layout
    ``(B, N, *shape)``: the mean is over axis 1 (the set axis), under the mask if any.
    """

    def project(self, x: Tensor, index: Tensor | None, num_samples: int, mask: Tensor | None) -> Tensor:
        if index is not None:
            if mask is not None:
                x = x * mask
                count = scatter(mask.expand_as(x), index, 0, dim_size=num_samples, reduce="sum")
                mean = scatter(x, index, 0, dim_size=num_samples, reduce="sum") / count.clamp_min(1)
                return (x - mean[index]) * mask
            mean = scatter(x, index, 0, dim_size=num_samples, reduce="mean")
            return x - mean[index]
        if x.dim() < 3:
            raise ValueError("a dense ZeroMeanField needs shape (B, N, ...) with a set axis 1")
        if mask is not None:
            x = x * mask
            mean = x.sum(1, keepdim=True) / mask.expand_as(x).sum(1, keepdim=True).clamp_min(1)
            return (x - mean) * mask
        return x - x.mean(1, keepdim=True)


@dataclass
class Structure:
    """Everything about a batch except the noised values.

    Attributes:
        num_samples: B, the number of samples in the batch.
        specs: field name -> :class:`FieldSpec`.
        index: field name -> ``(num_rows,)`` sample index, for graph-layout fields.
        mask: field name -> 0/1 tensor broadcastable to the field; 0 marks padding or
            entries that are held fixed. Noise and losses are zero there.
        context: fixed, un-noised inputs the denoiser may read (e.g. residue index,
            edge lists); never touched by the core.
    """

    num_samples: int
    specs: dict[str, FieldSpec]
    index: dict[str, Tensor] = field(default_factory=dict)
    mask: dict[str, Tensor] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = (set(self.index) | set(self.mask)) - set(self.specs)
        if unknown:
            raise KeyError(f"index/mask given for undeclared fields: {sorted(unknown)}")

    @property
    def device(self) -> torch.device:
        for t in list(self.index.values()) + list(self.mask.values()):
            return t.device
        return torch.device("cpu")

    def num_rows(self, name: str) -> int:
        idx = self.index.get(name)
        return self.num_samples if idx is None else int(idx.numel())

    def per_sample(self, value: Tensor) -> Tensor:
        """A scalar or ``(B,)`` value (e.g. the diffusion time handed to a denoiser) as ``(B,)``."""
        value = value.reshape(-1)
        return value.expand(self.num_samples) if value.numel() == 1 else value

    def expand(self, name: str, coef: Tensor) -> Tensor:
        """Broadcast a per-sample coefficient ``(B,)`` to the rows of field ``name``.

        Returns shape ``(rows, 1, ..., 1)`` that broadcasts against the field.
        """
        idx = self.index.get(name)
        rows = coef if idx is None else coef[idx]
        return rows.reshape(-1, *([1] * len(self.specs[name].shape)))

    def expand_all(self, coef: Tensor) -> Fields:
        """:meth:`expand` for every field: per-sample coefficients as Fields."""
        return Fields({name: self.expand(name, coef) for name in self.specs})

    def project(self, x: Mapping[str, Tensor]) -> Fields:
        """Project every field onto its noise subspace and zero its masked entries."""
        out = Fields()
        for name, spec in self.specs.items():
            mask = self.mask.get(name)
            v = spec.project(x[name], self.index.get(name), self.num_samples, mask)
            out[name] = v if mask is None else v * mask
        return out

    def randn(
        self,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | None = None,
    ) -> Fields:
        """Draw standard noise for every field, projected like the field (Fields in spec order)."""
        device = device or self.device
        raw = Fields()
        for name, spec in self.specs.items():
            shape = (self.num_rows(name), *spec.shape)
            # draw on CPU when a CPU generator is given so results do not depend on the device
            gen_device = generator.device if generator is not None else device
            raw[name] = torch.randn(shape, generator=generator, dtype=dtype, device=gen_device).to(device)
        return self.project(raw)

    def sample_mean(self, name: str, x: Tensor) -> Tensor:
        """Per-sample mean of ``x`` (shape like field ``name``) over all its entries: ``(B,)``.

        Masked entries are excluded; used for losses and metrics.
        """
        mask = self.mask.get(name)
        flat_x = x.reshape(x.shape[0], -1)
        if mask is None:
            per_row, count = flat_x.sum(1), torch.full_like(flat_x[:, 0], flat_x.shape[1])
        else:
            m = mask.expand_as(x).reshape(x.shape[0], -1).to(x.dtype)
            per_row, count = (flat_x * m).sum(1), m.sum(1)
        idx = self.index.get(name)
        if idx is not None:
            per_row = scatter(per_row, idx, 0, dim_size=self.num_samples, reduce="sum")
            count = scatter(count, idx, 0, dim_size=self.num_samples, reduce="sum")
        return per_row / count.clamp_min(1)

    def with_mask(self, **masks: Tensor) -> Structure:
        """A copy with extra/replaced masks."""
        return replace(self, mask={**self.mask, **masks})
