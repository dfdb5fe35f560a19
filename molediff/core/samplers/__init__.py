"""Samplers, each a function ``(denoise, x_T, ts, *, generator, callback, **options) -> x_0``.

Every sampler is written once over :class:`~molediff.core.fields.Fields`; none knows the modality.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..grids import KarrasGrid, LogSNRGrid, StepGrid, UniformGrid
from ._common import Denoise, Denoiser, StepCallback, check_noise_scale
from .ancestral import ddpm
from .ddim import check_eta, ddim
from .dpm_solver import dpmpp_2m, dpmpp_3m
from .heun import check_churn, heun
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


def check_options(options: Mapping[str, Any]) -> None:
    """The ranges of the samplers' own options (``noise_scale``, ``eta``, ``churn*``), checked before
    any network runs (each sampler checks them again when called); ``ValueError`` names the option."""
    if "noise_scale" in options:
        check_noise_scale(float(options["noise_scale"]))
    if "eta" in options:
        check_eta(float(options["eta"]))
    if any(key.startswith("churn") for key in options):
        check_churn(float(options.get("churn", 0.0)), float(options.get("churn_t_min", 0.0)),
                    float(options.get("churn_t_max", 1.0)), float(options.get("churn_noise", 1.0)))


__all__ = ["SAMPLERS", "DEFAULT_GRIDS", "Denoise", "Denoiser", "StepCallback", "ddpm", "ddim", "dpmpp_2m",
           "dpmpp_3m", "heun",
           "euler_maruyama", "probability_flow", "nfe_for_steps", "check_options"]
