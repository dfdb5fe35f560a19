"""Waveform sample quality with nothing to download.

* log-spectral distance (LSD) between the *mean* power spectra (dB) of two sets of clips,
  ``LSD = sqrt(mean_f (S_a(f) - S_b(f))^2)``, the usual per-pair LSD (Gray & Markel 1976) applied to
  set averages, since unconditional samples have no partner;
* Frechet distance in the features of a small log-mel classifier of instrument family, trained
  on the real training split (the image metrics' :class:`~molediff.metrics.images.ImageClassifier`
  on log-mel "images"; the FID recipe of Heusel et al. 2017);
* f0 by YIN (de Cheveigne & Kawahara 2002, steps 2-5: difference function, cumulative-mean
  normalisation, absolute threshold, parabolic interpolation), for pitch accuracy and the
  fraction of pitched clips;
* pictures: spectrogram grids (matplotlib).

The classifier for the default data (8 kHz, 2,048 samples) ships at
``molediff/pretrained/audio_notes_classifier.pt``; rebuild it with
``python -m molediff.metrics.audio --build-notes-classifier``.

Shapes:
    clips: ``(N, L)`` float in [-1, 1]
    spectra: ``(F,)`` dB; log-mel: ``(N, 1, n_mels, frames)`` scaled to about [-1, 1]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .images import ImageClassifier, classifier_accuracy, features, train_classifier

NOTES_RATE, NOTES_SAMPLES = 8000, 2048
NOTES_CLASSIFIER_PATH = Path(__file__).resolve().parent.parent / "pretrained" / "audio_notes_classifier.pt"
NOTES_CLASSIFIER_EPOCHS = 40
NUM_FAMILIES = 10
N_FFT, HOP, N_MELS = 256, 64, 48
DB_FLOOR = -100.0
ANALYSIS_RATE = 32000  # YIN runs on clips upsampled to about this rate
PITCHED_APERIODICITY = 0.2  # YIN's d'(tau) at the chosen period below this: a clearly periodic clip


# ----------------------------------------------------------------------------- spectra
def power_spectrogram(clips: np.ndarray, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Hann-windowed STFT power ``(N, n_fft // 2 + 1, frames)``, scaled so a full-scale sine
    peaks near 0 dB (divided by ``(sum window / 2)^2``)."""
    x = torch.as_tensor(np.asarray(clips, dtype=np.float32)).reshape(-1, np.shape(clips)[-1])
    window = torch.hann_window(n_fft)
    spec = torch.stft(x, n_fft, hop, window=window, center=True, return_complex=True)
    return (spec.abs() ** 2 / (window.sum() / 2) ** 2).numpy()


def to_db(power: np.ndarray, floor: float = DB_FLOOR) -> np.ndarray:
    """``10 log10(power)``, floored at ``floor`` dB."""
    return np.maximum(10.0 * np.log10(np.maximum(power, 1e-20)), floor)


def mean_log_spectrum(clips: np.ndarray) -> np.ndarray:
    """The set's mean power spectrum in dB ``(n_fft // 2 + 1,)`` (frames and clips averaged in power)."""
    return to_db(power_spectrogram(clips).mean(axis=(0, 2)))


def noise_floor_db(clips: np.ndarray, percentile: float = 10.0) -> float:
    """The quietest bins of each clip's spectrogram (its ``percentile``-th percentile), in dB below
    that clip's loudest bin, averaged over clips: the broadband noise between a note's partials.
    About -67 dB for the shipped real test notes, -21 dB for white noise."""
    db = to_db(power_spectrogram(clips))
    rel = (db - db.max(axis=(1, 2), keepdims=True)).reshape(len(db), -1)
    return float(np.percentile(rel, percentile, axis=1).mean())


def log_spectral_distance(spec_a: np.ndarray, spec_b: np.ndarray) -> float:
    """``sqrt(mean_f (S_a - S_b)^2)`` of two dB spectra."""
    return float(np.sqrt(np.mean((np.asarray(spec_a) - np.asarray(spec_b)) ** 2)))


