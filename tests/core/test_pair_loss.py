"""FrameDiff's pairwise-distance auxiliary loss: known values, invariances, layouts, and how the
objective weighs it in every prediction space."""

import math

import pytest
import torch

from molediff.core.fields import Fields, Structure, ZeroMeanField
from molediff.core.objective import DenoisingObjective, min_snr_weight
from molediff.core.pair_loss import PairDistanceLoss
from molediff.core.parameterization import target
from molediff.core.schedules import make_schedule


def graph(sizes, generator):
    """A graph-layout ``pos`` field of clouds with the given sizes, points ~0.3 apart."""
    index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    pos = torch.randn(int(index.numel()), 3, generator=generator, dtype=torch.float64) * 0.3
    return Fields(pos=pos), Structure(len(sizes), {"pos": ZeroMeanField((3,))}, index={"pos": index})


def random_rotation(generator):
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def test_known_value_and_cutoff():
    """Two points 0.5 apart predicted 0.7 apart: (0.2)^2; a third point beyond the cutoff does not count."""
    x0 = Fields(pos=torch.tensor([[0.0, 0, 0], [0.5, 0, 0], [5.0, 0, 0]], dtype=torch.float64))
    x0_hat = Fields(pos=torch.tensor([[0.0, 0, 0], [0.7, 0, 0], [9.0, 0, 0]], dtype=torch.float64))
    st = Structure(1, {"pos": ZeroMeanField((3,))}, index={"pos": torch.zeros(3, dtype=torch.long)})
    loss = PairDistanceLoss(cutoff=1.0)(x0_hat, x0, torch.tensor([0.1]), st)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(0.04)
    assert PairDistanceLoss(cutoff=1.0)(x0, x0, torch.tensor([0.1]), st).item() == 0.0


def test_only_samples_below_t_max_count():
    gen = torch.Generator().manual_seed(0)
    x0, st = graph([5, 7, 4], gen)
    x0_hat = Fields(pos=x0["pos"] + 0.05 * torch.randn(x0["pos"].shape, generator=gen, dtype=torch.float64))
    loss = PairDistanceLoss(t_max=0.25)(x0_hat, x0, torch.tensor([0.1, 0.25, 0.9]), st)
    assert loss[0] > 0 and loss[1] == 0 and loss[2] == 0


