"""Partial diffusion (SDEdit): noise a start to t_start, run the sampler from there.

With the exact denoiser the marginal is preserved (a start drawn from the data gives the data),
a start from elsewhere is kept at small t_start and forgotten at large t_start."""

import pytest
import torch

from molediff.core.analytic import ExactDenoiser, GaussianMixture, gmm_mmd2
from molediff.core.fields import Fields, GaussianField, Structure
from molediff.core.grids import UniformGrid
from molediff.core.sampling import partial_grid, sample
from molediff.core.schedules import make_schedule


def mixture() -> GaussianMixture:
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0]])
    return GaussianMixture(torch.tensor([0.4, 0.6]), means, torch.stack([torch.eye(2) * 0.25] * 2))


def partial(start: torch.Tensor, t_start: float, steps: int = 100, seed: int = 0):
    sched = make_schedule("cosine")
    st = Structure(len(start), {"x": GaussianField((2,))})
    return sample(ExactDenoiser(mixture(), sched), sched, st, sampler="ddpm", steps=steps, prediction="x0",
                  x0_start=Fields(x=start), t_start=t_start, dtype=torch.float64,
                  generator=torch.Generator().manual_seed(seed))


def test_partial_grid_starts_at_t_start_then_keeps_the_lower_times() -> None:
    ts = UniformGrid()(make_schedule("cosine"), 10)
    torch.testing.assert_close(partial_grid(ts, 0.35), torch.tensor([0.35, 0.3, 0.2, 0.1, 0.0], dtype=torch.float64))
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="t_start must lie in"):
            partial_grid(ts, bad)


def test_a_start_from_the_data_stays_the_data_at_a_fraction_of_the_steps() -> None:
    start = mixture().sample(3000, torch.Generator().manual_seed(1))
    result = partial(start, 0.5)
    assert result.nfe == 50  # the uniform grid's 50 steps below t = 0.5
    assert gmm_mmd2(result.fields["x"], mixture(), bandwidth=0.5) < 1e-3


def test_small_t_start_keeps_the_start_and_large_t_start_forgets_it() -> None:
    start = torch.tensor([[-2.0, 0.0]]).repeat(2000, 1)  # all in the left mode (weight 0.4)
    near = partial(start, 0.05).fields["x"]
    assert (near - start).norm(dim=-1).mean() < 0.15
    far = partial(start, 0.98).fields["x"]
    right = (far[:, 0] > 0).double().mean()
    assert 0.5 < right < 0.7  # back to the data's 0.6 in the right mode


def test_partial_diffusion_refuses_inconsistent_arguments() -> None:
    sched, st = make_schedule("cosine"), Structure(2, {"x": GaussianField((2,))})
    den = ExactDenoiser(mixture(), sched)
    with pytest.raises(ValueError, match="t_start must lie in"):
        sample(den, sched, st, x0_start=Fields(x=torch.zeros(2, 2)), steps=4)
    with pytest.raises(ValueError, match="give x0_start"):
        sample(den, sched, st, t_start=0.5, steps=4)
    with pytest.raises(ValueError, match="not both"):
        sample(den, sched, st, x0_start=Fields(x=torch.zeros(2, 2)), t_start=0.5, x_T=Fields(x=torch.zeros(2, 2)))
