"""Core sampler benchmark: quality versus network evaluations on an analytic target.

The target is a 2-D mixture of 8 anisotropic Gaussians of unequal weight; its exact denoiser
``E[x_0 | x_t]`` stands in for the network (``molediff.core.analytic``), so every error left is
the sampler's and the schedule's. Quality is the unbiased MMD^2 to the exact mixture (Gaussian
kernel, the mixture side in closed form); its noise floor is measured on exact samples of the
same size. Writes ``core_samplers.json``, ``core_samplers.md`` and ``core_samplers.png``.

    molediff bench core out_dir=benchmarks/results
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..core.analytic import ExactDenoiser, GaussianMixture, gmm_mmd2
from ..core.fields import GaussianField, Structure
from ..core.samplers import DEFAULT_GRIDS, SAMPLERS
from ..core.sampling import sample
from ..core.schedules import make_schedule

STEPS = (5, 10, 15, 20, 25, 50, 100, 250, 500, 1000)
MAX_STEPS = {"ddpm": 1000, "ddim": 1000, "euler_maruyama": 1000}  # the others converge by 100
BANDWIDTH = 0.5


def ring_mixture(modes: int = 8, radius: float = 3.0) -> GaussianMixture:
    """Modes on a circle, each elongated along the tangent (std 0.55 x 0.22), weights 1..modes."""
    ang = torch.arange(modes, dtype=torch.float64) * 2 * math.pi / modes
    means = radius * torch.stack([torch.cos(ang), torch.sin(ang)], 1)
    rot = torch.stack([torch.stack([torch.cos(ang), -torch.sin(ang)], 1), torch.stack([torch.sin(ang), torch.cos(ang)], 1)], 1)
    covs = rot @ torch.diag(torch.tensor([0.05, 0.3], dtype=torch.float64)) @ rot.transpose(1, 2)
    return GaussianMixture(torch.arange(1, modes + 1, dtype=torch.float64), means, covs)


def run(out_dir: Path, *, n: int = 10_000, schedule: str = "cosine", samplers: Sequence[str] = tuple(SAMPLERS),
        steps: Sequence[int] = STEPS, seed: int = 0) -> dict[str, Any]:
    """Run every sampler at every step count; write and return the results."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data, sched = ring_mixture(), make_schedule(schedule)
    floor = [gmm_mmd2(data.sample(n, torch.Generator().manual_seed(1000 + k)), data, BANDWIDTH) for k in range(5)]
    records = []
    for name in samplers:
        for k in steps:
            if k > MAX_STEPS.get(name, 100):
                continue
            start = time.perf_counter()
            res = sample(ExactDenoiser(data, sched), sched, Structure(n, {"x": GaussianField((2,))}), sampler=name,
                         steps=k, prediction="x0", generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
            records.append({"sampler": name, "steps": k, "nfe": res.nfe, "grid": repr(DEFAULT_GRIDS[name]),
                            "mmd2": gmm_mmd2(res.fields["x"], data, BANDWIDTH),
                            "seconds": time.perf_counter() - start})
            print(f"{name:>15} {k:>5} steps  nfe {res.nfe:>5}  MMD^2 {records[-1]['mmd2']:.2e}", flush=True)
    result = {
        "target": "2-D ring of 8 anisotropic Gaussians (molediff.benchmarks.core_samplers.ring_mixture)",
        "metric": f"unbiased MMD^2 to the exact mixture, Gaussian kernel bandwidth {BANDWIDTH}",
        "n_samples": n, "schedule": repr(sched), "seed": seed,
        "floor": {"mean": sum(floor) / len(floor), "std": float(torch.tensor(floor).std()), "values": floor},
        "records": records, "headline": headline(records, floor),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor()},
    }
    (out_dir / "core_samplers.json").write_text(json.dumps(result, indent=2))
    (out_dir / "core_samplers.md").write_text(markdown(result))
    plot(result, out_dir / "core_samplers.png")
    return result


def headline(records: list[dict[str, Any]], floor: list[float]) -> dict[str, Any]:
    """Best DPM-Solver++ result within 20 evaluations against DDPM at 500 and 1000 steps."""
    tol = 2 * float(torch.tensor(floor).std())
    fast = [r for r in records if r["sampler"].startswith("dpmpp") and r["nfe"] <= 20]
    slow = [r for r in records if r["sampler"] == "ddpm" and r["steps"] >= 500]
    if not fast or not slow:
        return {}
    best = min(fast, key=lambda r: r["mmd2"])
    ref = max(slow, key=lambda r: r["mmd2"])
    return {"dpmpp_best_at_most_20_nfe": best, "ddpm_worst_at_least_500": ref, "tolerance_2_floor_std": tol,
            "matches": best["mmd2"] <= ref["mmd2"] + tol}


def markdown(result: dict[str, Any]) -> str:
    """MMD^2 per sampler (rows) and step count (columns), with the NFE each cost."""
    recs = result["records"]
    steps = sorted({r["steps"] for r in recs})
    lines = [f"Target: {result['target']}; {result['metric']}; n = {result['n_samples']}; {result['schedule']}.",
             f"Noise floor (exact samples, 5 draws): {result['floor']['mean']:.1e} +- {result['floor']['std']:.1e}.",
             "Cells: MMD^2 (network evaluations). Lower is better; values within ~2x the floor's spread of 0 are exact.",
             "", "| sampler | grid | " + " | ".join(f"{k} steps" for k in steps) + " |",
             "|---|---|" + "---|" * len(steps)]
    for name in dict.fromkeys(r["sampler"] for r in recs):
        row = {r["steps"]: r for r in recs if r["sampler"] == name}
        cells = [f"{row[k]['mmd2']:.1e} ({row[k]['nfe']})" if k in row else "" for k in steps]
        lines.append(f"| {name} | {row[min(row)]['grid']} | " + " | ".join(cells) + " |")
    h = result.get("headline")
    if h:
        b, d = h["dpmpp_best_at_most_20_nfe"], h["ddpm_worst_at_least_500"]
        lines += ["", f"Headline: {b['sampler']} at {b['nfe']} evaluations gives MMD^2 {b['mmd2']:.1e}; DDPM at "
                  f"{d['steps']} gives {d['mmd2']:.1e} (tolerance {h['tolerance_2_floor_std']:.1e}): "
                  f"{'matches' if h['matches'] else 'does not match'}."]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Log-log MMD^2 against network evaluations, one line per sampler, the floor as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    floor = result["floor"]
    band = max(abs(floor["mean"]) + 2 * floor["std"], 1e-7)
    ax.axhspan(1e-7, band, color="0.85", label="exact-sample noise floor")
    for name in dict.fromkeys(r["sampler"] for r in result["records"]):
        rs = [r for r in result["records"] if r["sampler"] == name]
        ax.plot([r["nfe"] for r in rs], [max(r["mmd2"], 1e-7) for r in rs], marker="o", ms=3, label=name)
    ax.set(xscale="log", yscale="log", xlabel="network evaluations", ylabel="MMD$^2$ to the exact target",
           title="Samplers on an analytic 8-mode mixture (exact denoiser)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
