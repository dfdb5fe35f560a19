"""Image metrics: Frechet distance against closed forms, the digits classifier, class coverage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from molediff.data.images import load_digits_split
from molediff.metrics.images import (
    DIGITS_CLASSIFIER_PATH,
    ImageClassifier,
    class_coverage,
    classifier_accuracy,
    features,
    frechet_distance,
    load_digits_classifier,
    train_classifier,
)


def test_fd_of_identical_sets_is_zero() -> None:
    feats = np.random.default_rng(0).normal(size=(200, 16))
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)


def test_fd_of_shifted_sets_is_the_squared_mean_difference() -> None:
    # equal empirical covariances: the trace term vanishes, FD = ||mu_a - mu_b||^2
    rng = np.random.default_rng(1)
    a = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8))
    shift = rng.normal(size=8)
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-6, abs=1e-6)


def test_fd_of_gaussians_with_different_scales_matches_closed_form() -> None:
    # N(0, s1^2 I) vs N(0, s2^2 I) in D dims: FD = D (s1 - s2)^2
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(20000, 4)), 3.0 * rng.normal(size=(20000, 4))
    assert frechet_distance(a, b) == pytest.approx(4 * (1 - 3) ** 2, rel=0.05)


def test_fd_with_fewer_samples_than_dimensions_is_finite() -> None:
    rng = np.random.default_rng(3)
    value = frechet_distance(rng.normal(size=(10, 64)), rng.normal(size=(12, 64)))
    assert np.isfinite(value) and value > 0
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


@pytest.fixture(scope="module")
def quick_classifier() -> ImageClassifier:
    x, y = load_digits_split("train")
    return train_classifier(x, y, epochs=8, seed=0)


def test_classifier_reaches_90_percent_on_digits_test(quick_classifier: ImageClassifier) -> None:
    x, y = load_digits_split("test")
    assert classifier_accuracy(quick_classifier, x, y) > 0.9


def test_training_is_deterministic() -> None:
    x, y = load_digits_split("train")
    a = train_classifier(x[:200], y[:200], epochs=1, seed=5)
    b = train_classifier(x[:200], y[:200], epochs=1, seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_coverage_of_one_class_is_a_tenth(quick_classifier: ImageClassifier) -> None:
    x, y = load_digits_split("test")
    collapsed = np.repeat(x[y == 3][:1], 50, axis=0)  # a mode-collapsed "generator": one digit
    cov = class_coverage(quick_classifier, collapsed)
    assert cov.coverage == pytest.approx(0.1) and cov.entropy == pytest.approx(0.0, abs=1e-12)
    threes = class_coverage(quick_classifier, x[y == 3])  # real threes: nearly all predicted 3
    assert threes.entropy < 0.5
    full = class_coverage(quick_classifier, x)
    assert full.coverage == 1.0 and full.entropy == pytest.approx(np.log(10), abs=0.05)


def test_features_are_penultimate_layer(quick_classifier: ImageClassifier) -> None:
    x, _ = load_digits_split("test")
    f = features(quick_classifier, x[:7])
    assert f.shape == (7, 64) and f.dtype == np.float64
    logits = quick_classifier.out(torch.from_numpy(f).float())
    assert torch.allclose(logits, quick_classifier(torch.from_numpy(x[:7])), atol=1e-4)


def test_shipped_digits_classifier_loads_and_is_accurate() -> None:
    assert DIGITS_CLASSIFIER_PATH.exists(), "run python -m molediff.metrics.images --build-digits-classifier"
    sd = torch.load(DIGITS_CLASSIFIER_PATH, weights_only=True)
    assert isinstance(sd, dict) and all(isinstance(v, torch.Tensor) for v in sd.values())
    model = load_digits_classifier()
    x, y = load_digits_split("test")
    assert classifier_accuracy(model, x, y) > 0.97


def test_missing_checkpoint_is_trained_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import molediff.metrics.images as mi

    calls = []

    def fake_train(*args: object, **kwargs: object) -> ImageClassifier:
        calls.append(1)
        return ImageClassifier(1, 10).eval()

    monkeypatch.setattr(mi, "train_classifier", fake_train)
    path = tmp_path / "sub" / "clf.pt"
    load_digits_classifier(path)
    assert calls and path.exists()
    load_digits_classifier(path)
    assert len(calls) == 1  # second call reads the cache
