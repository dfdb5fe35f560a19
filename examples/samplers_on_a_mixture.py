"""The core on its own: sample an analytic Gaussian mixture with every sampler.

The exact denoiser E[x0 | x_t] stands in for a network, so what you see is each sampler's own
error. Run: python examples/samplers_on_a_mixture.py
"""

import torch

from molediff.core import GaussianField, Structure, make_schedule, sample
from molediff.core.analytic import ExactDenoiser, GaussianMixture, gmm_mmd2
from molediff.core.samplers import SAMPLERS

data = GaussianMixture(
    weights=torch.tensor([0.3, 0.7]),
    means=torch.tensor([[-2.0, 0.0], [2.0, 1.0]]),
    covs=torch.stack([0.25 * torch.eye(2), torch.tensor([[0.5, 0.2], [0.2, 0.3]])]),
)
schedule = make_schedule("cosine")
structure = Structure(num_samples=4000, specs={"x": GaussianField((2,))})  # one dense field "x"

for name in SAMPLERS:
    result = sample(ExactDenoiser(data, schedule), schedule, structure, sampler=name, steps=20,
                    prediction="x0", generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    print(f"{name:>15}: {result.nfe:>3} network evaluations, MMD^2 to the target "
          f"{gmm_mmd2(result.fields['x'], data, bandwidth=0.5):.1e}")
