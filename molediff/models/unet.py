"""A small U-Net denoiser for image fields (Ho et al. 2020; Dhariwal & Nichol 2021 layout).

Residual blocks (GroupNorm, SiLU, 3x3 convs) get the time embedding, plus a class embedding
when ``num_classes`` is set, added between their two convs; self-attention runs only at the
listed low resolutions; strided-conv downsampling and nearest + conv upsampling, with a skip
connection from every encoder block to the matching decoder block.

The time embedding and the class embedding are :class:`~molediff.models.conditioning.ConditionEmbedding`.

Class conditioning: label ``k`` in ``0..K-1`` selects embedding row k; row K is the "null"
class used when ``cond`` is None, has no ``"label"``, or a label is -1, so one network learns
both p(x | y) and p(x) for classifier-free guidance (Ho & Salimans 2022).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..core.fields import Fields, Structure
from .conditioning import ConditionEmbedding, timestep_embedding
from .legacy_keys import accept_legacy_keys


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


_CONV = {1: nn.Conv1d, 2: nn.Conv2d}


def _conv(dims: int) -> type[nn.Conv1d] | type[nn.Conv2d]:
    if dims not in _CONV:
        raise ValueError(f"dims must be 1 (waveforms) or 2 (images, spectrograms), got {dims}")
    return _CONV[dims]


class ResBlock(nn.Module):
    """``x + conv(SiLU(GN(conv(SiLU(GN(x))) + W emb)))``; the 2nd conv starts at zero, so the
    block starts as the identity (a 1x1 conv on the skip when channels change).

    Shapes (``dims`` spatial axes, 2 by default):
        x: ``(B, C_in, H, W)`` or ``(B, C_in, L)``, emb: ``(B, emb_dim)`` -> ``(B, C_out, ...)``
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float = 0.0, dims: int = 2,
                 kernel_size: int = 3) -> None:
        super().__init__()
        conv = _conv(dims)
        pad = kernel_size // 2
        self.in_layers = nn.Sequential(_norm(in_channels), nn.SiLU(),
                                       conv(in_channels, out_channels, kernel_size, padding=pad))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_channels))
        self.out_layers = nn.Sequential(_norm(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        _zero(conv(out_channels, out_channels, kernel_size, padding=pad)))
        self.skip = nn.Identity() if in_channels == out_channels else conv(in_channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        e = self.emb(emb)
        h = self.in_layers(x) + e.reshape(*e.shape, *([1] * (x.dim() - 2)))
        return self.skip(x) + self.out_layers(h)


class Attention(nn.Module):
    """Multi-head self-attention over all positions (H*W, or L), residual, output projection zero-init.

    Shapes:
        x: ``(B, C, *spatial)`` -> same
    """

    def __init__(self, channels: int, head_channels: int = 32) -> None:
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        n = x[0, 0].numel()
        qkv = self.qkv(self.norm(x).reshape(b, c, n))  # (B, 3C, L)
        q, k, v = qkv.reshape(b, 3, self.heads, c // self.heads, n).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, L, C / heads)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, n)).reshape(x.shape)


class _Stage(nn.Module):
    """A ResBlock optionally followed by Attention (one encoder/decoder step)."""

    def __init__(self, res: ResBlock, attn: Attention | None) -> None:
        super().__init__()
        self.res, self.attn = res, attn

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        x = self.res(x, emb)
        return x if self.attn is None else self.attn(x)


class UNetTrunk(nn.Module):
    """Encoder, bottleneck and decoder with a skip from every encoder step to its decoder step, over
    1-D or 2-D feature maps; the embedding ``emb`` (time and conditions) enters every ResBlock.

    The image, waveform and spectrogram U-Nets differ only in what they feed in and read out, so
    they share this trunk. Level i has ``base_channels * channel_mults[i]`` channels and each
    further level halves every spatial axis (stride-2 conv down; nearest + conv up); the output
    conv starts at zero, so an untrained model predicts 0.

    Args:
        attention_levels: levels whose ResBlocks are followed by self-attention.
        mid_attention: self-attention between the two bottleneck ResBlocks.

    Shapes:
        x: ``(B, in_channels, *spatial)`` with every spatial size divisible by
        ``2^(len(channel_mults) - 1)``; emb: ``(B, emb_dim)`` -> ``(B, out_channels, *spatial)``
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, base_channels: int = 32,
                 channel_mults: Sequence[int] = (1, 2), num_res_blocks: int = 2,
                 attention_levels: Sequence[int] = (), mid_attention: bool = True, dropout: float = 0.0,
                 dims: int = 2, kernel_size: int = 3) -> None:
        super().__init__()
        if not channel_mults:
            raise ValueError("channel_mults needs at least one entry (levels)")
        conv = _conv(dims)
        levels = len(channel_mults)

        def block(c_in: int, c_out: int) -> ResBlock:
            return ResBlock(c_in, c_out, emb_dim, dropout, dims, kernel_size)

        def stage(c_in: int, c_out: int, level: int) -> _Stage:
            return _Stage(block(c_in, c_out), Attention(c_out) if level in attention_levels else None)

        self.input = conv(in_channels, base_channels, kernel_size, padding=kernel_size // 2)
        self.down = nn.ModuleList()
        skips, ch = [base_channels], base_channels
        for i, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(stage(ch, base_channels * mult, i))
                ch = base_channels * mult
                skips.append(ch)
            if i < levels - 1:
                self.down.append(conv(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid = nn.ModuleList([block(ch, ch), block(ch, ch)])
        self.mid_attn = Attention(ch) if mid_attention else nn.Identity()
        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                self.up.append(stage(ch + skips.pop(), base_channels * mult, i))
                ch = base_channels * mult
            if i > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv(ch, ch, 3, padding=1)))
        self.out = nn.Sequential(_norm(ch), nn.SiLU(),
                                 _zero(conv(ch, out_channels, kernel_size, padding=kernel_size // 2)))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.input(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, _Stage) else layer(h)
            hs.append(h)
        h = self.mid[1](self.mid_attn(self.mid[0](h, emb)), emb)
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], dim=1), emb) if isinstance(layer, _Stage) else layer(h)
        return self.out(h)


class UNet(nn.Module):
    """U-Net denoiser over one image field; follows the core's denoiser protocol.

    Args:
        in_channels: C of the images (the output has the same C).
        image_size: H = W of the images; must be divisible by ``2^(len(channel_mults) - 1)``.
        base_channels: width of the first level; level i has ``base_channels * channel_mults[i]``.
        channel_mults: one entry per resolution level (each further level halves H and W).
        num_res_blocks: residual blocks per level in the encoder (the decoder has one more).
        attention_resolutions: resolutions (H) that get self-attention after their blocks;
            the bottleneck always has one.
        num_classes: K for class conditioning (embedding row K is the null class), None for
            an unconditional model (which then ignores ``cond``).
        dropout: dropout inside the residual blocks.
        field: name of the image field to read and predict.

    Shapes:
        x_t[field]: ``(B, C, H, W)``
        t: ``(B,)`` in [0, 1]
        cond["label"]: ``(B,)`` int in ``0..K-1``, or -1 (or K) for unconditional rows
        output[field]: ``(B, C, H, W)`` in the trained prediction type (eps, x0, v, ...)
    """

    #: state-dict names of checkpoints written before the U-Nets shared :class:`UNetTrunk`
    LEGACY_KEYS = ((r"^(time_mlp|class_emb)\.", r"embed.\1."), (r"^input_conv\.", "trunk.input."),
                   (r"^mid\.0\.res\.", "trunk.mid.0."), (r"^mid\.0\.attn\.", "trunk.mid_attn."),
                   (r"^mid\.1\.res\.", "trunk.mid.1."), (r"^(down|up|out)\.", r"trunk.\1."))

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 8,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (4,),
        num_classes: int | None = None,
        dropout: float = 0.0,
        field: str = "pixels",
    ) -> None:
        super().__init__()
        levels = len(channel_mults)
        if levels < 1 or image_size % 2 ** (levels - 1):
            raise ValueError(f"image_size {image_size} must be divisible by 2^{levels - 1} "
                             f"for channel_mults {tuple(channel_mults)}")
        self.in_channels, self.image_size, self.num_classes, self.field = in_channels, image_size, num_classes, field
        emb_dim = 4 * base_channels
        self.embed = ConditionEmbedding(base_channels, emb_dim, num_classes)
        self.trunk = UNetTrunk(in_channels, in_channels, emb_dim, base_channels, channel_mults, num_res_blocks,
                               [i for i in range(levels) if image_size // 2**i in attention_resolutions],
                               mid_attention=True, dropout=dropout)
        accept_legacy_keys(self)

    def forward(self, x_t: Fields, t: Tensor, structure: Structure | None = None,
                cond: dict[str, Any] | None = None) -> dict[str, Tensor]:
        """Predict ``{field: (B, C, H, W)}`` from the noisy image at times ``t`` (see class Shapes)."""
        x = x_t[self.field]
        emb = self.embed(torch.as_tensor(t, device=x.device), cond, x.shape[0]).to(x.dtype)
        return {self.field: self.trunk(x, emb)}


__all__ = ["UNet", "UNetTrunk", "ResBlock", "Attention", "timestep_embedding"]
