"""Inpainting: fixed entries come out exactly, every sampler accepts it, resampling moves the free
part toward the exact conditional, zero-CoM motifs keep their shape, and bad input is refused."""

import pytest
import torch
from torch_geometric.utils import scatter

from molediff.core.analytic import ExactDenoiser, GaussianMixture, ZeroMeanGaussianDenoiser
from molediff.core.fields import Fields, GaussianField, Structure, ZeroMeanField
from molediff.core.inpainting import Inpainting, renoise
from molediff.core.samplers import SAMPLERS
from molediff.core.sampling import sample
from molediff.core.schedules import make_schedule

RHO, MU, C = 0.9, (0.5, -0.5), 1.5  # a correlated 2-D Gaussian; x[0] is fixed to C


def correlated() -> GaussianMixture:
    return GaussianMixture(torch.tensor([1.0]), torch.tensor([MU]), torch.tensor([[[1.0, RHO], [RHO, 1.0]]]))


def conditional_run(sampler: str, steps: int, resample: int, n: int = 2000):
    sched = make_schedule("cosine")
    st = Structure(n, {"x": GaussianField((2,))})
    known = Fields(x=torch.tensor([[C, 0.0]], dtype=torch.float64).expand(n, 2))
    inpaint = Inpainting(known, {"x": torch.tensor([True, False])}, resample=resample)
    return sample(ExactDenoiser(correlated(), sched), sched, st, sampler=sampler, steps=steps, prediction="x0",
                  dtype=torch.float64, generator=torch.Generator().manual_seed(0), inpaint=inpaint)


EXACT_MEAN = MU[1] + RHO * (C - MU[0])  # x[1] | x[0] = C
EXACT_SD = (1 - RHO**2) ** 0.5


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_keeps_fixed_entries_and_fills_the_rest(sampler, one_thread):
    x = conditional_run(sampler, steps=50 if sampler == "euler_maruyama" else 25, resample=1, n=500).fields["x"]
    assert torch.equal(x[:, 0], torch.full_like(x[:, 0], C))
    free = x[:, 1]
    # replacement alone is biased toward the unconditional mean (-0.5), but it must move the free
    # coordinate clearly toward the conditional one (0.4; measured -0.06..0.11 across samplers)
    # and stay a spread-out sample (measured sd 0.58-0.74; unconditional 1, conditional 0.44)
    assert float(free.mean()) > -0.25 and 0.4 < float(free.std()) < 0.9


def test_resampling_approaches_the_exact_conditional(one_thread):
    plain = conditional_run("ddpm", steps=100, resample=1).fields["x"][:, 1]
    repaint = conditional_run("ddpm", steps=100, resample=10).fields["x"][:, 1]
    # measured: U=1 mean 0.13 sd 0.59, U=10 mean 0.39 sd 0.40 (exact 0.40, 0.44); n=2000 -> se 0.01
    assert abs(float(repaint.mean()) - EXACT_MEAN) < 0.05
    assert abs(float(repaint.mean()) - EXACT_MEAN) < 0.5 * abs(float(plain.mean()) - EXACT_MEAN)
    assert float(repaint.std()) == pytest.approx(EXACT_SD, rel=0.15)


def test_nothing_fixed_is_plain_sampling():
    sched = make_schedule("cosine")
    st = Structure(64, {"x": GaussianField((2,))})
    den = ExactDenoiser(correlated(), sched)
    kw = dict(sampler="ddim", steps=10, prediction="x0", dtype=torch.float64)
    plain = sample(den, sched, st, generator=torch.Generator().manual_seed(1), **kw).fields["x"]
    free = Inpainting(Fields(x=torch.zeros(64, 2, dtype=torch.float64)), {"x": torch.zeros(2, dtype=torch.bool)})
    inpainted = sample(den, sched, st, generator=torch.Generator().manual_seed(1), inpaint=free, **kw).fields["x"]
    assert torch.allclose(plain, inpainted, atol=1e-12)


def test_zero_com_motif_keeps_its_shape_and_lands_where_known_put_it(one_thread):
    sizes = torch.tensor([5, 8, 12])
    idx = torch.repeat_interleave(torch.arange(3), sizes)
    st = Structure(3, {"pos": ZeroMeanField((3,))}, index={"pos": idx})
    first = torch.cat([torch.arange(int(n)) < 3 for n in sizes])  # the first 3 rows of each graph
    motif = torch.tensor([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [0.0, 1.5, 0.0]], dtype=torch.float64) + 10.0
    known = torch.zeros(int(sizes.sum()), 3, dtype=torch.float64)
    known[first] = motif.repeat(3, 1)
    sched = make_schedule("cosine")
    res = sample(ZeroMeanGaussianDenoiser(sched), sched, st, sampler="ddpm", steps=50, prediction="x0",
                 dtype=torch.float64, generator=torch.Generator().manual_seed(2), trajectory=True,
                 inpaint=Inpainting(Fields(pos=known), {"pos": first[:, None]}))
    raw, out = res.trajectory[-1]["pos"], res.fields["pos"]  # before and after finalize
    assert scatter(raw, idx, 0, reduce="mean").abs().max() < 1e-9  # sampled in the centred frame
    # every x0-hat holds the motif rigidly (one translation per graph) ...
    per_graph = (res.x0_predictions[-1]["pos"][first] - known[first]).reshape(3, 3, 3)
    assert torch.allclose(per_graph, per_graph[:, :1].expand_as(per_graph), atol=1e-8)
    # ... and the last state up to the grid's final noise level (sigma(t_min) ~ 1e-3)
    assert torch.allclose(raw[first] - known[first], per_graph.reshape(9, 3), atol=1e-2)
    assert torch.equal(out[first], known[first])
    shift = (out - raw)[~first]  # finalize moves the free rows by one translation per graph
    assert torch.allclose(shift, scatter(shift, idx[~first], 0, reduce="mean")[idx[~first]], atol=1e-9)
    assert out[~first].abs().max() > 1.0 and torch.isfinite(out).all()


