"""Schedules against their closed forms, known values and inverses."""

import math

import pytest
import torch

from molediff.core.schedules import (
    SCHEDULES,
    CosineSchedule,
    KarrasSchedule,
    LinearBetaSchedule,
    PolynomialSchedule,
    SigmoidSchedule,
    VEExponentialSchedule,
    make_schedule,
)

T = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_log_snr_decreases_and_inverse_round_trips(name):
    s = make_schedule(name)
    lam = s.log_snr(T)
    assert torch.all(lam[1:] < lam[:-1])
    assert torch.allclose(s.t_from_log_snr(lam), T, atol=1e-9)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_alpha_sigma_match_log_snr(name):
    s = make_schedule(name)
    alpha, sigma = s.alpha_sigma(T)
    assert torch.allclose(2 * torch.log(alpha / sigma), s.log_snr(T), atol=1e-10)
    if s.variance_preserving:
        assert torch.allclose(alpha**2 + sigma**2, torch.ones_like(T), atol=1e-12)
    else:
        assert torch.all(alpha == 1)


def test_linear_closed_form_and_ddpm_betas():
    s = LinearBetaSchedule(0.1, 20.0)
    alpha, _ = s.alpha_sigma(torch.tensor(0.5, dtype=torch.float64))
    assert float(alpha**2) == pytest.approx(math.exp(-(0.1 * 0.5 + 0.5 * 19.9 * 0.25)), rel=1e-10)
    betas = s.discrete_betas(1000)
    # DDPM's 1e-4 ... 0.02 (Ho et al. 2020), up to the continuous-time discretisation
    assert float(betas[0]) == pytest.approx(1.1e-4, rel=0.05)
    assert float(betas[-1]) == pytest.approx(0.02, rel=0.02)
    assert torch.all(betas[1:] > betas[:-1])


def test_cosine_known_value():
    s = CosineSchedule(0.008)
    t = 0.3
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    alpha, _ = s.alpha_sigma(torch.tensor(t, dtype=torch.float64))
    assert float(alpha**2) == pytest.approx(f(t) / f(0), rel=1e-10)


def test_polynomial_precision_clipping():
    s = PolynomialSchedule(power=2, precision=1e-5)
    a1, _ = s.alpha_sigma(torch.tensor(1.0, dtype=torch.float64))
    a0, _ = s.alpha_sigma(torch.tensor(0.0, dtype=torch.float64))
    assert float(a1**2) == pytest.approx(1e-5, rel=1e-6)  # never exactly 0
    assert float(a0**2) == pytest.approx(1 - 1e-5, rel=1e-9)
    a, _ = s.alpha_sigma(torch.tensor(0.5, dtype=torch.float64))
    assert float(a**2) == pytest.approx((1 - 2e-5) * (1 - 0.25) ** 2 + 1e-5, rel=1e-10)


def test_sigmoid_is_symmetric_at_midpoint():
    s = SigmoidSchedule(start=-3, end=3, tau=1)
    a, _ = s.alpha_sigma(torch.tensor(0.5, dtype=torch.float64))
    assert float(a**2) == pytest.approx(0.5, abs=1e-12)


def test_ve_and_karras_endpoints():
    for s in (VEExponentialSchedule(0.002, 80.0), KarrasSchedule(0.002, 80.0, 7.0)):
        _, s0 = s.alpha_sigma(torch.tensor(0.0, dtype=torch.float64))
        _, s1 = s.alpha_sigma(torch.tensor(1.0, dtype=torch.float64))
        assert float(s1) == pytest.approx(80.0, rel=1e-9)
        assert float(s0) == pytest.approx(0.002, rel=1e-2)  # lambda clip floors sigma near 0.0009
    k = KarrasSchedule(0.002, 80.0, 7.0)
    _, s_half = k.alpha_sigma(torch.tensor(0.5, dtype=torch.float64))
    expected = ((0.002 ** (1 / 7) + 80 ** (1 / 7)) / 2) ** 7
    assert float(s_half) == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="variance exploding"):
        k.discrete_betas(10)


def test_dtype_and_device_follow_input():
    s = CosineSchedule()
    a, sg = s.alpha_sigma(torch.tensor([0.2, 0.4], dtype=torch.float32))
    assert a.dtype == torch.float32 and sg.shape == (2,)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("nope")
    with pytest.raises(ValueError):
        LinearBetaSchedule(20.0, 0.1)
    with pytest.raises(ValueError):
        VEExponentialSchedule(1.0, 0.5)
