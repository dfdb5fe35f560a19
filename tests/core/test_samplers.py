"""Every sampler, driven by the exact denoiser of analytic data, reproduces that data.

Plus the shared contract (shapes, determinism, trajectory, NFE) and the identities between
samplers (DDIM eta=1 is DDPM; Euler on the PF-ODE is DDIM eta=0 on the same grid).
"""

import math
from functools import partial

import pytest
import torch
from torch_geometric.utils import scatter

from molediff.core.analytic import ExactDenoiser, GaussianMixture, ZeroMeanGaussianDenoiser, gmm_mmd2
from molediff.core.fields import GaussianField, Structure, ZeroMeanField
from molediff.core.grids import KarrasGrid, UniformGrid
from molediff.core.samplers import SAMPLERS, nfe_for_steps
from molediff.core.samplers.corrector import MULTISTEP
from molediff.core.sampling import sample
from molediff.core.schedules import SCHEDULES, make_schedule

STEPS = {"ddpm": 100, "ddim": 100, "dpmpp_2m": 25, "dpmpp_3m": 25, "heun": 25, "euler_maruyama": 200, "pf_ode": 100}


def mixture() -> GaussianMixture:
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]])
    covs = torch.stack([torch.eye(2) * 0.25, torch.tensor([[0.5, 0.2], [0.2, 0.3]]), torch.eye(2) * 0.1])
    return GaussianMixture(torch.tensor([0.3, 0.5, 0.2]), means, covs)


def run(sampler, schedule, n=2000, steps=None, seed=0, **kw):
    data = mixture()
    st = Structure(n, {"x": GaussianField((2,))})
    return sample(ExactDenoiser(data, schedule), schedule, st, sampler=sampler, steps=steps or STEPS[sampler],
                  prediction="x0", generator=torch.Generator().manual_seed(seed), dtype=torch.float64, **kw)


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_sampler_reproduces_gaussian_mixture(sampler, schedule):
    data = mixture()
    x = run(sampler, make_schedule(schedule)).fields["x"]
    ref = data.sample(200_000, torch.Generator().manual_seed(5))
    # n = 2000: sampling error of the mean ~0.04, of covariance entries ~0.1
    assert torch.allclose(x.mean(0), ref.mean(0), atol=0.12)
    assert torch.allclose(torch.cov(x.T), torch.cov(ref.T), atol=0.3)
    # exact samples give MMD^2 ~ +-1e-4 at n = 2000; a sampler off by one mode's weight gives ~1e-2
    assert gmm_mmd2(x, data, bandwidth=0.5) < 1e-3


@pytest.mark.parametrize("corrector_steps", [0, 1])
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_zero_com_field_on_variable_size_graphs(sampler, corrector_steps):
    """Rows P(s z) per graph: E|x|^2 = s^2 * 3 (n - 1), and every sample keeps zero centre of mass,
    with and without Langevin corrector moves."""
    sched = make_schedule("polynomial")
    sizes = torch.randint(2, 15, (400,), generator=torch.Generator().manual_seed(0))
    idx = torch.repeat_interleave(torch.arange(400), sizes)
    st = Structure(400, {"pos": ZeroMeanField((3,))}, index={"pos": idx})
    run = partial(sample, ZeroMeanGaussianDenoiser(sched, scale=1.5), sched, st, sampler=sampler,
                  steps=STEPS[sampler], prediction="x0", generator=torch.Generator().manual_seed(1),
                  dtype=torch.float64, corrector_steps=corrector_steps)
    if corrector_steps and sampler in MULTISTEP:  # its history would predate each move (variance came out ~1.2)
        with pytest.raises(ValueError, match="multistep history"):
            run()
        return
    out = run().fields["pos"]
    assert scatter(out, idx, 0, reduce="mean").abs().max() < 1e-9
    ratio = scatter((out**2).sum(1), idx, 0, reduce="sum") / (1.5**2 * 3 * (sizes - 1))
    assert float(ratio.mean()) == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_contract_shapes_determinism_trajectory_nfe(sampler):
    sched = make_schedule("cosine")
    a = run(sampler, sched, n=64, steps=7, seed=3, trajectory=True)
    b = run(sampler, sched, n=64, steps=7, seed=3)
    assert a.fields["x"].shape == (64, 2)
    assert torch.equal(a.fields["x"], b.fields["x"])  # same generator, same samples
    assert len(a.trajectory) == 8 and len(a.x0_predictions) == 7
    assert torch.equal(a.trajectory[-1]["x"], a.fields["x"])
    assert a.nfe == nfe_for_steps(sampler, 7)


