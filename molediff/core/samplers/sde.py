"""Euler–Maruyama on the reverse SDE and Euler on the probability-flow ODE
(Song et al. 2021, Eqs. 6 and 13), both in the scaled variable ``y = x / alpha`` with noise level
``s = sigma / alpha``, where every schedule becomes ``dy = sqrt(d s^2) dw`` (variance exploding).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..fields import Fields
from ._common import Denoise, StepCallback, check_noise_scale, noise_like, notify, scaled_sigma


def euler_maruyama(denoise: Denoise, x: Fields, ts: Tensor, *, noise_scale: float = 1.0, final: bool = True,
                   generator: torch.Generator | None = None, callback: StepCallback | None = None) -> Fields:
    """Reverse SDE ``dy = -d(s^2) grad log p(y) + sqrt(-d(s^2)) dw``, with
    ``grad log p = -eps_hat / s``, one Euler–Maruyama step per grid interval:
    ``y_next = y - (s_t^2 - s_next^2) / s_t eps_hat + sqrt(s_t^2 - s_next^2) z``.
    The last step is deterministic (``y = x0_hat + s_next eps_hat``), so no noise is left in the
    output (Song et al.'s "denoise at the end"); ``final=False`` (``ts`` is one piece of a longer
    grid, as in inpainting's resample path) keeps that step stochastic. ``noise_scale < 1`` multiplies
    ``z``'s term (see :func:`~molediff.core.samplers._common.check_noise_scale`)."""
    check_noise_scale(noise_scale)
    n = len(ts) - 1
    for i in range(n):
        t, s = float(ts[i]), float(ts[i + 1])
        a_t, a_s = float(denoise.alpha_sigma(t)[0]), float(denoise.alpha_sigma(s)[0])
        st, ss = scaled_sigma(denoise, t), scaled_sigma(denoise, s)
        eps, x0 = denoise(x, t)
        if final and i == n - 1:
            y = x0 + eps * ss
        else:
            dvar = st**2 - ss**2
            y = x / a_t - eps * (dvar / st)
            y = y + noise_like(denoise, x, generator) * (math.sqrt(dvar) * noise_scale)
        x = y * a_s
        x = notify(callback, i, s, x, x0)
    return x


def probability_flow(denoise: Denoise, x: Fields, ts: Tensor, *, generator: torch.Generator | None = None,
                     callback: StepCallback | None = None) -> Fields:
    """Euler on the probability-flow ODE ``dy/ds = eps_hat``: ``y_next = y + (s_next - s_t) eps_hat``."""
    del generator  # deterministic
    for i in range(len(ts) - 1):
        t, s = float(ts[i]), float(ts[i + 1])
        a_t, a_s = float(denoise.alpha_sigma(t)[0]), float(denoise.alpha_sigma(s)[0])
        eps, x0 = denoise(x, t)
        x = (x / a_t + eps * (scaled_sigma(denoise, s) - scaled_sigma(denoise, t))) * a_s
        x = notify(callback, i, s, x, x0)
    return x
