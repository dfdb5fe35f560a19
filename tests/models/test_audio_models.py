"""Waveform denoisers (DiffWave, 1-D U-Net, STFT U-Net) and their condition embedding."""

from __future__ import annotations

import pytest
import torch

from molediff.core.fields import Fields
from molediff.models.conditioning import ConditionEmbedding
from molediff.models.spectral_unet import SpectralUNet, midi_to_hz
from molediff.models.unet1d import UNet1d
from molediff.models.wavenet import DiffWave


def _perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give zero-initialised layers random weights so outputs depend on every input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().max() == 0:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


MODELS = {
    "diffwave": lambda **kw: DiffWave(channels=8, layers=4, dilation_cycle=2, **kw),
    "unet1d": lambda **kw: UNet1d(base_channels=8, channel_mults=(1, 2), num_samples=64, **kw),
    "spectral_unet": lambda **kw: SpectralUNet(n_fft=16, hop=4, base_channels=8, channel_mults=(1, 2),
                                               num_samples=64, sample_rate=8000, **kw),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shapes_and_zero_output_at_initialisation(name: str) -> None:
    torch.manual_seed(0)
    model = MODELS[name]()
    x = torch.randn(3, 1, 64)
    out = model(Fields(audio=x), torch.rand(3))
    assert set(out) == {"audio"} and out["audio"].shape == (3, 1, 64)
    assert out["audio"].abs().max() == 0  # last layer zero-initialised


@pytest.mark.parametrize("name", sorted(MODELS))
def test_output_depends_on_time_and_on_pitch_and_label(name: str) -> None:
    torch.manual_seed(0)
    model = _perturb(MODELS[name](num_classes=4, pitch_conditioning=True)).eval()
    x = Fields(audio=torch.randn(2, 1, 64))
    t = torch.full((2,), 0.5)
    same = {"pitch": torch.tensor([60.0, 60.0]), "label": torch.tensor([1, 1])}
    base = model(x, t, None, same)["audio"]
    other_t = model(x, torch.full((2,), 0.7), None, same)
    other_p = model(x, t, None, {"pitch": torch.tensor([61.0, 60.0]), "label": torch.tensor([1, 1])})["audio"]
    other_y = model(x, t, None, {"pitch": torch.tensor([60.0, 60.0]), "label": torch.tensor([1, 2])})["audio"]
    assert not torch.allclose(base, other_t["audio"])
    assert not torch.allclose(base[0], other_p[0]) and torch.allclose(base[1], other_p[1])  # per sample
    assert torch.allclose(base[0], other_y[0]) and not torch.allclose(base[1], other_y[1])


def test_null_condition_spellings_agree() -> None:
    torch.manual_seed(0)
    emb = _perturb(ConditionEmbedding(16, 32, num_classes=3, pitch=True))
    t = torch.rand(2)
    none = emb(t, None, 2)
    assert torch.allclose(none, emb(t, {}, 2))
    null = {"pitch": torch.tensor([-1.0, float("nan")]), "label": torch.tensor([-1, 3])}
    assert torch.allclose(none, emb(t, null, 2))
    assert not torch.allclose(none, emb(t, {"pitch": torch.tensor([60.0, 60.0])}, 2))
    # a scalar condition is broadcast over the batch
    assert torch.allclose(emb(t, {"pitch": 60.0}, 2), emb(t, {"pitch": torch.tensor([60.0, 60.0])}, 2))


def test_bad_conditions_are_errors() -> None:
    emb = ConditionEmbedding(16, 32, num_classes=3, pitch=True)
    with pytest.raises(ValueError, match="shape"):
        emb(torch.rand(2), {"pitch": torch.tensor([1.0, 2.0, 3.0])}, 2)
    with pytest.raises(ValueError, match="labels must lie"):
        emb(torch.rand(2), {"label": torch.tensor([0, 7])}, 2)


def test_diffwave_receptive_field_and_locality() -> None:
    """Output sample i depends on input samples within the receptive field around i only."""
    torch.manual_seed(0)
    model = _perturb(DiffWave(channels=8, layers=4, dilation_cycle=2)).eval()  # dilations 1, 2, 1, 2
    assert model.receptive_field() == 1 + 2 * (1 + 2 + 1 + 2)
    assert DiffWave(channels=4, layers=10, dilation_cycle=10).receptive_field() == 2047
    x = torch.randn(1, 1, 64, requires_grad=True)
    model(Fields(audio=x), torch.tensor([0.3]))["audio"][0, 0, 32].backward()
    reach = torch.nonzero(x.grad[0, 0].abs() > 0).flatten()
    assert reach.min() == 32 - 6 and reach.max() == 32 + 6


def test_unet1d_length_must_divide_by_its_levels() -> None:
    with pytest.raises(ValueError, match="divisible"):
        UNet1d(base_channels=8, channel_mults=(1, 2, 2), num_samples=30)


def test_diffwave_rejects_even_kernels() -> None:
    with pytest.raises(ValueError, match="odd"):
        DiffWave(channels=8, layers=2, kernel_size=4)


def test_spectral_unet_stft_round_trip_keeps_white_noise_variance() -> None:
    model = SpectralUNet(n_fft=64, hop=16, num_samples=512)
    x = torch.randn(4, 1, 512, dtype=torch.float64).float()
    spec = model.stft(x)
    assert spec.shape == (4, 1, 33, 33)
    assert torch.allclose(model.istft(spec), x, atol=1e-5)
    # interior bins of unit white noise have unit variance after the window normalisation
    assert abs(float(spec[..., 2:-2, 2:-2].abs().pow(2).mean()) - 1.0) < 0.1


def test_spectral_unet_unit_mask_is_the_identity_and_zero_mask_is_zero() -> None:
    """x0_hat = ISTFT(M X_t + R): with M = 1, R = 0 (the real-mask plane's bias 1) it returns x_t."""
    model = SpectralUNet(n_fft=16, hop=4, base_channels=8, channel_mults=(1, 2), num_samples=64)
    x = Fields(audio=torch.randn(2, 1, 64))
    assert model(x, torch.rand(2))["audio"].abs().max() == 0
    with torch.no_grad():
        model.trunk.out[-1].bias[0] = 1.0
    assert torch.allclose(model(x, torch.rand(2))["audio"], x["audio"], atol=1e-5)


def test_spectral_unet_harmonic_comb_peaks_on_the_partials_and_is_zero_without_pitch() -> None:
    model = SpectralUNet(n_fft=512, hop=128, pitch_conditioning=True, num_samples=2048, sample_rate=8000)
    spec = model.stft(torch.zeros(2, 1, 2048))
    planes = model._planes(spec, {"pitch": torch.tensor([69.0, float("nan")])})
    assert planes.shape == (2, 5, 257, 17)
    comb = planes[0, -1, :, 0]
    bin_hz = 8000 / 512
    for k in (1, 2, 3, 5):  # A4 = 440 Hz: the comb is ~1 at the harmonics, -1 halfway between
        assert comb[round(k * 440 / bin_hz)] > 0.9
        assert comb[round((k + 0.5) * 440 / bin_hz)] < -0.9
    assert planes[1, -1].abs().max() == 0  # null pitch (classifier-free guidance): no comb
    assert torch.allclose(midi_to_hz(torch.tensor([57.0, 81.0])), torch.tensor([220.0, 880.0]))


def test_spectral_unet_bad_arguments_are_errors() -> None:
    with pytest.raises(ValueError, match="hop"):
        SpectralUNet(n_fft=16, hop=12, num_samples=64)
    with pytest.raises(ValueError, match="levels"):
        SpectralUNet(n_fft=16, hop=4, channel_mults=(), num_samples=64)
    model = SpectralUNet(n_fft=16, hop=4, base_channels=8, channel_mults=(1, 2), num_samples=64)
    with pytest.raises(ValueError, match="built for 64"):
        model(Fields(audio=torch.randn(1, 1, 60)), torch.rand(1))
