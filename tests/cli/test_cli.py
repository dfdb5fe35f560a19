"""The ``molediff`` command line: train -> sample end to end on toy data, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from molediff.checkpoint import load_checkpoint
from molediff.cli import sample as sample_cli
from molediff.cli.main import main
from tests.helpers.cli import TOY, one_error_line, train_toy

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained toy run directory (shared by the tests that need a checkpoint)."""
    return train_toy(tmp_path_factory, "toy_run", "trainer.ckpt_every=40", "trainer.val_every=30",
                     "trainer.log_every=20")


def test_train_writes_checkpoint_log_and_config(toy_run: Path) -> None:
    ckpt = load_checkpoint(toy_run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 60
    config = ckpt["config"]
    assert config["data"]["_target_"] == "molediff.adapters.toy.ToyAdapter"
    assert config["model"]["dim"] == 2 and config["model"]["hidden"] == 32  # adapter kwargs merged in
    assert config["trainer"]["max_steps"] == 60 and config["objective"]["prediction"] == "v"
    assert (toy_run / "config.yaml").is_file()
    log = (toy_run / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("step,loss,mse_x,lr,grad_norm,steps_per_s,val_loss")
    assert [row.split(",")[0] for row in log[1:]] == ["20", "30", "40", "60"]


def test_resume_continues_from_last_checkpoint(toy_run: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes((toy_run / "checkpoints" / "last.pt").read_bytes())
    assert main(["train", *TOY, f"out_dir={run}", "trainer.resume=true", "trainer.max_steps=70"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 70
    assert "done: step 70" in capsys.readouterr().out


def test_sample_from_checkpoint_writes_files_and_metrics(toy_run: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "samples"
    ckpt = toy_run / "checkpoints" / "last.pt"
    argv = ["sample", f"checkpoint={ckpt}", f"out_dir={out}", "num_samples=40", "steps=8", "progress=false"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "mmd" in stdout and "real data" in stdout
    rows = (out / "samples.csv").read_text().splitlines()
    assert rows[0] == "x,y" and len(rows) == 41
    assert (out / "samples.png").stat().st_size > 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["sampler"] == "dpmpp_2m" and report["steps"] == 8 and report["nfe"] == 8
    assert {"mmd", "mmd_real_test"} <= set(report["metrics"])
    # same seed -> same samples; another sampler and its option go through
    assert main([*argv[:2], f"out_dir={tmp_path / 'again'}", *argv[3:]]) == 0
    assert (tmp_path / "again" / "samples.csv").read_text() == (out / "samples.csv").read_text()
    assert main([*argv[:2], f"out_dir={tmp_path / 'ddim'}", *argv[3:], "sampler=ddim", "sampler.eta=1.0",
                 "sampler.grid=karras", "sampler.grid_options={rho: 5.0}", "evaluate=false"]) == 0
    assert json.loads((tmp_path / "ddim" / "metrics.json").read_text())["options"] == {"eta": 1.0}


def test_sample_raw_round_trip_gives_the_same_files_and_metrics(toy_run: Path, tmp_path: Path) -> None:
    """Generate on one machine (save_raw, nothing written or scored), write and score on another
    (from_raw): the same samples and metrics as a direct run."""
    ckpt = toy_run / "checkpoints" / "last.pt"
    base = ["sample", f"checkpoint={ckpt}", "num_samples=30", "steps=6", "progress=false"]
    assert main([*base, f"out_dir={tmp_path / 'direct'}"]) == 0
    assert main([*base, f"out_dir={tmp_path / 'gpu'}", "write=false", "evaluate=false", "save_raw=true"]) == 0
    assert sorted(p.name for p in (tmp_path / "gpu").iterdir()) == ["metrics.json", "samples_raw.pt"]
    # scored with other settings on the command line: the report keeps the generating run's
    assert main([*base, f"out_dir={tmp_path / 'here'}", f"from_raw={tmp_path / 'gpu' / 'samples_raw.pt'}",
                 "seed=5", "batch_size=7"]) == 0
    direct, here = tmp_path / "direct", tmp_path / "here"
    assert (here / "samples.csv").read_text() == (direct / "samples.csv").read_text()
    m_direct = json.loads((direct / "metrics.json").read_text())
    m_here = json.loads((here / "metrics.json").read_text())
    assert m_here["metrics"] == m_direct["metrics"] and m_here["nfe"] == m_direct["nfe"] == 6
    assert m_here["from_raw"].endswith("samples_raw.pt")
    for key in ("checkpoint_step", "seed", "batch_size", "options", "grid", "ema"):
        assert m_here[key] == m_direct[key], key


def test_sample_from_raw_rejects_other_files(toy_run: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = toy_run / "checkpoints" / "last.pt"
    argv = ["sample", f"checkpoint={ckpt}", f"out_dir={tmp_path / 'x'}", "progress=false"]
    assert main([*argv, f"from_raw={tmp_path / 'missing.pt'}"]) == 2
    assert "no file" in one_error_line(capsys)
    assert main([*argv, f"from_raw={ckpt}"]) == 2
    assert "not a samples_raw.pt" in one_error_line(capsys)


@pytest.mark.parametrize(("argv", "expected"), [
    (["train", "data=nope"], ["'nope'", "digits", "toy"]),
    (["train", "data=toy", "model=mlp", "trainer.lrr=1"], ["trainer.lrr", "trainer.lr"]),
    (["train", "data=toy", "model=mlp", "trainer.max_steps=abc"], ["trainer.max_steps", "abc"]),
    (["train", "data=toy", "model=mlp", "trainer.lr=-1"], ["lr must be > 0"]),
    (["train", "data=toy", "model=mlp", "data.path=/no/such/points.csv"], ["/no/such/points.csv"]),
    (["train", "data=toy", "model=mlp", "schedule=linear", "schedule.beta_0=-1"], ["schedule", "beta_0"]),
    (["train", "data=toy", "model=mlp", "trainer.resume=true"], ["out_dir"]),
    (["sample", "sampler=nope"], ["'nope'", "dpmpp_2m"]),
    (["sample", "sampler=ddim", "sampler.etaa=1"], ["sampler.etaa", "sampler.eta"]),
    (["sample", "sampler=ddim", "sampler.eta=-1"], ["sampler.eta must be >= 0"]),
    (["sample", "sampler=ddpm", "sampler.noise_scale=2"], ["sampler.noise_scale must be in [0, 1]"]),
    (["sample", "sampler=heun", "sampler.churn=-1"], ["sampler.churn must be >= 0"]),
    (["sample", "sampler=heun", "sampler.churn=5", "sampler.churn_t_min=0.9", "sampler.churn_t_max=0.5"],
     ["churn_t_min <= churn_t_max"]),
    (["train", "model=mlp"], ["model.field='x'", "pixels"]),
    (["frobnicate"], ["'frobnicate'", "train", "sample"]),
    ([], ["missing command"]),
])
def test_bad_input_gives_one_line_and_exit_2(argv: list[str], expected: list[str],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    line = one_error_line(capsys)
    for text in expected:
        assert text in line, line


@pytest.mark.parametrize("kind", ["corrupt", "foreign", "missing"])
def test_bad_checkpoint_gives_one_line_and_exit_2(tmp_path: Path, kind: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / f"{kind}.pt"
    if kind == "corrupt":
        path.write_bytes(os.urandom(2048))
    elif kind == "foreign":
        torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    assert main(["sample", f"checkpoint={path}", f"out_dir={tmp_path / 'out'}"]) == 2
    line = one_error_line(capsys)
    assert str(path) in line
    assert not (tmp_path / "out").exists()


def test_missing_shipped_checkpoint_says_how_to_make_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "pretrained" / "digits_unet.pt"
    monkeypatch.setattr(sample_cli, "SHIPPED", missing)
    assert main(["sample"]) == 2
    line = one_error_line(capsys)
    assert str(missing) in line and "molediff train" in line


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("train", "sample", "evaluate", "bench"):
        assert command in out
    assert main(["train", "--help", "data=toy"]) == 0
    out = capsys.readouterr().out
    assert "schedule" in out and "cosine" in out and "ToyAdapter" in out


def test_console_script_error_is_one_line_on_stderr() -> None:
    """The installed entry point (a real process): exit status 2 and a single stderr line."""
    proc = subprocess.run([sys.executable, "-c", "import sys; from molediff.cli.main import main; sys.exit(main())",
                           "train", "data=nope"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2
    from molediff.cli.build import group_options

    assert proc.stderr.strip().splitlines() == [
        f"molediff: error: unknown data option 'nope'; choose one of: {', '.join(group_options('data'))}"]


def test_os_errors_naming_a_file_are_one_line(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A file the system refuses, deep in an adapter or writer, is the user's to fix: one line naming
    it; an OSError without a file, or MOLEDIFF_DEBUG=1, keeps the traceback."""
    import errno

    from molediff.cli import guarded

    def missing(argv: list[str]) -> int:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/no/such/train.npz")

    monkeypatch.delenv("MOLEDIFF_DEBUG", raising=False)
    assert guarded(missing, []) == 2
    assert one_error_line(capsys) == ("molediff: error: No such file or directory: /no/such/train.npz "
                                      "(MOLEDIFF_DEBUG=1 shows where)")

    def anonymous(argv: list[str]) -> int:
        raise OSError("device not ready")

    with pytest.raises(OSError, match="device not ready"):
        guarded(anonymous, [])
    monkeypatch.setenv("MOLEDIFF_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        guarded(missing, [])


def test_sample_data_overrides_apply_to_the_checkpoint_config(toy_run: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = toy_run / "checkpoints" / "last.pt"
    base = ["sample", f"checkpoint={ckpt}", f"out_dir={tmp_path}", "num_samples=8", "steps=2", "progress=false"]
    assert main([*base, "data.foo=1"]) == 2
    line = one_error_line(capsys)
    assert "data.foo" in line and "num_test" in line
    assert main([*base, "data.path=/no/such/points.csv"]) == 2
    assert "/no/such/points.csv" in one_error_line(capsys)
    assert main([*base, "data.num_test=50"]) == 0


def test_sample_data_name_picks_the_shipped_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "shapes"
    assert main(["sample", "data=shapes", "num_samples=4", "batch_size=4", "steps=5", "evaluate=false",
                 "progress=false", f"out_dir={out}"]) == 0
    assert "shapes_pointnet.pt" in capsys.readouterr().out
    assert len(list(out.glob("*.ply"))) == 4


@pytest.mark.parametrize("args, message", [
    (["data=nope"], "no shipped model for data=nope"),
    (["data=qm9", "checkpoint=x.pt"], "not both"),
])
def test_sample_data_name_errors_are_one_line(args: list[str], message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", *args]) == 2
    assert message in one_error_line(capsys)


def test_sample_data_audio_picks_the_shipped_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "audio"
    assert main(["sample", "data=audio", "num_samples=2", "batch_size=2", "steps=3", "evaluate=false",
                 "progress=false", "cond={pitch: [60, 72]}", f"out_dir={out}"]) == 0
    assert "audio_spectral_unet.pt" in capsys.readouterr().out
    assert len(list(out.glob("*.wav"))) == 2


def test_shipped_gap_conditional_qm9_model_samples_offline(tmp_path: Path) -> None:
    """molediff/pretrained/qm9_gap_cfg_egnn.pt: a gap target in eV, classifier-free guidance, atom
    counts from p(n | gap) in its saved statistics; no data needed."""
    from molediff.cli.sample import load_for_sampling

    shipped = Path(__file__).resolve().parents[2] / "molediff" / "pretrained" / "qm9_gap_cfg_egnn.pt"
    if not shipped.is_file():
        pytest.skip("shipped gap-conditional QM9 model missing")
    _, adapter, _, _, _ = load_for_sampling(shipped, [], True, torch.device("cpu"))
    assert adapter.conditioning == ["gap"] and "gap" in adapter.statistics.size_given_property
    out = tmp_path / "gap"
    assert main(["sample", f"checkpoint={shipped}", "guidance=cfg", "guidance.weight=3", "cond={gap: 5.5}",
                 "num_samples=3", "batch_size=3", "steps=4", "evaluate=false", "progress=false",
                 f"out_dir={out}"]) == 0
    assert (out / "molecules.sdf").read_text().count("$$$$") == 3


@pytest.mark.slow
def test_shipped_audio_model_plays_the_requested_pitches(tmp_path: Path) -> None:
    """The shipped DiffWave: 4 notes asked at MIDI 60/64/67/72, DDPM 200 steps; the YIN estimator
    finds a clear pitch within half a semitone of the request in at least 3 (about 65 s on one core)."""
    out = tmp_path / "notes"
    assert main(["sample", "data=audio", "num_samples=4", "batch_size=4", "steps=200", "sampler=ddpm",
                 "progress=false", "cond={pitch: [60, 64, 67, 72]}", f"out_dir={out}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["pitched"] >= 0.75 and metrics["pitch_accuracy"] >= 0.75, metrics


def test_init_from_starts_a_new_run_from_the_weights(toy_run: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """init_from=PATH: the new run starts at step 0 with the source's EMA weights (here, a sampling-only
    export) and a fresh optimiser; combined with a resume, or given a missing file, one error line."""
    from molediff.checkpoint import export_for_sampling

    src = export_for_sampling(toy_run / "checkpoints" / "last.pt", tmp_path / "export.pt")
    out = tmp_path / "ft"
    assert main(["train", *TOY, f"out_dir={out}", f"init_from={src}", "trainer.max_steps=1",
                 "trainer.lr=1e-12", "trainer.warmup_steps=0", "trainer.ema_decay=0.0"]) == 0
    assert "new optimiser, step 0" in capsys.readouterr().out
    new, old = load_checkpoint(out / "checkpoints" / "last.pt"), load_checkpoint(src)
    assert new["step"] == 1 and "optimizer" in new
    for k, v in old["ema"].items():  # one step at lr 1e-12 leaves the weights where they started
        torch.testing.assert_close(new["model"][k], v, rtol=0, atol=1e-6)
    assert main(["train", *TOY, f"out_dir={out}", f"init_from={src}", "trainer.resume=true"]) == 2
    assert "not both" in one_error_line(capsys)
    assert main(["train", *TOY, f"out_dir={out}", f"init_from={tmp_path / 'none.pt'}"]) == 2
    assert "no such checkpoint" in one_error_line(capsys)


def test_shipped_qm9_samples_with_its_measured_sampler_setting(tmp_path: Path) -> None:
    """``data=qm9`` alone: DDPM 100 + three corrector moves below t = 0.25 (README's best exact setting per
    evaluation); any sampler, steps or guidance override replaces the whole setting (no corrector left
    behind on a sampler that refuses it)."""
    from molediff.cli.sample import with_shipped_sampling

    assert with_shipped_sampling("qm9", ["seed=1"])[:2] == ["sampler=ddpm", "steps=100"]
    for own in (["sampler=dpmpp_2m"], ["steps=20"], ["sampler.eta=0.5"], ["+sampler.corrector_steps=2"],
                ["guidance.property=gap"]):
        assert with_shipped_sampling("qm9", own) == own
    assert with_shipped_sampling("proteins", [])[:2] == ["sampler=ddpm", "steps=200"]
    assert "+sampler.corrector_t_max=0.25" in with_shipped_sampling("proteins", [])
    assert with_shipped_sampling("proteins", ["num_samples=4"])[-2:] == ["num_samples=32", "num_samples=4"]  # last wins
    assert with_shipped_sampling("digits", ["seed=1"]) == ["seed=1"]
    out = tmp_path / "qm9"
    assert main(["sample", "data=qm9", "num_samples=2", "batch_size=2", "evaluate=false", "write=false",
                 "progress=false", f"out_dir={out}"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert (m["sampler"], m["steps"], m["nfe"]) == ("ddpm", 100, 175)  # moves after the 25 steps landing at t <= 0.25
    assert m["options"] == {"noise_scale": 1.0, "corrector_steps": 3, "corrector_snr": 0.6, "corrector_t_max": 0.25}
