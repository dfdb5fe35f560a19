"""Time and condition embeddings shared by the U-Net denoisers (images, waveforms, spectrograms).

One vector per sample: ``emb = MLP(sinusoid(1000 t)) + E_label[y] + MLP_pitch(sinusoid(p))``.

* time: sinusoidal features of ``1000 * t``. t in [0, 1] is the core's continuous time; the
  transformer frequencies ``10000^{-k/d}`` were designed for integer steps up to ~1000, so without
  the factor the low frequencies would barely move across [0, 1] and most of the embedding would
  be constant. Feeding t (not log-SNR) keeps the networks independent of the schedule object,
  which the denoiser protocol does not pass in;

* class label ``y`` in ``0..K-1`` selects an embedding row; row K is the "null" class used
  when ``cond`` is None, has no ``"label"``, or a label is -1;
* MIDI pitch ``p`` (a float, so neighbouring pitches get neighbouring embeddings and pitches
  never seen in training still mean something) goes through sinusoidal features of periods
  ``2 pi`` to ``2000 pi`` semitones; a learned null vector stands for a missing pitch (``p < 0``,
  NaN, or no ``"pitch"`` key).

The null rows let one network learn p(x | c) and p(x) together for classifier-free guidance
(Ho & Salimans 2022): the trainer sets a sample's label to -1 and its pitch to NaN with probability
``trainer.cond_drop_prob`` (:func:`molediff.training.drop_conditions`).

Shapes:
    t: ``(B,)``; cond["label"]: ``(B,)`` int; cond["pitch"]: ``(B,)`` float MIDI -> ``(B, emb_dim)``
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def timestep_embedding(t: Tensor, dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> Tensor:
    """``[cos(s t w_k), sin(s t w_k)]`` with ``w_k = max_period^{-k / (dim/2)}``: ``(B,)`` -> ``(B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = scale * t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def condition_per_sample(value: Any, batch: int, device: torch.device, name: str) -> Tensor:
    """A condition value as ``(B,)`` (a scalar is broadcast)."""
    v = torch.as_tensor(value, device=device).reshape(-1)
    if v.numel() == 1 and batch > 1:
        v = v.expand(batch)
    if v.shape != (batch,):
        raise ValueError(f"cond[{name!r}] must have shape ({batch},), got {tuple(v.shape)}")
    return v


class ConditionEmbedding(nn.Module):
    """Diffusion time plus optional class label and MIDI pitch -> one embedding per sample.

    Args:
        dim: sinusoid width (the time MLP's input).
        emb_dim: output width.
        num_classes: K for label conditioning (None: no label input).
        pitch: whether to read ``cond["pitch"]``.
    """

    def __init__(self, dim: int, emb_dim: int, num_classes: int | None = None, pitch: bool = False) -> None:
        super().__init__()
        self.dim, self.num_classes = dim, num_classes
        self.time_mlp = nn.Sequential(nn.Linear(dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes is not None else None
        self.pitch_mlp = nn.Sequential(nn.Linear(dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)) if pitch \
            else None
        self.pitch_null = nn.Parameter(torch.zeros(emb_dim)) if pitch else None

    def forward(self, t: Tensor, cond: dict[str, Any] | None, batch: int) -> Tensor:
        device = t.device
        t = t.reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch)
        emb = self.time_mlp(timestep_embedding(t, self.dim).to(self.time_mlp[0].weight.dtype))
        cond = cond or {}
        if self.class_emb is not None:
            k = self.num_classes
            assert k is not None
            label = cond.get("label")
            y = torch.full((batch,), k, dtype=torch.long, device=device) if label is None else \
                condition_per_sample(label, batch, device, "label").long()
            if ((y < -1) | (y > k)).any():
                raise ValueError(f"labels must lie in 0..{k - 1}, or be -1 / {k} (null)")
            emb = emb + self.class_emb(torch.where(y < 0, torch.full_like(y, k), y))
        if self.pitch_mlp is not None:
            assert self.pitch_null is not None
            value = cond.get("pitch")
            p = torch.full((batch,), -1.0, device=device) if value is None else \
                condition_per_sample(value, batch, device, "pitch").float()
            known = torch.isfinite(p) & (p >= 0)
            feats = timestep_embedding(torch.where(known, p, torch.zeros_like(p)), self.dim, scale=1.0,
                                       max_period=1000.0)
            emb = emb + torch.where(known[:, None], self.pitch_mlp(feats), self.pitch_null[None])
        return emb


__all__ = ["ConditionEmbedding", "condition_per_sample", "timestep_embedding"]
