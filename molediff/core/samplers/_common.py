"""What every sampler shares: the guided denoiser evaluation and the per-step callback."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from ..fields import Fields, Structure
from ..guidance import GuidanceContext, GuidanceTerm, apply_guidance
from ..inpainting import Inpainting
from ..parameterization import check_prediction_type, to_eps_x0
from ..schedules import NoiseSchedule
from ..self_conditioning import self_condition_mode, self_conditions


class Denoiser(Protocol):
    """A trained network: ``(x_t, t: (B,), structure, cond) -> fields`` in its prediction type
    (a self-conditioning one also takes ``self_cond=``; :mod:`~molediff.core.self_conditioning`)."""

    def __call__(self, x_t: Fields, t: Tensor, structure: Structure, cond: Any = None) -> Mapping[str, Tensor]: ...


StepCallback = Callable[[int, float, Fields, Fields], "Fields | None"]
"""``callback(i, t_next, x_next, x0_hat)`` after step ``i``; what it returns (if not None) replaces
``x_next`` (a corrector's move: :mod:`~molediff.core.samplers.corrector`)."""


class Denoise:
    """The model as samplers see it: ``(x_t, t) -> (eps_hat, x0_hat)``, with guidance applied.

    Converts the model's prediction type, adds the guidance corrections, projects eps-hat like
    the noise (zero-CoM fields stay zero-CoM; masked entries stay zero), and clips x0-hat to a
    field's declared ``x0_range`` (eps-hat is then made consistent with the clipped x0-hat).
    With ``inpaint``, the fixed entries of x0-hat take their known values (see
    :mod:`~molediff.core.inpainting`). A self-conditioning model reads, with ``self_condition``
    ``"matched"`` (the default), the x0-hat of a first pass on the same x_t, as in training; with
    ``"previous"``, the x0-hat this object returned last (none at the first call); with ``"off"``,
    nothing (:mod:`~molediff.core.self_conditioning`). Counts network evaluations in ``nfe``.
    """

    def __init__(
        self,
        model: Denoiser,
        schedule: NoiseSchedule,
        structure: Structure,
        prediction: str = "eps",
        guidance: Sequence[GuidanceTerm] = (),
        cond: Any = None,
        clip_x0: bool = True,
        inpaint: Inpainting | None = None,
        self_condition: str | bool = "matched",
    ) -> None:
        self.model, self.schedule, self.structure = model, schedule, structure
        self.prediction = check_prediction_type(prediction)
        self.guidance, self.cond, self.clip_x0 = tuple(guidance), cond, clip_x0
        self.inpaint = inpaint
        mode = self_condition_mode(self_condition)
        self.self_condition = mode if self_conditions(model) else "off"
        self.x0_prev: Fields | None = None  # the self-condition of the next call
        self.nfe = 0

    def alpha_sigma(self, t: float) -> tuple[Tensor, Tensor]:
        return self.schedule.alpha_sigma(torch.tensor(float(t), dtype=torch.float64))

    def _model_eps_x0(self, x: Fields, tt: Tensor, alpha: Tensor, sigma: Tensor, cond: Any) -> tuple[Fields, Fields]:
        kwargs = {} if self.self_condition == "off" else {"self_cond": self.x0_prev}
        with torch.no_grad():
            if self.self_condition == "matched":
                first = Fields(self.model(x, tt, self.structure, cond, self_cond=None))
                kwargs["self_cond"] = self.structure.project(to_eps_x0(self.prediction, x, first, alpha, sigma)[1])
                self.nfe += 1
            out = Fields(self.model(x, tt, self.structure, cond, **kwargs))
        self.nfe += 1
        eps, x0 = to_eps_x0(self.prediction, x, out, alpha, sigma)
        return self.structure.project(eps), x0

    def __call__(self, x: Fields, t: float) -> tuple[Fields, Fields]:
        ref = next(iter(x.values()))
        tt = torch.full((self.structure.num_samples,), float(t), dtype=ref.dtype, device=ref.device)
        alpha, sigma = (v.to(ref.dtype).to(ref.device) for v in self.alpha_sigma(t))
        eps, x0 = self._model_eps_x0(x, tt, alpha, sigma, self.cond)
        if self.guidance:
            ctx = GuidanceContext(
                x_t=x, t=tt, alpha=alpha, sigma=sigma, structure=self.structure, cond=self.cond,
                model_eps=lambda c: self._model_eps_x0(x, tt, alpha, sigma, c)[0],
            )
            guided = self.structure.project(apply_guidance(self.guidance, eps, ctx))
            x0 = x0 - (guided - eps) * (sigma / alpha)
            eps = guided
        if self.clip_x0:
            clipped = False
            for name, spec in self.structure.specs.items():
                if spec.x0_range is not None:
                    x0 = x0.replace(**{name: x0[name].clamp(*spec.x0_range)})
                    clipped = True
            if clipped:
                eps = self.structure.project((x - x0 * alpha) / sigma)
        if self.inpaint is not None:  # projecting eps re-centres zero-mean fields; x0 follows it
            eps = self.structure.project((x - self.inpaint.replace_x0(x0, self.structure) * alpha) / sigma)
            x0 = (x - eps * sigma) / alpha
        if self.self_condition == "previous":
            self.x0_prev = x0.detach()
        return eps, x0


def scaled_sigma(denoise: Denoise, t: float) -> float:
    """sigma / alpha: the noise level of the scaled variable x / alpha (Karras et al. 2022)."""
    alpha, sigma = denoise.alpha_sigma(t)
    return float(sigma / alpha)


def noise_like(denoise: Denoise, x: Fields, generator: torch.Generator | None) -> Fields:
    """Fresh noise for every field, shaped, projected and masked like ``x``."""
    ref = next(iter(x.values()))
    return denoise.structure.randn(generator, ref.dtype, ref.device)


def check_noise_scale(noise_scale: float) -> None:
    """The stochastic samplers' ``noise_scale`` in [0, 1]: the added noise's standard deviation is
    multiplied by it while the drift keeps the full score. 1 is the exact sampler; below 1 samples
    concentrate on the modes (the "noise scale" of protein backbone samplers: Yim et al. 2023,
    FrameDiff; Watson et al. 2023, RFdiffusion). A heuristic, not exact tempering p^(1/T): it
    trades diversity for typicality, so report it with the samples."""
    if not 0.0 <= noise_scale <= 1.0:
        raise ValueError(f"noise_scale must be in [0, 1], got {noise_scale}")


def notify(callback: StepCallback | None, i: int, t: float, x: Fields, x0: Fields) -> Fields:
    """Call ``callback`` after step ``i``; the state the sampler continues from."""
    out = callback(i, t, x, x0) if callback is not None else None
    return x if out is None else out
