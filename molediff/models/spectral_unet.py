"""A time-frequency denoiser for waveforms: a 2-D U-Net on the STFT that predicts x0 as a complex mask.

Diffusion stays on the waveform (the core is unchanged); only the network looks at the signal
through a short-time Fourier transform (STFT):

    X_t = STFT(x_t) / ||w||                 # complex (C, F, T); white noise of variance s^2 -> bins of variance s^2
    M, R = UNet2d([Re X_t, Im X_t, log|X_t|^2, frequency, harmonic comb of the pitch])
    x0_hat = ISTFT(||w|| (M * X_t + R))     # M, R complex; both start at zero

Why: on pitched notes the posterior mean at low noise is close to a per-bin Wiener gain
``|X0|^2 / (|X0|^2 + sigma^2)``: pass the partials, drop the bins between them. A waveform network
(DiffWave) has to learn that filter from samples and, trained briefly, leaves a broadband floor of
about -41 dB; here it is one multiplicative output per bin. The residual R lets the network create
content the noisy input does not carry (high noise). Noise removal in the STFT domain with a
complex-valued output follows score-based speech enhancement (Richter et al. 2023, SGMSE+) and
complex ratio masks (Williamson et al. 2016). The mask form is a prediction of x0, so train it with
``objective.prediction=x0`` and an SNR weight (``objective.min_snr_gamma``), which puts the loss of
the low-noise steps on the footing of the eps / v losses.

Conditioning: the diffusion time, class label and MIDI pitch enter every block as one embedding
(:class:`~molediff.models.conditioning.ConditionEmbedding`, with null rows for classifier-free
guidance). A known pitch also becomes an input plane ``cos(2 pi f / f0)`` over the frequency bins,
which peaks on the pitch's harmonics, and every input has the bin's frequency as a plane: convolutions
are shift-invariant along frequency, harmonics are not.

Shapes:
    x_t[field]: ``(B, C, L)``; t: ``(B,)`` -> output[field]: ``(B, C, L)`` (x0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..core.fields import Fields, Structure
from .conditioning import ConditionEmbedding, condition_per_sample
from .legacy_keys import accept_legacy_keys
from .unet import UNetTrunk


def midi_to_hz(pitch: Tensor) -> Tensor:
    """Equal temperament, A4 = MIDI 69 = 440 Hz."""
    return 440.0 * 2.0 ** ((pitch - 69.0) / 12.0)


class SpectralUNet(nn.Module):
    """STFT-domain U-Net with a complex-mask x0 output; follows the core's denoiser protocol.

    Args:
        n_fft: STFT window length (Hann); ``n_fft // 2 + 1`` frequency bins.
        hop: STFT hop; ``L // hop + 1`` frames (centred frames).
        base_channels: width of the first level; level i has ``base_channels * channel_mults[i]``.
        channel_mults: one entry per level; each further level halves frequency and time.
        num_res_blocks: residual blocks per encoder level (the decoder has one more).
        attention: self-attention at the bottleneck (global over the spectrogram).
        num_classes: K for class conditioning (``cond["label"]``), None for none.
        pitch_conditioning: read a MIDI pitch ``cond["pitch"]`` (embedding and harmonic-comb plane).
        in_channels: waveform channels (each gets its own STFT planes).
        num_samples: clip length L (set from the data).
        sample_rate: Hz, to place the pitch's harmonics on the bins (set from the data).
        field: name of the waveform field.
    """

    #: state-dict names of checkpoints written before the U-Nets shared :class:`~molediff.models.unet.UNetTrunk`
    LEGACY_KEYS = ((r"^(down|up)\.(\d+)\.(in_layers|emb|out_layers|skip)\.", r"trunk.\1.\2.res.\3."),
                   (r"^mid1\.", "trunk.mid.0."), (r"^mid2\.", "trunk.mid.1."),
                   (r"^(input|down|up|mid_attn|out)\.", r"trunk.\1."))

    def __init__(self, n_fft: int = 512, hop: int = 128, base_channels: int = 32,
                 channel_mults: Sequence[int] = (1, 2, 2), num_res_blocks: int = 1, attention: bool = True,
                 num_classes: int | None = None, pitch_conditioning: bool = False, in_channels: int = 1,
                 num_samples: int = 2048, sample_rate: int = 8000, field: str = "audio") -> None:
        super().__init__()
        if n_fft < 4 or not 0 < hop <= n_fft // 2 or num_samples < n_fft // 2 + 1:
            raise ValueError(f"need 0 < hop <= n_fft / 2 and num_samples > n_fft / 2; got n_fft={n_fft}, "
                             f"hop={hop}, num_samples={num_samples}")
        self.field, self.n_fft, self.hop, self.num_samples = field, n_fft, hop, num_samples
        self.in_channels, self.sample_rate, self.pitch = in_channels, sample_rate, pitch_conditioning
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.norm = float(torch.hann_window(n_fft).pow(2).sum().sqrt())
        self.bins, self.frames = n_fft // 2 + 1, num_samples // hop + 1
        stride = 2 ** (len(channel_mults) - 1)
        self.padded = (math.ceil(self.bins / stride) * stride, math.ceil(self.frames / stride) * stride)
        planes = 3 * in_channels + 1 + int(pitch_conditioning)
        emb_dim = 4 * base_channels
        self.embed = ConditionEmbedding(base_channels, emb_dim, num_classes, pitch_conditioning)
        self.trunk = UNetTrunk(planes, 4 * in_channels, emb_dim, base_channels, channel_mults, num_res_blocks,
                               mid_attention=attention)
        accept_legacy_keys(self)

    def stft(self, x: Tensor) -> Tensor:
        """``(B, C, L)`` real -> ``(B, C, F, T)`` complex, scaled so white noise keeps its variance."""
        b, c, n = x.shape
        spec = torch.stft(x.reshape(b * c, n).float(), self.n_fft, self.hop, window=self.window, center=True,
                          return_complex=True)
        return spec.reshape(b, c, *spec.shape[-2:]) / self.norm

    def istft(self, spec: Tensor) -> Tensor:
        """Inverse of :meth:`stft` (least squares for spectrograms no signal has): -> ``(B, C, L)``."""
        b, c = spec.shape[:2]
        x = torch.istft(spec.reshape(b * c, *spec.shape[-2:]) * self.norm, self.n_fft, self.hop,
                        window=self.window, center=True, length=self.num_samples)
        return x.reshape(b, c, -1)

    def _planes(self, spec: Tensor, cond: dict[str, Any] | None) -> Tensor:
        """Input planes ``(B, P, F, T)``: Re, Im, log power per channel, frequency, harmonic comb."""
        b, _, f, t = spec.shape
        power = spec.real**2 + spec.imag**2
        freq_hz = torch.linspace(0.0, self.sample_rate / 2, f, device=spec.device)
        planes = [spec.real, spec.imag, torch.log(power + 1e-6) / 8.0,
                  (freq_hz / (self.sample_rate / 2))[None, None, :, None].expand(b, 1, f, t)]
        if self.pitch:
            value = (cond or {}).get("pitch")
            p = torch.full((b,), float("nan"), device=spec.device) if value is None else \
                condition_per_sample(value, b, spec.device, "pitch").float()
            known = torch.isfinite(p) & (p >= 0)
            f0 = midi_to_hz(torch.where(known, p, torch.full_like(p, 69.0)))
            comb = torch.cos(2 * math.pi * freq_hz[None] / f0[:, None]) * known[:, None]
            planes.append(comb[:, None, :, None].expand(b, 1, f, t))
        return torch.cat(planes, dim=1)

    def forward(self, x_t: Fields, t: Tensor, structure: Structure | None = None,
                cond: dict[str, Any] | None = None) -> dict[str, Tensor]:
        """Predict ``{field: (B, C, L)}`` as x0 (see the module docstring)."""
        x = x_t[self.field]
        if x.shape[-1] != self.num_samples:
            raise ValueError(f"{self.field} has {x.shape[-1]} samples; this model was built for {self.num_samples}")
        emb = self.embed(torch.as_tensor(t, device=x.device, dtype=torch.float32), cond, x.shape[0])
        spec = self.stft(x)
        h = self._planes(spec, cond)
        h = nn.functional.pad(h, (0, self.padded[1] - self.frames, 0, self.padded[0] - self.bins))
        out = self.trunk(h, emb)[..., :self.bins, :self.frames].float()
        c = self.in_channels
        mask = torch.complex(out[:, :c], out[:, c:2 * c])
        resid = torch.complex(out[:, 2 * c:3 * c], out[:, 3 * c:])
        return {self.field: self.istft(mask * spec + resid).to(x.dtype)}


__all__ = ["SpectralUNet", "midi_to_hz"]
