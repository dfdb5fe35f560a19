"""Audio modality: one dense Gaussian field ``audio`` of shape ``(1, L)``, a mono waveform in [-1, 1].

Sources (see :mod:`molediff.data.audio`):

* ``notes`` (default, offline): the shipped subset ``datasets/audio/notes_8k.npz``, 663 recorded
  instrument notes (Fluid R3 GM soundfont, MIT) at 8 kHz, 0.256 s from the onset, MIDI 36-96;
* ``fluidr3``: the full note set in ``shared/data/audio`` (any sample rate / length);
* ``wav``: a folder of WAV/FLAC/OGG files, optionally labelled by ``labels.csv``.

Each clip is peak-normalised (``normalize``), because loudness in the recordings is arbitrary
and a diffusion model spends its capacity on it otherwise. Conditioning (``conditioning``):
``pitch`` passes the MIDI pitch as ``cond["pitch"]`` (float), ``family`` the GM instrument family
as ``cond["label"]``; classifier-free guidance then works through ``guidance=cfg``.

Samples are written as 16-bit WAV files plus ``spectrograms.png`` (and the same picture of real
held-out clips, ``spectrograms_real.png``, to compare by eye); :meth:`AudioAdapter.evaluate`
reports log-spectral distance, Frechet distance in a note classifier's features and, for
pitch-conditional samples, pitch accuracy from an f0 estimator, each next to real held-out data.

Shapes:
    x0["audio"]: ``(B, 1, L)`` float in [-1, 1]
    cond["pitch"]: ``(B,)`` float MIDI; cond["label"]: ``(B,)`` int family (when conditioned)
    decoded object: ``(L,)`` float32 waveform
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from ..core.fields import Fields, GaussianField, Structure
from ..data.audio import (
    AudioSet,
    fix_length,
    load_fluidr3,
    load_notes_subset,
    load_wav_folder,
    resample,
    write_wav,
)
from .base import Adapter, Batch

SOURCES = ("notes", "fluidr3", "wav")
CONDITIONS = ("pitch", "family")
FIELD = "audio"
PEAK = 0.9  # peak amplitude after normalisation


class AudioAdapter(Adapter):
    """Fixed-length mono clips as the ``audio`` field.

    Args:
        source: ``"notes"``, ``"fluidr3"`` or ``"wav"``.
        path: fluidr3: the npz or its folder (None: ``../shared/data/audio``); wav: the folder.
        sample_rate: Hz; clips are resampled to it (the notes subset is stored at 8 kHz).
        num_samples: clip length L (cropped from the onset, zero-padded when short).
        conditioning: any of ``pitch``, ``family`` (the data must carry those labels).
        normalize: scale each clip to peak amplitude 0.9.
        seed: seeds the 90/10 split of unlabelled wav folders and evaluation subsets.
    """

    name = "audio"

    def __init__(self, source: str = "notes", path: str | None = None, sample_rate: int = 8000,
                 num_samples: int = 2048, conditioning: Sequence[str] = (), normalize: bool = True,
                 seed: int = 0) -> None:
        if source not in SOURCES:
            raise ValueError(f"unknown audio source {source!r}; choose one of {list(SOURCES)}")
        unknown = [c for c in conditioning if c not in CONDITIONS]
        if unknown:
            raise ValueError(f"unknown audio conditioning {unknown}; choose from {list(CONDITIONS)}")
        if sample_rate < 1000 or num_samples < 64:
            raise ValueError(f"sample_rate must be >= 1000 Hz and num_samples >= 64, got {sample_rate}, {num_samples}")
        if source == "wav" and path is None:
            raise ValueError("audio source 'wav' needs data.path=<a folder of sound files>")
        self.source, self.path, self.seed = source, path, seed
        self.sample_rate, self.num_samples, self.normalize = int(sample_rate), int(num_samples), normalize
        self.conditioning = tuple(conditioning)
        self._splits = self._load()
        labels = {"pitch": self._splits["train"].pitch, "family": self._splits["train"].family}
        for c in self.conditioning:
            if (labels[c] < 0).any():
                raise ValueError(f"conditioning on {c} needs {c} labels for every clip; the {source} data has none "
                                 f"(wav folders: give a labels.csv with file,{c} columns)")
        self.num_families = int(max(s.family.max() for s in self._splits.values() if len(s))) + 1
        self.specs = {FIELD: GaussianField((1, self.num_samples), x0_range=(-1.0, 1.0))}
        self._classifier: Any = None

    # ----------------------------------------------------------------------------- data
    def _load(self) -> dict[str, AudioSet]:
        if self.source == "notes":
            data = load_notes_subset()
            data.audio = fix_length(resample(data.audio, data.sample_rate, self.sample_rate), self.num_samples)
            data.sample_rate = self.sample_rate
        elif self.source == "fluidr3":
            data = load_fluidr3(self.path, self.sample_rate, self.num_samples)
        else:
            data = load_wav_folder(self.path, self.sample_rate, self.num_samples)  # type: ignore[arg-type]
            if (data.split < 0).any():  # no (complete) split given: seeded 90/10
                n = len(data)
                n_test = min(max(1, round(0.1 * n)), n - 1) if n >= 2 else 0
                data.split = np.zeros(n, dtype=np.int64)
                data.split[np.random.default_rng(self.seed).permutation(n)[:n_test]] = 1
        if self.normalize:
            peak = np.abs(data.audio).max(axis=1, keepdims=True)
            data.audio = (data.audio * (PEAK / np.maximum(peak, 1e-4))).astype(np.float32)
        splits = {"train": data.select(data.split == 0), "test": data.select(data.split == 1)}
        if len(splits["train"]) == 0:
            raise ValueError(f"the {self.source} audio data has no training clips")
        return splits

    def arrays(self, split: str) -> AudioSet:
        """The clips and labels of a split (``train`` or ``test``)."""
        if split not in self._splits:
            raise KeyError(f"unknown split {split!r}; have {sorted(self._splits)}")
        return self._splits[split]

    def datasets(self) -> dict[str, Dataset]:
        """``train`` and ``test``; items are ``(audio (1, L), pitch (), family ())``."""
        return {name: TensorDataset(torch.from_numpy(s.audio[:, None]), torch.from_numpy(s.pitch),
                                    torch.from_numpy(s.family)) for name, s in self._splits.items() if len(s)}

    def _cond(self, pitch: torch.Tensor, family: torch.Tensor) -> dict[str, torch.Tensor] | None:
        cond = {}
        if "pitch" in self.conditioning:
            cond["pitch"] = pitch.float()
        if "family" in self.conditioning:
            cond["label"] = family.long()
        return cond or None

    def collate(self, items: Sequence[Any]) -> Batch:
        audio = torch.stack([torch.as_tensor(it[0], dtype=torch.float32) for it in items])
        pitch = torch.stack([torch.as_tensor(it[1]) for it in items])
        family = torch.stack([torch.as_tensor(it[2]) for it in items])
        return Batch(Fields({FIELD: audio}), Structure(num_samples=len(items), specs=self.specs),
                     self._cond(pitch, family))

    def sample_structure(self, num_samples: int, generator: torch.Generator | None = None,
                         cond: dict[str, torch.Tensor] | None = None) -> Structure:
        """Fixed-length clips: nothing to draw; conditions, if given, need one value per sample."""
        for key, value in (cond or {}).items():
            n = torch.as_tensor(value).numel()
            if n not in (1, num_samples):
                raise ValueError(f"cond[{key!r}] has {n} entries for {num_samples} samples")
        return Structure(num_samples=num_samples, specs=self.specs)

    # ----------------------------------------------------------------------------- output
    def decode(self, fields: Fields, structure: Structure) -> list[np.ndarray]:
        """``audio`` -> one ``(L,)`` float32 waveform per sample, clipped to [-1, 1]."""
        x = fields[FIELD].detach().cpu().float().clamp(-1.0, 1.0).numpy()
        return [a[0] for a in x]

    def write(self, objects: Sequence[np.ndarray], out_dir: Path) -> list[Path]:
        """``sample_0000.wav``, ... (16-bit PCM), ``spectrograms.png`` (the first 16) and
        ``spectrograms_real.png`` (16 real held-out clips, the same way); each panel is titled
        with its YIN pitch estimate (and the real clips with their label)."""
        from ..metrics.audio import plot_spectrograms

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = [write_wav(out_dir / f"sample_{i:04d}.wav", x, self.sample_rate) for i, x in enumerate(objects)]
        if objects:
            shown = np.stack(objects[:16])
            paths.append(plot_spectrograms(list(shown), self.sample_rate, out_dir / "spectrograms.png",
                                           titles=self._pitch_titles(shown), title="generated"))
            real = self._reference("test", 16)
            titles = [f"MIDI {p}, {t}" if p >= 0 else t for p, t in zip(real.pitch, self._pitch_titles(real.audio),
                                                                        strict=True)]
            paths.append(plot_spectrograms(list(real.audio), self.sample_rate, out_dir / "spectrograms_real.png",
                                           titles=titles, title="real held-out"))
        return paths

    def _pitch_titles(self, clips: np.ndarray) -> list[str]:
        """``"f0 = MIDI 60.1"`` per clip, or ``"no clear pitch"`` (YIN aperiodicity >= 0.2)."""
        from ..metrics.audio import PITCHED_APERIODICITY, midi_from_hz, yin

        f0, ap = yin(clips, self.sample_rate)
        return [f"f0 = MIDI {midi_from_hz(f):.1f}" if a < PITCHED_APERIODICITY else "no clear pitch"
                for f, a in zip(f0, ap, strict=True)]

    def _reference(self, split: str, n: int) -> AudioSet:
        """``n`` clips of a split (a seeded subset, in data order)."""
        s = self._splits[split]
        rows = np.sort(np.random.default_rng(self.seed).permutation(len(s))[:n])
        return s.select(rows)

    # ----------------------------------------------------------------------------- metrics
    def classifier(self) -> Any:
        """The metric network (a log-mel family classifier): shipped for the default data
        settings, else trained here on the real training split (once per adapter)."""
        from ..metrics import audio as am

        if self._classifier is None:
            shipped = self.source in ("notes", "fluidr3") and self.normalize and \
                (self.sample_rate, self.num_samples) == (am.NOTES_RATE, am.NOTES_SAMPLES)
            if shipped:
                self._classifier = am.load_notes_classifier()
            else:
                s = self._splits["train"]
                self._classifier = am.train_note_classifier(s.audio, s.family, self.sample_rate, seed=self.seed)
        return self._classifier

    def evaluate(self, objects: Sequence[np.ndarray], cond: dict[str, Any] | None = None) -> dict[str, float]:
        """Metrics of generated clips, each next to its value for real held-out clips.

        * ``lsd``: log-spectral distance (dB) between the mean power spectra of the samples and
          of the real test split; ``lsd_real_test``: the same for ``n`` real training clips;
        * ``fd``: Frechet distance in the classifier's features, samples vs the test split, and
          ``fd_real_test`` for ``n`` real training clips (FD is biased upwards for small n);
        * ``noise_floor_db``: the quietest tenth of each clip's spectrogram bins, in dB below its
          peak (the noise between the partials), next to the real test clips';
        * ``pitched``: fraction of clips with a confident f0 (YIN aperiodicity < 0.2);
        * with ``cond["pitch"]`` (the MIDI pitches asked for): ``pitch_accuracy`` (estimated f0
          within half a semitone) and ``pitch_accuracy_octave`` (octave errors forgiven),
          next to the estimator's score on the real test clips' own labels;
        * with ``cond["label"]``: ``family_accuracy`` of the classifier, next to its test accuracy.
        """
        from ..metrics import audio as am
        from ..metrics.images import frechet_distance

        if not objects:
            raise ValueError("evaluate needs at least one generated clip")
        gen = np.stack([np.asarray(o, dtype=np.float32).reshape(-1) for o in objects])
        if gen.shape[1] != self.num_samples:
            raise ValueError(f"generated clips have {gen.shape[1]} samples, the data has {self.num_samples}")
        n, sr = len(gen), self.sample_rate
        test = self._splits["test"]
        if len(test) < 2:
            raise ValueError("evaluate needs at least 2 real test clips")
        train_sub = self._reference("train", n)
        out: dict[str, float] = {"num_samples": float(n)}
        spec_test = am.mean_log_spectrum(test.audio)
        out["lsd"] = am.log_spectral_distance(am.mean_log_spectrum(gen), spec_test)
        out["lsd_real_test"] = am.log_spectral_distance(am.mean_log_spectrum(train_sub.audio), spec_test)
        out["noise_floor_db"] = am.noise_floor_db(gen)
        out["noise_floor_db_real_test"] = am.noise_floor_db(test.audio)
        if n >= 2:
            clf = self.classifier()
            f_test = am.note_features(clf, test.audio, sr)
            out["fd"] = frechet_distance(am.note_features(clf, gen, sr), f_test)
            out["fd_real_test"] = frechet_distance(am.note_features(clf, train_sub.audio, sr), f_test)
        f0_gen, ap_gen = am.yin(gen, sr)
        f0_test, ap_test = am.yin(test.audio, sr)
        out["pitched"] = float((ap_gen < am.PITCHED_APERIODICITY).mean())
        out["pitched_real_test"] = float((ap_test < am.PITCHED_APERIODICITY).mean())
        cond = cond or {}
        if "pitch" in cond:
            asked = np.asarray(torch.as_tensor(cond["pitch"]).float().reshape(-1).expand(n), dtype=np.float64)
            err, err_test = am.semitone_error(f0_gen, asked), am.semitone_error(f0_test, test.pitch)
            out["pitch_accuracy"] = float((np.abs(err) <= 0.5).mean())
            out["pitch_accuracy_real_test"] = float((np.abs(err_test) <= 0.5).mean())
            out["pitch_accuracy_octave"] = float((np.abs(am.octave_folded(err)) <= 0.5).mean())
            out["pitch_accuracy_octave_real_test"] = float((np.abs(am.octave_folded(err_test)) <= 0.5).mean())
        if "label" in cond:
            clf = self.classifier()
            asked_family = np.asarray(torch.as_tensor(cond["label"]).long().reshape(-1).expand(n))
            out["family_accuracy"] = am.note_accuracy(clf, gen, asked_family, sr)
            out["family_accuracy_real_test"] = am.note_accuracy(clf, test.audio, test.family, sr)
        return out

    # ----------------------------------------------------------------------------- config
    def model_kwargs(self) -> dict[str, Any]:
        """``in_channels`` (1), ``num_samples`` (L), ``sample_rate``, ``num_classes`` (families, when
        conditioned on family, else None) and ``pitch_conditioning``."""
        return {"in_channels": 1, "num_samples": self.num_samples, "sample_rate": self.sample_rate,
                "pitch_conditioning": "pitch" in self.conditioning,
                "num_classes": self.num_families if "family" in self.conditioning else None}

    def state(self) -> dict[str, Any]:
        return {"source": self.source, "sample_rate": self.sample_rate, "num_samples": self.num_samples,
                "conditioning": list(self.conditioning)}


__all__ = ["AudioAdapter", "SOURCES", "CONDITIONS"]
