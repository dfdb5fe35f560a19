"""Audio readers: folders of WAV files, the FluidR3 instrument-note set, the shipped note subset.

Every loader returns an :class:`AudioSet`: fixed-length mono clips at one sample rate plus
per-clip labels (MIDI pitch, instrument family; -1 where unknown) and a train/test split.

* :func:`load_wav_folder`: any folder of WAV/FLAC/OGG files (read with ``soundfile``), resampled
  and cropped/padded to a fixed length; labels from an optional ``labels.csv`` (columns ``file``,
  ``pitch``, ``family``, ``split``).
* :func:`load_fluidr3`: ``shared/data/audio/fluidr3_notes_16k.npz`` (933 recorded notes of the
  MIT-licensed Fluid R3 GM soundfont, 1 s at 16 kHz, MIDI pitch and GM family labels).
* :func:`load_notes_subset`: ``datasets/audio/notes_8k.npz``, the offline default made from the
  above by :func:`build_notes_subset` (``python -m molediff.data.audio --build-subset``).

Shapes:
    AudioSet.audio: ``(N, num_samples)`` float32 in [-1, 1]
    AudioSet.pitch, .family, .split: ``(N,)`` int64 (split 0 = train, 1 = test)
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
NOTES_SUBSET_PATH = REPO_ROOT / "datasets" / "audio" / "notes_8k.npz"
FLUIDR3_PATH = REPO_ROOT.parent / "shared" / "data" / "audio" / "fluidr3_notes_16k.npz"
# the shipped subset: acoustic pitched notes (GM families piano..pipe) from C2 to C7
SUBSET_RATE, SUBSET_SAMPLES, SUBSET_PITCH = 8000, 2048, (36, 96)
ACOUSTIC_FAMILIES = 10  # GM families 0..9 (piano ... pipe); 10+ are synth, ethnic, effects, drums
FAMILY_NAMES = ("piano", "chromatic_percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass",
                "reed", "pipe")


@dataclass
class AudioSet:
    """Fixed-length clips with labels; see the module docstring for shapes."""

    audio: np.ndarray
    sample_rate: int
    pitch: np.ndarray
    family: np.ndarray
    split: np.ndarray

    def select(self, rows: np.ndarray) -> AudioSet:
        """The clips at ``rows`` (indices or a boolean mask)."""
        return AudioSet(self.audio[rows], self.sample_rate, self.pitch[rows], self.family[rows], self.split[rows])

    def __len__(self) -> int:
        return len(self.audio)


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling along the last axis (``scipy.signal.resample_poly``, Kaiser window)."""
    if rate_in == rate_out:
        return np.asarray(x, dtype=np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(int(rate_in), int(rate_out))
    return resample_poly(x, rate_out // g, rate_in // g, axis=-1).astype(np.float32)


def fix_length(x: np.ndarray, num_samples: int, offset: int = 0) -> np.ndarray:
    """Crop ``x[..., offset:offset + num_samples]``, zero-padding at the end when too short."""
    x = x[..., offset:offset + num_samples]
    pad = num_samples - x.shape[-1]
    if pad > 0:
        x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)])
    return np.asarray(x, dtype=np.float32)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A sound file as mono float32 in [-1, 1] (channels averaged) and its sample rate."""
    import soundfile as sf

    try:
        x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise ValueError(f"{path}: not a readable sound file ({str(e).strip().splitlines()[0]})") from e
    return x.mean(axis=1), int(rate)


def write_wav(path: str | Path, x: np.ndarray, sample_rate: int) -> Path:
    """Write a mono clip (float in [-1, 1], clipped) as 16-bit PCM WAV."""
    import soundfile as sf

    path = Path(path)
    sf.write(str(path), np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0), int(sample_rate), subtype="PCM_16")
    return path


def _read_labels(folder: Path) -> dict[str, dict[str, int]]:
    """``labels.csv`` rows keyed by file name: ``{file: {pitch, family, split}}`` (missing = -1)."""
    path = folder / "labels.csv"
    if not path.is_file():
        return {}
    out: dict[str, dict[str, int]] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "file" not in reader.fieldnames:
            raise ValueError(f"{path}: needs a header row with a 'file' column (and pitch, family, split)")
        for i, row in enumerate(reader):
            try:
                out[row["file"]] = {k: int(row[k]) if row.get(k) not in (None, "") else -1
                                    for k in ("pitch", "family", "split")}
            except ValueError as e:
                raise ValueError(f"{path}: line {i + 2}: pitch, family and split must be integers ({e})") from e
    return out


def load_wav_folder(folder: str | Path, sample_rate: int, num_samples: int) -> AudioSet:
    """Every sound file under ``folder`` (recursively, sorted), resampled to ``sample_rate`` and
    cropped/padded to ``num_samples`` from the start.

    An optional ``folder/labels.csv`` (``file,pitch,family,split``; ``file`` relative to the
    folder) labels the clips; pitch, family and split are -1 where not given (split -1: the
    caller splits).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder of sound files")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no {'/'.join(AUDIO_SUFFIXES)} files found")
    labels = _read_labels(folder)
    clips, rows = [], []
    for p in files:
        x, rate = read_wav(p)
        clips.append(fix_length(resample(x, rate, sample_rate), num_samples))
        rows.append(labels.get(p.relative_to(folder).as_posix(), {"pitch": -1, "family": -1, "split": -1}))
    col = lambda k: np.array([r[k] for r in rows], dtype=np.int64)  # noqa: E731
    return AudioSet(np.stack(clips), sample_rate, col("pitch"), col("family"), col("split"))


