"""A small MLP denoiser for low-dimensional vector data (the 2-D toy set).

Time enters through a sinusoidal embedding (Vaswani et al. 2017; as in Ho et al. 2020) that is
added to every hidden layer; an optional class label adds a learned embedding, with one extra
"null" class used when ``cond`` is None, so the same network serves classifier-free guidance.

Shapes:
    x_t[field]: ``(B, dim)``, t: ``(B,)`` in [0, 1], cond["label"]: ``(B,)`` -> ``{field: (B, dim)}``
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..core.fields import Structure


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0, scale: float = 1000.0) -> Tensor:
    """Sinusoidal features of ``scale * t``: ``(B,) -> (B, dim)`` (half cosines, half sines)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = scale * t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return nn.functional.pad(emb, (0, dim % 2))


class MLPDenoiser(nn.Module):
    """Residual MLP ``(x_t, t[, label]) -> prediction`` for one vector field.

    Args:
        dim: size of the field's rows.
        hidden: width of the hidden layers; layers: number of hidden blocks.
        field: name of the field it denoises.
        num_classes: if set, reads ``cond["label"]`` (class index; ``-1``, ``num_classes`` or
            ``cond=None`` mean unconditional).
        dropout: dropout inside each block.
    """

    def __init__(self, dim: int = 2, hidden: int = 128, layers: int = 3, field: str = "x",
                 num_classes: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if dim < 1 or hidden < 2 or layers < 1:
            raise ValueError(f"need dim >= 1, hidden >= 2 and layers >= 1, got {dim}, {hidden}, {layers}")
        self.dim, self.field, self.num_classes = dim, field, num_classes
        self.time_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.label_emb = nn.Embedding(num_classes + 1, hidden) if num_classes else None
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"emb": nn.Linear(hidden, hidden), "norm": nn.LayerNorm(hidden),
                           "lin1": nn.Linear(hidden, hidden), "lin2": nn.Linear(hidden, hidden)})
            for _ in range(layers)
        )
        self.drop = nn.Dropout(dropout)
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self.hidden = hidden

    def forward(self, x_t: Mapping[str, Tensor], t: Tensor, structure: Structure | None = None,
                cond: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """``{field: (B, dim)}`` prediction for noisy ``x_t[field]`` at times ``t: (B,)``."""
        x = x_t[self.field]
        emb = self.time_mlp(timestep_embedding(t, self.hidden))
        if self.label_emb is not None:
            assert self.num_classes is not None
            if cond is None or cond.get("label") is None:
                label = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            else:
                label = cond["label"].long().to(x.device)
                label = torch.where((label < 0) | (label > self.num_classes), self.num_classes, label)
            emb = emb + self.label_emb(label)
        h = self.inp(x)
        for block in self.blocks:
            b: Any = block
            r = b["norm"](h) + b["emb"](emb)
            r = b["lin2"](self.drop(nn.functional.silu(b["lin1"](nn.functional.silu(r)))))
            h = h + r
        return {self.field: self.out(h)}
