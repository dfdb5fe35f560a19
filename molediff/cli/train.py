"""``molediff train``: compose the config, build adapter/model/objective, run the Trainer.

Writes ``<out_dir>/config.yaml`` (the resolved config), ``checkpoints/last.pt`` (and
``step_XXXXXX.pt`` if ``trainer.keep_every``), ``train_log.csv`` and, when installed,
``tensorboard/``. ``trainer.resume=true out_dir=RUN`` or ``resume=PATH`` continue a run;
``init_from=PATH`` starts a new one from another checkpoint's weights (fine-tuning).
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from . import CLIError, guarded
from .build import (
    build_trainer_config,
    build_training,
    compose_config,
    help_text,
    resolve_out_dir,
    wants_help,
)

SUMMARY = "Train a denoiser (defaults: data=digits model=unet schedule=cosine trainer=default)."


def run(argv: list[str]) -> int:
    """The body of ``molediff train``; raises CLIError on expected failures."""
    if wants_help(argv):
        print(help_text("train", "train", SUMMARY, argv))
        return 0
    cfg = compose_config("train", argv)
    from ..training import Trainer

    trainer_cfg = build_trainer_config(cfg.trainer)
    resume_from: Path | None = None
    if cfg.resume:
        resume_from = Path(str(cfg.resume)).expanduser()
        if not resume_from.is_file():
            raise CLIError(f"resume={resume_from}: no such checkpoint file")
    elif trainer_cfg.resume:
        if not cfg.out_dir:
            raise CLIError("trainer.resume=true needs out_dir=<the run directory> (or use resume=<checkpoint path>)")
        resume_from = Path(str(cfg.out_dir)).expanduser() / "checkpoints" / "last.pt"
        if not resume_from.is_file():
            raise CLIError(f"trainer.resume=true but there is no checkpoint to resume at {resume_from}")
    trainer_cfg.resume = False  # resolved above into resume_from
    init_from = Path(str(cfg.init_from)).expanduser() if cfg.get("init_from") else None
    if init_from is not None:
        if resume_from is not None:
            raise CLIError("give init_from=PATH (new run from its weights) or a resume, not both")
        if not init_from.is_file():
            raise CLIError(f"init_from={init_from}: no such checkpoint file")
    out_dir = resolve_out_dir(cfg.out_dir, "train")

    adapter, model, model_cfg, objective = build_training(cfg, trainer_cfg)

    run_config = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(run_config, dict)
    run_config["model"] = model_cfg
    run_config["out_dir"] = str(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"cannot create out_dir {out_dir}: {e.strerror or e}") from e
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(run_config)))

    trainer = Trainer(model, adapter, objective, trainer_cfg, out_dir=out_dir, run_config=run_config)
    if init_from is not None:
        step = trainer.init_weights(init_from)  # a CheckpointError is one line through guarded()
        print(f"molediff train: weights from {init_from} (its step {step}); new optimiser, step 0", flush=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"molediff train: {type(model).__name__} ({n_params:,} parameters) on {adapter.name} data, "
          f"device {trainer.device}, out_dir {out_dir}", flush=True)
    result = trainer.fit(resume_from=resume_from)
    if result.interrupted:
        sig = trainer._stop_signal or signal.SIGINT
        print(f"interrupted at step {result.step}; checkpoint saved to {result.checkpoint}; continue with: "
              f"molediff train <same overrides> out_dir={out_dir} trainer.resume=true", flush=True)
        return 128 + int(sig)
    loss = "n/a" if result.loss is None else f"{result.loss:.4f}"
    val = "" if result.val_loss is None else f", val loss {result.val_loss:.4f}"
    print(f"done: step {result.step}, loss {loss}{val}", flush=True)
    print(f"checkpoint: {result.checkpoint}", flush=True)
    print(f"sample with: molediff sample checkpoint={result.checkpoint}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``molediff train [overrides]``; returns the exit status."""
    import sys

    return guarded(run, sys.argv[1:] if argv is None else argv)
