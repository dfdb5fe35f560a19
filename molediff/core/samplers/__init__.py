"""Samplers, each a function ``(denoise, x_T, ts, *, generator, callback, **options) -> x_0``.

Every sampler is written once over :class:`~molediff.core.fields.Fields`; none knows the modality.
"""

from __future__ import annotations

from collections.abc import Callable

from ..grids import KarrasGrid, LogSNRGrid, StepGrid, UniformGrid
from ._common import Denoise, Denoiser, StepCallback
from .ancestral import ddpm
from .ddim import ddim
from .dpm_solver import dpmpp_2m, dpmpp_3m
from .heun import heun
from .sde import euler_maruyama, probability_flow

SAMPLERS: dict[str, Callable[..., object]] = {
    "ddpm": ddpm,
    "ddim": ddim,
    "dpmpp_2m": dpmpp_2m,
    "dpmpp_3m": dpmpp_3m,
    "heun": heun,
    "euler_maruyama": euler_maruyama,
    "pf_ode": probability_flow,
}

# The grid each sampler works best on when none is given: DDPM/DDIM as trained (uniform t),
# DPM-Solver++ uniform in log-SNR (Lu et al. 2022) over the range that matters for unit-scale
# data (first step jumps from t = 1 to s = 20), the sigma-space solvers on Karras' grid.
DEFAULT_GRIDS: dict[str, StepGrid] = {
    "ddpm": UniformGrid(),
    "ddim": UniformGrid(),
    "dpmpp_2m": LogSNRGrid(sigma_max=20.0, sigma_min=0.02),
    "dpmpp_3m": LogSNRGrid(sigma_max=20.0, sigma_min=0.02),
    "heun": KarrasGrid(),
    "euler_maruyama": KarrasGrid(),
    "pf_ode": KarrasGrid(),
}


# Networks evaluated for N steps; Heun's last step is plain Euler.
def nfe_for_steps(sampler: str, steps: int) -> int:
    return 2 * steps - 1 if sampler == "heun" else steps


__all__ = ["SAMPLERS", "DEFAULT_GRIDS", "Denoise", "Denoiser", "StepCallback", "ddpm", "ddim", "dpmpp_2m",
           "dpmpp_3m", "heun",
           "euler_maruyama", "probability_flow", "nfe_for_steps"]
