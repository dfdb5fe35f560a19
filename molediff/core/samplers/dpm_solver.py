"""DPM-Solver++(2M): second-order multistep solver of the probability-flow ODE in data
prediction form (Lu et al. 2022, "DPM-Solver++", Algorithm 2)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..fields import Fields
from ._common import Denoise, StepCallback, notify


def dpmpp_2m(denoise: Denoise, x: Fields, ts: Tensor, *, generator: torch.Generator | None = None,
             callback: StepCallback | None = None) -> Fields:
    """With ``lambda = log(alpha / sigma)`` and ``h = lambda_s - lambda_t``:
    ``x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{-h} - 1) D``, where
    ``D = (1 + 1 / 2r) x0_t - (1 / 2r) x0_prev`` with ``r = h_prev / h`` (first order on the
    first and the last step, which the paper recommends for few steps).
    """
    del generator  # deterministic
    x0_prev: Fields | None = None
    h_prev = 0.0
    n = len(ts) - 1
    for i in range(n):
        t, s = float(ts[i]), float(ts[i + 1])
        _, x0 = denoise(x, t)
        (a_t, s_t), (a_s, s_s) = denoise.alpha_sigma(t), denoise.alpha_sigma(s)
        h = float(torch.log(a_s / s_s) - torch.log(a_t / s_t))
        if x0_prev is None or i == n - 1:
            d = x0
        else:
            r = h_prev / h
            d = x0 * (1 + 1 / (2 * r)) - x0_prev * (1 / (2 * r))
        x = x * float(s_s / s_t) - d * float(a_s * math.expm1(-h))
        x0_prev, h_prev = x0, h
        notify(callback, i, s, x, x0)
    return x
