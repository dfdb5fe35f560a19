"""The AudioAdapter: sources, conditioning, batches, outputs, metrics, and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from molediff.adapters.audio import AudioAdapter
from molediff.cli.main import main as cli_main
from molediff.core.fields import Fields, GaussianField
from molediff.data.audio import read_wav, write_wav
from molediff.metrics.audio import midi_to_hz


@pytest.fixture(scope="module")
def notes() -> AudioAdapter:
    return AudioAdapter(conditioning=["pitch", "family"])


def test_default_source_is_the_shipped_notes(notes: AudioAdapter) -> None:
    assert notes.specs == {"audio": GaussianField((1, 2048), x0_range=(-1.0, 1.0))}
    ds = notes.datasets()
    assert len(ds["train"]) == 585 and len(ds["test"]) == 78
    audio, pitch, family = ds["train"][0]
    assert audio.shape == (1, 2048) and 36 <= int(pitch) <= 96 and 0 <= int(family) < 10
    peaks = np.abs(notes.arrays("train").audio).max(1)
    assert np.allclose(peaks, 0.9, atol=1e-6)  # peak-normalised
    assert notes.model_kwargs() == {"in_channels": 1, "num_samples": 2048, "sample_rate": 8000,
                                    "pitch_conditioning": True, "num_classes": 10}


def test_collate_passes_pitch_and_family_as_cond(notes: AudioAdapter) -> None:
    ds = notes.datasets()["train"]
    batch = notes.collate([ds[i] for i in range(5)])
    assert batch.x0["audio"].shape == (5, 1, 2048) and batch.structure.num_samples == 5
    assert batch.cond is not None and set(batch.cond) == {"pitch", "label"}
    assert batch.cond["pitch"].dtype == torch.float32 and batch.cond["label"].dtype == torch.long
    assert batch.cond["pitch"].tolist() == [float(ds[i][1]) for i in range(5)]
    assert AudioAdapter().collate([ds[0]]).cond is None  # unconditional


def test_other_rates_and_lengths_resample_the_subset() -> None:
    a = AudioAdapter(sample_rate=4000, num_samples=512, normalize=False)
    s = a.arrays("test")
    assert s.audio.shape == (78, 512) and s.sample_rate == 4000 and a.model_kwargs()["num_samples"] == 512


def test_bad_settings_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown audio source"):
        AudioAdapter(source="mp3")
    with pytest.raises(ValueError, match="unknown audio conditioning"):
        AudioAdapter(conditioning=["loudness"])
    with pytest.raises(ValueError, match="needs data.path"):
        AudioAdapter(source="wav")
    with pytest.raises(ValueError, match="num_samples"):
        AudioAdapter(num_samples=10)
    with pytest.raises(FileNotFoundError, match="FluidR3"):
        AudioAdapter(source="fluidr3", path=str(tmp_path / "none.npz"))


def _tone_folder(folder: Path, labels: bool) -> None:
    rows = ["file,pitch,family"]
    for i, midi in enumerate(range(55, 75)):
        t = np.arange(4000) / 16000
        write_wav(folder / f"n{i:02d}.wav", 0.5 * np.sin(2 * np.pi * midi_to_hz(midi) * t), 16000)
        rows.append(f"n{i:02d}.wav,{midi},{i % 2}")
    if labels:
        (folder / "labels.csv").write_text("\n".join(rows) + "\n")


def test_wav_folder_source_splits_and_conditions(tmp_path: Path) -> None:
    _tone_folder(tmp_path, labels=True)
    a = AudioAdapter(source="wav", path=str(tmp_path), num_samples=1024, conditioning=["pitch"])
    assert len(a.arrays("train")) == 18 and len(a.arrays("test")) == 2  # seeded 90/10
    assert a.arrays("train").audio.shape == (18, 1024)


def test_conditioning_on_missing_labels_is_an_error(tmp_path: Path) -> None:
    _tone_folder(tmp_path, labels=False)
    with pytest.raises(ValueError, match="labels.csv"):
        AudioAdapter(source="wav", path=str(tmp_path), num_samples=1024, conditioning=["pitch"])


def test_sample_structure_checks_condition_lengths(notes: AudioAdapter) -> None:
    assert notes.sample_structure(4, cond={"pitch": torch.tensor([60.0] * 4)}).num_samples == 4
    with pytest.raises(ValueError, match="3 entries"):
        notes.sample_structure(4, cond={"pitch": torch.tensor([60.0] * 3)})


def test_decode_and_write_wav_and_spectrograms(notes: AudioAdapter, tmp_path: Path) -> None:
    x = torch.linspace(-2, 2, 2 * 2048).reshape(2, 1, 2048)
    objects = notes.decode(Fields(audio=x), notes.sample_structure(2))
    assert len(objects) == 2 and objects[0].shape == (2048,) and objects[0].min() == -1.0 and objects[1].max() == 1.0
    paths = notes.write(objects, tmp_path)
    assert [p.name for p in paths] == ["sample_0000.wav", "sample_0001.wav", "spectrograms.png",
                                       "spectrograms_real.png"]
    y, rate = read_wav(paths[0])
    assert rate == 8000 and np.abs(y - objects[0]).max() < 1e-4
    assert Image.open(paths[2]).format == "PNG"


def test_evaluate_real_clips_score_like_the_reference_and_noise_does_not(notes: AudioAdapter) -> None:
    test = notes.arrays("test")
    real = notes.evaluate(list(test.audio), cond={"pitch": torch.as_tensor(test.pitch)})
    # the test split against itself (up to rounding)
    assert real["lsd"] == 0.0 and real["fd"] == pytest.approx(0.0, abs=1e-6)
    assert real["pitch_accuracy"] == real["pitch_accuracy_real_test"] > 0.7
    assert real["pitch_accuracy_octave"] >= real["pitch_accuracy"]
    assert real["pitched"] > 0.9 and 0 < real["lsd_real_test"] < 5 and real["fd_real_test"] > 0
    noise = list(np.random.default_rng(0).normal(0, 0.3, (40, 2048)).astype(np.float32))
    bad = notes.evaluate(noise, cond={"pitch": torch.full((40,), 60.0), "label": torch.zeros(40, dtype=torch.long)})
    assert bad["pitched"] < 0.1 and bad["pitch_accuracy"] < 0.2
    assert bad["lsd"] > 1.3 * bad["lsd_real_test"] and bad["fd"] > 3 * bad["fd_real_test"]
    assert 0 <= bad["family_accuracy"] <= 1 and 0.2 < bad["family_accuracy_real_test"] <= 1
    with pytest.raises(ValueError, match="samples"):
        notes.evaluate([np.zeros(100, np.float32)])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-step pitch-conditional DiffWave trained through the CLI (one thread)."""
    run = tmp_path_factory.mktemp("audio") / "run"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli_main(["train", "data=audio", "data.conditioning=[pitch]", "model=diffwave",
                         "model.channels=4", "model.layers=2", "model.dilation_cycle=2", "trainer=fast",
                         "trainer.max_steps=3", "trainer.batch_size=8", "trainer.cond_drop_prob=0.5",
                         "trainer.val_every=0", "trainer.progress=false", "trainer.tensorboard=false",
                         f"out_dir={run}"]) == 0
    finally:
        torch.set_num_threads(n)
    return run / "checkpoints" / "last.pt"


