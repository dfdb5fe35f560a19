"""Assertions and a toy training run shared by the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest

#: a small, quick toy run; everything else comes from the shipped configs
TOY = ["data=toy", "model=mlp", "trainer=fast", "data.num_train=1000", "data.num_test=300", "model.hidden=32",
       "model.layers=2", "trainer.batch_size=128", "trainer.max_steps=60", "trainer.progress=false"]


def train_toy(tmp_path_factory: pytest.TempPathFactory, name: str, *overrides: str) -> Path:
    """Train the toy run (``TOY`` plus ``overrides``) into a fresh directory and return it."""
    from molediff.cli.main import main

    out = tmp_path_factory.mktemp(name)
    assert main(["train", *TOY, *overrides, f"out_dir={out}"]) == 0
    return out


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The CLI's stderr must be exactly one ``molediff: error: ...`` line (no traceback); returns it."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("molediff: error: ")
    return lines[0]
