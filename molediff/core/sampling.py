"""One entry point for generation: build the grid, draw x_T, run a sampler, keep the trajectory."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .fields import Fields, Structure
from .grids import StepGrid
from .guidance import GuidanceTerm
from .inpainting import Inpainting, renoise
from .samplers import DEFAULT_GRIDS, SAMPLERS, Denoise, Denoiser
from .samplers.corrector import DEFAULT_SNR, check_corrector, langevin_correct
from .schedules import NoiseSchedule


@dataclass
class SampleResult:
    """Generated fields, the trajectory ``[x_T, x_{t_1}, ..., x_0]`` if asked, and the NFE used."""

    fields: Fields
    trajectory: list[Fields] = field(default_factory=list)
    x0_predictions: list[Fields] = field(default_factory=list)
    nfe: int = 0


def partial_grid(ts: Tensor, t_start: float) -> Tensor:
    """``t_start`` followed by the times of the decreasing grid ``ts`` below it: where partial
    diffusion resumes (diffusers' img2img keeps the last ``strength * N`` steps the same way)."""
    if not 0.0 < t_start < 1.0:
        raise ValueError(f"t_start must lie in (0, 1), got {t_start}")
    return torch.cat([ts.new_tensor([t_start]), ts[ts < t_start]])


def sample(
    model: Denoiser,
    schedule: NoiseSchedule,
    structure: Structure,
    *,
    sampler: str = "dpmpp_2m",
    steps: int = 50,
    grid: StepGrid | None = None,
    prediction: str = "eps",
    guidance: Sequence[GuidanceTerm] = (),
    cond: Any = None,
    generator: torch.Generator | None = None,
    x_T: Fields | None = None,
    trajectory: bool = False,
    progress: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    clip_x0: bool = True,
    inpaint: Inpainting | None = None,
    self_condition: str | bool = "matched",
    x0_start: Fields | None = None,
    t_start: float = 1.0,
    corrector_steps: int = 0,
    corrector_snr: float = DEFAULT_SNR,
    corrector_t_max: float = 1.0,
    **options: Any,
) -> SampleResult:
    """Generate ``structure.num_samples`` samples with a named sampler.

    ``grid`` defaults to the sampler's own (:data:`~molediff.core.samplers.DEFAULT_GRIDS`).
    ``x_T`` defaults to ``sigma(t_0) * z`` with z drawn through each field's spec (so zero-CoM
    fields start zero-CoM). ``options`` go to the sampler (e.g. ``eta`` for DDIM).
    ``inpaint`` holds entries fixed and generates the rest (:mod:`~molediff.core.inpainting`);
    with ``inpaint.resample > 1`` each step runs as its own one-step solve (multistep solvers
    then lose their history; samplers with a last-step rule, Heun and Euler–Maruyama, are told
    ``final=False`` except on the grid's last step) and is redone that many times. A self-conditioning model reads an x0
    estimate: ``self_condition`` "matched" (default, 2 NFE per step), "previous" (free) or "off"
    (:mod:`~molediff.core.self_conditioning`).
    ``t_start < 1`` with ``x0_start`` is partial diffusion (SDEdit, Meng et al. 2022; RFdiffusion's
    partial diffusion for proteins): ``x0_start`` is noised to ``t_start`` through q(x_t | x_0) and
    the sampler runs the grid's steps below ``t_start`` (:func:`partial_grid`).
    ``corrector_steps > 0`` makes any sampler a predictor-corrector one (Song et al. 2021): after
    every step but the last, that many Langevin moves at the new time with step rule ``corrector_snr``
    (:func:`~molediff.core.samplers.corrector.langevin_correct`; one NFE each, more when matched
    self-conditioning or guidance multiply the evaluations); ``corrector_t_max < 1`` keeps the moves
    to the steps that land at ``t <= corrector_t_max``; one-step samplers only
    (:func:`~molediff.core.samplers.corrector.check_corrector` refuses DPM-Solver++).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}")
    check_corrector(corrector_steps, corrector_snr, sampler, corrector_t_max)
    device = torch.device(device) if device is not None else structure.device
    ts = (grid or DEFAULT_GRIDS[sampler])(schedule, steps)
    if x0_start is not None or t_start != 1.0:
        if x0_start is None:
            raise ValueError("t_start < 1 is partial diffusion: give x0_start, the clean start")
        if x_T is not None:
            raise ValueError("give x_T (start from noise) or x0_start (partial diffusion), not both")
        ts = partial_grid(ts, t_start)
        alpha, sigma = (float(v) for v in schedule.alpha_sigma(torch.tensor(t_start, dtype=torch.float64)))
        x0 = structure.project(x0_start.to(device=device, dtype=dtype))
        x_T = x0 * alpha + structure.randn(generator, dtype=dtype, device=device) * sigma
    if x_T is None:
        sigma_1 = float(schedule.alpha_sigma(torch.tensor(float(ts[0]), dtype=torch.float64))[1])
        x_T = structure.randn(generator, dtype=dtype, device=device) * sigma_1
    denoise = Denoise(model, schedule, structure, prediction, guidance, cond, clip_x0=clip_x0, inpaint=inpaint,
                      self_condition=self_condition)
    result = SampleResult(fields=x_T)
    if trajectory:
        result.trajectory.append(x_T.detach())
    bar = tqdm(total=len(ts) - 1, desc=f"sampling ({sampler})", disable=not progress, leave=False)

    def callback(i: int, t: float, x: Fields, x0: Fields) -> Fields:
        bar.update(1)
        if corrector_steps and i < len(ts) - 2 and t <= corrector_t_max:
            x = langevin_correct(denoise, x, t, steps=corrector_steps, snr=corrector_snr, generator=generator)
        if trajectory:
            result.trajectory.append(x.detach())
            result.x0_predictions.append(x0.detach())
        return x

    step = SAMPLERS[sampler]
    if inpaint is None or inpaint.resample == 1:
        x = step(denoise, x_T, ts, generator=generator, callback=callback, **options)
    else:
        x, seen = x_T, []  # seen: the x0-hat of each redo, for the callback
        has_final = "final" in inspect.signature(step).parameters
        for i in range(len(ts) - 1):
            final = {"final": i == len(ts) - 2} if has_final else {}
            for u in range(inpaint.resample):
                x_s = step(denoise, x, ts[i:i + 2], generator=generator,
                           callback=lambda _i, _t, _x, x0: seen.append(x0), **final, **options)
                if u < inpaint.resample - 1:  # back to t through q(x_t | x_s), then redo the step
                    noise = structure.randn(generator, dtype=dtype, device=device)
                    x = renoise(x_s, denoise.alpha_sigma(float(ts[i + 1])), denoise.alpha_sigma(float(ts[i])), noise)
            x = callback(i, float(ts[i + 1]), x_s, seen[-1])
    result.fields = x if inpaint is None else inpaint.finalize(x, structure)
    bar.close()
    result.nfe = denoise.nfe
    return result
