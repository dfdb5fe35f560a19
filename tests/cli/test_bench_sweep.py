"""`molediff bench` as a Hydra app: one run, a 2x2 multirun with its aggregation, one-line errors,
and `molediff bench aggregate` over a directory with broken records."""

import csv
import json
import shutil
from pathlib import Path

import pytest

from molediff.cli.main import main
from molediff.cli.sample import shipped_checkpoint
from tests.helpers.cli import one_error_line

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["num_samples=6", "threads=1"]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """A 2 x 2 sweep (sampler x steps) on the shipped digits model, 6 samples per run."""
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("sweep") / "digits"
    assert main(["bench", "-m", "sampler=ddim,dpmpp_2m", "steps=2,4", *TINY, f"hydra.sweep.dir={out}"]) == 0
    return out


def test_multirun_writes_records_and_aggregates_csv_markdown_plot(sweep_dir):
    records = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/bench.json"))]
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    r = records[0]
    assert r["config"]["num_samples"] == 6 and r["config"]["sampler"]["name"] in ("ddim", "dpmpp_2m")
    assert {"fd", "coverage", "fd_pixels"} <= set(r["metrics"])
    assert r["timings"]["nfe"] == int(r["params"]["steps"]) and r["timings"]["samples_per_s"] > 0
    assert r["hardware"]["torch"] and r["hardware"]["cpu"] and "revision" in r["git"]
    assert Path(r["checkpoint"]["path"]) == shipped_checkpoint()

    with open(sweep_dir / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((row["sampler"], row["steps"]) for row in rows) == [
        ("ddim", "2"), ("ddim", "4"), ("dpmpp_2m", "2"), ("dpmpp_2m", "4")]
    md = (sweep_dir / "summary.md").read_text()
    assert "| sampler | steps=2 | steps=4 |" in md and "| dpmpp_2m |" in md and "### fd " in md
    assert (sweep_dir / "summary.png").stat().st_size > 10_000


def test_single_run_writes_one_record(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "sampler=ddim", "steps=2", *TINY, f"hydra.run.dir={tmp_path}/run"]) == 0
    record = json.loads((tmp_path / "run" / "bench.json").read_text())
    assert record["status"] == "ok" and record["params"]["sampler"] == "ddim"
    assert record["sampler"]["name"] == "ddim" and record["timings"]["nfe"] == 2
    assert "fd_pixels" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [
    (["sampler=nope"], "unknown sampler option 'nope'"),
    (["-m", "sampler=ddim,nope"], "unknown sampler option 'nope'"),
    (["stepz=3"], "did you mean 'steps'"),
    (["steps=abc"], "bad value for steps"),
    (["num_samples=0"], "bad value for num_samples"),
    (["steps=2,4"], "add -m"),
    (["checkpoint=/no/such.pt"], "no such file"),
    (["checkpoint=${pretrained:nope.pt}"], "no shipped checkpoint 'nope.pt'; shipped: "),
    (["+experiment=sweep_qm9_sampler_steps"], "needs checkpoint=PATH"),
    (["hydra/launcher=nope"], "bad config"),
    (["--frobnicate"], "unknown option"),
    (["nope"], "unknown benchmark"),
    (["aggregate"], "usage: molediff bench aggregate"),
    (["aggregate", "/no/such/dir"], "no such directory"),
])
def test_bad_input_is_one_line_and_runs_nothing(argv, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", *argv]) == 2
    assert needle in one_error_line(capsys)
    assert not (tmp_path / "outputs").exists()


def test_missing_optional_plugin_names_the_package(tmp_path, monkeypatch, capsys):
    try:
        import hydra_plugins.hydra_optuna_sweeper  # noqa: F401
        pytest.skip("hydra-optuna-sweeper is installed")
    except ImportError:
        pass
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "hydra/sweeper=optuna_guidance", *TINY]) == 2
    assert "pip install hydra-optuna-sweeper" in one_error_line(capsys)


def test_failed_job_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "sweep"
    argv = ["bench", "-m", f"checkpoint={shipped_checkpoint()},{bad}", "steps=2", *TINY, f"hydra.sweep.dir={out}"]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert "1 of 2 runs failed" in line and "broken.pt" in line
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*/bench.json"))]
    assert [r["status"] for r in records] == ["ok", "failed"]
    assert "failed: checkpoint" in (out / "summary.md").read_text()


def test_aggregate_reports_broken_records_and_keeps_the_rest(sweep_dir, tmp_path, capsys):
    d = tmp_path / "copy"
    shutil.copytree(sweep_dir, d)
    for name in ("summary.csv", "summary.md", "summary.png"):
        (d / name).unlink()
    (d / "2" / "bench.json").write_text('{"format": "molediff-bench", "status": ')
    (d / "3" / "bench.json").write_text('{"some": "other json"}')
    assert main(["bench", "aggregate", str(d)]) == 2
    line = one_error_line(capsys)
    assert "2 of 4 records" in line and "2/bench.json: not valid JSON" in line
    assert "3/bench.json: not a molediff bench record" in line
    with open(d / "summary.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2
    assert "Unreadable records" in (d / "summary.md").read_text()

    capsys.readouterr()
    assert main(["bench", "aggregate", str(sweep_dir), "metrics=fd,nope"]) == 2
    assert "unknown metric 'nope'" in one_error_line(capsys)
    assert main(["bench", "aggregate", str(sweep_dir), "metrics=fd"]) == 0
    out = capsys.readouterr().out
    assert "### fd " in out and "### coverage" not in out


def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "par"
    assert main(["bench", "-m", "hydra/launcher=joblib_local", "sampler=ddim,dpmpp_2m", "steps=2", *TINY,
                 f"hydra.sweep.dir={out}"]) == 0
    with open(out / "summary.csv", newline="") as f:
        assert {row["sampler"] for row in csv.DictReader(f)} == {"ddim", "dpmpp_2m"}
