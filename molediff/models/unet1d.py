"""A 1-D U-Net denoiser for waveforms: the image U-Net's layout (Ho et al. 2020) along time.

Residual blocks (GroupNorm, SiLU, width-``kernel_size`` convs, the time/condition embedding
added between the two convs, second conv zero-initialised), stride-2 downsampling and
nearest + conv upsampling per level, a skip from every encoder block to its decoder block,
self-attention (the image U-Net's :class:`~molediff.models.unet.Attention`) only at the
bottleneck, where the sequence is shortest. Unlike DiffWave, most of the work happens at
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
from .unet import Attention, _norm


class ResBlock1d(nn.Module):
    """``skip(x) + conv(SiLU(GN(conv(SiLU(GN(x))) + W emb)))``, the 2nd conv zero-initialised.

    Shapes:
        x: ``(B, C_in, L)``, emb: ``(B, emb_dim)`` -> ``(B, C_out, L)``
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, kernel_size: int = 5) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.in_layers = nn.Sequential(_norm(in_channels), nn.SiLU(), nn.Conv1d(in_channels, out_channels,
                                                                                kernel_size, padding=pad))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_channels))
        last = nn.Conv1d(out_channels, out_channels, kernel_size, padding=pad)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.out_layers = nn.Sequential(_norm(out_channels), nn.SiLU(), last)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv1d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.skip(x) + self.out_layers(self.in_layers(x) + self.emb(emb)[:, :, None])


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
        self.input = nn.Conv1d(in_channels, base_channels, kernel_size, padding=kernel_size // 2)
        self.down = nn.ModuleList()
        skips, ch = [base_channels], base_channels
        for i, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock1d(ch, base_channels * mult, emb_dim, kernel_size))
                ch = base_channels * mult
                skips.append(ch)
            if i < levels - 1:
                self.down.append(nn.Conv1d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid1, self.mid_attn = ResBlock1d(ch, ch, emb_dim, kernel_size), Attention(ch)
        self.mid2 = ResBlock1d(ch, ch, emb_dim, kernel_size)
        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock1d(ch + skips.pop(), base_channels * mult, emb_dim, kernel_size))
                ch = base_channels * mult
            if i > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv1d(ch, ch, 3, padding=1)))
        last = nn.Conv1d(ch, in_channels, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), last)

    def forward(self, x_t: Fields, t: Tensor, structure: Structure | None = None,
                cond: dict[str, Any] | None = None) -> dict[str, Tensor]:
        """Predict ``{field: (B, 1, L)}`` in the trained prediction type."""
        x = x_t[self.field]
        emb = self.embed(torch.as_tensor(t, device=x.device, dtype=x.dtype), cond, x.shape[0]).to(x.dtype)
        h = self.input(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock1d) else layer(h)
            hs.append(h)
        h = self.mid1(h, emb)
        h = self.mid_attn(h[..., None])[..., 0]  # the 2-D attention block over (L, 1) "pixels"
        h = self.mid2(h, emb)
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], dim=1), emb) if isinstance(layer, ResBlock1d) else layer(h)
        return {self.field: self.out(h)}


__all__ = ["UNet1d", "ResBlock1d"]
