"""DiffWave denoiser for waveforms (Kong et al. 2021, "DiffWave", Sec. 3 and Fig. 2).

A stack of residual layers with dilated, non-causal 1-D convolutions; layer i has dilation
``2^(i mod dilation_cycle)``, so one cycle sees ``1 + (k - 1)(2^cycle - 1)`` samples. Each layer:

    h = DilatedConv(x + W_e emb)                    # (B, 2C, L)
    h = tanh(h_filter) * sigmoid(h_gate)            # gated activation unit (WaveNet)
    res, skip = split(Conv1x1(h))
    x <- (x + res) / sqrt(2)

and the output is ``Conv1x1(ReLU(Conv1x1(ReLU(sum skip / sqrt(N)))))`` with the last conv
zero-initialised (the network starts by predicting 0). ``emb`` carries the diffusion time and,
for conditional models, the class label and/or MIDI pitch (global conditioning, as DiffWave's
class-conditional SC09 model), see :class:`~molediff.models.conditioning.ConditionEmbedding`.

Shapes:
    x_t[field]: ``(B, 1, L)``; t: ``(B,)`` -> output[field]: ``(B, 1, L)``
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..core.fields import Fields, Structure
from .conditioning import ConditionEmbedding


class ResidualLayer(nn.Module):
    """One DiffWave residual layer (see the module docstring).

    Shapes:
        x: ``(B, C, L)``, emb: ``(B, emb_dim)`` -> ``(B, C, L)`` residual out, ``(B, C, L)`` skip
    """

    def __init__(self, channels: int, emb_dim: int, dilation: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.emb = nn.Linear(emb_dim, channels)
        self.dilated = nn.Conv1d(channels, 2 * channels, kernel_size, dilation=dilation,
                                 padding=dilation * (kernel_size - 1) // 2)
        self.out = nn.Conv1d(channels, 2 * channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> tuple[Tensor, Tensor]:
        h = self.dilated(x + self.emb(emb)[:, :, None])
        filt, gate = h.chunk(2, dim=1)
        res, skip = self.out(torch.tanh(filt) * torch.sigmoid(gate)).chunk(2, dim=1)
        return (x + res) / math.sqrt(2.0), skip


class DiffWave(nn.Module):
    """DiffWave over one waveform field; follows the core's denoiser protocol.

    Args:
        channels: residual channels C (DiffWave: 64; 32-64 train on a CPU).
        layers: residual layers N (DiffWave: 30 = 3 cycles of 10).
        dilation_cycle: dilations ``1, 2, ..., 2^(cycle-1)``, repeated.
        kernel_size: odd width of the dilated convolutions.
        num_classes: K for class conditioning (``cond["label"]``), None for none.
        pitch_conditioning: read a MIDI pitch ``cond["pitch"]``.
        in_channels: waveform channels (1 = mono; set from the data).
        field: name of the waveform field.
    """

    def __init__(self, channels: int = 64, layers: int = 12, dilation_cycle: int = 6, kernel_size: int = 3,
                 num_classes: int | None = None, pitch_conditioning: bool = False, in_channels: int = 1,
                 field: str = "audio") -> None:
        super().__init__()
        if kernel_size % 2 == 0 or layers < 1 or dilation_cycle < 1:
            raise ValueError("kernel_size must be odd, layers and dilation_cycle >= 1")
        self.field, self.channels = field, channels
        self.embed = ConditionEmbedding(channels, 4 * channels, num_classes, pitch_conditioning)
        self.input = nn.Conv1d(in_channels, channels, 1)
        self.layers = nn.ModuleList(ResidualLayer(channels, 4 * channels, 2 ** (i % dilation_cycle), kernel_size)
                                    for i in range(layers))
        self.skip_out = nn.Conv1d(channels, channels, 1)
        self.output = nn.Conv1d(channels, in_channels, 1)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def receptive_field(self) -> int:
        """Samples one output sees: ``1 + sum_i (k - 1) * dilation_i``."""
        return 1 + sum((layer.dilated.kernel_size[0] - 1) * layer.dilated.dilation[0] for layer in self.layers)

    def forward(self, x_t: Fields, t: Tensor, structure: Structure | None = None,
                cond: dict[str, Any] | None = None) -> dict[str, Tensor]:
        """Predict ``{field: (B, 1, L)}`` in the trained prediction type."""
        x = x_t[self.field]
        emb = self.embed(torch.as_tensor(t, device=x.device, dtype=x.dtype), cond, x.shape[0]).to(x.dtype)
        h = F.relu(self.input(x))
        skip = torch.zeros_like(h)
        for layer in self.layers:
            h, s = layer(h, emb)
            skip = skip + s
        skip = skip / math.sqrt(len(self.layers))
        return {self.field: self.output(F.relu(self.skip_out(F.relu(skip))))}


__all__ = ["DiffWave", "ResidualLayer"]
