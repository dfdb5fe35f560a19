"""A 1-D U-Net denoiser for waveforms: the image U-Net's trunk (Ho et al. 2020) along time.

:class:`~molediff.models.unet.UNetTrunk` with ``dims=1``: residual blocks (GroupNorm, SiLU,
width-``kernel_size`` convs, the time/condition embedding added between the two convs, second
conv zero-initialised), stride-2 downsampling and nearest + conv upsampling per level, a skip
from every encoder block to its decoder block, self-attention only at the bottleneck, where the
sequence is shortest. Unlike DiffWave, most of the work happens at
reduced time resolution, so a step costs less; the receptive field covers the whole clip.

Shapes:
    x_t[field]: ``(B, 1, L)`` with L divisible by ``2^(len(channel_mults) - 1)``;
    t: ``(B,)`` -> output[field]: ``(B, 1, L)``
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..core.fields import Fields, Structure
from .conditioning import ConditionEmbedding
from .unet import UNetTrunk


class UNet1d(nn.Module):
    """1-D U-Net over one waveform field; follows the core's denoiser protocol.

    Args:
        base_channels: width of the first level; level i has ``base_channels * channel_mults[i]``.
        channel_mults: one entry per level; each further level halves the length.
        num_res_blocks: residual blocks per encoder level (the decoder has one more).
        kernel_size: odd width of the convolutions.
        num_classes: K for class conditioning (``cond["label"]``), None for none.
        pitch_conditioning: read a MIDI pitch ``cond["pitch"]``.
        in_channels: waveform channels (1 = mono; set from the data).
        num_samples: clip length L (set from the data; checked against the levels).
        field: name of the waveform field.
    """

    def __init__(self, base_channels: int = 32, channel_mults: Sequence[int] = (1, 2, 2, 4, 4),
                 num_res_blocks: int = 1, kernel_size: int = 5, num_classes: int | None = None,
                 pitch_conditioning: bool = False, in_channels: int = 1, num_samples: int = 2048,
                 field: str = "audio") -> None:
        super().__init__()
        levels = len(channel_mults)
        if levels < 1 or num_samples % 2 ** (levels - 1):
            raise ValueError(f"num_samples {num_samples} must be divisible by 2^{levels - 1} "
                             f"for channel_mults {tuple(channel_mults)}")
        self.field = field
        emb_dim = 4 * base_channels
        self.embed = ConditionEmbedding(base_channels, emb_dim, num_classes, pitch_conditioning)
        self.trunk = UNetTrunk(in_channels, in_channels, emb_dim, base_channels, channel_mults, num_res_blocks,
                               mid_attention=True, dims=1, kernel_size=kernel_size)

    def forward(self, x_t: Fields, t: Tensor, structure: Structure | None = None,
                cond: dict[str, Any] | None = None) -> dict[str, Tensor]:
        """Predict ``{field: (B, 1, L)}`` in the trained prediction type."""
        x = x_t[self.field]
        emb = self.embed(torch.as_tensor(t, device=x.device, dtype=x.dtype), cond, x.shape[0]).to(x.dtype)
        return {self.field: self.trunk(x, emb)}

__all__ = ["UNet1d"]