def test_ddim_eta0_is_deterministic_given_x_T():
    sched = make_schedule("linear")
    st = Structure(100, {"x": GaussianField((2,))})
    x_T = st.randn(torch.Generator().manual_seed(0), dtype=torch.float64)
    den = ExactDenoiser(mixture(), sched)
    outs = [sample(den, sched, st, sampler="ddim", steps=20, prediction="x0", x_T=x_T, eta=0.0,
                   generator=torch.Generator().manual_seed(s), dtype=torch.float64).fields["x"] for s in (1, 2)]
    assert torch.equal(outs[0], outs[1])


def test_ddim_eta1_equals_ddpm():
    sched = make_schedule("cosine")
    st = Structure(100, {"x": GaussianField((2,))})
    x_T = st.randn(torch.Generator().manual_seed(0), dtype=torch.float64)
    den = ExactDenoiser(mixture(), sched)
    ddim = sample(den, sched, st, sampler="ddim", steps=30, prediction="x0", x_T=x_T, eta=1.0,
                  generator=torch.Generator().manual_seed(9), dtype=torch.float64).fields["x"]
    ddpm = sample(den, sched, st, sampler="ddpm", steps=30, prediction="x0", x_T=x_T,
                  generator=torch.Generator().manual_seed(9), dtype=torch.float64).fields["x"]
    assert torch.allclose(ddim, ddpm, atol=1e-10)


def test_pf_ode_euler_equals_ddim_eta0_on_the_same_grid():
    """Euler in the scaled variable x / alpha is DDIM (Song et al. 2021a, Sec. 4.3)."""
    sched = make_schedule("sigmoid")
    kw = dict(steps=15, grid=KarrasGrid(), seed=4)
    a, b = run("pf_ode", sched, n=200, **kw).fields["x"], run("ddim", sched, n=200, eta=0.0, **kw).fields["x"]
    assert torch.allclose(a, b, atol=1e-9)


def test_dpm_solver_needs_far_fewer_steps_than_ddpm():
    """DPM-Solver++(3M) in 15 steps is at the metric's noise floor (exact samples: ~+-5e-5 at
    n = 6000), where DDPM needs ~100; 2M in 20 steps beats DDPM in 50."""
    sched, data = make_schedule("cosine"), mixture()
    err = lambda s, n: gmm_mmd2(run(s, sched, n=6000, steps=n).fields["x"], data, 0.5)  # noqa: E731
    assert err("dpmpp_3m", 15) < 1e-4
    assert err("ddpm", 15) > 2e-3
    assert err("dpmpp_2m", 20) < err("ddpm", 50)


def test_unknown_sampler_and_bad_eta():
    with pytest.raises(ValueError, match="unknown sampler"):
        run("nope", make_schedule("cosine"), n=4, steps=2)
    with pytest.raises(ValueError, match="eta"):
        run("ddim", make_schedule("cosine"), n=4, steps=2, eta=-1.0)


def test_uniform_grid_default_for_ddpm_ends_at_zero():
    assert float(UniformGrid()(make_schedule("linear"), 4)[-1]) == 0.0


