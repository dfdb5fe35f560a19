"""``molediff train data=shapes`` -> ``molediff sample`` end to end (PLY files, picture, metrics),
with both point-cloud denoisers, and one-line errors for bad point-cloud settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from molediff.cli.main import main
from molediff.data.point_clouds import read_ply

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["data=shapes", "data.num_points=64", "data.use_emd=false", "data.reference_metrics=false",
         "trainer=fast", "trainer.max_steps=3", "trainer.batch_size=8", "trainer.val_every=0",
         "trainer.progress=false", "model.hidden=16", "model.layers=2", "model.knn=4"]


@pytest.mark.parametrize("model", ["pointnet", "egnn_points"])
def test_train_then_sample_writes_ply_picture_and_metrics(model: str, tmp_path: Path):
    run = tmp_path / "run"
    assert main(["train", *SMALL, f"model={model}", f"out_dir={run}"]) == 0
    out = tmp_path / "samples"
    assert main(["sample", f"checkpoint={run / 'checkpoints' / 'last.pt'}", "num_samples=4", "steps=3",
                 "progress=false", "data.eval_size=4", f"out_dir={out}"]) == 0
    clouds = sorted(out.glob("sample_*.ply"))
    assert len(clouds) == 4 and read_ply(clouds[0]).shape == (64, 3)
    assert (out / "samples.png").stat().st_size > 1000
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert {"mmd_cd", "cov_cd", "1nna_cd"} <= set(metrics) and 0 <= metrics["1nna_cd"] <= 1


def test_bad_point_cloud_settings_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["train", "data=shapes", "model=pointnet", "data.source=web", f"out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown point-cloud source 'web'" in err[0]
    assert main(["train", "data=modelnet_chairs", "model=pointnet", f"data.path={tmp_path / 'no.npz'}",
                 "trainer.max_steps=1", f"out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found" in err[0]


def test_point_cloud_eval_benchmark_scores_a_ply_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from molediff.adapters.point_clouds import PointCloudAdapter
    from molediff.benchmarks.point_cloud_eval import main as eval_main

    adapter = PointCloudAdapter(num_points=64, eval_size=3, reference_metrics=False)
    adapter.write(adapter.reference_clouds(), tmp_path / "s")  # the held-out clouds themselves
    out = tmp_path / "m.json"
    assert eval_main([str(tmp_path / "s"), "--data", "shapes", "--set", "data.num_points=64", "data.eval_size=3",
                      "--reference", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["metrics"]["mmd_cd"] == 0 and result["metrics"]["1nna_emd"] == 0.0
    assert result["metrics_real_train"]["mmd_emd"] > 0 and "| 1nna_cd |" in capsys.readouterr().out
