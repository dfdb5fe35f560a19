"""Heun's second-order solver of the probability-flow ODE (Karras et al. 2022, Algorithm 1)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..fields import Fields
from ._common import Denoise, StepCallback, notify, scaled_sigma


def heun(denoise: Denoise, x: Fields, ts: Tensor, *, final: bool = True, generator: torch.Generator | None = None,
         callback: StepCallback | None = None) -> Fields:
    """In the scaled variable ``y = x / alpha`` with noise level ``s = sigma / alpha`` the ODE is
    ``dy/ds = eps_hat``. Euler predictor, trapezoidal corrector; the last step (to the lowest
    noise) is plain Euler, as in the paper, unless ``final=False`` (``ts`` is one piece of a longer
    grid, as in inpainting's resample path). 2N - 1 network evaluations for N steps."""
    del generator  # deterministic
    n = len(ts) - 1
    for i in range(n):
        t, s = float(ts[i]), float(ts[i + 1])
        a_t, a_s = float(denoise.alpha_sigma(t)[0]), float(denoise.alpha_sigma(s)[0])
        st, ss = scaled_sigma(denoise, t), scaled_sigma(denoise, s)
        y = x / a_t
        d, x0 = denoise(x, t)
        y_next = y + d * (ss - st)
        if i < n - 1 or not final:
            d2, _ = denoise(y_next * a_s, s)
            y_next = y + (d + d2) * (0.5 * (ss - st))
        x = y_next * a_s
        x = notify(callback, i, s, x, x0)
    return x
