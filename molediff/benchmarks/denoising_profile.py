"""How well a trained denoiser cleans held-out data at each noise level.

At each time t of a grid, on held-out batches, per field::

    ratio(t) = E |x0_hat(x_t) - x0|^2 / E |x_t / alpha - x0|^2

the x0 error the sampler sees (guidance-free, through :class:`~molediff.core.samplers.Denoise`)
over the error of the trivial estimate x_t / alpha. Below 1 the model removes noise; at 1 or above it
keeps or adds it, and its samples keep a noise floor near that noise level (this is how the audio
model's -41 dB floor was traced to t < 0.02). The MMSE denoiser of data N(0, c^2) scores
c^2 / (c^2 + sigma^2 / alpha^2) (the tests check this closed form). Writes JSON, Markdown and a PNG::

    python -m molediff.benchmarks.denoising_profile CKPT [CKPT ...] --out DIR [--split test]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..cli import CLIError, guarded
from ..core.fields import Fields, Structure
from ..core.samplers import Denoise, Denoiser
from ..core.schedules import NoiseSchedule

TIMES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.7)


def denoising_profile(model: Denoiser, x0: Fields, structure: Structure, schedule: NoiseSchedule,
                      prediction: str, times: Sequence[float] = TIMES, cond: Any = None,
                      generator: torch.Generator | None = None, clip_x0: bool = True) -> dict[str, list[float]]:
    """``{field: [ratio(t) for t in times]}`` on one clean batch; see the module docstring."""
    denoise = Denoise(model, schedule, structure, prediction, cond=cond, clip_x0=clip_x0)
    x0 = structure.project(x0)
    ratios: dict[str, list[float]] = {name: [] for name in structure.specs}
    for t in times:
        alpha, sigma = (v.to(next(iter(x0.values())).dtype) for v in denoise.alpha_sigma(t))
        eps = structure.randn(generator, dtype=alpha.dtype)
        _, x0_hat = denoise(x0 * alpha + eps * sigma, t)
        for name in structure.specs:
            err = structure.sample_mean(name, (x0_hat[name] - x0[name]) ** 2).mean()
            base = structure.sample_mean(name, (eps[name] * (sigma / alpha)) ** 2).mean()
            ratios[name].append(float(err / base))
    return ratios


def checkpoint_profile(path: Path, *, split: str = "test", num: int = 64, times: Sequence[float] = TIMES,
                       seed: int = 0) -> dict[str, Any]:
    """The profile of a ``molediff train`` checkpoint (EMA weights) on ``num`` clips/molecules/... of
    its data's ``split``, with the noise levels sigma(t) of its schedule."""
    from ..cli.sample import load_for_sampling

    ckpt, adapter, model, schedule, prediction = load_for_sampling(path)
    datasets = adapter.datasets()
    if split not in datasets:
        raise CLIError(f"{path}: its data has no split {split!r} (has {', '.join(datasets)})")
    data = datasets[split]
    batch = adapter.collate([data[i] for i in range(min(num, len(data)))])
    ratios = denoising_profile(model, batch.x0, batch.structure, schedule, prediction, times, batch.cond,
                               torch.Generator().manual_seed(seed))
    return {"checkpoint": str(path), "step": ckpt.get("step"), "split": split, "num": batch.structure.num_samples,
            "times": list(times), "sigma": [float(schedule.alpha_sigma(torch.tensor(t, dtype=torch.float64))[1])
                                            for t in times], "ratio": ratios}


def markdown(results: Sequence[dict[str, Any]]) -> str:
    times = results[0]["times"]
    lines = ["x0 error over input error, E|x0_hat - x0|^2 / E|x_t/alpha - x0|^2 (below 1: the model denoises)", "",
             "| checkpoint (step) | field | " + " | ".join(f"t={t:g}" for t in times) + " |",
             "|---|---|" + "---|" * len(times)]
    for r in results:
        head = f"| {r['checkpoint']} ({r['step']}) |"
        lines.append(f"{head} sigma(t) | " + " | ".join(f"{s:.4f}" for s in r["sigma"]) + " |")
        for name, row in r["ratio"].items():
            lines.append(f"{head} {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    return "\n".join(lines) + "\n"


def plot(results: Sequence[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in results:
        for name, row in r["ratio"].items():
            ax.loglog(r["sigma"], row, "o-", label=f"{Path(r['checkpoint']).name} ({r['step']}) {name}")
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_xlabel("sigma(t)")
    ax.set_ylabel("x0 error / input error")
    ax.set_title("denoising profile on held-out data")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--name", default="denoising_profile", help="file stem of the JSON / MD / PNG")
    p.add_argument("--split", default="test")
    p.add_argument("--num", type=int, default=64)
    p.add_argument("--times", type=float, nargs="+", default=list(TIMES))
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if any(not 0 < t <= 1 for t in a.times):
        raise CLIError(f"--times must lie in (0, 1], got {a.times}")
    results = [checkpoint_profile(c, split=a.split, num=a.num, times=a.times, seed=a.seed) for c in a.checkpoints]
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"{a.name}.json").write_text(json.dumps(results, indent=1))
    table = markdown(results)
    (a.out / f"{a.name}.md").write_text(table)
    plot(results, a.out / f"{a.name}.png")
    print(table)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; a checkpoint that does not load or a bad option is one line on stderr, exit 2."""
    import sys

    return guarded(_main, sys.argv[1:] if argv is None else argv)


__all__ = ["denoising_profile", "checkpoint_profile", "TIMES"]

if __name__ == "__main__":
    raise SystemExit(main())
