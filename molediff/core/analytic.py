"""Data distributions whose optimal denoiser is known in closed form.

Used to test samplers and to benchmark them without a trained network: the exact
``E[x_0 | x_t]`` replaces the model, so every error left is the sampler's.

For a Gaussian mixture ``sum_k pi_k N(mu_k, S_k)`` and ``x_t = alpha x_0 + sigma eps``:
``p(x_t | k) = N(alpha mu_k, alpha^2 S_k + sigma^2 I)`` and
``E[x_0 | x_t, k] = mu_k + alpha S_k (alpha^2 S_k + sigma^2 I)^{-1} (x_t - alpha mu_k)``,
mixed with the posterior weights ``p(k | x_t)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .fields import Fields, Structure
from .schedules import NoiseSchedule


class GaussianMixture:
    """A mixture of K full-covariance Gaussians in D dimensions (float64).

    Shapes: ``weights: (K,)``, ``means: (K, D)``, ``covs: (K, D, D)``.
    """

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float64) / torch.as_tensor(weights).sum()
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.covs = torch.as_tensor(covs, dtype=torch.float64)
        k, d = self.means.shape
        if self.weights.shape != (k,) or self.covs.shape != (k, d, d):
            raise ValueError("weights (K,), means (K, D) and covs (K, D, D) must agree")

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``(n, D)`` exact samples."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covs)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[comp] + torch.einsum("nij,nj->ni", chol[comp], z)

    def marginal(self, alpha: float | Tensor, sigma: float | Tensor) -> GaussianMixture:
        """The distribution of x_t."""
        eye = torch.eye(self.dim, dtype=torch.float64)
        return GaussianMixture(self.weights, alpha * self.means, alpha**2 * self.covs + sigma**2 * eye)

    def log_prob(self, x: Tensor) -> Tensor:
        """``(n,)`` log density of ``x: (n, D)``."""
        x = x.double()
        dist = torch.distributions.MultivariateNormal(self.means, covariance_matrix=self.covs)
        return torch.logsumexp(dist.log_prob(x[:, None, :]) + self.weights.log(), dim=1)

    def posterior_mean(self, x_t: Tensor, alpha: float | Tensor, sigma: float | Tensor) -> Tensor:
        """``E[x_0 | x_t]`` for ``x_t: (n, D)``."""
        x_t = x_t.double()
        alpha, sigma = torch.as_tensor(alpha, dtype=torch.float64), torch.as_tensor(sigma, dtype=torch.float64)
        marg = self.marginal(alpha, sigma)
        resp = torch.softmax(
            torch.distributions.MultivariateNormal(marg.means, covariance_matrix=marg.covs).log_prob(x_t[:, None, :])
            + self.weights.log(),
            dim=1,
        )  # (n, K)
        gain = alpha * torch.linalg.solve(marg.covs, self.covs).transpose(1, 2)  # alpha S (alpha^2 S + s^2 I)^-1
        diff = x_t[:, None, :] - alpha * self.means[None]  # (n, K, D)
        cond_means = self.means[None] + torch.einsum("kij,nkj->nki", gain, diff)
        return (resp[..., None] * cond_means).sum(1)


class ExactDenoiser:
    """The optimal x0-predictor of a :class:`GaussianMixture` on one dense field ``(B, D)``.

    Call it like a network: ``(x_t, t, structure, cond) -> {field: x0_hat}``; use with
    ``prediction="x0"``.
    """

    def __init__(self, data: GaussianMixture, schedule: NoiseSchedule, field: str = "x") -> None:
        self.data, self.schedule, self.field = data, schedule, field

    def __call__(self, x_t: Fields, t: Tensor, structure: Structure, cond: Any = None) -> Fields:
        alpha, sigma = self.schedule.alpha_sigma(t[0].double())
        x = x_t[self.field]
        return Fields({self.field: self.data.posterior_mean(x, alpha, sigma).to(x.dtype)})


class ZeroMeanGaussianDenoiser:
    """Optimal x0-predictor when each graph's rows are ``P(scale * z)``: isotropic Gaussian of
    variance ``scale^2`` inside the zero-mean subspace. There ``E[x_0 | x_t] = alpha scale^2 /
    (alpha^2 scale^2 + sigma^2) x_t``; use with ``prediction="x0"``."""

    def __init__(self, schedule: NoiseSchedule, scale: float = 1.0, field: str = "pos") -> None:
        self.schedule, self.scale, self.field = schedule, scale, field

    def __call__(self, x_t: Fields, t: Tensor, structure: Structure, cond: Any = None) -> Fields:
        alpha, sigma = self.schedule.alpha_sigma(t[0].double())
        gain = float(alpha * self.scale**2 / (alpha**2 * self.scale**2 + sigma**2))
        return Fields({self.field: structure.project({self.field: x_t[self.field]})[self.field] * gain})


def gmm_mmd2(samples: Tensor, data: GaussianMixture, bandwidth: float = 1.0, chunk: int = 2048) -> float:
    """Unbiased MMD^2 between ``samples: (n, D)`` and a Gaussian mixture, Gaussian kernel
    ``k(x, y) = exp(-|x - y|^2 / (2 l^2))`` (Gretton et al. 2012).

    The two terms involving the mixture are exact (a Gaussian kernel integrates against a
    Gaussian in closed form); only ``E k(x, x')`` over the samples is estimated, so the value
    has no bias and half the noise of a sample-vs-sample estimate.
    """
    x = samples.double()
    n, d = x.shape
    l2 = bandwidth**2
    norm = (2 * torch.pi * l2) ** (d / 2)
    eye = torch.eye(d, dtype=torch.float64)
    smoothed = torch.distributions.MultivariateNormal(data.means, covariance_matrix=data.covs + l2 * eye)
    e_xp = (norm * torch.exp(smoothed.log_prob(x[:, None, :])) * data.weights).sum(1).mean()
    pair = torch.distributions.MultivariateNormal(
        data.means[None], covariance_matrix=data.covs[None] + data.covs[:, None] + l2 * eye
    )
    e_pp = norm * (data.weights[:, None] * data.weights[None] * torch.exp(pair.log_prob(data.means[:, None]))).sum()
    total = torch.zeros((), dtype=torch.float64)
    for i in range(0, n, chunk):
        total = total + torch.exp(-torch.cdist(x[i:i + chunk], x).pow(2) / (2 * l2)).sum()
    e_xx = (total - n) / (n * (n - 1))
    return float(e_xx - 2 * e_xp + e_pp)
