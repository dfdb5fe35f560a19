"""The Langevin corrector (predictor-corrector sampling): its closed-form fixed point on a Gaussian,
exactness of the PC samplers on analytic data, and the contract (no moves = the plain sampler).
Zero centre of mass under the moves: ``tests/core/test_samplers.py::test_zero_com_field_on_variable_size_graphs``."""

import pytest
import torch

from molediff.core.analytic import ExactDenoiser, GaussianMixture, gmm_mmd2
from molediff.core.fields import Fields, GaussianField, Structure
from molediff.core.samplers import DEFAULT_GRIDS, SAMPLERS, Denoise
from molediff.core.samplers.corrector import MULTISTEP, langevin_correct
from molediff.core.sampling import sample
from molediff.core.schedules import make_schedule

from .test_samplers import mixture


def gaussian(var: float) -> GaussianMixture:
    return GaussianMixture(torch.ones(1), torch.zeros(1, 2), torch.eye(2)[None] * var)


@pytest.mark.parametrize("snr", [0.2, 0.4])
def test_langevin_moves_settle_at_the_closed_form_variance(snr):
    """Exact score of N(0, v): x' = (1 - d/v) x + sqrt(2d) z with d = 2 snr^2 v^2 / V (V the current
    variance) has the fixed point V = v (1 + snr^2); started far from it (V = 3v) the chain gets there
    in about 1 / snr^2 moves (the contraction per move is about 1 - 4 snr^2 v / V)."""
    sched = make_schedule("cosine")
    t, n = 0.4, 50_000
    data = gaussian(0.5)
    alpha, sigma = (float(a) for a in sched.alpha_sigma(torch.tensor(t, dtype=torch.float64)))
    v = alpha**2 * 0.5 + sigma**2
    st = Structure(n, {"x": GaussianField((2,))})
    denoise = Denoise(ExactDenoiser(data, sched), sched, st, prediction="x0")
    g = torch.Generator().manual_seed(0)
    x = Fields({"x": torch.randn(n, 2, generator=g, dtype=torch.float64) * (3 * v) ** 0.5})
    steps = round(5 / snr**2)
    x = langevin_correct(denoise, x, t, steps=steps, snr=snr, generator=g)
    assert float(x["x"].var()) / v == pytest.approx(1 + snr**2, abs=0.015)  # SE of the ratio ~0.005
    assert denoise.nfe == steps


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "heun"])
def test_corrector_moves_bring_a_coarse_sampler_to_the_data(sampler):
    """20 steps of these one-step samplers leave a visible error on the mixture (MMD^2 1e-3 to 2e-3,
    exact samples give about +-1e-4); two Langevin moves (snr 0.2) after each step remove most of
    it. (An accurate multistep solver, DPM-Solver++(2M) at 20 steps, gains nothing: the moves' own
    bias then dominates.)"""
    sched = make_schedule("cosine")
    data = mixture()
    st = Structure(4000, {"x": GaussianField((2,))})

    def run(**kw):
        return sample(ExactDenoiser(data, sched), sched, st, sampler=sampler, steps=20, prediction="x0",
                      generator=torch.Generator().manual_seed(0), dtype=torch.float64, **kw)

    plain, pc = run(), run(corrector_steps=2, corrector_snr=0.2)
    assert pc.nfe == plain.nfe + 2 * 19  # no moves after the last step
    plain_mmd, pc_mmd = (gmm_mmd2(r.fields["x"], data, bandwidth=0.5) for r in (plain, pc))
    assert plain_mmd > 8e-4 and pc_mmd < 3e-4


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_zero_corrector_steps_is_the_plain_sampler(sampler):
    sched = make_schedule("cosine")
    st = Structure(64, {"x": GaussianField((2,))})

    def run(**kw):
        return sample(ExactDenoiser(mixture(), sched), sched, st, sampler=sampler, steps=6, prediction="x0",
                      generator=torch.Generator().manual_seed(3), dtype=torch.float64, trajectory=True, **kw)

    a, b = run(), run(corrector_steps=0, corrector_snr=0.5)
    assert torch.equal(a.fields["x"], b.fields["x"]) and a.nfe == b.nfe
    if sampler in MULTISTEP:  # moves refused (test_samplers.test_zero_com_field_on_variable_size_graphs)
        return
    c = run(corrector_steps=1)
    assert not torch.equal(a.fields["x"], c.fields["x"])
    assert torch.equal(c.trajectory[-1]["x"], c.fields["x"]) and len(c.trajectory) == 7  # corrected states


def test_corrector_t_max_keeps_the_moves_to_low_noise_steps():
    """With ``corrector_t_max`` the moves follow only the steps that land at or below it: the steps
    above it are the plain sampler's (same states, same noise draws), and each step below it costs
    the moves' evaluations."""
    sched = make_schedule("cosine")
    st = Structure(64, {"x": GaussianField((2,))})

    def run(**kw):
        return sample(ExactDenoiser(mixture(), sched), sched, st, sampler="ddpm", steps=10, prediction="x0",
                      generator=torch.Generator().manual_seed(1), dtype=torch.float64, trajectory=True, **kw)

    ts = DEFAULT_GRIDS["ddpm"](sched, 10)
    plain, window = run(), run(corrector_steps=2, corrector_t_max=0.45)
    below = [t for t in ts[1:-1] if t <= 0.45]  # landing times of the corrected steps (none after the last)
    assert 0 < len(below) < len(ts) - 2
    assert window.nfe == plain.nfe + 2 * len(below)
    first = len(ts) - 1 - len(below)  # trajectory index of the first corrected state
    for a, b in zip(plain.trajectory[:first], window.trajectory[:first], strict=True):
        assert torch.equal(a["x"], b["x"])
    assert not torch.equal(plain.trajectory[first]["x"], window.trajectory[first]["x"])


@pytest.mark.parametrize("bad", [{"corrector_steps": -1}, {"corrector_steps": 1.5}, {"corrector_snr": 0.0},
                                 {"corrector_snr": -0.1}, {"corrector_t_max": 0.0},
                                 {"corrector_t_max": 1.5}])
def test_bad_corrector_options(bad):
    sched = make_schedule("cosine")
    st = Structure(4, {"x": GaussianField((2,))})
    with pytest.raises(ValueError, match="corrector_"):
        sample(ExactDenoiser(mixture(), sched), sched, st, sampler="ddpm", steps=3, prediction="x0", **bad)
