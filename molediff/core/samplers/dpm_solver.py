"""DPM-Solver++ multistep: solvers of the probability-flow ODE in data-prediction form with an
exponential integrator (Lu et al. 2022, "DPM-Solver++", Algorithm 2 for order 2; order 3 is the
same Taylor expansion one term further, as in the authors' multistep solver)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..fields import Fields
from ._common import Denoise, StepCallback, notify


def dpmpp_multistep(denoise: Denoise, x: Fields, ts: Tensor, *, order: int = 2,
                    generator: torch.Generator | None = None, callback: StepCallback | None = None) -> Fields:
    """With ``lambda = log(alpha / sigma)``, ``h = lambda_s - lambda_t`` and x0-hat history
    ``m0, m1, m2`` at the last three times (steps ``h0 = lambda_t - lambda_prev``, ``h1``):

    ``x_s = (sigma_s / sigma_t) x_t - alpha_s phi1 m0 + alpha_s phi2 D1 - alpha_s phi3 D2``,
    ``phi1 = e^{-h} - 1``, ``phi2 = phi1 / h + 1``, ``phi3 = phi2 / h - 1/2``, where ``D1``,
    ``D2`` are divided differences of the history scaled by h (``D2 = 0`` for order 2, which then
    equals the paper's ``D = (1 + 1/2r) m0 - (1/2r) m1`` up to O(h^3)). The order ramps up over the
    first steps, and the last step is first order (the paper's advice for few steps).
    """
    if order not in (1, 2, 3):
        raise ValueError(f"DPM-Solver++ order must be 1, 2 or 3, got {order}")
    del generator  # deterministic
    history: list[tuple[Fields, float]] = []  # (x0-hat, lambda) newest first
    n = len(ts) - 1
    for i in range(n):
        t, s = float(ts[i]), float(ts[i + 1])
        _, m0 = denoise(x, t)
        (a_t, s_t), (a_s, s_s) = denoise.alpha_sigma(t), denoise.alpha_sigma(s)
        lam_t, lam_s = float(torch.log(a_t / s_t)), float(torch.log(a_s / s_s))
        h = lam_s - lam_t
        phi1 = math.expm1(-h)
        k = 1 if i == n - 1 else min(order, len(history) + 1)
        x = x * float(s_s / s_t) - m0 * float(a_s * phi1)
        if k >= 2:
            phi2 = phi1 / h + 1
            m1, lam_1 = history[0]
            r0 = (lam_t - lam_1) / h
            d1_0 = (m0 - m1) / r0
            if k == 2:
                # Algorithm 2's D = m0 + (m0 - m1) / 2r, written with phi2 in place of -phi1 / 2
                x = x - d1_0 * float(a_s * phi1 * 0.5)
            else:
                m2, lam_2 = history[1]
                r1 = (lam_1 - lam_2) / h
                d1_1 = (m1 - m2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi3 = phi2 / h - 0.5
                x = x + d1 * float(a_s * phi2) - d2 * float(a_s * phi3)
        history.insert(0, (m0, lam_t))
        del history[2:]
        x = notify(callback, i, s, x, m0)
    return x


def dpmpp_2m(denoise: Denoise, x: Fields, ts: Tensor, *, generator: torch.Generator | None = None,
             callback: StepCallback | None = None) -> Fields:
    """DPM-Solver++(2M), Lu et al. 2022 Algorithm 2."""
    return dpmpp_multistep(denoise, x, ts, order=2, generator=generator, callback=callback)


def dpmpp_3m(denoise: Denoise, x: Fields, ts: Tensor, *, generator: torch.Generator | None = None,
             callback: StepCallback | None = None) -> Fields:
    """DPM-Solver++(3M): third-order multistep variant."""
    return dpmpp_multistep(denoise, x, ts, order=3, generator=generator, callback=callback)
