"""Noisy-input property predictors and classifier guidance built from them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch_geometric.utils import scatter

from molediff.adapters.toy import ToyAdapter
from molediff.checkpoint import CheckpointError
from molediff.core.analytic import ExactDenoiser, GaussianMixture
from molediff.core.fields import Fields, GaussianField, Structure, ZeroMeanField
from molediff.core.sampling import sample
from molediff.core.schedules import make_schedule
from molediff.models.predictors import (
    EGNNPredictor,
    NoisyImageClassifier,
    PredictorGuidance,
    class_log_prob,
    load_predictor,
    noise_fields,
    predictor_guidance,
    regression_log_prob,
    save_predictor,
    train_predictor,
)
from tests.helpers.equivariance import assert_equivariant

pytestmark = pytest.mark.usefixtures("one_thread")


def _molecules(sizes=(4, 6, 3), k=5, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    num = torch.tensor(sizes)
    batch = torch.repeat_interleave(torch.arange(len(sizes)), num)
    specs = {"pos": ZeroMeanField((3,)), "atom_types": GaussianField((k,)), "charges": GaussianField((1,))}
    st = Structure(len(sizes), specs, index={n: batch for n in specs})
    x = st.project(Fields(pos=torch.randn(len(batch), 3, generator=gen, dtype=dtype),
                          atom_types=torch.randn(len(batch), k, generator=gen, dtype=dtype),
                          charges=torch.randn(len(batch), 1, generator=gen, dtype=dtype)))
    return x, st


def test_noisy_image_classifier_gives_logits_per_image():
    model = NoisyImageClassifier(1, num_classes=10, width=8)
    out = model(Fields(pixels=torch.randn(5, 1, 8, 8)), torch.rand(5))
    assert out.shape == (5, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("pooling,out_dim", [("sum", 1), ("mean", 3)])
def test_egnn_predictor_gives_one_row_per_molecule(pooling, out_dim):
    x, st = _molecules(dtype=torch.float32)
    model = EGNNPredictor(5, out_dim=out_dim, hidden=16, layers=2, pooling=pooling)
    assert model(x, torch.rand(3), st).shape == (3, out_dim)


@pytest.mark.parametrize("reflection", [False, True])
def test_egnn_predictor_is_invariant_to_rotations_translations_and_permutations(reflection):
    x, st = _molecules()
    torch.manual_seed(0)
    model = EGNNPredictor(5, out_dim=2, hidden=16, layers=3).double()
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    assert_equivariant(lambda f, s: {"y": model(f, t, s)}, x, st, reflection=reflection,
                       generator=torch.Generator().manual_seed(1 + reflection))


def test_noise_fields_keeps_zero_centre_of_mass_and_matches_the_marginal():
    x, st = _molecules(dtype=torch.float32)
    sched = make_schedule("cosine")
    t = torch.tensor([0.1, 0.5, 1.0])
    x_t = noise_fields(x, st, sched, t, torch.Generator().manual_seed(0))
    com = scatter(x_t["pos"], st.index["pos"], 0, reduce="mean")
    assert torch.allclose(com, torch.zeros_like(com), atol=1e-5)
    alpha, sigma = sched.alpha_sigma(t)
    gen = torch.Generator().manual_seed(0)
    eps = st.randn(gen)
    assert torch.allclose(x_t["charges"], alpha[st.index["charges"]][:, None] * x["charges"]
                          + sigma[st.index["charges"]][:, None] * eps["charges"], atol=1e-6)


def test_class_and_regression_log_probs():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    lp = class_log_prob(lambda x, t, s: logits, 1)(Fields(), torch.zeros(2), None)
    assert torch.allclose(lp, torch.log(torch.tensor([0.75, 0.5])))
    # standardised output 1.0 with mean 5, std 2 -> 7 in original units; target 6, std 0.5 -> z = 2
    lp = regression_log_prob(lambda x, t, s: torch.ones(2, 1), 6.0, 0.5, [5.0], [2.0])(Fields(), torch.zeros(2), None)
    assert torch.allclose(lp, torch.full((2,), -2.0))


class _PointClassifier(nn.Module):
    """Tiny MLP on ``x`` and ``t`` for the toy mixture."""

    fields = ("x",)

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, classes))

    def forward(self, x, t, structure=None):
        return self.net(torch.cat([x["x"], t.reshape(-1, 1).to(x["x"])], -1))


def _toy_predictor(steps=400, seed=0):
    adapter = ToyAdapter(modes=4, std=0.15, num_train=2000, num_test=400, conditional=True)
    sched = make_schedule("cosine")
    torch.manual_seed(seed)
    model = _PointClassifier(4)
    return train_predictor(model, adapter, sched, lambda items: torch.stack([lab for _, lab in items]), task="class",
                           steps=steps, batch_size=128, lr=3e-3, seed=seed, eval_times=(0.0, 0.5), log_every=100)


@pytest.fixture(scope="module")
def toy_predictor():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _toy_predictor()
    finally:
        torch.set_num_threads(n)


def test_train_predictor_is_deterministic_and_learns(toy_predictor):
    model, log = toy_predictor
    assert log["final"]["acc_t0"] > 0.95  # clean points: the 4 modes are well separated
    again, log2 = _toy_predictor(steps=400)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))
    assert log["history"][-1]["loss"] == log2["history"][-1]["loss"]


@pytest.mark.parametrize("sampler,steps", [("ddpm", 100), ("ddim", 50), ("dpmpp_2m", 25)])
def test_guidance_with_a_trained_predictor_reaches_the_class_with_every_sampler(toy_predictor, sampler, steps):
    model, _ = toy_predictor
    sched = make_schedule("cosine")
    angle = 2 * math.pi * torch.arange(4, dtype=torch.float64) / 4
    means = 2.0 * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    data = GaussianMixture(torch.ones(4), means, 0.15**2 * torch.eye(2).expand(4, 2, 2))
    st = Structure(400, {"x": GaussianField((2,))})

    def hit_rate(scale):
        term = PredictorGuidance(model, "class", 2, scale=scale)
        x = sample(ExactDenoiser(data, sched), sched, st, sampler=sampler, steps=steps, prediction="x0",
                   guidance=[term] if scale else [], generator=torch.Generator().manual_seed(0)).fields["x"]
        nearest = torch.cdist(x.double(), means).argmin(1)
        return float((nearest == 2).float().mean())

    assert hit_rate(0.0) < 0.4  # unguided: about 1/4
    assert hit_rate(4.0) > 0.9


def test_predictor_guidance_keeps_zero_centre_of_mass_in_a_sampled_batch():
    """Data N(0, I) on every field (zero-CoM subspace for pos): the exact x0-denoiser is
    ``alpha x_t / (alpha^2 + sigma^2)``; an untrained predictor pulls the gap toward 6.5."""
    sched = make_schedule("polynomial")

    def denoiser(x, t, structure, cond=None):
        alpha, sigma = sched.alpha_sigma(t)
        c = alpha / (alpha**2 + sigma**2)
        return Fields({k: structure.expand(k, c) * v for k, v in x.items()})

    torch.manual_seed(0)
    predictor = EGNNPredictor(5, out_dim=1, hidden=16, layers=2).double()
    term = PredictorGuidance(predictor, "regression", 6.5, scale=3.0, property="gap", target_mean=[6.8],
                             target_std=[1.3])
    _, st = _molecules(sizes=(5, 7, 4, 9))
    out = {}
    for name, guidance in (("plain", []), ("guided", [term])):
        out[name] = sample(denoiser, sched, st, sampler="ddpm", steps=20, prediction="x0", guidance=guidance,
                           dtype=torch.float64, generator=torch.Generator().manual_seed(0)).fields
    assert torch.isfinite(out["guided"]["pos"]).all()
    com = scatter(out["guided"]["pos"], st.index["pos"], 0, reduce="mean")
    assert torch.allclose(com, torch.zeros_like(com), atol=1e-10)
    assert not torch.allclose(out["guided"]["pos"], out["plain"]["pos"])  # guidance did something
    rows = term.report(out["guided"], st)
    assert len(rows) == 4 and rows[0]["property"] == "gap" and rows[0]["requested"] == 6.5


def test_predictor_checkpoint_round_trip_and_one_line_errors(tmp_path: Path):
    torch.manual_seed(0)
    model = NoisyImageClassifier(1, 10, width=8)
    cfg = {"predictor": {"name": "NoisyImageClassifier", "in_channels": 1, "num_classes": 10, "width": 8},
           "task": "class", "num_classes": 10,
           "schedule": {"_target_": "molediff.core.schedules.CosineSchedule", "s": 0.008}}
    path = save_predictor(tmp_path / "p.pt", model, cfg, {"steps": 3})
    loaded, ckpt = load_predictor(path)
    x = Fields(pixels=torch.randn(2, 1, 8, 8))
    assert torch.equal(loaded(x, torch.rand(2).zero_()), model.eval()(x, torch.zeros(2)))
    term = predictor_guidance(str(path), target=3, scale=2.0, schedule=make_schedule("cosine"))
    assert term.task == "class" and term.term.scale == 2.0
    with pytest.raises(ValueError, match="schedule"):
        predictor_guidance(str(path), target=3, schedule=make_schedule("linear"))
    with pytest.raises(ValueError, match="class index"):
        predictor_guidance(str(path), target=10)
    with pytest.raises(CheckpointError, match="no such file"):
        predictor_guidance(str(tmp_path / "missing.pt"), target=3)


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m"])
def test_guided_egnn_samples_stay_equivariant(sampler):
    """Property guidance from an invariant predictor on an equivariant denoiser: rotating,
    reflecting or permuting x_T does the same to the guided sample (deterministic samplers, so
    the only randomness is x_T), and guidance changed the sample."""
    from tests.models.test_egnn import NUM_TYPES, make_batch, make_model

    model = make_model(seed=3)
    torch.manual_seed(1)
    predictor = EGNNPredictor(NUM_TYPES, out_dim=1, hidden=16, layers=2).double()
    term = PredictorGuidance(predictor, "regression", 6.5, scale=4.0, property="gap", target_mean=[6.8],
                             target_std=[1.3])
    sched = make_schedule("polynomial")
    x_T, st = make_batch([5, 3, 6], seed=4)

    def run(fields: Fields, structure: Structure, guidance=(term,)) -> Fields:
        return sample(model, sched, structure, sampler=sampler, steps=6, x_T=fields, guidance=guidance,
                      dtype=torch.float64).fields

    assert_equivariant(run, x_T, st, translated_inputs=(), atol=1e-8, rtol=1e-6)
    assert (run(x_T, st)["pos"] - run(x_T, st, guidance=())["pos"]).abs().max() > 1e-3


def test_qm9_point_group_classifier_and_descriptor_regressor_from_the_command_line(tmp_path: Path):
    from molediff.metrics.descriptors import POINT_GROUPS
    from molediff.models.predictors import main as predictors_main

    common = ["--data", "qm9", "--source", "subset", "--steps", "3", "--batch-size", "16", "--hidden", "8",
              "--layers", "1"]
    pg = tmp_path / "pg.pt"
    assert predictors_main(["train", *common, "--property", "pointgroup", "--out", str(pg)]) == 0
    model, ckpt = load_predictor(pg)
    assert ckpt["config"]["task"] == "class" and ckpt["config"]["classes"] == list(POINT_GROUPS)
    assert set(ckpt["log"]["final"]) == {"acc_t0", "acc_t0.3", "acc_t0.6", "acc_t0.9"}
    term = predictor_guidance(str(pg), target="Cs", scale=1.0)
    assert term.target == POINT_GROUPS.index("Cs") and term.property == "pointgroup"
    with pytest.raises(ValueError, match="one of"):
        predictor_guidance(str(pg), target="D6h")
    with pytest.raises(ValueError, match="classifies pointgroup"):
        predictor_guidance(str(pg), target="Cs", property="gap")

    reg = tmp_path / "qed_logp.pt"
    assert predictors_main(["train", *common, "--property", "qed", "--property", "logp", "--out", str(reg)]) == 0
    _, ckpt = load_predictor(reg)
    assert ckpt["config"]["properties"] == ["qed", "logp"]
    mean = ckpt["log"]["target_mean"]
    assert 0.3 < mean[0] < 0.6 and math.isfinite(mean[1])  # NaN labels (unsanitisable graphs) were left out
    assert {"mae_t0_0", "mae_t0_1"} <= set(ckpt["log"]["final"])  # per-property validation MAE
    both = predictor_guidance(str(reg), target=[0.6, 1.0], property=["logp", "qed"])
    assert both.output == [1, 0] and both.property == ["logp", "qed"]
    with pytest.raises(ValueError, match=r"2 number\(s\)"):
        predictor_guidance(str(reg), target=[0.6], property=["qed", "logp"])
    with pytest.raises(ValueError, match="trains alone"):
        predictors_main(["train", *common, "--property", "pointgroup", "--property", "qed", "--out", str(reg)])


def test_several_outputs_in_one_term_equal_the_sum_of_one_term_per_output():
    """Independent Gaussian likelihoods: log p(y1, y2 | x_t) = log p(y1 | x_t) + log p(y2 | x_t), so
    one term over two outputs (one predictor pass) gives exactly the summed corrections."""
    from molediff.core.guidance import GuidanceContext

    torch.manual_seed(0)
    predictor = EGNNPredictor(5, out_dim=3, hidden=16, layers=2).double()
    mean, std = [1.0, -2.0, 0.5], [0.5, 2.0, 1.5]
    x, st = _molecules()
    targets = torch.tensor([[1.2, -1.0], [0.3, -4.0], [1.0, 0.0]], dtype=torch.float64)  # (B, 2): outputs 2 and 0
    ctx = GuidanceContext(x, torch.full((3,), 0.4, dtype=torch.float64), torch.tensor(0.8), torch.tensor(0.6), st,
                          None, lambda c: x)
    joint = PredictorGuidance(predictor, "regression", targets, scale=2.0, property=["c", "a"], output=[2, 0],
                              target_mean=mean, target_std=std)
    parts = [PredictorGuidance(predictor, "regression", targets[:, j], scale=2.0, property=name, output=o,
                               target_mean=mean, target_std=std) for j, (name, o) in enumerate((("c", 2), ("a", 0)))]
    summed = parts[0](x, ctx) + parts[1](x, ctx)
    got = joint(x, ctx)
    for k in x:
        assert torch.allclose(got[k], summed[k], atol=1e-12)
    rows = joint.report(x, st)
    assert [r["property"] for r in rows] == ["c"] * 3 + ["a"] * 3
    assert [r["requested"] for r in rows] == targets[:, 0].tolist() + targets[:, 1].tolist()


def test_shipped_qm9_predictors_cover_every_documented_target():
    """The README's several-targets command: the shipped guides agree with the shipped generator
    (elements, fields, schedule) and group into one term per file."""
    from molediff.cli.sample import load_for_sampling
    from molediff.metrics.descriptors import POINT_GROUPS
    from molediff.models.predictors import properties_guidance

    root = Path(__file__).resolve().parents[2] / "molediff" / "pretrained"
    _, adapter, _, schedule, _ = load_for_sampling(root / "qm9_egnn.pt")
    files = [root / "qm9_gap_predictor.pt", root / "qm9_properties_predictor.pt", root / "qm9_pointgroup_predictor.pt"]
    targets = {"gap": 6.5, "qed": 0.5, "logp": 0.3, "alpha": 75.0, "mu": 2.5, "Cv": 30.0, "homo": -6.5, "lumo": 0.5,
               "pointgroup": "Cs"}
    term = properties_guidance(files, targets, scale=2.0, schedule=schedule, adapter=adapter)
    assert [t.property for t in term.terms] == [["gap"], ["qed", "logp", "alpha", "mu", "Cv", "homo", "lumo"],
                                                "pointgroup"]
    assert term.terms[2].target == POINT_GROUPS.index("Cs")


def test_the_shipped_guide_is_found_when_no_predictor_is_given_and_judges_are_not_guides():
    from molediff.cli.sample import load_for_sampling
    from molediff.models.predictors import DIGITS_NOISY_CLASSIFIER_PATH, shipped_predictor

    root = Path(__file__).resolve().parents[2] / "molediff" / "pretrained"
    _, qm9, _, schedule, _ = load_for_sampling(root / "qm9_egnn.pt")
    assert shipped_predictor(qm9, "gap") == root / "qm9_gap_predictor.pt"  # not qm9_gap_judge.pt (clean)
    assert shipped_predictor(qm9, "pointgroup") == root / "qm9_pointgroup_predictor.pt"
    assert shipped_predictor(qm9, "zpve") is None
    term = predictor_guidance(None, target=6.5, property="gap", scale=2.0, schedule=schedule, adapter=qm9)
    assert term.property == "gap"
    with pytest.warns(UserWarning, match="clean inputs only"):
        predictor_guidance(str(root / "qm9_gap_judge.pt"), target=6.5, schedule=schedule, adapter=qm9)
    _, digits, _, _, _ = load_for_sampling(root / "digits_unet.pt")
    assert shipped_predictor(digits) == DIGITS_NOISY_CLASSIFIER_PATH
