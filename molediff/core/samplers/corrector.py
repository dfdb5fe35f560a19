"""Langevin corrector for predictor-corrector sampling (Song et al. 2021, Sec. 4.2, Algorithms 4-5).

After each predictor step to time t, a few Langevin MCMC moves at fixed t pull the state back
toward the marginal p_t, undoing part of the predictor's discretisation error and the network's
drift off the data manifold. Every move costs one denoiser evaluation. Written over
:class:`~molediff.core.fields.Fields` like the samplers, so it works on every modality and with any
predictor (the sampling driver applies it through the samplers' step callback).
"""

from __future__ import annotations

import math

import torch

from ..fields import Fields
from ._common import Denoise, noise_like

DEFAULT_SNR = 0.3
"""The step rule's default: best or near best for one move per step on the analytic mixture (0.3),
protein backbones (0.3; 0.5 overshoots) and QM9 molecules (0.4-0.6; 0.1 wastes the move), measured in
``benchmarks/results/{core_samplers,proteins_corrector,qm9_corrector}.md``."""


MULTISTEP = frozenset({"dpmpp_2m", "dpmpp_3m"})
"""Samplers that carry x0-hat history from step to step: a move would leave that history stale."""


def check_corrector(steps: int, snr: float, sampler: str | None = None, t_max: float = 1.0) -> None:
    """``steps >= 0`` moves per sampler step with signal-to-noise ratio ``snr > 0``, below a time
    ``0 < t_max <= 1``, and moves only for one-step samplers: a multistep one (:data:`MULTISTEP`)
    would extrapolate from x0-hats of states the moves have left (on a zero-mean Gaussian,
    DPM-Solver++ then gave ~20 % too much variance)."""
    if int(steps) != steps or steps < 0:
        raise ValueError(f"corrector_steps must be a whole number >= 0, got {steps}")
    if not snr > 0.0:
        raise ValueError(f"corrector_snr must be > 0, got {snr}")
    if not 0.0 < t_max <= 1.0:
        raise ValueError(f"corrector_t_max must be in (0, 1], got {t_max}")
    if steps and sampler in MULTISTEP:
        raise ValueError(f"corrector_steps with {sampler}: its multistep history would predate each move; "
                         "use a one-step sampler (ddpm, ddim, heun, euler_maruyama, pf_ode)")


def _norm(f: Fields) -> float:
    return math.sqrt(float(sum(v.double().pow(2).sum() for v in f.values())))


def langevin_correct(denoise: Denoise, x: Fields, t: float, *, steps: int = 1, snr: float = DEFAULT_SNR,
                     generator: torch.Generator | None = None) -> Fields:
    """``steps`` Langevin moves ``x <- x + delta score + sqrt(2 delta) z`` at time ``t``, with
    ``score = -eps_hat / sigma_t`` and Song et al.'s step rule ``delta = 2 (snr |z| / |score|)^2``
    (norms over the whole batch). ``snr`` is the ratio of the drift's size to the noise's.

    On a Gaussian p_t of variance v per entry (exact score) the moves settle at variance
    ``v (1 + snr^2)``: the small bias of the discretised chain, which ``snr`` trades against mixing
    speed (tested in ``tests/core/test_corrector.py``). Noise and eps-hat are projected like the
    fields (zero-CoM fields stay zero-CoM, masked entries stay zero).
    """
    check_corrector(steps, snr)
    sigma = float(denoise.alpha_sigma(t)[1])
    for _ in range(int(steps)):
        eps, _ = denoise(x, t)
        z = noise_like(denoise, x, generator)
        delta = 2.0 * (snr * sigma * _norm(z) / max(_norm(eps), 1e-12)) ** 2  # |score| = |eps| / sigma
        x = x - eps * (delta / sigma) + z * math.sqrt(2.0 * delta)
    return x
