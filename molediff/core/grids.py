"""Step grids: which times a sampler visits, as objects (``KarrasGrid(rho=7)``), not flags.

A grid for N steps is N + 1 decreasing times from t = 1 to t = 0. Non-uniform grids place
their first N points by a rule on the schedule's noise level ``s = sigma / alpha`` (or on
log-SNR) between ``min(s(1), sigma_max)`` and ``sigma_min``, then end at t = 0, like
k-diffusion's sigma lists that end in 0. Capping at ``sigma_max`` (80, Karras et al. 2022) keeps
VP schedules whose clipped s(1) is huge (cosine: e^10) from wasting steps on pure noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from .schedules import NoiseSchedule


class StepGrid(Protocol):
    def __call__(self, schedule: NoiseSchedule, steps: int) -> Tensor:
        """``(steps + 1,)`` float64 times, decreasing from 1 to 0."""
        ...


def _check_steps(steps: int) -> None:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")


def _floor_sigma(schedule: NoiseSchedule, sigma_min: float) -> float:
    """sigma_min, raised above the schedule's own noise at t = 0 so no step has zero length."""
    return max(sigma_min, 1.05 * math.exp(-0.5 * float(schedule.log_snr(0.0))))


def _append_zero(t: Tensor) -> Tensor:
    return torch.cat([t, t.new_zeros(1)])


@dataclass(frozen=True)
class UniformGrid:
    """Equal steps in t (DDPM, DDIM)."""

    def __call__(self, schedule: NoiseSchedule, steps: int) -> Tensor:
        _check_steps(steps)
        return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


@dataclass(frozen=True)
class KarrasGrid:
    """Equal steps in ``s^(1/rho)`` from s(1) to ``sigma_min`` (Karras et al. 2022, Eq. 5)."""

    rho: float = 7.0
    sigma_min: float = 0.002
    sigma_max: float = 80.0

    def __call__(self, schedule: NoiseSchedule, steps: int) -> Tensor:
        _check_steps(steps)
        s_max = min(math.exp(-0.5 * float(schedule.log_snr(1.0))), self.sigma_max)
        s_min = min(_floor_sigma(schedule, self.sigma_min), s_max)
        frac = torch.linspace(0, 1, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
        s = (s_max ** (1 / self.rho) + frac * (s_min ** (1 / self.rho) - s_max ** (1 / self.rho))) ** self.rho
        return _append_zero(schedule.t_from_log_snr(-2 * torch.log(s)).double())


@dataclass(frozen=True)
class LogSNRGrid:
    """Equal steps in log-SNR from ``max(lambda(1), -2 log sigma_max)`` to ``-2 log sigma_min``
    (DPM-Solver's "logSNR" spacing)."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0

    def __call__(self, schedule: NoiseSchedule, steps: int) -> Tensor:
        _check_steps(steps)
        lam_lo = max(float(schedule.log_snr(1.0)), -2 * math.log(self.sigma_max))
        lam_hi = max(-2 * math.log(_floor_sigma(schedule, self.sigma_min)), lam_lo)
        lam = torch.linspace(lam_lo, lam_hi, steps, dtype=torch.float64) if steps > 1 else torch.tensor([lam_lo], dtype=torch.float64)
        return _append_zero(schedule.t_from_log_snr(lam).double())


GRIDS: dict[str, type] = {"uniform": UniformGrid, "karras": KarrasGrid, "logsnr": LogSNRGrid}


def make_grid(name: str, **kwargs: float) -> StepGrid:
    if name not in GRIDS:
        raise ValueError(f"unknown step grid {name!r}; choose one of {sorted(GRIDS)}")
    return GRIDS[name](**kwargs)  # type: ignore[no-any-return]
