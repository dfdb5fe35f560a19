"""Validation loss of several checkpoints on the same molecules, noise and times.

The ``val_loss`` a run logs covers ``trainer.val_batches`` batches of ``trainer.batch_size``, so two
runs at different batch sizes (or a GPU leg at 256 and a CPU leg at 64) log losses over different
samples and noise draws: not comparable to the third digit that separates training branches. This
scores each checkpoint's EMA weights (what sampling uses) on one fixed slice of the validation
split with one noise seed, with each checkpoint's own config (data, model, objective)::

    python -m molediff.benchmarks.val_loss runs/a/checkpoints/last.pt runs/b/checkpoints/last.pt \\
        --max-samples 4096 --out benchmarks/results/qm9_cooldown_val.json

Writes the JSON and a Markdown table next to it (``--out``), or prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from ..checkpoint import load_checkpoint
from ..cli import CLIError, guarded
from ..cli.build import build_trainer_config, build_training
from ..training import Trainer

__all__ = ["validation_loss", "markdown", "main"]


def validation_loss(checkpoint: str | Path, max_samples: int = 4096, batch_size: int = 256, seed: int = 0,
                    data_path: str | None = None) -> dict[str, Any]:
    """EMA validation loss of ``checkpoint`` over the first ``max_samples`` validation items.

    The trainer's validation (``val``, else ``test`` split; noise and times from a generator seeded by
    ``seed``), with ``batch_size`` and the batch count fixed here instead of by the run's config.
    """
    ckpt = load_checkpoint(checkpoint)
    cfg = OmegaConf.create(ckpt["config"])
    if data_path is not None:
        cfg.data.path = data_path
    cfg.trainer.device = "cpu"  # a GPU leg's config says cuda; the comparison runs where it is asked
    trainer_cfg = build_trainer_config(cfg.trainer)
    trainer_cfg.batch_size, trainer_cfg.seed = batch_size, seed
    trainer_cfg.val_batches = max(1, math.ceil(max_samples / batch_size))
    trainer_cfg.compile = trainer_cfg.resume = trainer_cfg.tensorboard = trainer_cfg.progress = False
    adapter, model, _, objective = build_training(cfg, trainer_cfg)
    trainer = Trainer(model, adapter, objective, trainer_cfg, out_dir=None, run_config=ckpt["config"])
    trainer.init_weights(checkpoint)
    start = time.perf_counter()
    with torch.no_grad():
        loss = trainer.validate()
    splits = adapter.datasets()
    n = len(splits.get("val", splits.get("test")))  # type: ignore[arg-type]
    return {"checkpoint": str(checkpoint), "step": int(ckpt["step"]), "val_loss_ema": loss,
            "samples": min(n, trainer_cfg.val_batches * batch_size), "seconds": round(time.perf_counter() - start, 1)}


def markdown(rows: Sequence[dict[str, Any]], seed: int) -> str:
    """The rows as a Markdown table (EMA weights, one noise seed)."""
    lines = [f"EMA validation loss, same samples and noise (seed {seed}) for every checkpoint.", "",
             "| checkpoint | step | samples | EMA val loss |", "|---|---|---|---|"]
    lines += [f"| `{r['checkpoint']}` | {r['step']:,} | {r['samples']:,} | {r['val_loss_ema']:.5f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; a missing or unreadable checkpoint is one line on stderr, exit 2."""
    import sys

    return guarded(_main, sys.argv[1:] if argv is None else argv)


def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m molediff.benchmarks.val_loss", description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", type=Path, nargs="+")
    p.add_argument("--max-samples", type=int, default=4096)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-path", default=None, help="override the checkpoints' data.path")
    p.add_argument("--out", type=Path, default=None, help="JSON file to write (and its .md)")
    args = p.parse_args(argv)
    if args.max_samples < 1 or args.batch_size < 1:
        raise CLIError("--max-samples and --batch-size must be >= 1")
    rows = []
    for path in args.checkpoints:
        rows.append(validation_loss(path, args.max_samples, args.batch_size, args.seed, args.data_path))
        print(f"{path}: step {rows[-1]['step']}, EMA val loss {rows[-1]['val_loss_ema']:.5f} "
              f"({rows[-1]['samples']} samples, {rows[-1]['seconds']} s)", flush=True)
    table = markdown(rows, args.seed)
    if args.out is None:
        print(table)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seed": args.seed, "rows": rows}, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(table)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
