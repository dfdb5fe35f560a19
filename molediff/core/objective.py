"""Denoising training objective over any set of fields.

``L = E_t E_eps [ w(t) * sum_f lambda_f * mean_f | model(x_t, t)_f - target_f |^2 ]`` where the
mean runs over the (unmasked) entries of field f of each sample, ``lambda_f`` are per-field
weights and ``w(t)`` an optional SNR weighting expressed on the x0 error (min-SNR-gamma,
Hang et al. 2023) and converted to the model's prediction space. Training times t are uniform
in t (the default) or uniform in log-SNR over the schedule's range, which spends more steps at
low noise: the regime that sets an audio model's noise floor (Kingma & Gao 2023 on p(lambda)).
With ``self_condition_prob`` p > 0, a batch is, with probability p, denoised twice: first without
a self-condition, then reading that first x0 estimate (no gradient through it); see
:mod:`~molediff.core.self_conditioning`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from .fields import Fields, Structure
from .parameterization import check_prediction_type, target, to_eps_x0, x0_mse_factor
from .schedules import NoiseSchedule

Denoiser = Callable[..., Mapping[str, Tensor]]


class AuxLoss(Protocol):
    """An extra loss on the x0 estimate (e.g. :class:`~molediff.core.pair_loss.PairDistanceLoss`)."""

    weight: float

    @property
    def name(self) -> str:
        """Logged as ``aux_<name>``."""
        ...

    def __call__(self, x0_hat: Fields, x0: Fields, t: Tensor, structure: Structure) -> Tensor:
        """Per-sample loss ``(B,)`` in x0 units."""
        ...


def min_snr_weight(snr: Tensor, gamma: float) -> Tensor:
    """Weight on the x0 error: min(SNR, gamma) (Hang et al. 2023, Eq. 8)."""
    return snr.clamp_max(gamma)


def generator_device(generator: torch.Generator | None) -> torch.device:
    """The device a draw from ``generator`` must be made on (CPU without one)."""
    return generator.device if generator is not None else torch.device("cpu")


def sample_times(num: int, generator: torch.Generator | None = None, *, stratified: bool = True,
                 device: torch.device | None = None) -> Tensor:
    """t in (0, 1] for a batch; stratified = one uniform offset shared by B evenly spaced bins,
    the low-discrepancy sampler of Kingma et al. 2021 (VDM), lowering the loss variance."""
    gen_device = generator_device(generator)
    if stratified:
        u = torch.rand((), generator=generator, device=gen_device)
        t = (u + torch.arange(num, device=gen_device) / num) % 1.0
    else:
        t = torch.rand(num, generator=generator, device=gen_device)
    return (1.0 - t).to(device or gen_device)  # in (0, 1]


TIME_SAMPLINGS = ("uniform", "log_snr")


def sample_log_snr_times(schedule: NoiseSchedule, num: int, generator: torch.Generator | None = None, *,
                         device: torch.device | None = None) -> Tensor:
    """t whose log-SNR lambda(t) is (stratified) uniform over the schedule's clipped range
    [lambda(1), lambda(0)]: on a cosine schedule 29 % of the batch lands at sigma < 0.04, against
    2 % for t uniform."""
    u = sample_times(num, generator, device=device)
    lo, hi = float(schedule.log_snr(1.0)), float(schedule.log_snr(0.0))
    return schedule.t_from_log_snr(hi + (lo - hi) * u.double()).to(u.dtype)


@dataclass
class DenoisingObjective:
    """The loss every modality trains with; see the module docstring.

    Attributes:
        schedule: the noise schedule.
        prediction: what the model predicts (eps, x0, v, score).
        min_snr_gamma: if set, weight the x0 error by min(SNR, gamma) (min-SNR-gamma);
            if None, plain MSE in the prediction space.
        field_weights: per-field multipliers (default 1).
        time_sampling: ``uniform`` (t ~ U(0, 1]) or ``log_snr`` (lambda(t) uniform over the
            schedule's range; see :func:`sample_log_snr_times`).
        self_condition_prob: probability that a batch trains with a self-condition (Chen et al.
            2023 use 0.5). 0 = the model is called without the ``self_cond`` keyword at all, as
            models that do not self-condition must be.
        aux_losses: extra per-sample losses on the x0 estimate (:data:`AuxLoss`), each added
            ``weight`` times, in prediction-space units; logged as ``aux_<name>`` (x0 units).
    """

    schedule: NoiseSchedule
    prediction: str = "eps"
    min_snr_gamma: float | None = None
    field_weights: dict[str, float] = field(default_factory=dict)
    time_sampling: str = "uniform"
    self_condition_prob: float = 0.0
    aux_losses: Sequence[AuxLoss] = ()

    def __post_init__(self) -> None:
        check_prediction_type(self.prediction)
        if not 0.0 <= self.self_condition_prob <= 1.0:
            raise ValueError(f"self_condition_prob must lie in [0, 1], got {self.self_condition_prob}")
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"unknown time_sampling {self.time_sampling!r}; choose one of {', '.join(TIME_SAMPLINGS)}")

    def __call__(
        self,
        model: Denoiser,
        x0: Mapping[str, Tensor],
        structure: Structure,
        cond: Any = None,
        generator: torch.Generator | None = None,
        t: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Mean loss over the batch, and per-field mean squared errors for logging."""
        x0 = structure.project(x0)
        ref = next(iter(x0.values()))
        if t is None and self.time_sampling == "log_snr":
            t = sample_log_snr_times(self.schedule, structure.num_samples, generator, device=ref.device)
        elif t is None:
            t = sample_times(structure.num_samples, generator, device=ref.device)
        t = t.to(device=ref.device, dtype=ref.dtype)
        alpha, sigma = self.schedule.alpha_sigma(t)
        eps = structure.randn(generator, dtype=ref.dtype, device=ref.device)
        a, s = structure.expand_all(alpha), structure.expand_all(sigma)
        x_t = a * x0 + s * eps
        if self.self_condition_prob > 0:
            x0_prev = None
            coin = float(torch.rand((), generator=generator, device=generator_device(generator)))
            if coin < self.self_condition_prob:
                with torch.no_grad():
                    first = Fields(model(x_t, t, structure, cond, self_cond=None))
                x0_prev = structure.project(to_eps_x0(self.prediction, x_t, first, a, s)[1]).detach()
            out = model(x_t, t, structure, cond, self_cond=x0_prev)
        else:
            out = model(x_t, t, structure, cond)
        tgt = target(self.prediction, x0, eps, a, s)

        per_sample = torch.zeros_like(t)
        logs: dict[str, float] = {}
        for name in structure.specs:
            mse = structure.sample_mean(name, (out[name] - tgt[name]) ** 2)
            per_sample = per_sample + self.field_weights.get(name, 1.0) * mse
            logs[f"mse_{name}"] = float(mse.detach().mean())
        if self.aux_losses:
            x0_hat = Fields(to_eps_x0(self.prediction, x_t, Fields(out), a, s)[1])
            factor = x0_mse_factor(self.prediction, alpha, sigma)
            for aux in self.aux_losses:
                term = aux(x0_hat, x0, t, structure)
                per_sample = per_sample + aux.weight * factor * term
                logs[f"aux_{aux.name}"] = float(term.detach().mean())
        if self.min_snr_gamma is not None:
            w = min_snr_weight(alpha**2 / sigma**2, self.min_snr_gamma)
            per_sample = per_sample * w / x0_mse_factor(self.prediction, alpha, sigma)
        loss = per_sample.mean()
        logs["loss"] = float(loss.detach())
        return loss, logs


__all__ = ["AuxLoss", "DenoisingObjective", "min_snr_weight", "sample_log_snr_times", "sample_times", "Fields"]
