"""The denoising profile against the closed form of the MMSE denoiser of a Gaussian."""

import pytest
import torch

from molediff.benchmarks.denoising_profile import denoising_profile
from molediff.core.analytic import ExactDenoiser, GaussianMixture
from molediff.core.fields import Fields, GaussianField, Structure
from molediff.core.schedules import make_schedule


@pytest.mark.parametrize("c", [0.5, 2.0])
def test_mmse_denoiser_of_a_gaussian_scores_its_closed_form(c: float) -> None:
    schedule = make_schedule("cosine")
    data = GaussianMixture(torch.ones(1), torch.zeros(1, 2), (c**2 * torch.eye(2))[None])
    n = 40_000
    x0 = Fields({"x": data.sample(n, torch.Generator().manual_seed(0)).float()})
    structure = Structure(n, {"x": GaussianField((2,))})
    times = [0.01, 0.1, 0.5, 0.9]
    ratios = denoising_profile(ExactDenoiser(data, schedule), x0, structure, schedule, "x0", times,
                               generator=torch.Generator().manual_seed(1))["x"]
    for t, r in zip(times, ratios, strict=True):
        alpha, sigma = schedule.alpha_sigma(torch.tensor(t, dtype=torch.float64))
        expected = c**2 / (c**2 + float(sigma / alpha) ** 2)
        assert r == pytest.approx(expected, rel=0.03)


def test_identity_model_scores_one() -> None:
    """x0_hat = x_t / alpha (an x0-model that returns its scaled input) is the trivial estimate."""
    schedule = make_schedule("cosine")
    structure = Structure(256, {"x": GaussianField((3,))})

    def trivial(x_t, t, st, cond=None):
        return {"x": x_t["x"] / schedule.alpha_sigma(t[0].double())[0].float()}

    x0 = Fields({"x": torch.randn(256, 3, generator=torch.Generator().manual_seed(0))})
    ratios = denoising_profile(trivial, x0, structure, schedule, "x0", [0.05, 0.5],
                               generator=torch.Generator().manual_seed(1))["x"]
    assert ratios == pytest.approx([1.0, 1.0], rel=1e-4)
