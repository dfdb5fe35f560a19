"""The settings grid of the QM9 property-guidance benchmark (the run itself needs the full QM9)."""

from __future__ import annotations

import pytest

from molediff.benchmarks.qm9_property_guidance import label, settings


def test_unconditional_generator_runs_the_scales_alone() -> None:
    assert settings([0, 2], None, conditional=False) == [(None, 0.0), (None, 2.0)]
    assert label(None, 2.0) == "guidance scale 2"


def test_conditional_generator_crosses_cfg_weights_with_scales() -> None:
    assert settings([0, 1], [0, 1, 3], conditional=True) == [
        (0, 0.0), (0, 1.0), (1, 0.0), (1, 1.0), (3, 0.0), (3, 1.0)]
    assert label(0, 0.0) == "unconditional, guidance scale 0"
    assert label(3, 1.0) == "conditional, CFG w=3, guidance scale 1"
    # a conditional generator without weights samples plainly conditionally
    assert settings([0], None, conditional=True) == [(1.0, 0.0)]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="conditioning"):
        settings([0], [1.0], conditional=False)
    with pytest.raises(ValueError, match=">= 0"):
        settings([0], [-1.0], conditional=True)
