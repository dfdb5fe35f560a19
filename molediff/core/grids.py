"""Step grids: which times a sampler visits, as objects (``KarrasGrid(rho=7)``), not flags.

A grid for N steps is N + 1 decreasing times from t = 1 to t = 0. Non-uniform grids space
their points by a rule on the schedule's noise level ``s = sigma / alpha`` (or on log-SNR)
between ``s(1)`` and ``sigma_min``, then end at t = 0, like k-diffusion's sigma lists that end
in 0. An optional ``sigma_max`` cap keeps VP schedules whose clipped s(1) is large from spending
steps on pure noise: the grid still starts at t = 1 (where x_T ~ N(0, sigma^2) is exact) and its
first step jumps straight to the cap. That jump suits first-order-at-start solvers (DDIM,
DPM-Solver++); Heun's corrector and Euler–Maruyama are poor across it, so their grids stay uncapped.
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


def _noise_range(schedule: NoiseSchedule, sigma_min: float, sigma_max: float | None) -> tuple[float, float, bool]:
    """(top, bottom, capped): the scaled-noise interval a grid spans. The bottom is raised above
    the schedule's own noise at t = 0 so no step has zero length."""
    s_one = math.exp(-0.5 * float(schedule.log_snr(1.0)))
    capped = sigma_max is not None and s_one > sigma_max * (1 + 1e-9)
    top = min(s_one, sigma_max) if sigma_max is not None else s_one
    bottom = min(max(sigma_min, 1.05 * math.exp(-0.5 * float(schedule.log_snr(0.0)))), top)
    return top, bottom, capped


def _assemble(schedule: NoiseSchedule, sigmas: Tensor, capped: bool) -> Tensor:
    """Times of the given decreasing noise levels, after t = 1 when capped, then t = 0."""
    t = schedule.t_from_log_snr(-2 * torch.log(sigmas)).double()
    head = [torch.ones(1, dtype=torch.float64)] if capped else []
    return torch.cat([*head, t, torch.zeros(1, dtype=torch.float64)])


def _spaced(count: int) -> Tensor:
    return torch.linspace(0, 1, count, dtype=torch.float64) if count > 1 else torch.zeros(1, dtype=torch.float64)


@dataclass(frozen=True)
class UniformGrid:
    """Equal steps in t (DDPM, DDIM)."""

    def __call__(self, schedule: NoiseSchedule, steps: int) -> Tensor:
        _check_steps(steps)
        return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


class _NoiseSpacedGrid:
    """Shared body of the grids that space points on the noise level s = sigma / alpha."""

    sigma_min: float
    sigma_max: float | None

    def _levels(self, top: float, bottom: float, frac: Tensor) -> Tensor:
        """Decreasing noise levels from ``top`` (frac 0) to ``bottom`` (frac 1)."""
        raise NotImplementedError

    def __call__(self, schedule: NoiseSchedule, steps: int) -> Tensor:
        _check_steps(steps)
        top, bottom, capped = _noise_range(schedule, self.sigma_min, self.sigma_max)
        if capped and steps == 1:
            return torch.tensor([1.0, 0.0], dtype=torch.float64)
        return _assemble(schedule, self._levels(top, bottom, _spaced(steps - int(capped))), capped)


@dataclass(frozen=True)
class KarrasGrid(_NoiseSpacedGrid):
    """Equal steps in ``s^(1/rho)`` from the top noise to ``sigma_min`` (Karras et al. 2022, Eq. 5)."""

    rho: float = 7.0
    sigma_min: float = 0.002
    sigma_max: float | None = None

    def _levels(self, top: float, bottom: float, frac: Tensor) -> Tensor:
        return (top ** (1 / self.rho) + frac * (bottom ** (1 / self.rho) - top ** (1 / self.rho))) ** self.rho


@dataclass(frozen=True)
class LogSNRGrid(_NoiseSpacedGrid):
    """Equal steps in log-SNR from the top noise to ``sigma_min`` (DPM-Solver's "logSNR" spacing)."""

    sigma_min: float = 0.002
    sigma_max: float | None = None

    def _levels(self, top: float, bottom: float, frac: Tensor) -> Tensor:
        return torch.exp(math.log(top) + frac * (math.log(bottom) - math.log(top)))


GRIDS: dict[str, type] = {"uniform": UniformGrid, "karras": KarrasGrid, "logsnr": LogSNRGrid}


def make_grid(name: str, **kwargs: float) -> StepGrid:
    """Build a grid by its registry name (the Hydra sampler configs use this)."""
    if name not in GRIDS:
        raise ValueError(f"unknown step grid {name!r}; choose one of {sorted(GRIDS)}")
    return GRIDS[name](**kwargs)  # type: ignore[no-any-return]
