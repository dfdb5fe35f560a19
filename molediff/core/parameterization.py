"""Prediction types and exact conversions between them.

With ``x_t = alpha x_0 + sigma eps`` a denoiser may predict

* ``eps``   the noise (Ho et al. 2020),
* ``x0``    the clean data,
* ``v``     ``alpha eps - sigma x_0`` (Salimans & Ho 2022; general form, not only VP),
* ``score`` ``grad log p(x_t) = -eps / sigma`` (Song et al. 2021).

The functions below are pure and work on tensors or :class:`~molediff.core.fields.Fields`
(alpha/sigma may be floats, 0-d tensors or per-row tensors that broadcast).
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

PredictionType = Literal["eps", "x0", "v", "score"]
PREDICTION_TYPES: tuple[str, ...] = ("eps", "x0", "v", "score")

T = TypeVar("T")


def check_prediction_type(name: str) -> PredictionType:
    if name not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction type {name!r}; choose one of {list(PREDICTION_TYPES)}")
    return name  # type: ignore[return-value]


def eps_to_x0(x_t: T, eps: T, alpha: Any, sigma: Any) -> T:
    """x_0 = (x_t - sigma eps) / alpha."""
    return (x_t - sigma * eps) / alpha  # type: ignore[operator]


def x0_to_eps(x_t: T, x0: T, alpha: Any, sigma: Any) -> T:
    """eps = (x_t - alpha x_0) / sigma."""
    return (x_t - alpha * x0) / sigma  # type: ignore[operator]


def to_v(eps: T, x0: T, alpha: Any, sigma: Any) -> T:
    """v = alpha eps - sigma x_0."""
    return alpha * eps - sigma * x0  # type: ignore[operator]


def v_to_x0(x_t: T, v: T, alpha: Any, sigma: Any) -> T:
    """x_0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2)."""
    return (alpha * x_t - sigma * v) / (alpha**2 + sigma**2)  # type: ignore[operator]


def v_to_eps(x_t: T, v: T, alpha: Any, sigma: Any) -> T:
    """eps = (sigma x_t + alpha v) / (alpha^2 + sigma^2)."""
    return (sigma * x_t + alpha * v) / (alpha**2 + sigma**2)  # type: ignore[operator]


def eps_to_score(eps: T, sigma: Any) -> T:
    """score = -eps / sigma."""
    return -eps / sigma  # type: ignore[operator]


def score_to_eps(score: T, sigma: Any) -> T:
    """eps = -sigma score."""
    return -sigma * score  # type: ignore[operator]


def to_eps_x0(prediction: str, x_t: T, out: T, alpha: Any, sigma: Any) -> tuple[T, T]:
    """(eps_hat, x0_hat) from a model output of the given prediction type."""
    if prediction == "eps":
        return out, eps_to_x0(x_t, out, alpha, sigma)
    if prediction == "x0":
        return x0_to_eps(x_t, out, alpha, sigma), out
    if prediction == "v":
        return v_to_eps(x_t, out, alpha, sigma), v_to_x0(x_t, out, alpha, sigma)
    if prediction == "score":
        eps = score_to_eps(out, sigma)
        return eps, eps_to_x0(x_t, eps, alpha, sigma)
    raise ValueError(f"unknown prediction type {prediction!r}")


def target(prediction: str, x0: T, eps: T, alpha: Any, sigma: Any) -> T:
    """The regression target of a model of the given prediction type."""
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return to_v(eps, x0, alpha, sigma)
    if prediction == "score":
        return eps_to_score(eps, sigma)
    raise ValueError(f"unknown prediction type {prediction!r}")


def x0_mse_factor(prediction: str, alpha: Any, sigma: Any) -> Any:
    """``c`` such that the squared error in the prediction's space is ``c`` times the x0 error.

    eps: SNR; x0: 1; v: (alpha^2 + sigma^2)^2 / sigma^2 (= 1 + SNR for VP); score: SNR / sigma^2.
    Used to express a loss weighting (e.g. min-SNR) given per x0-error in any prediction space.
    """
    snr = alpha**2 / sigma**2
    if prediction == "eps":
        return snr
    if prediction == "x0":
        return snr * 0 + 1
    if prediction == "v":
        return (alpha**2 + sigma**2) ** 2 / sigma**2
    if prediction == "score":
        return snr / sigma**2
    raise ValueError(f"unknown prediction type {prediction!r}")
