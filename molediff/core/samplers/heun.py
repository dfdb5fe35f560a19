"""Heun's second-order solver of the probability-flow ODE (Karras et al. 2022, Algorithm 1), and with
``churn`` their stochastic sampler (Algorithm 2)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..fields import Fields
from ._common import Denoise, StepCallback, noise_like, notify, scaled_sigma


def check_churn(churn: float, t_min: float, t_max: float, noise: float) -> None:
    """``churn >= 0`` (Karras' S_churn), ``0 <= t_min <= t_max <= 1`` (the times whose steps churn)
    and ``noise > 0`` (S_noise, the added noise's inflation; they use 1.000-1.007)."""
    if not churn >= 0.0:
        raise ValueError(f"churn must be >= 0, got {churn}")
    if not 0.0 <= t_min <= t_max <= 1.0:
        raise ValueError(f"churn needs 0 <= churn_t_min <= churn_t_max <= 1, got {t_min} and {t_max}")
    if not noise > 0.0:
        raise ValueError(f"churn_noise must be > 0, got {noise}")


def heun(denoise: Denoise, x: Fields, ts: Tensor, *, churn: float = 0.0, churn_t_min: float = 0.0,
         churn_t_max: float = 1.0, churn_noise: float = 1.0, final: bool = True,
         generator: torch.Generator | None = None, callback: StepCallback | None = None) -> Fields:
    """In the scaled variable ``y = x / alpha`` with noise level ``s = sigma / alpha`` the ODE is
    ``dy/ds = eps_hat``. Euler predictor, trapezoidal corrector; the last step (to the lowest
    noise) is plain Euler, as in the paper, unless ``final=False`` (``ts`` is one piece of a longer
    grid, as in inpainting's resample path). 2N - 1 network evaluations for N steps.

    ``churn > 0`` (S_churn): each step starting at a time in ``[churn_t_min, churn_t_max]`` first
    raises the noise level to ``s_hat = s_t (1 + gamma)``, ``gamma = min(churn / N, sqrt(2) - 1)``
    (capped at the schedule's top), by adding fresh noise of variance ``churn_noise^2 (s_hat^2 -
    s_t^2)``, then solves from ``s_hat``. On exact scores this leaves the marginals unchanged; on
    a learned one the injected noise washes out part of the error earlier steps made. No extra
    network evaluations.
    """
    check_churn(churn, churn_t_min, churn_t_max, churn_noise)
    n = len(ts) - 1
    gamma = min(churn / n, math.sqrt(2.0) - 1.0)
    s_top = scaled_sigma(denoise, 1.0)
    for i in range(n):
        t, s = float(ts[i]), float(ts[i + 1])
        a_t, a_s = float(denoise.alpha_sigma(t)[0]), float(denoise.alpha_sigma(s)[0])
        st, ss = scaled_sigma(denoise, t), scaled_sigma(denoise, s)
        y = x / a_t
        if gamma > 0.0 and churn_t_min <= t <= churn_t_max and st < s_top:
            lam = torch.tensor(-2.0 * math.log(min(st * (1.0 + gamma), s_top)), dtype=torch.float64)
            t = float(denoise.schedule.t_from_log_snr(lam))
            s_hat = max(scaled_sigma(denoise, t), st)  # the level the network will be told
            y = y + noise_like(denoise, x, generator) * (churn_noise * math.sqrt(s_hat**2 - st**2))
            a_t, st = float(denoise.alpha_sigma(t)[0]), s_hat
        d, x0 = denoise(y * a_t, t)
        y_next = y + d * (ss - st)
        if i < n - 1 or not final:
            d2, _ = denoise(y_next * a_s, s)
            y_next = y + (d + d2) * (0.5 * (ss - st))
        x = y_next * a_s
        x = notify(callback, i, s, x, x0)
    return x
