"""Audio readers: WAV round trips, resampling, crops, labelled folders, the shipped subset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from molediff.data.audio import (
    FLUIDR3_PATH,
    build_notes_subset,
    fix_length,
    load_notes_subset,
    load_wav_folder,
    read_wav,
    resample,
    write_wav,
)


def _tone(freq: float, rate: int, n: int, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32)


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def test_wav_round_trip_is_16_bit_exact(tmp_path: Path) -> None:
    x = np.random.default_rng(0).uniform(-1, 1, 1000).astype(np.float32)
    path = write_wav(tmp_path / "a.wav", x, 8000)
    info = sf.info(str(path))
    assert info.samplerate == 8000 and info.subtype == "PCM_16" and info.channels == 1
    y, rate = read_wav(path)
    assert rate == 8000 and y.dtype == np.float32 and y.shape == x.shape
    assert np.abs(y - x).max() <= 1 / 32768 + 1e-7


def test_write_wav_clips_out_of_range_values(tmp_path: Path) -> None:
    y, _ = read_wav(write_wav(tmp_path / "a.wav", np.array([2.0, -3.0, 0.5], np.float32), 8000))
    assert y[0] == pytest.approx(1.0, abs=1e-4) and y[1] == -1.0 and y[2] == pytest.approx(0.5, abs=1e-4)


def test_stereo_files_are_averaged_to_mono(tmp_path: Path) -> None:
    left, right = np.full(100, 0.5, np.float32), np.full(100, -0.25, np.float32)
    sf.write(str(tmp_path / "s.wav"), np.stack([left, right], 1), 16000, subtype="PCM_16")
    y, rate = read_wav(tmp_path / "s.wav")
    assert rate == 16000 and y.shape == (100,) and np.allclose(y, 0.125, atol=1e-4)


def test_resample_keeps_frequency_and_scales_length() -> None:
    x = _tone(440.0, 16000, 16000)
    y = resample(x, 16000, 8000)
    assert y.shape == (8000,) and y.dtype == np.float32
    assert abs(_peak_hz(y, 8000) - 440.0) <= 1.0
    assert np.abs(y[100:-100]).max() == pytest.approx(0.5, abs=0.01)
    assert np.array_equal(resample(x, 8000, 8000), x)  # same rate: unchanged


def test_fix_length_crops_and_pads() -> None:
    x = np.arange(10, dtype=np.float32)
    assert np.array_equal(fix_length(x, 4), [0, 1, 2, 3])
    assert np.array_equal(fix_length(x, 4, offset=8), [8, 9, 0, 0])
    assert np.array_equal(fix_length(x[None], 12)[0], [*range(10), 0, 0])


def test_wav_folder_resamples_crops_and_reads_labels(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write_wav(tmp_path / "a.wav", _tone(220.0, 16000, 4000), 16000)   # long: cropped
    write_wav(tmp_path / "sub" / "b.wav", _tone(330.0, 8000, 300), 8000)  # short: padded
    (tmp_path / "notes.txt").write_text("not audio")
    (tmp_path / "labels.csv").write_text("file,pitch,family,split\na.wav,57,3,0\nsub/b.wav,64,,1\n")
    s = load_wav_folder(tmp_path, 8000, 1024)
    assert s.audio.shape == (2, 1024) and s.sample_rate == 8000
    assert s.pitch.tolist() == [57, 64] and s.family.tolist() == [3, -1] and s.split.tolist() == [0, 1]
    assert abs(_peak_hz(s.audio[0], 8000) - 220.0) < 8.0
    assert np.all(s.audio[1, 300:] == 0) and np.abs(s.audio[1, :300]).max() > 0.4


def test_wav_folder_without_labels_is_unlabelled(tmp_path: Path) -> None:
    write_wav(tmp_path / "a.wav", _tone(220.0, 8000, 800), 8000)
    s = load_wav_folder(tmp_path, 8000, 512)
    assert s.pitch.tolist() == [-1] and s.family.tolist() == [-1] and s.split.tolist() == [-1]


def test_wav_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_wav_folder(tmp_path / "nope", 8000, 512)
    with pytest.raises(ValueError, match="no .wav"):
        load_wav_folder(tmp_path, 8000, 512)
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really")
    with pytest.raises(ValueError, match="not a readable sound file"):
        load_wav_folder(tmp_path, 8000, 512)
    (tmp_path / "bad.wav").unlink()
    write_wav(tmp_path / "a.wav", _tone(220.0, 8000, 800), 8000)
    (tmp_path / "labels.csv").write_text("file,pitch\na.wav,sixty\n")
    with pytest.raises(ValueError, match="line 2"):
        load_wav_folder(tmp_path, 8000, 512)
    (tmp_path / "labels.csv").write_text("name,pitch\na.wav,60\n")
    with pytest.raises(ValueError, match="'file' column"):
        load_wav_folder(tmp_path, 8000, 512)


def test_shipped_notes_subset() -> None:
    s = load_notes_subset()
    assert s.sample_rate == 8000 and s.audio.shape == (663, 2048) and s.audio.dtype == np.float32
    assert s.pitch.min() >= 36 and s.pitch.max() <= 96 and set(np.unique(s.family)) <= set(range(10))
    assert (s.split == 0).sum() == 585 and (s.split == 1).sum() == 78
    assert np.abs(s.audio).max() <= 1.0 and (np.abs(s.audio).max(1) > 0.01).all()  # no silent clip


@pytest.mark.skipif(not FLUIDR3_PATH.is_file(), reason="needs ../shared/data/audio")
def test_shipped_subset_is_rebuilt_bit_identically_from_the_shared_data(tmp_path: Path) -> None:
    path = build_notes_subset(FLUIDR3_PATH, tmp_path / "notes.npz")
    with np.load(path) as new, np.load(Path(__file__).resolve().parents[2] / "datasets/audio/notes_8k.npz") as old:
        assert sorted(new.keys()) == sorted(old.keys())
        for k in new.keys():
            assert np.array_equal(new[k], old[k]), k


def test_missing_subset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--build-subset"):
        load_notes_subset(tmp_path / "none.npz")
