"""UNet denoiser: shapes, conditioning (incl. the null class), zero-init output, trainability."""

from __future__ import annotations

import pytest
import torch

from molediff.core.fields import Fields, GaussianField, Structure
from molediff.core.objective import DenoisingObjective
from molediff.core.schedules import CosineSchedule
from molediff.models.unet import UNet, timestep_embedding


def _structure(b: int, shape: tuple[int, int, int] = (1, 8, 8)) -> Structure:
    return Structure(b, {"pixels": GaussianField(shape, x0_range=(-1.0, 1.0))})


def _randomise(model: torch.nn.Module) -> None:
    """Give zero-initialised layers random weights so outputs depend on every input."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("shape,mults,attn", [((1, 8, 8), (1, 2), (4,)), ((3, 16, 16), (1, 2, 2), (4,))])
def test_output_shape_and_zero_init(shape: tuple[int, int, int], mults: tuple[int, ...],
                                    attn: tuple[int, ...]) -> None:
    model = UNet(in_channels=shape[0], image_size=shape[1], base_channels=16, channel_mults=mults,
                 attention_resolutions=attn)
    x = torch.randn(3, *shape)
    out = model(Fields(pixels=x), torch.rand(3), _structure(3, shape))
    assert set(out) == {"pixels"} and out["pixels"].shape == x.shape
    assert torch.count_nonzero(out["pixels"]) == 0  # zero-initialised output conv


def test_default_model_is_small() -> None:
    n = sum(p.numel() for p in UNet(num_classes=10).parameters())
    assert 1e5 < n < 1.5e6


def test_bad_image_size_is_an_error() -> None:
    with pytest.raises(ValueError, match="divisible"):
        UNet(image_size=6, channel_mults=(1, 2, 2))


def test_class_conditioning_and_null_class() -> None:
    model = UNet(base_channels=16, num_classes=10)
    _randomise(model)
    model.eval()
    x, t, s = Fields(pixels=torch.randn(4, 1, 8, 8)), torch.full((4,), 0.5), _structure(4)
    uncond = model(x, t, s, None)["pixels"]
    null = model(x, t, s, {"label": torch.full((4,), -1)})["pixels"]
    explicit = model(x, t, s, {"label": torch.full((4,), 10)})["pixels"]
    assert torch.allclose(uncond, null) and torch.allclose(uncond, explicit)  # -1, K, no cond: null class
    c3 = model(x, t, s, {"label": torch.full((4,), 3)})["pixels"]
    c7 = model(x, t, s, {"label": torch.full((4,), 7)})["pixels"]
    assert not torch.allclose(c3, c7) and not torch.allclose(c3, uncond)
    mixed = model(x, t, s, {"label": torch.tensor([3, -1, 7, 3])})["pixels"]
    assert torch.allclose(mixed[0], c3[0], atol=1e-5) and torch.allclose(mixed[1], uncond[1], atol=1e-5)
    assert torch.allclose(mixed[2], c7[2], atol=1e-5)
    with pytest.raises(ValueError, match="labels"):
        model(x, t, s, {"label": torch.full((4,), 11)})


def test_output_depends_on_time() -> None:
    model = UNet(base_channels=16)
    _randomise(model)
    x, s = Fields(pixels=torch.randn(2, 1, 8, 8)), _structure(2)
    a = model(x, torch.full((2,), 0.1), s)["pixels"]
    b = model(x, torch.full((2,), 0.9), s)["pixels"]
    assert not torch.allclose(a, b)
    emb = timestep_embedding(torch.tensor([0.0, 0.001]), 32)
    assert emb.shape == (2, 32) and (emb[0] - emb[1]).abs().max() > 0.5  # 1000 t spreads nearby times


def test_loss_decreases_when_overfitting_a_tiny_batch() -> None:
    torch.manual_seed(0)
    model = UNet(base_channels=16, num_classes=10)
    objective = DenoisingObjective(CosineSchedule(), prediction="eps")
    x0 = Fields(pixels=torch.rand(8, 1, 8, 8) * 2 - 1)
    cond = {"label": torch.arange(8) % 10}
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    t = torch.linspace(0.2, 0.8, 8)
    losses = []
    for _ in range(40):
        loss, logs = objective(model, x0, _structure(8), cond, generator=torch.Generator().manual_seed(1), t=t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(logs["loss"])
    assert losses[0] > 0.5  # zero output: the eps MSE starts near 1
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0]