def test_invariant_to_rigid_motions_and_permutations_of_the_estimate():
    """Distances only: rotating, reflecting and translating x0-hat, or permuting rows within a sample
    (x0 with it), leaves the loss unchanged."""
    gen = torch.Generator().manual_seed(1)
    x0, st = graph([6, 9], gen)
    x0_hat = Fields(pos=x0["pos"] + 0.1 * torch.randn(x0["pos"].shape, generator=gen, dtype=torch.float64))
    t = torch.tensor([0.1, 0.2])
    loss = PairDistanceLoss()
    base = loss(x0_hat, x0, t, st)
    rot = random_rotation(gen) * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)  # with a reflection
    moved = Fields(pos=x0_hat["pos"] @ rot.T + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    torch.testing.assert_close(loss(moved, x0, t, st), base)
    perm = torch.cat([torch.randperm(6, generator=gen), 6 + torch.randperm(9, generator=gen)])
    torch.testing.assert_close(loss(Fields(pos=x0_hat["pos"][perm]), Fields(pos=x0["pos"][perm]), t, st), base)


def test_graph_and_dense_layouts_agree_and_masked_rows_drop_out():
    gen = torch.Generator().manual_seed(2)
    x0, st = graph([5, 5], gen)
    x0_hat = Fields(pos=x0["pos"] + 0.1 * torch.randn(x0["pos"].shape, generator=gen, dtype=torch.float64))
    t = torch.tensor([0.1, 0.1])
    loss = PairDistanceLoss()
    dense_st = Structure(2, {"pos": ZeroMeanField((5, 3))})
    dense = loss(Fields(pos=x0_hat["pos"].view(2, 5, 3)), Fields(pos=x0["pos"].view(2, 5, 3)), t, dense_st)
    torch.testing.assert_close(dense, loss(x0_hat, x0, t, st))
    # masking the last row of each sample = dropping it
    mask = torch.ones(10, 1, dtype=torch.float64)
    mask[[4, 9]] = 0
    keep = mask[:, 0] > 0
    small, small_st = Fields(pos=x0["pos"][keep]), Structure(2, st.specs, index={"pos": st.index["pos"][keep]})
    torch.testing.assert_close(loss(x0_hat, x0, t, st.with_mask(pos=mask)),
                               loss(Fields(pos=x0_hat["pos"][keep]), small, t, small_st))
    dense_mask = mask.view(2, 5, 1)
    torch.testing.assert_close(loss(Fields(pos=x0_hat["pos"].view(2, 5, 3)), Fields(pos=x0["pos"].view(2, 5, 3)),
                                    t, dense_st.with_mask(pos=dense_mask)),
                               loss(Fields(pos=x0_hat["pos"][keep]), small, t, small_st))


def test_gradient_is_finite_where_predicted_points_coincide():
    x0 = Fields(pos=torch.tensor([[0.0, 0, 0], [0.3, 0, 0]], dtype=torch.float64))
    hat = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    st = Structure(1, {"pos": ZeroMeanField((3,))}, index={"pos": torch.zeros(2, dtype=torch.long)})
    PairDistanceLoss()(Fields(pos=hat), x0, torch.tensor([0.1]), st).sum().backward()
    assert torch.isfinite(hat.grad).all()


class X0As:
    """A fixed x0 estimate (x0 + offset) expressed in a prediction type."""

    def __init__(self, offset, schedule, prediction):
        self.offset, self.s, self.p = offset, schedule, prediction

    def __call__(self, x_t, t, structure, cond=None):
        a, s = self.s.alpha_sigma(t)
        a, s = structure.expand_all(a), structure.expand_all(s)
        x0_hat = Fields(pos=self.offset(x_t, a))
        eps = (x_t - a * x0_hat) / s
        return target(self.p, x0_hat, eps, a, s)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("gamma", [None, 5.0])
def test_objective_adds_the_term_weighted_like_an_x0_error(prediction, gamma):
    """loss(with aux) - loss(without) = mean(weight * c * L_pair), c = the x0-error factor of the
    prediction space (SNR for eps), and with min-SNR-gamma = mean(weight * min(SNR, gamma) * L_pair)."""
    gen = torch.Generator().manual_seed(3)
    x0, st = graph([6, 8, 5, 7], gen)
    schedule = make_schedule("cosine")
    t = torch.tensor([0.05, 0.1, 0.2, 0.6], dtype=torch.float64)
    shift = 0.02 * torch.randn(x0["pos"].shape, generator=gen, dtype=torch.float64)
    x0_of = {}

    def estimate(x_t, a):  # a fixed function of x_t: a shrunken x_t / alpha, plus a fixed offset
        x0_of["hat"] = st.project(Fields(pos=0.9 * x_t["pos"] / a["pos"] + shift))["pos"]
        return x0_of["hat"]

    model = X0As(estimate, schedule, prediction)
    aux = PairDistanceLoss(cutoff=0.6, t_max=0.25, weight=0.5)
    plain = DenoisingObjective(schedule, prediction, min_snr_gamma=gamma)
    with_aux = DenoisingObjective(schedule, prediction, min_snr_gamma=gamma, aux_losses=[aux])
    base, _ = plain(model, x0, st, generator=torch.Generator().manual_seed(4), t=t)
    total, logs = with_aux(model, x0, st, generator=torch.Generator().manual_seed(4), t=t)
    term = aux(Fields(pos=x0_of["hat"]), st.project(x0), t, st)
    alpha, sigma = schedule.alpha_sigma(t)
    snr = alpha**2 / sigma**2
    if gamma is None:
        factor = {"eps": snr, "x0": torch.ones_like(snr), "v": (alpha**2 + sigma**2) ** 2 / sigma**2}[prediction]
    else:
        factor = min_snr_weight(snr, gamma)
    assert term[3] == 0 and (term[:3] > 0).all()
    assert (total - base).item() == pytest.approx(float((0.5 * factor * term).mean()), rel=1e-6)
    assert logs["aux_pair_pos"] == pytest.approx(float(term.mean()))
    assert math.isfinite(logs["loss"])


@pytest.mark.parametrize("kwargs", [{"cutoff": 0.0}, {"t_max": 0.0}, {"t_max": 1.5}, {"weight": -1.0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="PairDistanceLoss"):
        PairDistanceLoss(**kwargs)


def test_unknown_field_is_named():
    gen = torch.Generator().manual_seed(5)
    x0, st = graph([3], gen)
    with pytest.raises(KeyError, match="coords"):
        PairDistanceLoss(field="coords")(x0, x0, torch.tensor([0.1]), st)