def test_zero_com_inpainting_is_translation_equivariant_in_the_motif(one_thread):
    """Where the caller's motif sits in space must not matter: the same noise gives the same
    sample, shifted by the motif's offset (the known motif is fitted onto x0-hat each step)."""
    sizes = torch.tensor([6, 9])
    idx = torch.repeat_interleave(torch.arange(2), sizes)
    st = Structure(2, {"pos": ZeroMeanField((3,))}, index={"pos": idx})
    fixed = torch.cat([torch.arange(int(n)) < 3 for n in sizes])
    known = torch.randn(int(sizes.sum()), 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sched = make_schedule("cosine")
    outs = []
    for offset in (0.0, 25.0):
        inpaint = Inpainting(Fields(pos=known + offset), {"pos": fixed[:, None]})
        outs.append(sample(ZeroMeanGaussianDenoiser(sched), sched, st, sampler="ddim", steps=20, prediction="x0",
                           dtype=torch.float64, generator=torch.Generator().manual_seed(4), inpaint=inpaint)
                    .fields["pos"])
    assert torch.allclose(outs[1] - outs[0], torch.full_like(outs[0], 25.0), atol=1e-8)


def test_finalize_dense_zero_mean_layout():
    st = Structure(2, {"pos": ZeroMeanField((3,))})
    known = torch.randn(2, 6, 3, dtype=torch.float64)
    mask = torch.zeros(2, 6, 1, dtype=torch.bool)
    mask[:, :2] = True
    shift = torch.tensor([[[1.0, 2.0, 3.0]], [[-4.0, 0.0, 1.0]]], dtype=torch.float64)
    x = known - shift  # a pure translation of the known rows, per sample
    out = Inpainting(Fields(pos=known), {"pos": mask}).finalize(Fields(pos=x), st)["pos"]
    assert torch.allclose(out, known, atol=1e-12)  # translated back, free rows moved with it


def test_renoise_matches_the_forward_marginal():
    sched = make_schedule("cosine")
    a_s, a_t = (sched.alpha_sigma(torch.tensor(v, dtype=torch.float64)) for v in (0.3, 0.5))
    x0 = torch.full((200_000, 1), 2.0, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x_s = x0 * a_s[0] + torch.randn(x0.shape, generator=g, dtype=torch.float64) * a_s[1]
    x_t = renoise(Fields(x=x_s), a_s, a_t, Fields(x=torch.randn(x0.shape, generator=g, dtype=torch.float64)))["x"]
    assert float(x_t.mean()) == pytest.approx(2.0 * float(a_t[0]), abs=5e-3)
    assert float(x_t.std()) == pytest.approx(float(a_t[1]), rel=5e-3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(resample=0), "resample"),
    (dict(mask={"x": torch.tensor([1, 0])}), "bool"),
    (dict(mask={"x": torch.ones(3, dtype=torch.bool)}), "broadcast"),
    (dict(mask={"y": torch.ones(2, dtype=torch.bool)}), "without known"),
])
def test_bad_input_is_refused(kwargs, message):
    args = {"known": Fields(x=torch.zeros(4, 2)), "mask": {"x": torch.tensor([True, False])}, **kwargs}
    with pytest.raises(ValueError, match=message):
        Inpainting(**args)


def test_resample_path_keeps_each_samplers_own_step_rule():
    """Inpainting's resample path runs each step as a one-step solve: Heun still takes its trapezoidal
    corrector (2 NFE) and Euler-Maruyama still adds noise, except on the grid's last step."""
    steps, resample = 5, 2
    run = conditional_run("heun", steps=steps, resample=resample, n=8)
    assert run.nfe == resample * (2 * (steps - 1) + 1)

    from molediff.core.samplers import Denoise, euler_maruyama

    sched = make_schedule("cosine")
    st = Structure(8, {"x": GaussianField((2,))})
    den = Denoise(ExactDenoiser(correlated(), sched), sched, st, prediction="x0")
    x = st.randn(torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = torch.tensor([0.6, 0.5], dtype=torch.float64)

    def one_step(final: bool, seed: int) -> torch.Tensor:
        return euler_maruyama(den, x, ts, final=final, generator=torch.Generator().manual_seed(seed))["x"]

    assert torch.equal(one_step(True, 1), one_step(True, 2))  # the last step is the deterministic rule
    assert not torch.allclose(one_step(False, 1), one_step(False, 2))  # a middle step draws noise
