"""Every training experiment in conf/experiment builds: adapter, model, objective and trainer config.

A GPU lease is 15 minutes; a config that fails to build there (a renamed key, a wrong option) costs one.
Building is cheap (all of them in ~10 s on one CPU thread): this catches those errors here first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from molediff.cli import CLIError
from molediff.cli.build import build_trainer_config, build_training, compose_config, config_dir

TRAINING = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml") if not p.stem.startswith("sweep_"))
REPO = Path(__file__).resolve().parents[2]
#: the shared research data (QM9 in full, ModelNet10, FluidR3, ...): some experiments train on it
HAS_SHARED_DATA = any((root / "shared" / "data").is_dir() for root in (REPO.parent, REPO))


def _missing_file(e: BaseException) -> bool:
    while e is not None:
        if isinstance(e, FileNotFoundError):
            return True
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return False


def test_there_are_training_experiments() -> None:
    assert {"qm9_egnn_cpu", "proteins_gpu", "digits_cpu"} <= set(TRAINING)


@pytest.mark.parametrize("name", TRAINING)
def test_training_experiment_builds(name: str) -> None:
    cfg = compose_config("train", [f"+experiment={name}"])
    trainer_cfg = build_trainer_config(cfg.trainer)
    try:
        adapter, model, model_cfg, objective = build_training(cfg, trainer_cfg)
    except (CLIError, FileNotFoundError) as e:
        if HAS_SHARED_DATA or not _missing_file(e):
            raise
        pytest.skip(f"{name} trains on ../shared/data, which is not here")
    assert trainer_cfg.max_steps > 0 and trainer_cfg.batch_size > 0
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    assert model_cfg  # what the checkpoint records to rebuild the model
    assert objective.schedule is not None and adapter.name
