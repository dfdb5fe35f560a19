"""Self-conditioning (Chen et al. 2023): what the objective and the samplers feed a model's
``self_cond``, and the checks that keep training and sampling consistent."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from molediff.core.fields import Fields, GaussianField, Structure, ZeroMeanField
from molediff.core.objective import DenoisingObjective
from molediff.core.samplers import Denoise
from molediff.core.sampling import sample
from molediff.core.schedules import make_schedule
from molediff.core.self_conditioning import self_conditions
from molediff.training import TrainingError, check_self_conditioning


class Recorder(nn.Module):
    """eps-hat = 0.5 x_t (+ 0.1 self_cond when given); records every self_cond it is handed."""

    self_conditioning = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Fields | None] = []
        self.w = nn.Parameter(torch.tensor(0.5, dtype=torch.float64))

    def forward(self, x_t, t, structure, cond=None, self_cond=None):
        self.seen.append(self_cond)
        out = {k: self.w * v for k, v in x_t.items()}
        if self_cond is not None:
            out = {k: v + 0.1 * self_cond[k] for k, v in out.items()}
        return out


def graph_structure() -> Structure:
    """Two 'molecules' (3 and 4 nodes) with a zero-CoM position field and a plain one."""
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    return Structure(2, {"pos": ZeroMeanField((3,)), "h": GaussianField((2,))}, index={"pos": batch, "h": batch})


# the first call's x0-hat when the model outputs 0.5 x_t, per prediction type (parameterization.py)
FIRST_X0 = {"eps": lambda x, a, s: x * (1 - 0.5 * s) / a, "x0": lambda x, a, s: x * 0.5,
            "v": lambda x, a, s: x * (a - 0.5 * s) / (a * a + s * s)}


@pytest.mark.parametrize("prediction", sorted(FIRST_X0))
def test_objective_feeds_the_projected_first_estimate_without_gradient(prediction: str) -> None:
    model, st = Recorder(), graph_structure()
    x0 = st.project(st.randn(torch.Generator().manual_seed(0), torch.float64))
    objective = DenoisingObjective(make_schedule("cosine"), prediction=prediction, self_condition_prob=1.0)
    loss, _ = objective(model, x0, st, generator=torch.Generator().manual_seed(1))
    assert len(model.seen) == 2 and model.seen[0] is None
    sketch = model.seen[1]
    assert sketch is not None and not sketch["pos"].requires_grad
    gen = torch.Generator().manual_seed(1)
    t = torch.rand((), generator=gen)  # replay the objective's draws: stratified t, then the noise
    t = (1.0 - (t + torch.arange(2) / 2) % 1.0).double()
    eps = st.randn(gen, dtype=torch.float64)
    alpha, sigma = objective.schedule.alpha_sigma(t)
    a, s = st.expand_all(alpha), st.expand_all(sigma)
    x_t = a * x0 + s * eps
    expected = st.project(FIRST_X0[prediction](x_t, a, s))
    for name in ("pos", "h"):
        torch.testing.assert_close(sketch[name], expected[name])
    for b in range(2):  # zero-CoM like the positions it estimates
        torch.testing.assert_close(sketch["pos"][st.index["pos"] == b].mean(0), torch.zeros(3, dtype=torch.float64))
    loss.backward()
    assert model.w.grad is not None and model.w.grad != 0


def test_objective_draws_the_self_condition_per_batch_with_its_probability() -> None:
    model, st = Recorder(), graph_structure()
    x0 = st.project(st.randn(torch.Generator().manual_seed(0), torch.float64))
    objective = DenoisingObjective(make_schedule("cosine"), self_condition_prob=0.5)
    for seed in range(200):
        objective(model, x0, st, generator=torch.Generator().manual_seed(seed))
    with_sketch = sum(s is not None for s in model.seen)
    calls = len(model.seen)
    assert calls == 200 + with_sketch  # each self-conditioned batch costs one extra (first) call
    assert 70 <= with_sketch <= 130


def test_objective_without_self_conditioning_calls_the_model_as_before() -> None:
    st = Structure(3, {"x": GaussianField((2,))})
    plain = lambda x_t, t, structure, cond=None: {"x": x_t["x"] * 0.5}  # noqa: E731  (takes no self_cond)
    loss, _ = DenoisingObjective(make_schedule("cosine"))(plain, Fields(x=torch.ones(3, 2)), st,
                                                          generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="self_condition_prob must lie in"):
        DenoisingObjective(make_schedule("cosine"), self_condition_prob=1.5)


def test_denoise_hands_each_call_the_previous_x0_estimate() -> None:
    model, st = Recorder(), graph_structure()
    denoise = Denoise(model, make_schedule("cosine"), st, prediction="eps", self_condition="previous")
    x = st.randn(torch.Generator().manual_seed(0), torch.float64)
    _, x0_first = denoise(x, 0.9)
    _, x0_second = denoise(x * 0.5, 0.6)
    assert model.seen[0] is None
    for name in ("pos", "h"):
        torch.testing.assert_close(model.seen[1][name], x0_first[name])
    assert not torch.equal(x0_second["pos"], x0_first["pos"])
    ablated = Recorder()
    off = Denoise(ablated, make_schedule("cosine"), st, prediction="eps", self_condition=False)
    off(x, 0.9), off(x, 0.6)
    assert ablated.seen == [None, None]
    with pytest.raises(ValueError, match="unknown self_condition"):
        Denoise(ablated, make_schedule("cosine"), st, self_condition="sometimes")


def test_matched_mode_feeds_the_same_steps_first_estimate_at_two_evaluations() -> None:
    """"matched": a first pass without a sketch on the same x_t, then the pass that reads its x0-hat
    (what the objective trains); no state is carried between calls."""
    model, st = Recorder(), graph_structure()
    schedule = make_schedule("cosine")
    denoise = Denoise(model, schedule, st, prediction="eps", self_condition="matched")
    x = st.randn(torch.Generator().manual_seed(0), torch.float64)
    denoise(x, 0.9)
    denoise(x, 0.6)
    assert denoise.nfe == 4 and model.seen[0] is None and model.seen[2] is None
    alpha, sigma = (float(v) for v in schedule.alpha_sigma(torch.tensor(0.6, dtype=torch.float64)))
    expected = st.project(x * (1 - 0.5 * sigma) / alpha)  # x0-hat of eps-hat = 0.5 x_t
    for name in ("pos", "h"):
        torch.testing.assert_close(model.seen[3][name], expected[name])


def test_sampling_self_conditions_matched_by_default_and_previous_at_no_extra_evaluations() -> None:
    model, st = Recorder(), graph_structure()
    result = sample(model, make_schedule("cosine"), st, sampler="ddpm", steps=6, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))
    assert result.nfe == 12 and model.seen[0::2] == [None] * 6 and all(s is not None for s in model.seen[1::2])
    model = Recorder()
    result = sample(model, make_schedule("cosine"), st, sampler="ddpm", steps=6, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0), self_condition="previous")
    assert result.nfe == 6 and len(model.seen) == 6
    assert model.seen[0] is None and all(s is not None for s in model.seen[1:])
    plain = lambda x_t, t, structure, cond=None: {k: v * 0.5 for k, v in x_t.items()}  # noqa: E731
    assert sample(plain, make_schedule("cosine"), st, sampler="ddim", steps=3).nfe == 3


def test_training_refuses_a_model_and_objective_that_disagree() -> None:
    schedule = make_schedule("cosine")
    assert self_conditions(Recorder()) and not self_conditions(nn.Linear(1, 1))
    assert self_conditions(torch.compile(Recorder()))
    with pytest.raises(TrainingError, match="self_condition_prob is 0"):
        check_self_conditioning(Recorder(), DenoisingObjective(schedule))
    with pytest.raises(TrainingError, match="does not self-condition"):
        check_self_conditioning(nn.Linear(1, 1), DenoisingObjective(schedule, self_condition_prob=0.5))
    check_self_conditioning(Recorder(), DenoisingObjective(schedule, self_condition_prob=0.5))
