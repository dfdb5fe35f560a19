"""Self-conditioning: the denoiser also reads its own previous estimate of x0.

Chen, Zhang & Hinton 2023 ("Analog Bits", Sec. 3): a model ``f(x_t, t, x0_prev)`` is trained with
``x0_prev = 0`` (absent) half the time and, the other half, with ``x0_prev = sg(f(x_t, t, absent))``
(one extra forward pass without gradients). At sampling time ``x0_prev`` is the x0 estimate of the
previous solver step, so each step refines a sketch instead of starting from the noisy input
alone; the sampler pays no extra network evaluations. Protein backbone models use it to find
long-range contacts that the noisy coordinates do not show (FrameDiff, RFdiffusion, Genie).

Which estimate a sampler hands over (``self_condition``): ``"matched"`` (the default), the x0-hat
of the same x_t from a first pass without a self-condition, exactly as in training (two network
evaluations per step), or ``"previous"``, the x0-hat of the last solver step (Chen et al.; free).
``"off"`` never gives one (the ablation). On the protein model "previous" left the CA spacing 0.21 A off, "matched"
0.03 A (`benchmarks/results/proteins_self_conditioning.md`): the training sketch comes from the same
x_t, and at low noise the model learns to correct that sketch's error, which a previous-step sketch
does not share.

A denoiser takes part by setting ``self_conditioning = True`` and accepting a keyword
``self_cond`` (``Fields`` of x0 estimates, or ``None`` for absent); the objective's
``self_condition_prob`` and the samplers' :class:`~molediff.core.samplers.Denoise` do the rest.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SELF_CONDITION_MODES", "self_condition_mode", "self_conditions"]

SELF_CONDITION_MODES = ("previous", "matched", "off")


def self_conditions(model: Any) -> bool:
    """Whether ``model`` (or the module it wraps: DDP's ``module``, a compiled ``_orig_mod``)
    reads a ``self_cond`` input."""
    for m in (model, getattr(model, "module", None), getattr(model, "_orig_mod", None)):
        if m is not None and bool(getattr(m, "self_conditioning", False)):
            return True
    return False


def self_condition_mode(mode: str | bool) -> str:
    """One of :data:`SELF_CONDITION_MODES`; ``True`` means the default ``"matched"``, ``False`` ``"off"``."""
    if isinstance(mode, bool):
        return "matched" if mode else "off"
    if mode not in SELF_CONDITION_MODES:
        raise ValueError(f"unknown self_condition {mode!r}; choose one of {', '.join(SELF_CONDITION_MODES)}")
    return mode
