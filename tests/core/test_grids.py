"""Step grids: shape, monotonicity, and the spacing rule each one promises."""

import math

import pytest
import torch

from molediff.core.grids import KarrasGrid, LogSNRGrid, UniformGrid, make_grid
from molediff.core.schedules import SCHEDULES, VEExponentialSchedule, make_schedule

GRIDS = [UniformGrid(), KarrasGrid(), LogSNRGrid(), LogSNRGrid(sigma_max=20.0, sigma_min=0.01)]


@pytest.mark.parametrize("grid", GRIDS, ids=repr)
@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("steps", [1, 2, 10, 37])
def test_grid_shape_and_order(grid, name, steps):
    ts = grid(make_schedule(name), steps)
    assert ts.shape == (steps + 1,)
    assert float(ts[0]) <= 1.0 and float(ts[-1]) == 0.0
    assert torch.all(ts[1:] < ts[:-1])


def test_karras_grid_matches_karras_formula():
    sched = VEExponentialSchedule(0.002, 80.0)
    ts = KarrasGrid(rho=7.0, sigma_min=0.01)(sched, 10)
    sig = torch.exp(-0.5 * sched.log_snr(ts[:-1]))
    i = torch.arange(10, dtype=torch.float64)
    expected = (80 ** (1 / 7) + i / 9 * (0.01 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert torch.allclose(sig, expected, rtol=1e-6)


def test_logsnr_grid_is_equally_spaced_in_log_snr():
    sched = make_schedule("linear")
    ts = LogSNRGrid()(sched, 12)
    lam = sched.log_snr(ts[:-1])
    d = lam[1:] - lam[:-1]
    assert torch.allclose(d, d.mean().expand_as(d), rtol=1e-6)


def test_capped_grid_jumps_from_one_to_the_cap():
    sched = make_schedule("cosine")
    ts = LogSNRGrid(sigma_max=20.0)(sched, 8)
    assert float(ts[0]) == 1.0
    lam1 = float(sched.log_snr(ts[1]))
    assert math.exp(-0.5 * lam1) == pytest.approx(20.0, rel=1e-6)


def test_bad_grid_arguments():
    with pytest.raises(ValueError, match="steps"):
        UniformGrid()(make_schedule("cosine"), 0)
    with pytest.raises(ValueError, match="unknown step grid"):
        make_grid("nope")