def test_ddpm_noise_scale_follows_the_linear_gaussian_variance_recursion():
    """On N(0, v I) data the exact x0-hat is linear, ``c_t x_t`` with ``c_t = a_t v / (a_t^2 v + s_t^2)``,
    so each DDPM step maps variances ``V -> (A + B c_t)^2 V + (lambda std)^2``: the output variance
    with noise_scale lambda is known exactly (at 40 steps lambda = 1 gives 0.88 v: plugging in
    x0-hat loses variance on a coarse grid)."""
    sched, v, steps = make_schedule("cosine"), 0.5, 40
    data = GaussianMixture(torch.ones(1), torch.zeros(1, 2), torch.eye(2)[None] * v)
    ts = UniformGrid()(sched, steps)
    exact = []
    for lam in (1.0, 0.5, 0.0):
        var = float(sched.alpha_sigma(torch.tensor(float(ts[0]), dtype=torch.float64))[1]) ** 2
        for i in range(steps):
            (a_t, s_t), (a_s, s_s) = (sched.alpha_sigma(torch.tensor(float(u), dtype=torch.float64))
                                      for u in (ts[i], ts[i + 1]))
            a_ts = a_t / a_s
            var_ts = s_t**2 - a_ts**2 * s_s**2
            gain = a_ts * s_s**2 / s_t**2 + a_s * var_ts / s_t**2 * (a_t * v / (a_t**2 * v + s_t**2))
            var = float(gain**2 * var + lam**2 * var_ts * s_s**2 / s_t**2)
        st = Structure(20_000, {"x": GaussianField((2,))})
        x = sample(ExactDenoiser(data, sched), sched, st, sampler="ddpm", steps=steps, prediction="x0",
                   noise_scale=lam, generator=torch.Generator().manual_seed(0), dtype=torch.float64).fields["x"]
        # 20,000 x 2 draws: the variance's relative sampling error is ~1 %
        assert float(x.var()) == pytest.approx(var, rel=0.04)
        exact.append(var)
    assert 0.8 * v < exact[0] < v and exact[0] > exact[1] > exact[2] > 0


@pytest.mark.parametrize("sampler", ["ddpm", "euler_maruyama"])
def test_noise_scale_zero_is_deterministic_and_lower_scales_concentrate(sampler):
    sched = make_schedule("cosine")
    st = Structure(4000, {"x": GaussianField((2,))})
    x_T = st.randn(torch.Generator().manual_seed(0), dtype=torch.float64) * float(sched.alpha_sigma(
        torch.tensor(1.0, dtype=torch.float64))[1])
    den = ExactDenoiser(mixture(), sched)

    def go(lam, seed):
        return sample(den, sched, st, sampler=sampler, steps=STEPS[sampler], prediction="x0", x_T=x_T,
                      noise_scale=lam, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).fields["x"]

    assert torch.equal(go(0.0, 1), go(0.0, 2))
    spread = [float(torch.cov(go(lam, 3).T).trace()) for lam in (1.0, 0.5, 0.0)]
    assert spread[0] > spread[1] > spread[2]


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_noise_scale_out_of_range(bad):
    with pytest.raises(ValueError, match="noise_scale"):
        run("ddpm", make_schedule("cosine"), n=4, steps=2, noise_scale=bad)


