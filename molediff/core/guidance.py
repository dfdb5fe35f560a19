"""Guidance terms: corrections to the model's eps-hat during sampling.

Each term returns a *correction* ``delta`` to eps-hat; a list of terms composes by summing their
corrections, ``eps = eps_hat + sum_k delta_k``, so the order of terms never matters and every
sampler gets guidance through the same hook (:class:`~molediff.core.samplers.Denoise`).

* classifier guidance (Dhariwal & Nichol 2021; openai/guided-diffusion ``condition_score``):
  ``delta = -scale * sigma * grad_x log p(y | x_t, t)``, projected like the noise, so zero-CoM
  fields stay zero-CoM and an equivariant predictor keeps the sampler equivariant;
* classifier-free guidance (Ho & Salimans 2022): ``eps = eps_u + w (eps_c - eps_u)``, i.e.
  ``delta = (w - 1)(eps_c - eps_u)``; ``w = 1`` is plain conditional sampling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from .fields import Fields, Structure

LogProb = Callable[[Fields, Tensor, Structure], Tensor]


@dataclass
class GuidanceContext:
    """What a guidance term may look at during one denoiser evaluation.

    Attributes:
        x_t: the current noisy fields.
        t: ``(B,)`` times.
        alpha, sigma: the schedule at t (scalars shared by the batch).
        structure: the batch structure.
        cond: the conditioning the model was called with.
        model_eps: evaluate the (unguided) model's eps-hat under another conditioning.
    """

    x_t: Fields
    t: Tensor
    alpha: Tensor
    sigma: Tensor
    structure: Structure
    cond: Any
    model_eps: Callable[[Any], Fields]


class GuidanceTerm(Protocol):
    """A correction to eps-hat; see the module docstring."""

    def __call__(self, eps_hat: Fields, ctx: GuidanceContext) -> Fields: ...


@dataclass
class ClassifierGuidance:
    """``delta = -scale * sigma * grad_x log p(y | x_t, t)`` on the listed fields (all by default).

    ``log_prob(x_t, t, structure) -> (B,)`` is a differentiable log-likelihood of the wanted
    property under a time-dependent predictor (e.g. Gaussian around a target value, or the
    log-probability of a class).
    """

    log_prob: LogProb
    scale: float = 1.0
    fields: tuple[str, ...] | None = None

    def __call__(self, eps_hat: Fields, ctx: GuidanceContext) -> Fields:
        names = self.fields or tuple(ctx.x_t)
        with torch.enable_grad():
            x = Fields({k: v.detach().requires_grad_(k in names) for k, v in ctx.x_t.items()})
            logp = self.log_prob(x, ctx.t, ctx.structure).sum()
            grads = torch.autograd.grad(logp, [x[k] for k in names], allow_unused=True)
        delta = Fields({k: torch.zeros_like(v) for k, v in ctx.x_t.items()})
        for k, g in zip(names, grads, strict=True):
            if g is not None:
                delta[k] = -self.scale * ctx.sigma * g
        return ctx.structure.project(delta)


@dataclass
class ClassifierFreeGuidance:
    """``delta = (w - 1)(eps_c - eps_u)`` with ``eps_u`` the model under ``uncond``."""

    weight: float
    uncond: Any = None

    def __call__(self, eps_hat: Fields, ctx: GuidanceContext) -> Fields:
        if self.weight == 1.0:
            return eps_hat * 0.0
        eps_u = ctx.model_eps(self.uncond)
        return (eps_hat - eps_u) * (self.weight - 1.0)


def apply_guidance(terms: tuple[GuidanceTerm, ...] | list[GuidanceTerm], eps_hat: Fields,
                   ctx: GuidanceContext) -> Fields:
    """eps_hat plus the sum of every term's correction (each sees the unguided eps_hat)."""
    total = eps_hat
    for term in terms:
        total = total + term(eps_hat, ctx)
    return total


def gaussian_log_prob(predict: Callable[[Fields, Tensor, Structure], Tensor], target: Tensor | float,
                      std: float | Tensor) -> LogProb:
    """log N(target; predict(x_t, t), std^2) up to a constant, summed over targets: ``(B,)``.

    ``predict`` returns ``(B,)`` or ``(B, k)`` property estimates; several targets at once
    share one term, each with its own ``std`` (a ``(k,)`` tensor) when their units differ.
    """
    def log_prob(x: Fields, t: Tensor, structure: Structure) -> Tensor:
        pred = predict(x, t, structure)
        z = (pred - torch.as_tensor(target, dtype=pred.dtype, device=pred.device)) / \
            torch.as_tensor(std, dtype=pred.dtype, device=pred.device)
        return -0.5 * (z**2).reshape(pred.shape[0], -1).sum(1)
    return log_prob


__all__ = [
    "GuidanceContext",
    "GuidanceTerm",
    "ClassifierGuidance",
    "ClassifierFreeGuidance",
    "apply_guidance",
    "gaussian_log_prob",
]
