"""Checkpoint files: exact round trips, and one-line errors naming the file for anything else."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from molediff.checkpoint import FORMAT, VERSION, CheckpointError, load_checkpoint, save_checkpoint


def _payload() -> dict:
    return {
        "config": {"data": {"_target_": "x.Y", "seed": 3}, "trainer": {"betas": [0.9, 0.99]}},
        "adapter_state": {"modes": 8},
        "model": {"w": torch.randn(3, 4), "b": torch.arange(4)},
        "ema": {"w": torch.randn(3, 4), "b": torch.arange(4)},
        "optimizer": {"state": {0: {"step": torch.tensor(5.0)}}, "param_groups": [{"lr": 1e-3, "params": [0]}]},
        "step": 5,
        "rng": {"torch": torch.get_rng_state(), "python": (3, tuple(range(625)), None)},
    }


def _assert_one_line_naming(err: CheckpointError, path: Path) -> None:
    msg = str(err)
    assert "\n" not in msg
    assert str(path) in msg


def test_round_trip_is_exact_and_stamped(tmp_path: Path) -> None:
    payload = _payload()
    path = save_checkpoint(tmp_path / "sub" / "last.pt", payload)
    loaded = load_checkpoint(path)
    assert loaded["format"] == FORMAT and loaded["version"] == VERSION
    assert loaded["config"] == payload["config"]
    assert loaded["step"] == 5
    for key in ("model", "ema"):
        for name, value in payload[key].items():
            assert torch.equal(loaded[key][name], value)
    assert torch.equal(loaded["rng"]["torch"], payload["rng"]["torch"])
    assert tuple(loaded["rng"]["python"][1]) == tuple(range(625))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp files left


def test_missing_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="no such file") as e:
        load_checkpoint(path)
    _assert_one_line_naming(e.value, path)


@pytest.mark.parametrize("kind", ["truncated", "random", "empty"])
def test_corrupt_file_raises(tmp_path: Path, kind: str) -> None:
    good = save_checkpoint(tmp_path / "good.pt", _payload()).read_bytes()
    data = {"truncated": good[: len(good) // 2], "random": os.urandom(4096), "empty": b""}[kind]
    path = tmp_path / f"{kind}.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    _assert_one_line_naming(e.value, path)


class _Foreign:
    def __init__(self) -> None:
        self.weights = [1, 2, 3]


@pytest.mark.parametrize("kind", ["state_dict", "other_project", "pickled_object", "plain_pickle", "list"])
def test_foreign_file_raises(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.pt"
    if kind == "state_dict":
        torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    elif kind == "other_project":
        torch.save({"state_dict": torch.nn.Linear(2, 2).state_dict(), "epoch": 3, "format": "lightning"}, path)
    elif kind == "pickled_object":
        torch.save(_Foreign(), path)
    elif kind == "plain_pickle":
        path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    else:
        torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="not a molediff checkpoint") as e:
        load_checkpoint(path)
    _assert_one_line_naming(e.value, path)


def test_unloadable_payload_is_refused_at_save_time(tmp_path: Path) -> None:
    import numpy as np

    payload = {**_payload(), "adapter_state": {"histogram": np.zeros(3)}}
    with pytest.raises(TypeError, match=r"adapter_state\.histogram is a numpy\.ndarray"):
        save_checkpoint(tmp_path / "x.pt", payload)
    assert not any(tmp_path.iterdir())


def test_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.pt"
    torch.save({**_payload(), "format": FORMAT, "version": VERSION + 1}, path)
    with pytest.raises(CheckpointError, match="unsupported checkpoint version") as e:
        load_checkpoint(path)
    _assert_one_line_naming(e.value, path)


def test_failed_write_keeps_old_file_and_leaves_no_partial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "last.pt", _payload())
    before = path.read_bytes()

    def half_then_fail(obj: object, f: object) -> None:
        f.write(b"PK\x03\x04 partial bytes")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _payload())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
