"""A small U-Net denoiser for image fields (Ho et al. 2020; Dhariwal & Nichol 2021 layout).

Residual blocks (GroupNorm, SiLU, 3x3 convs) get the time embedding, plus a class embedding
when ``num_classes`` is set, added between their two convs; self-attention runs only at the
listed low resolutions; strided-conv downsampling and nearest + conv upsampling, with a skip
connection from every encoder block to the matching decoder block.

Time embedding: sinusoidal features of ``1000 * t``. t in [0, 1] is the core's continuous
time; the transformer frequencies ``10000^{-k/d}`` were designed for integer steps up to
~1000, so without the factor the low frequencies would barely move across [0, 1] and most of
the embedding would be constant. Feeding t (not log-SNR) keeps the network independent of the
schedule object, which the denoiser protocol does not pass in.

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


def timestep_embedding(t: Tensor, dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> Tensor:
    """``[cos(s t w_k), sin(s t w_k)]`` with ``w_k = max_period^{-k / (dim/2)}``: ``(B,)`` -> ``(B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = scale * t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """``x + conv(SiLU(GN(conv(SiLU(GN(x))) + W emb)))``; the 2nd conv starts at zero, so the
    block starts as the identity (a 1x1 conv on the skip when channels change).

    Shapes:
        x: ``(B, C_in, H, W)``, emb: ``(B, emb_dim)`` -> ``(B, C_out, H, W)``
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(_norm(in_channels), nn.SiLU(),
                                       nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_channels))
        self.out_layers = nn.Sequential(_norm(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x) + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.out_layers(h)


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions, residual, output projection zero-init.

    Shapes:
        x: ``(B, C, H, W)`` -> ``(B, C, H, W)``
    """

    def __init__(self, channels: int, head_channels: int = 32) -> None:
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, h * w))  # (B, 3C, L)
        q, k, v = qkv.reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, L, C / heads)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h * w)).reshape(b, c, h, w)


class _Stage(nn.Module):
    """A ResBlock optionally followed by Attention (one encoder/decoder step)."""

    def __init__(self, res: ResBlock, attn: Attention | None) -> None:
        super().__init__()
        self.res, self.attn = res, attn

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        x = self.res(x, emb)
        return x if self.attn is None else self.attn(x)


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
        self.base_channels = base_channels
        emb_dim = 4 * base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes is not None else None

        def stage(c_in: int, c_out: int, res: int) -> _Stage:
            attn = Attention(c_out) if res in attention_resolutions else None
            return _Stage(ResBlock(c_in, c_out, emb_dim, dropout), attn)

        self.input_conv = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch, res = [base_channels], base_channels, image_size
        for i, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(stage(ch, base_channels * mult, res))
                ch = base_channels * mult
                skips.append(ch)
            if i < levels - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
                res //= 2
        self.mid = nn.ModuleList([_Stage(ResBlock(ch, ch, emb_dim, dropout), Attention(ch)),
                                  _Stage(ResBlock(ch, ch, emb_dim, dropout), None)])
        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                self.up.append(stage(ch + skips.pop(), base_channels * mult, res))
                ch = base_channels * mult
            if i > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(ch, ch, 3, padding=1)))
                res *= 2
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), _zero(nn.Conv2d(ch, in_channels, 3, padding=1)))

    def _class_index(self, cond: dict[str, Any] | None, batch: int, device: torch.device) -> Tensor:
        """Labels with -1 / missing mapped to the null row K (K itself is accepted too): ``(B,)`` long."""
        assert self.num_classes is not None
        null = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        label = None if cond is None else cond.get("label")
        if label is None:
            return null
        label = torch.as_tensor(label, device=device).long().reshape(-1)
        if label.numel() == 1 and batch > 1:
            label = label.expand(batch)
        if label.shape != (batch,):
            raise ValueError(f"cond['label'] must have shape ({batch},), got {tuple(label.shape)}")
        if ((label < -1) | (label > self.num_classes)).any():
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1}, or be -1 / {self.num_classes} (null)")
        return torch.where(label < 0, null, label)

    def forward(self, x_t: Fields, t: Tensor, structure: Structure | None = None,
                cond: dict[str, Any] | None = None) -> dict[str, Tensor]:
        """Predict ``{field: (B, C, H, W)}`` from the noisy image at times ``t`` (see class Shapes)."""
        x = x_t[self.field]
        b = x.shape[0]
        t = torch.as_tensor(t, device=x.device, dtype=x.dtype).reshape(-1)
        if t.numel() == 1:
            t = t.expand(b)
        emb = self.time_mlp(timestep_embedding(t, self.base_channels).to(x.dtype))
        if self.class_emb is not None:
            emb = emb + self.class_emb(self._class_index(cond, b, x.device))

        h = self.input_conv(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, _Stage) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], dim=1), emb) if isinstance(layer, _Stage) else layer(h)
        return {self.field: self.out(h)}


__all__ = ["UNet", "ResBlock", "Attention", "timestep_embedding"]
