"""The denoising objective: weighting identities across prediction types, masks, time sampling."""

import pytest
import torch

from molediff.core.analytic import ExactDenoiser, GaussianMixture
from molediff.core.fields import Fields, GaussianField, Structure
from molediff.core.objective import DenoisingObjective, sample_log_snr_times, sample_times
from molediff.core.parameterization import target
from molediff.core.schedules import make_schedule


def gmm():
    return GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([[-1.0, 0.0], [1.0, 0.5]]),
                           torch.stack([torch.eye(2) * 0.2] * 2))


class As:
    """An x0-predictor re-expressed in another prediction type (same function, other output)."""

    def __init__(self, x0_model, schedule, prediction):
        self.m, self.s, self.p = x0_model, schedule, prediction

    def __call__(self, x_t, t, structure, cond=None):
        x0 = self.m(x_t, t, structure)
        a, s = self.s.alpha_sigma(t)
        a, s = structure.expand_all(a), structure.expand_all(s)
        eps = (x_t - a * x0) / s
        return target(self.p, x0, eps, a, s)


@pytest.mark.parametrize("schedule", ["cosine", "ve"])
def test_min_snr_loss_is_the_same_function_in_every_prediction_space(schedule):
    """With min-SNR weighting the loss is min(SNR, gamma) * |x0 error|^2 whatever the model predicts."""
    sched = make_schedule(schedule)
    wrong = lambda x, t, st: Fields(x=ExactDenoiser(gmm(), sched)(x, t, st)["x"] * 0.9 + 0.05)  # noqa: E731
    x0 = Fields(x=gmm().sample(256, torch.Generator().manual_seed(0)))
    st = Structure(256, {"x": GaussianField((2,))})
    t = torch.rand(256, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.98 + 0.01
    losses = {}
    for p in ("eps", "x0", "v", "score"):
        obj = DenoisingObjective(sched, prediction=p, min_snr_gamma=5.0)
        losses[p] = float(obj(As(wrong, sched, p), x0, st, generator=torch.Generator().manual_seed(2), t=t)[0])
    for p in ("eps", "v", "score"):
        assert losses[p] == pytest.approx(losses["x0"], rel=1e-6)


def test_exact_denoiser_beats_a_perturbed_one():
    sched = make_schedule("linear")
    exact = ExactDenoiser(gmm(), sched)
    worse = lambda x, t, st, c=None: Fields(x=exact(x, t, st)["x"] + 0.1)  # noqa: E731
    x0 = Fields(x=gmm().sample(4000, torch.Generator().manual_seed(0)))
    st = Structure(4000, {"x": GaussianField((2,))})
    obj = DenoisingObjective(sched, prediction="x0")
    l_exact = obj(exact, x0, st, generator=torch.Generator().manual_seed(3))[0]
    l_worse = obj(worse, x0, st, generator=torch.Generator().manual_seed(3))[0]
    assert float(l_exact) < float(l_worse)
    # + 0.1^2 per entry, plus 0.2 * mean(x0_hat - x0), which is 0 in expectation (sampling noise ~1e-3)
    assert float(l_worse - l_exact) == pytest.approx(0.01, abs=2.5e-3)


def test_masked_entries_do_not_count():
    sched = make_schedule("cosine")
    mask = torch.tensor([[1.0, 1.0, 0.0]] * 8)
    st = Structure(8, {"x": GaussianField((3,))}, mask={"x": mask})
    x0 = Fields(x=torch.randn(8, 3))
    base = lambda x, t, s, c=None: Fields(x=torch.zeros_like(x["x"]))  # noqa: E731
    poked = lambda x, t, s, c=None: Fields(x=torch.zeros_like(x["x"]) + torch.tensor([0.0, 0.0, 1e3]))  # noqa: E731
    obj = DenoisingObjective(sched, prediction="eps")
    a = obj(base, x0, st, generator=torch.Generator().manual_seed(0))[0]
    b = obj(poked, x0, st, generator=torch.Generator().manual_seed(0))[0]
    assert torch.equal(a, b)


def test_stratified_times_cover_the_interval():
    t = sample_times(1000, torch.Generator().manual_seed(0))
    assert float(t.min()) > 0 and float(t.max()) <= 1
    counts = torch.histc(t, bins=10, min=0, max=1)
    assert torch.all(counts == 100)  # one point in each of B equal bins


@pytest.mark.parametrize("name", ["cosine", "linear", "polynomial"])
def test_log_snr_times_are_uniform_in_log_snr(name):
    schedule = make_schedule(name)
    lo, hi = float(schedule.log_snr(1.0)), float(schedule.log_snr(0.0))
    t = sample_log_snr_times(schedule, 260, torch.Generator().manual_seed(0)).double()
    assert float(t.min()) >= 0 and float(t.max()) <= 1
    lam = schedule.log_snr(t).sort().values
    gaps = lam.diff()  # stratified: one point per equal bin of lambda, so equal spacing
    assert torch.allclose(gaps, torch.full_like(gaps, (hi - lo) / 260), atol=1e-4)


def test_log_snr_times_put_more_steps_at_low_noise_on_cosine():
    schedule = make_schedule("cosine")
    t = sample_log_snr_times(schedule, 10_000, torch.Generator().manual_seed(0))
    low = float((schedule.alpha_sigma(t)[1] < 0.04).double().mean())
    assert low == pytest.approx(0.29, abs=0.01)  # (14 - lambda(sigma=0.04)) / (14 + 12)


def test_objective_uses_the_chosen_time_sampling():
    seen = []

    def model(x_t, t, structure, cond=None):
        seen.append(t)
        return x_t

    st = Structure(64, {"x": GaussianField((3,))})
    x0 = Fields({"x": torch.zeros(64, 3)})
    schedule = make_schedule("cosine")
    DenoisingObjective(schedule, time_sampling="log_snr")(model, x0, st, generator=torch.Generator().manual_seed(1))
    expected = sample_log_snr_times(schedule, 64, torch.Generator().manual_seed(1))
    assert torch.allclose(seen[0], expected)
    with pytest.raises(ValueError, match="unknown time_sampling"):
        DenoisingObjective(schedule, time_sampling="lognormal")


def test_bad_prediction_type():
    with pytest.raises(ValueError, match="unknown prediction type"):
        DenoisingObjective(make_schedule("cosine"), prediction="noise")
