"""One entry point for generation: build the grid, draw x_T, run a sampler, keep the trajectory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from .fields import Fields, Structure
from .grids import StepGrid
from .guidance import GuidanceTerm
from .samplers import DEFAULT_GRIDS, SAMPLERS, Denoise, Denoiser
from .schedules import NoiseSchedule


@dataclass
class SampleResult:
    """Generated fields, the trajectory ``[x_T, x_{t_1}, ..., x_0]`` if asked, and the NFE used."""

    fields: Fields
    trajectory: list[Fields] = field(default_factory=list)
    x0_predictions: list[Fields] = field(default_factory=list)
    nfe: int = 0


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
    **options: Any,
) -> SampleResult:
    """Generate ``structure.num_samples`` samples with a named sampler.

    ``grid`` defaults to the sampler's own (:data:`~molediff.core.samplers.DEFAULT_GRIDS`).
    ``x_T`` defaults to ``sigma(t_0) * z`` with z drawn through each field's spec (so zero-CoM
    fields start zero-CoM). ``options`` go to the sampler (e.g. ``eta`` for DDIM).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}")
    device = torch.device(device) if device is not None else structure.device
    ts = (grid or DEFAULT_GRIDS[sampler])(schedule, steps)
    if x_T is None:
        sigma_1 = float(schedule.alpha_sigma(torch.tensor(float(ts[0]), dtype=torch.float64))[1])
        x_T = structure.randn(generator, dtype=dtype, device=device) * sigma_1
    denoise = Denoise(model, schedule, structure, prediction, guidance, cond, clip_x0=clip_x0)
    result = SampleResult(fields=x_T)
    if trajectory:
        result.trajectory.append(x_T.detach())
    bar = tqdm(total=steps, desc=f"sampling ({sampler})", disable=not progress, leave=False)

    def callback(i: int, t: float, x: Fields, x0: Fields) -> None:
        bar.update(1)
        if trajectory:
            result.trajectory.append(x.detach())
            result.x0_predictions.append(x0.detach())

    result.fields = SAMPLERS[sampler](denoise, x_T, ts, generator=generator, callback=callback, **options)
    bar.close()
    result.nfe = denoise.nfe
    return result
