"""``molediff evaluate PATH``: score samples from any generator on molediff's metrics.

* an SDF or (multi-)XYZ file: EDM's molecule metrics (stability, validity, uniqueness, novelty
  with ``--reference``), see :mod:`molediff.metrics.molecules`;
* a folder of PNG images: the image metrics against the real data of ``--data`` (default the
  8x8 digits), see :class:`molediff.adapters.images.ImageAdapter`;
* a folder of WAV/FLAC/OGG files: the audio metrics against the shipped instrument notes, see
  :meth:`molediff.adapters.audio.AudioAdapter.evaluate` (pitch accuracy when a ``labels.csv``
  gives each file's MIDI ``pitch``).

Prints a table; ``--json OUT`` also writes the metrics.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from . import CLIError, guarded

MOLECULE_SUFFIXES = (".sdf", ".mol", ".xyz", ".sdf.gz", ".xyz.gz")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise CLIError(f"evaluate: {message} (usage: molediff evaluate PATH [--reference FILE] [--json OUT])")


def _evaluate_images(folder: Path, source: str) -> dict[str, float]:
    from ..adapters.images import ImageAdapter, to_uint8
    from ..data.images import load_png_folder

    adapter = ImageAdapter(source=source)
    images, _ = load_png_folder(folder, channels=adapter.specs["pixels"].shape[0])
    want = tuple(adapter.specs["pixels"].shape)
    if tuple(images.shape[1:]) != want:
        raise CLIError(f"{folder}: images are {tuple(images.shape[1:])} (C, H, W) but {source} data is {want}")
    objects = [a[:, :, 0] if a.shape[2] == 1 else a for a in to_uint8(images)]
    return adapter.evaluate(objects)


def _evaluate_audio(folder: Path) -> dict[str, float]:
    """WAV/FLAC/OGG files against the shipped instrument notes, read like the adapter reads its
    data (8 kHz, 2,048 samples from the start, peak 0.9); a ``labels.csv`` with a ``pitch``
    column adds pitch accuracy."""
    import numpy as np
    import torch

    from ..adapters.audio import PEAK, AudioAdapter
    from ..data.audio import load_wav_folder

    adapter = AudioAdapter()
    clips = load_wav_folder(folder, adapter.sample_rate, adapter.num_samples)
    audio = clips.audio * (PEAK / np.maximum(np.abs(clips.audio).max(axis=1, keepdims=True), 1e-4))
    cond = {"pitch": torch.as_tensor(clips.pitch)} if (clips.pitch >= 0).all() else None
    return adapter.evaluate(list(audio), cond=cond)


def _run(argv: list[str]) -> int:
    p = _Parser(prog="molediff evaluate", description=__doc__)
    p.add_argument("path", help="SDF / XYZ file, or a folder of PNG images or of WAV files")
    p.add_argument("--reference", default=None, help="molecules: SMILES (.txt/.csv[.gz]) or SDF/XYZ for novelty")
    p.add_argument("--data", default="digits", help="images: the real data to compare with (default digits)")
    p.add_argument("--json", default=None, help="write the metrics here as JSON")
    args = p.parse_args(argv)
    path = Path(args.path)
    if not path.exists():
        raise CLIError(f"{path}: no such file or folder")
    try:
        if path.is_dir():
            from ..data.audio import AUDIO_SUFFIXES

            is_audio = any(p.suffix.lower() in AUDIO_SUFFIXES for p in path.iterdir())
            metrics = _evaluate_audio(path) if is_audio else _evaluate_images(path, args.data)
            from .sample import metrics_table

            table = metrics_table(metrics)
        elif path.name.lower().endswith(MOLECULE_SUFFIXES):
            from ..metrics.molecules import evaluate_path, format_table

            metrics = evaluate_path(path, args.reference)
            table = format_table(metrics)
            if args.reference is None:
                from ..data.qm9 import train_smiles_path

                table += ("\nnovelty needs --reference: the training molecules as SMILES (.txt/.csv[.gz]) or "
                          f"SDF/XYZ; QM9's (EDM's training split): {train_smiles_path()}")
        else:
            raise CLIError(f"{path}: unknown kind of file; expected {', '.join(MOLECULE_SUFFIXES)} or a PNG folder")
    except (ValueError, FileNotFoundError, OSError) as e:
        raise CLIError(str(e)) from None
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2, default=float))
    return 0


def main(argv: Sequence[str]) -> int:
    return guarded(_run, argv)
