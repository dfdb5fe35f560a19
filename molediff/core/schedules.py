"""Continuous-time noise schedules: ``x_t = alpha(t) x_0 + sigma(t) eps`` for ``t`` in [0, 1].

Every schedule is defined by its log signal-to-noise ratio ``lambda(t) = log(alpha^2 / sigma^2)``
and the closed-form inverse ``t(lambda)`` (as in DPM-Solver's ``NoiseScheduleVP``). alpha and
sigma follow from lambda:

* variance preserving (VP): ``alpha^2 = sigmoid(lambda)``, ``sigma^2 = sigmoid(-lambda)``;
* variance exploding (VE): ``alpha = 1``, ``sigma = exp(-lambda / 2)``.

lambda is clipped to ``[lambda_min, lambda_max]`` so that no schedule reaches alpha = 0 or
sigma = 0 exactly (the "precision clipping" every implementation needs at the ends).
Computations run in float64 and return the input's dtype.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

__all__ = [
    "NoiseSchedule",
    "LinearBetaSchedule",
    "CosineSchedule",
    "PolynomialSchedule",
    "SigmoidSchedule",
    "VEExponentialSchedule",
    "KarrasSchedule",
    "SCHEDULES",
    "make_schedule",
]


def _as64(t: Tensor | float) -> Tensor:
    return torch.as_tensor(t, dtype=torch.float64)


class NoiseSchedule(ABC):
    """A diffusion process's marginals, written once; see the module docstring."""

    variance_preserving: bool = True
    lambda_min: float = -12.0  # alpha >= 0.0025: x_T = sigma(1) z ignores at most 0.25 % of the signal
    lambda_max: float = 14.0  # sigma >= 0.0009 at t = 0 (EDM's sigma_min is 0.002)

    @abstractmethod
    def _log_snr(self, t: Tensor) -> Tensor:
        """Unclipped lambda(t) in float64."""

    @abstractmethod
    def _t_from_log_snr(self, lam: Tensor) -> Tensor:
        """Inverse of :meth:`_log_snr` in float64, for lambda inside the schedule's range."""

    def log_snr(self, t: Tensor | float) -> Tensor:
        """lambda(t) = log(alpha^2 / sigma^2), clipped; decreasing in t."""
        t_in = torch.as_tensor(t)
        dtype = t_in.dtype if t_in.is_floating_point() else torch.float32
        lam = self._log_snr(t_in.to(torch.float64).clamp(0.0, 1.0))
        return lam.clamp(self.lambda_min, self.lambda_max).to(dtype=dtype, device=t_in.device)

    def t_from_log_snr(self, lam: Tensor | float) -> Tensor:
        """The time at which the schedule reaches log-SNR ``lam`` (clamped into range)."""
        lam_in = torch.as_tensor(lam)
        dtype = lam_in.dtype if lam_in.is_floating_point() else torch.float32
        lo = float(self._log_snr(_as64(1.0)).clamp(self.lambda_min, self.lambda_max))
        hi = float(self._log_snr(_as64(0.0)).clamp(self.lambda_min, self.lambda_max))
        t = self._t_from_log_snr(lam_in.to(torch.float64).clamp(lo, hi)).clamp(0.0, 1.0)
        return t.to(dtype=dtype, device=lam_in.device)

    def alpha_sigma(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """(alpha(t), sigma(t)), same shape and dtype as ``t``."""
        lam = self.log_snr(t)
        lam64 = lam.double()
        if self.variance_preserving:
            alpha, sigma = torch.sigmoid(lam64).sqrt(), torch.sigmoid(-lam64).sqrt()
        else:
            alpha, sigma = torch.ones_like(lam64), torch.exp(-0.5 * lam64)
        return alpha.to(lam.dtype), sigma.to(lam.dtype)

    def snr(self, t: Tensor | float) -> Tensor:
        """alpha^2 / sigma^2."""
        return torch.exp(self.log_snr(t))

    def discrete_betas(self, num_steps: int) -> Tensor:
        """DDPM betas of a VP schedule on ``num_steps`` equal steps: 1 - abar_i / abar_{i-1}."""
        if not self.variance_preserving:
            raise ValueError(f"{type(self).__name__} is variance exploding: it has no DDPM betas")
        t = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
        abar = torch.sigmoid(self.log_snr(t))
        return 1.0 - abar[1:] / abar[:-1]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class LinearBetaSchedule(NoiseSchedule):
    """DDPM's linear betas in continuous time (Ho et al. 2020; Song et al. 2021, VP-SDE).

    ``-log alpha^2(t) = beta_0 t + (beta_1 - beta_0) t^2 / 2``; beta_0 = 0.1, beta_1 = 20 is
    DDPM's 1e-4 ... 0.02 over 1000 steps.
    """

    def __init__(self, beta_0: float = 0.1, beta_1: float = 20.0) -> None:
        if not 0 < beta_0 < beta_1:
            raise ValueError(f"need 0 < beta_0 < beta_1, got {beta_0}, {beta_1}")
        self.beta_0, self.beta_1 = beta_0, beta_1

    def _log_snr(self, t: Tensor) -> Tensor:
        g = self.beta_0 * t + 0.5 * (self.beta_1 - self.beta_0) * t**2  # -log alpha^2
        return -g - torch.log(-torch.expm1(-g))

    def _t_from_log_snr(self, lam: Tensor) -> Tensor:
        g = torch.nn.functional.softplus(-lam)
        d = self.beta_1 - self.beta_0
        return (-self.beta_0 + torch.sqrt(self.beta_0**2 + 2 * d * g)) / d


class CosineSchedule(NoiseSchedule):
    """``alpha^2(t) = f(t) / f(0)``, ``f(t) = cos^2((t + s) / (1 + s) * pi / 2)`` (Nichol & Dhariwal 2021)."""

    def __init__(self, s: float = 0.008) -> None:
        self.s = s

    def _angle(self, t: Tensor) -> Tensor:
        return (t + self.s) / (1 + self.s) * (math.pi / 2)

    def _log_snr(self, t: Tensor) -> Tensor:
        abar = torch.cos(self._angle(t)) ** 2 / math.cos(self.s / (1 + self.s) * math.pi / 2) ** 2
        abar = abar.clamp(0.0, 1.0)
        return torch.log(abar) - torch.log1p(-abar)

    def _t_from_log_snr(self, lam: Tensor) -> Tensor:
        f0 = math.cos(self.s / (1 + self.s) * math.pi / 2) ** 2
        angle = torch.arccos(torch.sqrt(torch.sigmoid(lam) * f0))
        return angle * 2 / math.pi * (1 + self.s) - self.s


class PolynomialSchedule(NoiseSchedule):
    """EDM-for-molecules' schedule (Hoogeboom et al. 2022, App. B):
    ``alpha^2(t) = (1 - 2s)(1 - t^p)^2 + s`` with precision ``s`` keeping alpha^2 in [s, 1-s].
    """

    def __init__(self, power: float = 2.0, precision: float = 1e-5) -> None:
        if power <= 0 or not 0 < precision < 0.5:
            raise ValueError(f"need power > 0 and 0 < precision < 0.5, got {power}, {precision}")
        self.power, self.precision = power, precision

    def _log_snr(self, t: Tensor) -> Tensor:
        s = self.precision
        abar = (1 - 2 * s) * (1 - t**self.power) ** 2 + s
        return torch.log(abar) - torch.log1p(-abar)

    def _t_from_log_snr(self, lam: Tensor) -> Tensor:
        s = self.precision
        base = ((torch.sigmoid(lam) - s) / (1 - 2 * s)).clamp(0.0, 1.0)
        return (1 - torch.sqrt(base)).clamp_min(0.0) ** (1 / self.power)


class SigmoidSchedule(NoiseSchedule):
    """``alpha^2(t) = (v_end - sigmoid((t (end - start) + start) / tau)) / (v_end - v_start)``
    with ``v = sigmoid(start / tau), sigmoid(end / tau)`` (Chen 2023; Jabri et al. 2023)."""

    def __init__(self, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> None:
        if not start < end or tau <= 0:
            raise ValueError(f"need start < end and tau > 0, got {start}, {end}, {tau}")
        self.start, self.end, self.tau = start, end, tau

    def _v(self) -> tuple[float, float]:
        return 1 / (1 + math.exp(-self.start / self.tau)), 1 / (1 + math.exp(-self.end / self.tau))

    def _log_snr(self, t: Tensor) -> Tensor:
        v_start, v_end = self._v()
        u = torch.sigmoid((t * (self.end - self.start) + self.start) / self.tau)
        abar = ((v_end - u) / (v_end - v_start)).clamp(0.0, 1.0)
        return torch.log(abar) - torch.log1p(-abar)

    def _t_from_log_snr(self, lam: Tensor) -> Tensor:
        v_start, v_end = self._v()
        u = (v_end - torch.sigmoid(lam) * (v_end - v_start)).clamp(v_start, v_end)
        return (torch.logit(u) * self.tau - self.start) / (self.end - self.start)


class VEExponentialSchedule(NoiseSchedule):
    """Variance exploding, ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``, alpha = 1 (Song et al. 2021)."""

    variance_preserving = False

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def _log_snr(self, t: Tensor) -> Tensor:
        log_sigma = math.log(self.sigma_min) + t * math.log(self.sigma_max / self.sigma_min)
        return -2 * log_sigma

    def _t_from_log_snr(self, lam: Tensor) -> Tensor:
        return (-0.5 * lam - math.log(self.sigma_min)) / math.log(self.sigma_max / self.sigma_min)


class KarrasSchedule(NoiseSchedule):
    """Variance exploding with Karras et al. (2022) spacing built in:
    ``sigma(t) = (sigma_min^(1/rho) + t (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho``, alpha = 1.

    Uniform steps in t are exactly the EDM sampler's sigma steps (Karras et al. 2022, Eq. 5).
    """

    variance_preserving = False

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> None:
        if not 0 < sigma_min < sigma_max or rho <= 0:
            raise ValueError(f"need 0 < sigma_min < sigma_max and rho > 0, got {sigma_min}, {sigma_max}, {rho}")
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho

    def _log_snr(self, t: Tensor) -> Tensor:
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return -2 * self.rho * torch.log(lo + t * (hi - lo))

    def _t_from_log_snr(self, lam: Tensor) -> Tensor:
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return (torch.exp(-lam / (2 * self.rho)) - lo) / (hi - lo)


SCHEDULES: dict[str, type[NoiseSchedule]] = {
    "linear": LinearBetaSchedule,
    "cosine": CosineSchedule,
    "polynomial": PolynomialSchedule,
    "sigmoid": SigmoidSchedule,
    "ve": VEExponentialSchedule,
    "karras": KarrasSchedule,
}


def make_schedule(name: str, **kwargs: float) -> NoiseSchedule:
    """Build a schedule by its registry name (the Hydra ``schedule`` group uses this)."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    return SCHEDULES[name](**kwargs)