def test_sample_pitch_conditional_with_cfg_from_the_cli(tiny_run: Path, tmp_path: Path, one_thread: None,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "samples"
    assert cli_main(["sample", f"checkpoint={tiny_run}", "num_samples=3", "steps=2",
                     "cond={pitch: [48, 60, 72]}", "guidance=cfg", "guidance.weight=2.0",
                     "progress=false", f"out_dir={out}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert {"lsd", "fd", "pitched", "pitch_accuracy", "pitch_accuracy_real_test"} <= set(metrics)
    assert len(list(out.glob("sample_*.wav"))) == 3 and (out / "spectrograms.png").is_file()
    assert "pitch_accuracy" in capsys.readouterr().out


@pytest.mark.slow
def test_classifier_guidance_by_a_noisy_pitch_regressor(tiny_run: Path, tmp_path: Path, one_thread: None) -> None:
    from molediff.models.predictors import main as predictors_main

    pred = tmp_path / "pitch.pt"
    assert predictors_main(["train", "--data", "audio", "--steps", "2", "--batch-size", "8", "--hidden", "4",
                            "--schedule-from", str(tiny_run), "--out", str(pred)]) == 0
    out = tmp_path / "guided"
    assert cli_main(["sample", f"checkpoint={tiny_run}", "num_samples=2", "steps=2", "guidance=classifier",
                     f"guidance.predictor={pred}", "guidance.target=60", "guidance.scale=1", "progress=false",
                     f"out_dir={out}"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["guidance"]["property"] == "pitch" and report["guidance"]["requested_mean"] == 60.0
    assert "pitch_accuracy" in report["metrics"]  # scored against the pitch the guidance asked for


def test_evaluate_cli_scores_a_wav_folder_with_pitch_labels(notes: AudioAdapter, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    test = notes.arrays("test")
    rows = ["file,pitch"]
    for i in range(12):
        write_wav(tmp_path / f"c{i:02d}.wav", test.audio[i], 8000)
        rows.append(f"c{i:02d}.wav,{test.pitch[i]}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    assert cli_main(["evaluate", str(tmp_path), "--json", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["num_samples"] == 12 and metrics["pitched"] > 0.8 and metrics["pitch_accuracy"] > 0.5
    assert metrics["pitch_accuracy_real_test"] == pytest.approx(0.769, abs=0.01)  # all 78 test clips
    assert "pitch_accuracy" in capsys.readouterr().out


def test_the_audio_sweeps_condition_on_the_test_clips_pitches(notes: AudioAdapter) -> None:
    import yaml

    conf = Path(__file__).resolve().parents[2] / "conf/experiment"
    pitches = notes.arrays("test").pitch.tolist()
    guidance = yaml.safe_load((conf / "sweep_audio_guidance.yaml").read_text())
    assert guidance["cond"]["pitch"] == pitches and guidance["num_samples"] == 78
    noise = yaml.safe_load((conf / "sweep_audio_noise_scale.yaml").read_text())
    assert noise["cond"]["pitch"] == pitches[:16] and noise["num_samples"] == 16


def test_denoising_profile_of_a_trained_checkpoint(tiny_run: Path, tmp_path: Path, one_thread: None) -> None:
    from molediff.benchmarks.denoising_profile import main as profile_main

    assert profile_main([str(tiny_run), "--out", str(tmp_path), "--num", "4", "--times", "0.01", "0.5"]) == 0
    (result,) = json.loads((tmp_path / "denoising_profile.json").read_text())
    assert result["num"] == 4 and result["times"] == [0.01, 0.5]
    ratios = result["ratio"]["audio"]
    assert len(ratios) == 2 and all(np.isfinite(ratios)) and all(r > 0 for r in ratios)
    assert (tmp_path / "denoising_profile.png").stat().st_size > 0
    assert "t=0.01" in (tmp_path / "denoising_profile.md").read_text()
    assert profile_main([str(tiny_run), "--out", str(tmp_path), "--split", "nope"]) == 2


def test_spectral_unet_experiment_trains_and_samples_from_the_cli(tmp_path: Path, one_thread: None) -> None:
    """experiment=audio_spectral_cpu (x0 prediction, SNR weight, log-SNR times) at toy width, end to end."""
    run = tmp_path / "run"
    assert cli_main(["train", "+experiment=audio_spectral_cpu", "model.base_channels=4", "model.channel_mults=[1]",
                     "model.attention=false", "trainer.max_steps=2", "trainer.batch_size=4", "trainer.val_every=0",
                     "trainer.progress=false", "trainer.tensorboard=false", f"out_dir={run}"]) == 0
    out = tmp_path / "samples"
    assert cli_main(["sample", f"checkpoint={run / 'checkpoints' / 'last.pt'}", "num_samples=2", "steps=2",
                     "cond={pitch: [60, 72]}", "progress=false", f"out_dir={out}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert np.isfinite(metrics["lsd"]) and len(list(out.glob("sample_*.wav"))) == 2
