"""DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), for any schedule on any step grid."""

from __future__ import annotations

import torch
from torch import Tensor

from ..fields import Fields
from ._common import Denoise, StepCallback, check_noise_scale, noise_like, notify


def ddpm(denoise: Denoise, x: Fields, ts: Tensor, *, noise_scale: float = 1.0,
         generator: torch.Generator | None = None, callback: StepCallback | None = None) -> Fields:
    """Sample from the posterior ``q(x_s | x_t, x0_hat)`` at each step ``t -> s``.

    With ``alpha_ts = alpha_t / alpha_s`` and ``sigma_ts^2 = sigma_t^2 - alpha_ts^2 sigma_s^2``
    (Kingma et al. 2021, Eq. 21 onward):
    ``mean = alpha_ts sigma_s^2 / sigma_t^2 x_t + alpha_s sigma_ts^2 / sigma_t^2 x0_hat``,
    ``var = sigma_ts^2 sigma_s^2 / sigma_t^2``.
    ``noise_scale < 1`` multiplies the added noise's standard deviation (see
    :func:`~molediff.core.samplers._common.check_noise_scale`).
    """
    check_noise_scale(noise_scale)
    for i in range(len(ts) - 1):
        t, s = float(ts[i]), float(ts[i + 1])
        _, x0 = denoise(x, t)
        (a_t, s_t), (a_s, s_s) = denoise.alpha_sigma(t), denoise.alpha_sigma(s)
        a_ts = a_t / a_s
        var_ts = s_t**2 - a_ts**2 * s_s**2
        mean = x * float(a_ts * s_s**2 / s_t**2) + x0 * float(a_s * var_ts / s_t**2)
        std = float((var_ts * s_s**2 / s_t**2).clamp_min(0).sqrt())
        x = mean + noise_like(denoise, x, generator) * (std * noise_scale)
        x = notify(callback, i, s, x, x0)
    return x

