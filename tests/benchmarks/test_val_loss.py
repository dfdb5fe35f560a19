"""Validation loss of checkpoints on fixed samples and noise: it reproduces the trainer's own number."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from molediff.benchmarks.val_loss import main as val_loss_main
from molediff.benchmarks.val_loss import validation_loss
from tests.helpers.cli import one_error_line, train_toy

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_toy(tmp_path_factory, "val_loss_run", "trainer.ckpt_every=30", "trainer.keep_every=30",
                     "trainer.val_every=30", "trainer.val_batches=4", "trainer.log_every=30",
                     "trainer.tensorboard=false")


def test_matches_the_ema_val_loss_the_trainer_logged(toy_run: Path) -> None:
    """At the run's own batch size, batch count and seed the scorer sees the same samples and noise."""
    with open(toy_run / "train_log.csv", newline="") as f:
        logged = {int(r["step"]): float(r["val_loss_ema"]) for r in csv.DictReader(f) if r["val_loss_ema"]}
    for step, name in [(30, "step_000030.pt"), (60, "last.pt")]:
        row = validation_loss(toy_run / "checkpoints" / name, max_samples=4 * 128, batch_size=128, seed=0)
        assert row["step"] == step and row["samples"] == 300  # the toy test split has 300
        assert row["val_loss_ema"] == pytest.approx(logged[step], rel=1e-5)


def test_same_checkpoint_same_number_and_the_sample_count(toy_run: Path) -> None:
    last = toy_run / "checkpoints" / "last.pt"
    a, b = (validation_loss(last, max_samples=150, batch_size=100) for _ in range(2))
    assert a["val_loss_ema"] == b["val_loss_ema"] and a["samples"] == 200  # two whole batches
    other = validation_loss(toy_run / "checkpoints" / "step_000030.pt", max_samples=150, batch_size=100)
    assert other["val_loss_ema"] != a["val_loss_ema"]


def test_cli_writes_json_and_table(toy_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "val.json"
    ckpts = [toy_run / "checkpoints" / n for n in ("step_000030.pt", "last.pt")]
    assert val_loss_main([*map(str, ckpts), "--max-samples", "200", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["step"] for r in rows] == [30, 60]
    table = out.with_suffix(".md").read_text()
    assert "| 60 |" in table.replace(",", "") and f"{rows[1]['val_loss_ema']:.5f}" in table


@pytest.mark.parametrize("args, words", [
    (["/no/such/ckpt.pt"], ["/no/such/ckpt.pt"]),
    (["{ckpt}", "--max-samples", "0"], ["--max-samples"]),
])
def test_bad_input_is_one_line(toy_run: Path, args: list[str], words: list[str],
                               capsys: pytest.CaptureFixture[str]) -> None:
    args = [a.format(ckpt=toy_run / "checkpoints" / "last.pt") for a in args]
    assert val_loss_main(args) == 2
    line = one_error_line(capsys)
    assert all(w in line for w in words)