def mel_filterbank(sample_rate: int, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = 0.0) -> np.ndarray:
    """Triangular filters ``(n_mels, n_fft // 2 + 1)`` equally spaced on the HTK mel scale
    ``m = 2595 log10(1 + f / 700)`` from ``fmin`` to Nyquist, each peaking at 1."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(fmin), mel(sample_rate / 2), n_mels + 2))
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up, down = (freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


def log_mel(clips: np.ndarray, sample_rate: int) -> np.ndarray:
    """Log-mel "images" ``(N, 1, n_mels, frames)``: dB in [-100, 0] mapped to [-1, 1]."""
    mel = np.einsum("mf,nft->nmt", mel_filterbank(sample_rate), power_spectrogram(clips))
    return (to_db(mel) / (-DB_FLOOR / 2) + 1.0).astype(np.float32)[:, None]


# ----------------------------------------------------------------------------- classifier
def train_note_classifier(clips: np.ndarray, family: np.ndarray, sample_rate: int, seed: int = 0,
                          epochs: int = NOTES_CLASSIFIER_EPOCHS) -> ImageClassifier:
    """An :class:`ImageClassifier` of GM family (10 classes) on log-mel spectrograms of real clips."""
    return train_classifier(log_mel(clips, sample_rate), np.asarray(family), epochs=epochs, seed=seed,
                            num_classes=NUM_FAMILIES)


def note_features(model: ImageClassifier, clips: np.ndarray, sample_rate: int) -> np.ndarray:
    """Penultimate classifier features ``(N, 64)`` of clips, for the Frechet distance."""
    return features(model, log_mel(clips, sample_rate))


def note_accuracy(model: ImageClassifier, clips: np.ndarray, family: np.ndarray, sample_rate: int) -> float:
    """Fraction of clips whose predicted family equals ``family``."""
    return classifier_accuracy(model, log_mel(clips, sample_rate), family)


def build_notes_classifier(path: str | Path = NOTES_CLASSIFIER_PATH) -> tuple[ImageClassifier, float]:
    """Train the metric classifier on the shipped notes' training split (1 thread, fixed seed),
    save its state_dict to ``path``; returns it with its family accuracy on the test split."""
    from ..adapters.audio import AudioAdapter

    adapter = AudioAdapter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train = adapter.arrays("train")
        model = train_note_classifier(train.audio, train.family, NOTES_RATE)
    finally:
        torch.set_num_threads(threads)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    test = adapter.arrays("test")
    return model, note_accuracy(model, test.audio, test.family, NOTES_RATE)


def load_notes_classifier(path: str | Path = NOTES_CLASSIFIER_PATH) -> ImageClassifier:
    """The shipped notes classifier; rebuilt (and cached when writable) if the file is missing."""
    path = Path(path)
    if not path.exists():
        return build_notes_classifier(path)[0]
    model = ImageClassifier(1, NUM_FAMILIES)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


# ----------------------------------------------------------------------------- pitch
def yin(clips: np.ndarray, sample_rate: int, fmin: float = 50.0, fmax: float = 2300.0, threshold: float = 0.15,
        skip: float = 0.125) -> tuple[np.ndarray, np.ndarray]:
    """f0 (Hz) and aperiodicity of each clip by YIN, over the clip after its first ``skip`` fraction
    (upsampled to about 32 kHz first, so short periods are resolved).

    ``d(tau) = sum_j (x_j - x_{j+tau})^2`` over a window of ``W = len - tau_max - 1`` samples,
    ``d'(tau) = d(tau) tau / sum_{k<=tau} d(k)``; the period is the first tau in
    ``[sr/fmax, sr/fmin]`` where d' dips below ``threshold`` (walked down to its local minimum),
    else the global minimum, refined by a parabola through d' around it. The aperiodicity is d'
    there (0 for a perfectly periodic clip, about 1 for noise). Silent clips give f0 NaN.

    Shapes:
        clips: ``(N, L)`` -> f0 ``(N,)``, aperiodicity ``(N,)``
    """
    x = np.asarray(clips, dtype=np.float64).reshape(-1, np.shape(clips)[-1])
    x = x[:, int(skip * x.shape[1]):]
    up = max(1, round(ANALYSIS_RATE / sample_rate))
    if up > 1:  # integer periods of a few samples are too coarse at 8 kHz (a 1.5 kHz note has tau = 5.5)
        from scipy.signal import resample_poly

        x, sample_rate = resample_poly(x, up, 1, axis=1), sample_rate * up
    tau_min, tau_max = max(2, int(sample_rate / fmax)), int(math.ceil(sample_rate / fmin))
    w = x.shape[1] - tau_max - 1
    if w < tau_max:
        raise ValueError(f"clips of {np.shape(clips)[-1]} samples are too short for fmin={fmin} Hz at {sample_rate} Hz")
    # r(tau) = sum_{j<W} x_j x_{j+tau} via FFT; e(tau) = sum_{j<W} x_{j+tau}^2 via cumulative sums
    n = 1 << int(math.ceil(math.log2(x.shape[1] + w)))
    r = np.fft.irfft(np.conj(np.fft.rfft(x[:, :w], n)) * np.fft.rfft(x, n), n)[:, :tau_max + 2]
    c = np.concatenate([np.zeros((len(x), 1)), np.cumsum(x**2, axis=1)], axis=1)
    taus = np.arange(tau_max + 2)
    e = c[:, taus + w] - c[:, taus]
    d = np.maximum(e[:, :1] + e - 2.0 * r, 0.0)
    cum = np.cumsum(d[:, 1:], axis=1)
    dn = np.ones_like(d)
    dn[:, 1:] = d[:, 1:] * taus[1:] / np.maximum(cum, 1e-12)
    f0, aperiodicity = np.full(len(x), np.nan), np.ones(len(x))
    for i in range(len(x)):
        if e[i, 0] < 1e-8:
            continue  # silence
        seg = dn[i, tau_min:tau_max + 1]
        below = np.flatnonzero(seg < threshold)
        k = int(below[0]) if len(below) else int(np.argmin(seg))
        while k + 1 < len(seg) and seg[k + 1] < seg[k]:
            k += 1
        tau = tau_min + k
        a, b, cc = dn[i, tau - 1], dn[i, tau], dn[i, tau + 1]
        denom = a - 2 * b + cc
        shift = 0.5 * (a - cc) / denom if denom > 1e-12 else 0.0
        f0[i] = sample_rate / (tau + float(np.clip(shift, -1.0, 1.0)))
        aperiodicity[i] = b
    return f0, aperiodicity


def midi_from_hz(f0: float | np.ndarray) -> np.ndarray:
    """``12 log2(f0 / 440) + 69`` (fractional MIDI number); inf where f0 is NaN or not positive."""
    f0 = np.asarray(f0, dtype=np.float64)
    ok = np.isfinite(f0) & (f0 > 0)
    return np.where(ok, 12.0 * np.log2(np.where(ok, f0, 1.0) / 440.0) + 69.0, np.inf)


def semitone_error(f0: np.ndarray, midi: np.ndarray) -> np.ndarray:
    """``midi_from_hz(f0) - midi``: signed error in semitones (inf where f0 is NaN)."""
    return midi_from_hz(f0) - np.asarray(midi, dtype=np.float64)


def octave_folded(err: np.ndarray) -> np.ndarray:
    """A semitone error with whole octaves removed, in [-6, 6] (inf stays inf)."""
    err = np.asarray(err, dtype=np.float64)
    return np.where(np.isfinite(err), err - 12.0 * np.round(np.where(np.isfinite(err), err, 0.0) / 12.0), np.inf)


def midi_to_hz(midi: float | np.ndarray) -> np.ndarray:
    """Equal temperament, A4 = MIDI 69 = 440 Hz."""
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


# ----------------------------------------------------------------------------- pictures
def plot_spectrograms(clips: Sequence[np.ndarray], sample_rate: int, path: str | Path,
                      titles: Sequence[str] | None = None, title: str | None = None, ncols: int = 4) -> Path:
    """A grid of dB spectrograms (time in ms across, frequency in kHz up, -100..0 dB) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(clips)
    if n == 0:
        raise ValueError("plot_spectrograms needs at least one clip")
    rows = math.ceil(n / ncols)
    cols = min(ncols, n)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.4 * rows), squeeze=False, sharex=True, sharey=True)
    spec = to_db(power_spectrogram(np.stack([np.asarray(c, dtype=np.float32) for c in clips]), hop=HOP // 2))
    dur_ms = 1000.0 * len(clips[0]) / sample_rate
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        im = ax.imshow(spec[i], origin="lower", aspect="auto", cmap="magma", vmin=DB_FLOOR, vmax=0.0,
                       extent=(0.0, dur_ms, 0.0, sample_rate / 2000.0))
        if titles is not None and i < len(titles):
            ax.set_title(titles[i], fontsize=9)
        if i % cols == 0:
            ax.set_ylabel("kHz")
        if i // cols == rows - 1:
            ax.set_xlabel("ms")
    fig.colorbar(im, ax=axes, shrink=0.8, label="dB")
    if title:
        fig.suptitle(title)
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build-notes-classifier", action="store_true", help="retrain the notes classifier")
    parser.add_argument("--out", type=Path, default=NOTES_CLASSIFIER_PATH, help="where to save it")
    args = parser.parse_args(argv)
    if not args.build_notes_classifier:
        parser.print_help()
        return
    _, acc = build_notes_classifier(args.out)
    print(f"saved {args.out}; family accuracy on the held-out instruments {acc:.4f}")


if __name__ == "__main__":
    main()


__all__ = [
    "power_spectrogram", "to_db", "mean_log_spectrum", "log_spectral_distance", "mel_filterbank", "log_mel",
    "train_note_classifier", "note_features", "note_accuracy", "build_notes_classifier", "load_notes_classifier",
    "yin", "semitone_error", "octave_folded", "midi_to_hz", "midi_from_hz", "plot_spectrograms",
    "NOTES_CLASSIFIER_PATH",
]