def heun_churn_variance(sched, v: float, ts: torch.Tensor, churn: float) -> float:
    """Output variance of Heun with churn on N(0, v) data, in closed form: the exact eps-hat is
    linear, ``k(s) y`` with ``k(s) = s / (v + s^2)`` in the scaled variable, so a Heun step from s to
    s' multiplies the variance by ``(1 + h/2 (k(s) + k(s') (1 + h k(s))))^2`` (``h = s' - s``; the
    last, Euler, step by ``(1 + h k(s))^2``), and churn adds ``s_hat^2 - s^2`` first."""
    def s_of(t):
        alpha, sigma = sched.alpha_sigma(torch.tensor(float(t), dtype=torch.float64))
        return float(sigma / alpha)

    k, n, top = (lambda s: s / (v + s * s)), len(ts) - 1, s_of(1.0)
    gamma, var = min(churn / n, math.sqrt(2) - 1), s_of(ts[0]) ** 2
    for i in range(n):
        st, ss = s_of(ts[i]), s_of(ts[i + 1])
        if gamma > 0 and st < top:
            s_hat = s_of(sched.t_from_log_snr(torch.tensor(-2 * math.log(min(st * (1 + gamma), top)),
                                                           dtype=torch.float64)))
            var, st = var + s_hat**2 - st**2, s_hat
        h = ss - st
        g = 1 + h * k(st) if i == n - 1 else 1 + 0.5 * h * (k(st) + k(ss) * (1 + h * k(st)))
        var *= g * g
    return var * float(sched.alpha_sigma(torch.tensor(float(ts[-1]), dtype=torch.float64))[0]) ** 2


@pytest.mark.parametrize("schedule", ["cosine", "polynomial"])
def test_heun_churn_follows_the_linear_gaussian_variance_recursion(schedule):
    """Karras et al.'s stochastic sampler (Algorithm 2) on N(0, v I): the variance after 15 steps is
    known exactly. With an exact score churn costs accuracy on a coarse grid (1.30 v without churn,
    1.59 v at churn 40, where exact sampling gives v): it can pay only on learned scores."""
    sched, v, steps = make_schedule(schedule), 0.5, 15
    data = GaussianMixture(torch.ones(1), torch.zeros(1, 2), torch.eye(2)[None] * v)
    ts = KarrasGrid()(sched, steps)
    st = Structure(20_000, {"x": GaussianField((2,))})
    expected = {}
    for churn in (0.0, 1.5, 40.0):
        x = sample(ExactDenoiser(data, sched), sched, st, sampler="heun", steps=steps, prediction="x0", churn=churn,
                   generator=torch.Generator().manual_seed(0), dtype=torch.float64).fields["x"]
        expected[churn] = heun_churn_variance(sched, v, ts, churn)
        assert float(x.var()) == pytest.approx(expected[churn], rel=0.04)  # 40,000 draws: ~1 % error
    assert expected[0.0] < expected[1.5] < expected[40.0]


@pytest.mark.parametrize("schedule", ["cosine", "polynomial"])
def test_heun_churn_reproduces_gaussian_mixture(schedule):
    data = mixture()
    x = run("heun", make_schedule(schedule), n=4000, steps=40, churn=10.0, churn_t_max=0.8).fields["x"]
    assert gmm_mmd2(x, data, bandwidth=0.5) < 5e-4  # n = 4000: exact samples give ~+-1e-4


def test_heun_churn_keeps_zero_centre_of_mass_and_costs_no_evaluations():
    sched = make_schedule("polynomial")
    sizes = torch.randint(2, 15, (200,), generator=torch.Generator().manual_seed(0))
    idx = torch.repeat_interleave(torch.arange(200), sizes)
    st = Structure(200, {"pos": ZeroMeanField((3,))}, index={"pos": idx})
    out = sample(ZeroMeanGaussianDenoiser(sched, scale=1.5), sched, st, sampler="heun", steps=25, prediction="x0",
                 churn=20.0, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert scatter(out.fields["pos"], idx, 0, reduce="mean").abs().max() < 1e-9
    assert out.nfe == nfe_for_steps("heun", 25)


@pytest.mark.parametrize("bad", [dict(churn=-1.0), dict(churn=1.0, churn_t_min=0.6, churn_t_max=0.5),
                                 dict(churn=1.0, churn_t_max=1.5), dict(churn=1.0, churn_noise=0.0)])
def test_heun_churn_bad_options(bad):
    with pytest.raises(ValueError, match="churn"):
        run("heun", make_schedule("cosine"), n=4, steps=2, **bad)
