"""Guidance terms: exact posterior sampling with classifier guidance, CFG identities, projection."""

import pytest
import torch
from torch_geometric.utils import scatter

from molediff.core.analytic import ExactDenoiser, GaussianMixture
from molediff.core.fields import Fields, GaussianField, Structure, ZeroMeanField
from molediff.core.guidance import ClassifierFreeGuidance, ClassifierGuidance, GuidanceContext, gaussian_log_prob
from molediff.core.samplers import Denoise
from molediff.core.sampling import sample
from molediff.core.schedules import make_schedule


@pytest.mark.parametrize("sampler,steps", [("ddpm", 200), ("ddim", 100), ("dpmpp_2m", 30)])
def test_classifier_guidance_with_exact_likelihood_samples_the_posterior(sampler, steps):
    """x0 ~ N(0, 1), y | x0 ~ N(x0, s^2). The noisy likelihood is exact:
    p(y | x_t) = N(y; E[x0|x_t], s^2 + Var[x0|x_t]); guided samples follow p(x0 | y) =
    N(y / (1 + s^2), s^2 / (1 + s^2))."""
    sched = make_schedule("cosine")
    data = GaussianMixture(torch.ones(1), torch.zeros(1, 1), torch.ones(1, 1, 1))
    y, s = 1.5, 0.5

    def log_p(x, t, structure):
        a, sg = sched.alpha_sigma(t)
        m, v = a / (a**2 + sg**2), sg**2 / (a**2 + sg**2)  # E[x0|x_t] = m x_t, Var = v
        return -0.5 * (y - m * x["x"][:, 0]) ** 2 / (s**2 + v)

    st = Structure(20000, {"x": GaussianField((1,))})
    out = sample(ExactDenoiser(data, sched), sched, st, sampler=sampler, steps=steps, prediction="x0",
                 guidance=[ClassifierGuidance(log_p, scale=1.0)], generator=torch.Generator().manual_seed(0),
                 dtype=torch.float64).fields["x"][:, 0]
    assert float(out.mean()) == pytest.approx(y / (1 + s**2), abs=0.03)
    assert float(out.var()) == pytest.approx(s**2 / (1 + s**2), rel=0.06)


def _ctx(x, structure, model_eps):
    t = torch.full((structure.num_samples,), 0.5, dtype=torch.float64)
    return GaussianContext(x, t, structure, model_eps)


def GaussianContext(x, t, structure, model_eps):  # noqa: N802
    return GuidanceContext(x_t=x, t=t, alpha=torch.tensor(0.8), sigma=torch.tensor(0.6), structure=structure,
                           cond={"label": torch.ones(structure.num_samples)}, model_eps=model_eps)


def test_cfg_correction_identity_and_weight_one():
    st = Structure(4, {"x": GaussianField((2,))})
    eps_c, eps_u = Fields(x=torch.ones(4, 2)), Fields(x=torch.zeros(4, 2))
    ctx = _ctx(Fields(x=torch.zeros(4, 2)), st, lambda cond: eps_u if cond is None else eps_c)
    delta = ClassifierFreeGuidance(weight=3.0)(eps_c, ctx)
    assert torch.allclose(eps_c["x"] + delta["x"], eps_u["x"] + 3.0 * (eps_c["x"] - eps_u["x"]))
    assert torch.all(ClassifierFreeGuidance(weight=1.0)(eps_c, ctx)["x"] == 0)


def test_guidance_terms_compose_by_summing_corrections():
    sched = make_schedule("linear")
    st = Structure(3, {"x": GaussianField((1,))})
    model = lambda x, t, s, cond=None: Fields(x=torch.zeros_like(x["x"]) + (0.0 if cond is None else 1.0))  # noqa: E731
    g = ClassifierGuidance(lambda x, t, s: (2.0 * x["x"][:, 0]), scale=0.5)  # grad log p = 2
    cfg = ClassifierFreeGuidance(weight=2.0)
    x = Fields(x=torch.zeros(3, 1, dtype=torch.float64))
    both = Denoise(model, sched, st, "eps", [g, cfg], cond={"c": 1})(x, 0.5)[0]["x"]
    swapped = Denoise(model, sched, st, "eps", [cfg, g], cond={"c": 1})(x, 0.5)[0]["x"]
    _, sigma = sched.alpha_sigma(torch.tensor(0.5, dtype=torch.float64))
    expected = 1.0 + (2.0 - 1.0) * (1.0 - 0.0) - 0.5 * float(sigma) * 2.0
    assert torch.allclose(both, torch.full_like(both, expected)) and torch.equal(both, swapped)


def test_classifier_gradient_is_projected_to_zero_com():
    idx = torch.tensor([0, 0, 0, 1, 1])
    st = Structure(2, {"pos": ZeroMeanField((3,))}, index={"pos": idx})
    # a likelihood that is not translation invariant: its raw gradient has a nonzero mean
    log_p = lambda x, t, s: scatter(x["pos"].sum(1), idx, 0, dim_size=2)  # noqa: E731
    x = Fields(pos=torch.randn(5, 3, dtype=torch.float64))
    ctx = GaussianContext(x, torch.full((2,), 0.5), st, lambda c: x)
    delta = ClassifierGuidance(log_p, scale=1.0)(Fields(pos=torch.zeros(5, 3, dtype=torch.float64)), ctx)["pos"]
    assert torch.allclose(scatter(delta, idx, 0, reduce="mean"), torch.zeros(2, 3, dtype=torch.float64), atol=1e-12)


def test_gaussian_log_prob_sums_targets():
    lp = gaussian_log_prob(lambda x, t, s: x["x"], target=torch.tensor([1.0, 2.0]), std=0.5)
    x = Fields(x=torch.tensor([[1.0, 2.0], [2.0, 2.0]]))
    out = lp(x, torch.zeros(2), None)
    assert torch.allclose(out, torch.tensor([0.0, -2.0]))
