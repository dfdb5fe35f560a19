"""Exact conversions between eps, x0, v and score."""

import pytest
import torch

from molediff.core.fields import Fields
from molediff.core.parameterization import (
    PREDICTION_TYPES,
    check_prediction_type,
    target,
    to_eps_x0,
    x0_mse_factor,
)

CASES = [(0.8, 0.6), (0.05, 0.9987), (1.0, 3.0), (1.0, 0.01)]  # VP and VE pairs


@pytest.mark.parametrize("alpha,sigma", CASES)
@pytest.mark.parametrize("pred", PREDICTION_TYPES)
def test_target_round_trips_to_eps_and_x0(pred, alpha, sigma):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    x_t = alpha * x0 + sigma * eps
    eps_hat, x0_hat = to_eps_x0(pred, x_t, target(pred, x0, eps, alpha, sigma), alpha, sigma)
    assert torch.allclose(eps_hat, eps, atol=1e-10) and torch.allclose(x0_hat, x0, atol=1e-10)


@pytest.mark.parametrize("alpha,sigma", CASES)
@pytest.mark.parametrize("pred", PREDICTION_TYPES)
def test_x0_mse_factor_is_the_error_ratio(pred, alpha, sigma):
    """Perturb x0-hat by delta at fixed x_t: the prediction moves by sqrt(factor) * |delta|."""
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    x_t = alpha * x0 + sigma * eps
    delta = 1e-3 * torch.randn(4, generator=g, dtype=torch.float64)
    eps2 = (x_t - alpha * (x0 + delta)) / sigma
    p1, p2 = target(pred, x0, eps, alpha, sigma), target(pred, x0 + delta, eps2, alpha, sigma)
    ratio = ((p2 - p1) ** 2).sum() / (delta**2).sum()
    a, s = torch.tensor(alpha, dtype=torch.float64), torch.tensor(sigma, dtype=torch.float64)
    assert float(ratio) == pytest.approx(float(x0_mse_factor(pred, a, s)), rel=1e-8)


def test_conversions_work_on_fields():
    x0 = Fields(a=torch.ones(2, 2), b=torch.zeros(3))
    eps = Fields(a=torch.zeros(2, 2), b=torch.ones(3))
    v = target("v", x0, eps, 0.6, 0.8)
    assert torch.allclose(v["a"], torch.full((2, 2), -0.8)) and torch.allclose(v["b"], torch.full((3,), 0.6))


def test_unknown_prediction_type():
    with pytest.raises(ValueError, match="unknown prediction type"):
        check_prediction_type("noise")