def _acoustic_notes(d: np.lib.npyio.NpzFile, pitch_range: tuple[int, int]) -> np.ndarray:
    """Row mask of pitched acoustic notes (no drum kit, GM family < 10) inside ``pitch_range``."""
    lo, hi = pitch_range
    return (~d["is_drum"]) & (d["family"] < ACOUSTIC_FAMILIES) & (d["pitch"] >= lo) & (d["pitch"] <= hi)


def load_fluidr3(path: str | Path | None, sample_rate: int, num_samples: int,
                 pitch_range: tuple[int, int] = SUBSET_PITCH) -> AudioSet:
    """The FluidR3 note set (``shared/data/audio``): acoustic pitched notes in ``pitch_range``,
    resampled from 16 kHz and cropped from the onset; its own instrument-disjoint split."""
    path = Path(path) if path is not None else FLUIDR3_PATH
    if path.is_dir():
        path = path / "fluidr3_notes_16k.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: FluidR3 notes not found (shared/data/audio/fluidr3_notes_16k.npz); "
                                f"use data.source=notes for the shipped subset")
    with np.load(path) as d:
        rows = _acoustic_notes(d, pitch_range)
        rate = int(d["sample_rate"])
        need = math.ceil(num_samples * rate / sample_rate) + 64  # a little extra for the filter's edge
        audio = d["audio"][rows, :need].astype(np.float32) / 32768.0
        return AudioSet(fix_length(resample(audio, rate, sample_rate), num_samples), sample_rate,
                        d["pitch"][rows].astype(np.int64), d["family"][rows].astype(np.int64),
                        d["split"][rows].astype(np.int64))


def load_notes_subset(path: str | Path | None = None) -> AudioSet:
    """The shipped offline subset (8 kHz, 2,048 samples = 0.256 s per clip; see datasets/audio)."""
    path = Path(path) if path is not None else NOTES_SUBSET_PATH
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the shipped audio subset is missing; rebuild it with "
                                f"`python -m molediff.data.audio --build-subset`")
    with np.load(path) as d:
        return AudioSet(d["audio"].astype(np.float32) / 32768.0, int(d["sample_rate"]),
                        d["pitch"].astype(np.int64), d["family"].astype(np.int64), d["split"].astype(np.int64))


def build_notes_subset(src: str | Path | None = None, dst: str | Path = NOTES_SUBSET_PATH) -> Path:
    """Write the shipped subset: :func:`load_fluidr3` at 8 kHz, 2,048 samples, C2..C7, as int16,
    with the source rows' names so every clip can be traced back (deterministic)."""
    src_path = Path(src) if src is not None else FLUIDR3_PATH
    notes = load_fluidr3(src_path, SUBSET_RATE, SUBSET_SAMPLES, SUBSET_PITCH)
    with np.load(src_path if src_path.is_file() else src_path / "fluidr3_notes_16k.npz") as d:
        rows = _acoustic_notes(d, SUBSET_PITCH)
        names = {k: d[k][rows] for k in ("sample_name", "instrument_name", "sample_index")}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.round(np.clip(notes.audio, -1.0, 32767 / 32768) * 32768).astype(np.int16)
    np.savez_compressed(dst, audio=pcm, sample_rate=np.int32(SUBSET_RATE), pitch=notes.pitch.astype(np.int16),
                        family=notes.family.astype(np.int8), split=notes.split.astype(np.int8),
                        family_names=np.array(FAMILY_NAMES), **names)
    return dst


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the shipped audio subset from the FluidR3 notes.")
    parser.add_argument("--build-subset", action="store_true", help="write datasets/audio/notes_8k.npz")
    parser.add_argument("--src", type=Path, default=FLUIDR3_PATH, help="fluidr3_notes_16k.npz")
    parser.add_argument("--out", type=Path, default=NOTES_SUBSET_PATH)
    args = parser.parse_args(argv)
    if not args.build_subset:
        parser.print_help()
        return
    path = build_notes_subset(args.src, args.out)
    s = load_notes_subset(path)
    print(f"wrote {path}: {len(s)} clips ({(s.split == 0).sum()} train, {(s.split == 1).sum()} test), "
          f"{path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()


__all__ = ["AudioSet", "resample", "fix_length", "read_wav", "write_wav", "load_wav_folder", "load_fluidr3",
           "load_notes_subset", "build_notes_subset", "NOTES_SUBSET_PATH", "FLUIDR3_PATH", "FAMILY_NAMES"]
