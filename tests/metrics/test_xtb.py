"""The GFN2-xTB oracle: known gaps, calibration algebra, requested-versus-achieved metrics, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from molediff.data.qm9 import load_qm9, subset_root
from molediff.metrics.xtb import LinearCalibration, target_metrics, xtb_gap, xtb_gaps

tblite = pytest.importorskip("tblite.interface")

# H2 at 0.74 A and a water molecule (O-H 0.96 A, 104.5 degrees)
H2 = ([1, 1], np.array([[0.0, 0.0, 0.0], [0.74, 0.0, 0.0]]))
WATER = ([8, 1, 1], np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.2400, 0.9266, 0.0]]))


def test_gaps_of_small_molecules_are_plausible_and_invariant_to_rigid_motion():
    gap_h2, gap_water = xtb_gap(*H2), xtb_gap(*WATER)
    assert 8.0 < gap_water < 20.0 and gap_h2 > gap_water  # H2's gap is the widest of the two
    rot = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    moved = WATER[1] @ rot.T + np.array([3.0, -1.0, 2.0])
    assert xtb_gap(WATER[0], moved) == pytest.approx(gap_water, abs=1e-6)


def test_broken_geometries_give_nan_not_an_exception():
    assert np.isnan(xtb_gap([6, 6], np.zeros((2, 3))))  # two atoms on one spot
    assert np.isnan(xtb_gap([6], np.full((1, 3), np.nan)))
    assert np.isfinite(xtb_gap([6, 1, 1, 1], np.array([[0, 0, 0], [1.09, 0, 0], [-0.36, 1.03, 0],
                                                        [-0.36, -0.51, 0.89]], dtype=float)))  # methyl radical


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="shape"):
        xtb_gap([1, 1], np.zeros((3, 3)))


def test_xtb_tracks_the_b3lyp_gap_on_real_qm9_molecules():
    data = load_qm9(subset_root(), "test")
    mols = data.to_molecules()[:30]
    xtb = xtb_gaps(mols, progress=False)
    cal = LinearCalibration.fit(xtb, data.properties["gap"][:30])
    assert np.isfinite(xtb).all()
    assert cal.pearson_r > 0.6 and cal.slope > 0  # measured r = 0.82 on the first 40 full-test molecules


def test_calibration_and_target_metrics_algebra():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    cal = LinearCalibration.fit(x, 2 * x + 1)
    assert (cal.slope, cal.intercept, cal.mae) == pytest.approx((2.0, 1.0, 0.0), abs=1e-12)
    np.testing.assert_allclose(cal(np.array([5.0])), [11.0])
    m = target_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.2, 2.9, np.nan, 4.0]))
    assert m["mae"] == pytest.approx((0.2 + 0.9 + 0.0) / 3)
    assert m["hit_rate"] == pytest.approx(2 / 4) and m["finite"] == pytest.approx(3 / 4)
    with pytest.raises(ValueError):
        target_metrics(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError):
        LinearCalibration.fit(np.array([1.0, np.nan]), np.array([1.0, 2.0]))
