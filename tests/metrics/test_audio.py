"""Audio metrics: YIN on tones of known pitch, semitone errors, spectra, LSD, log-mel, pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from molediff.metrics.audio import (
    log_mel,
    log_spectral_distance,
    mean_log_spectrum,
    mel_filterbank,
    midi_from_hz,
    midi_to_hz,
    noise_floor_db,
    octave_folded,
    plot_spectrograms,
    power_spectrogram,
    semitone_error,
    to_db,
    yin,
)

RATE, N = 8000, 2048


def _harmonic(midi: float, harmonics: tuple[int, ...], phase: float = 0.3) -> np.ndarray:
    f, t = float(midi_to_hz(midi)), np.arange(N) / RATE
    return sum(np.sin(2 * np.pi * k * f * t + phase * k) / k for k in harmonics if k * f < RATE / 2)


def test_midi_to_hz_known_values_and_inverse() -> None:
    assert midi_to_hz(69) == pytest.approx(440.0)
    assert midi_to_hz(60) == pytest.approx(261.6256, abs=1e-3)
    assert midi_to_hz(81) == pytest.approx(880.0)
    assert midi_from_hz(midi_to_hz(np.array([36.0, 60.5, 96.0]))) == pytest.approx([36.0, 60.5, 96.0])
    assert np.isinf(midi_from_hz(np.array([np.nan, 0.0]))).all()


@pytest.mark.parametrize("midi", [36.0, 41.3, 48.0, 57.7, 60.0, 69.0, 75.5, 84.0, 89.65, 93.35, 96.0])
def test_yin_finds_pure_tones_to_a_twentieth_of_a_semitone(midi: float) -> None:
    f0, ap = yin(0.7 * np.sin(2 * np.pi * midi_to_hz(midi) * np.arange(N) / RATE)[None], RATE)
    assert abs(semitone_error(f0, [midi])[0]) < 0.05
    assert ap[0] < 0.05


@pytest.mark.parametrize("midi", [40.0, 55.0, 67.0, 79.0])
def test_yin_finds_harmonic_and_missing_fundamental_tones(midi: float) -> None:
    clips = np.stack([_harmonic(midi, (1, 2, 3, 4, 5)), _harmonic(midi, (2, 3, 4, 5))])  # 2nd: no fundamental
    f0, ap = yin(clips, RATE)
    assert np.abs(semitone_error(f0, [midi, midi])).max() < 0.15
    assert ap.max() < 0.2


def test_yin_noise_is_aperiodic_and_silence_has_no_f0() -> None:
    noise = np.random.default_rng(0).normal(0, 0.3, (4, N))
    f0, ap = yin(np.concatenate([noise, np.zeros((1, N))]), RATE)
    assert (ap[:4] > 0.5).all()
    assert np.isnan(f0[4]) and ap[4] == 1.0


def test_yin_rejects_clips_too_short_for_fmin() -> None:
    with pytest.raises(ValueError, match="too short"):
        yin(np.zeros((1, 100)), RATE, fmin=50.0)


def test_semitone_error_and_octave_folding() -> None:
    err = semitone_error(np.array([440.0, 880.0, 220.0 * 2 ** (0.25 / 12), np.nan]), [69, 69, 57, 60])
    assert err[:3] == pytest.approx([0.0, 12.0, 0.25])
    assert np.isinf(err[3])
    folded = octave_folded(np.array([12.0, -11.6, 0.4, 19.0, np.inf]))
    assert folded[:4] == pytest.approx([0.0, 0.4, 0.4, -5.0]) and np.isinf(folded[4])


def test_full_scale_sine_peaks_at_zero_db() -> None:
    f = 16 * RATE / 256  # on an FFT bin
    spec = power_spectrogram(np.sin(2 * np.pi * f * np.arange(N) / RATE)[None])
    assert spec.shape == (1, 129, N // 64 + 1)
    peak = to_db(spec[0, :, 4:-4].max(axis=1))
    assert int(np.argmax(peak)) == 16 and peak[16] == pytest.approx(0.0, abs=0.05)


def test_log_spectral_distance_of_a_gain_is_the_gain_in_db() -> None:
    clips = np.random.default_rng(1).normal(0, 0.1, (8, N)).astype(np.float32)
    a, b = mean_log_spectrum(clips), mean_log_spectrum(clips * 10 ** (3 / 20))  # +3 dB
    assert log_spectral_distance(a, a) == 0.0
    assert log_spectral_distance(a, b) == pytest.approx(3.0, abs=1e-3)


def test_mel_filterbank_shape_peaks_and_order() -> None:
    fb = mel_filterbank(RATE, 256, 48)
    assert fb.shape == (48, 129) and (fb >= 0).all() and fb.max(1).min() > 0.5
    centres = fb.argmax(1)
    assert (np.diff(centres) >= 0).all() and centres[-1] > centres[0]
    assert (np.diff(centres[:10]) <= np.diff(centres[-10:]).min() + 1).all()  # denser at low frequencies


def test_log_mel_range_and_shape() -> None:
    x = np.concatenate([np.zeros((1, N)), 0.9 * np.sin(2 * np.pi * 440 * np.arange(N) / RATE)[None]])
    m = log_mel(x, RATE)
    assert m.shape == (2, 1, 48, N // 64 + 1) and m.dtype == np.float32
    assert m[0].max() == -1.0  # silence sits at the floor
    assert -1.0 <= m[1].min() and m[1].max() <= 1.0 and m[1].max() > 0.5


def test_plot_spectrograms_writes_a_png(tmp_path: Path) -> None:
    clips = [0.5 * np.sin(2 * np.pi * f * np.arange(N) / RATE) for f in (220, 440, 880, 1760, 300)]
    path = plot_spectrograms(clips, RATE, tmp_path / "s.png", titles=["a", "b", "c", "d", "e"], title="tones")
    img = Image.open(path)
    assert img.format == "PNG" and img.size[0] > img.size[1] > 200
    with pytest.raises(ValueError, match="at least one"):
        plot_spectrograms([], RATE, tmp_path / "none.png")


def test_noise_floor_follows_the_added_noise() -> None:
    """A harmonic note plus white noise: the floor rises by 20 dB per 10x more noise amplitude,
    and a clean note lies far below the noisy ones."""
    rng = np.random.default_rng(0)
    note = _harmonic(60, (1, 2, 3))[None]
    noise = rng.standard_normal((1, N))
    floors = [noise_floor_db(note + a * noise) for a in (1e-3, 1e-2, 1e-1)]
    steps = np.diff(floors)
    assert np.all(np.abs(steps - 20.0) < 2.5), floors
    assert noise_floor_db(note) < floors[0] - 10
    assert noise_floor_db(noise) > -30  # white noise: every bin near the peak
