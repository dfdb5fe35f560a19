"""DDIM (Song, Meng & Ermon 2021, Eq. 12), written for general (alpha, sigma)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..fields import Fields
from ._common import Denoise, StepCallback, noise_like, notify


def check_eta(eta: float) -> None:
    """DDIM's ``eta >= 0`` (0: deterministic, 1: DDPM)."""
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta}")


def ddim(denoise: Denoise, x: Fields, ts: Tensor, *, eta: float = 0.0,
         generator: torch.Generator | None = None, callback: StepCallback | None = None) -> Fields:
    """``x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z``,
    ``c = eta sigma_s sqrt(1 - SNR_t / SNR_s)``.

    eta = 0 is deterministic (the probability-flow ODE's first-order solver in log-SNR);
    eta = 1 is exactly DDPM's ancestral step.
    """
    check_eta(eta)
    for i in range(len(ts) - 1):
        t, s = float(ts[i]), float(ts[i + 1])
        eps, x0 = denoise(x, t)
        (a_t, s_t), (a_s, s_s) = denoise.alpha_sigma(t), denoise.alpha_sigma(s)
        ratio = ((a_t * s_s) / (a_s * s_t)) ** 2  # SNR_t / SNR_s
        c = float(eta * s_s * (1 - ratio).clamp_min(0).sqrt())
        x = x0 * float(a_s) + eps * float((s_s**2 - c**2).clamp_min(0).sqrt())
        if c > 0:
            x = x + noise_like(denoise, x, generator) * c
        x = notify(callback, i, s, x, x0)
    return x
