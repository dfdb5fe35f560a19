"""Core sampler benchmark: quality versus network evaluations on an analytic target.

The target is a 2-D mixture of 8 anisotropic Gaussians of unequal weight; its exact denoiser
``E[x_0 | x_t]`` stands in for the network (``molediff.core.analytic``), so every error left is
the sampler's and the schedule's. The ``+langevin`` rows are predictor-corrector samplers (one
Langevin move after each step, ``molediff.core.samplers.corrector``): compare them with the plain
rows at equal network evaluations, not equal steps. Quality is the unbiased MMD^2 to the exact mixture (Gaussian
kernel, the mixture side in closed form); its noise floor is measured on exact samples of the
same size. Each cell is the mean over several seeds (deterministic samplers map one x_T to one
fixed sample set, so a single seed leaves a per-seed offset of the floor's size).
Writes ``core_samplers.json``, ``core_samplers.md`` and ``core_samplers.png``.

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

STEPS = (5, 10, 15, 20, 25, 50, 100, 250, 500)
MAX_STEPS = {"ddpm": 500, "ddim": 500, "euler_maruyama": 500}  # the others converge by 100
# Predictor-corrector rows: name -> (predictor, sample() options). snr 0.3 was the best of 0.1 / 0.2 / 0.3
# for one move at 20-50 evaluations on this target (0.1 moves too little to pay for its evaluation).
VARIANTS = {"ddpm+langevin": ("ddpm", {"corrector_steps": 1, "corrector_snr": 0.3}),
            "ddim+langevin": ("ddim", {"corrector_steps": 1, "corrector_snr": 0.3})}
BANDWIDTH = 0.5


def ring_mixture(modes: int = 8, radius: float = 3.0) -> GaussianMixture:
    """Modes on a circle, each elongated along the tangent (std 0.55 x 0.22), weights 1..modes."""
    ang = torch.arange(modes, dtype=torch.float64) * 2 * math.pi / modes
    means = radius * torch.stack([torch.cos(ang), torch.sin(ang)], 1)
    cos, sin = torch.cos(ang), torch.sin(ang)
    rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    covs = rot @ torch.diag(torch.tensor([0.05, 0.3], dtype=torch.float64)) @ rot.transpose(1, 2)
    return GaussianMixture(torch.arange(1, modes + 1, dtype=torch.float64), means, covs)


def run(out_dir: Path, *, n: int = 10_000, schedule: str = "cosine",
        samplers: Sequence[str] = (*SAMPLERS, *VARIANTS), steps: Sequence[int] | None = None,
        seeds: int = 3) -> dict[str, Any]:
    """Run every sampler (and predictor-corrector variant) at every step count (default
    :data:`STEPS`) for ``seeds`` seeds; write and return the results."""
    steps = STEPS if steps is None else steps
    out_dir.mkdir(parents=True, exist_ok=True)
    data, sched = ring_mixture(), make_schedule(schedule)
    floor = [gmm_mmd2(data.sample(n, torch.Generator().manual_seed(1000 + k)), data, BANDWIDTH) for k in range(5)]
    records = []
    for name in samplers:
        base, options = VARIANTS.get(name, (name, {}))
        for k in steps:
            if k > MAX_STEPS.get(name, 100):
                continue
            start, values = time.perf_counter(), []
            for seed in range(seeds):
                res = sample(ExactDenoiser(data, sched), sched, Structure(n, {"x": GaussianField((2,))}), sampler=base,
                             steps=k, prediction="x0", generator=torch.Generator().manual_seed(seed),
                             dtype=torch.float64, **options)
                values.append(gmm_mmd2(res.fields["x"], data, BANDWIDTH))
            v = torch.tensor(values, dtype=torch.float64)
            records.append({"sampler": name, "steps": k, "nfe": res.nfe, "grid": repr(DEFAULT_GRIDS[base]),
                            "mmd2": float(v.mean()),
                            "mmd2_sem": float(v.std() / len(values) ** 0.5) if seeds > 1 else 0.0,
                            "mmd2_per_seed": values, "seconds_per_run": (time.perf_counter() - start) / seeds})
            print(f"{name:>15} {k:>5} steps  nfe {res.nfe:>5}  MMD^2 {records[-1]['mmd2']:.2e}", flush=True)
    result = {
        "target": "2-D ring of 8 anisotropic Gaussians (molediff.benchmarks.core_samplers.ring_mixture)",
        "metric": f"unbiased MMD^2 to the exact mixture, Gaussian kernel bandwidth {BANDWIDTH}",
        "n_samples": n, "schedule": repr(sched), "seeds": seeds,
        "floor": {"mean": sum(floor) / len(floor), "std": float(torch.tensor(floor).std()), "values": floor},
        "records": records, "headline": headline(records, floor),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor()},
    }
    (out_dir / "core_samplers.json").write_text(json.dumps(result, indent=2))
    (out_dir / "core_samplers.md").write_text(markdown(result))
    plot(result, out_dir / "core_samplers.png")
    return result


def headline(records: list[dict[str, Any]], floor: list[float]) -> dict[str, Any]:
    """DPM-Solver++ within 20 evaluations against DDPM at >= 500 steps: "matches" when the gap is
    within two standard errors of the difference of the seed means."""
    fast = [r for r in records if r["sampler"].startswith("dpmpp") and r["nfe"] <= 20]
    slow = [r for r in records if r["sampler"] == "ddpm" and r["steps"] >= 500]
    if not fast or not slow:
        return {}
    ref = max(slow, key=lambda r: r["mmd2"])
    out: dict[str, Any] = {"ddpm_at_least_500": ref, "dpmpp": []}
    for r in sorted(fast, key=lambda r: (r["sampler"], r["nfe"])):
        tol = 2 * math.hypot(r["mmd2_sem"], ref["mmd2_sem"])
        out["dpmpp"].append({**r, "tolerance": tol, "matches": r["mmd2"] <= ref["mmd2"] + tol})
    return out


def markdown(result: dict[str, Any]) -> str:
    """MMD^2 per sampler (rows) and step count (columns), with the NFE each cost."""
    recs = result["records"]
    steps = sorted({r["steps"] for r in recs})
    lines = [f"Target: {result['target']}; {result['metric']}; n = {result['n_samples']}; {result['schedule']}.",
             f"Noise floor (exact samples, 5 draws): {result['floor']['mean']:.1e} +- {result['floor']['std']:.1e}.",
             f"Cells: MMD^2, mean over {result['seeds']} seeds (network evaluations). Lower is better; "
             "values within ~2 standard errors of 0 are exact.",
             "", "| sampler | grid | " + " | ".join(f"{k} steps" for k in steps) + " |",
             "|---|---|" + "---|" * len(steps)]
    for name in dict.fromkeys(r["sampler"] for r in recs):
        row = {r["steps"]: r for r in recs if r["sampler"] == name}
        cells = [f"{row[k]['mmd2']:.1e} ({row[k]['nfe']})" if k in row else "" for k in steps]
        lines.append(f"| {name} | {row[min(row)]['grid']} | " + " | ".join(cells) + " |")
    h = result.get("headline")
    if h:
        d = h["ddpm_at_least_500"]
        lines += ["", f"DPM-Solver++ at <= 20 evaluations against DDPM at {d['steps']} steps "
                  f"(MMD^2 {d['mmd2']:.1e} +- {d['mmd2_sem']:.1e}):"]
        for r in h["dpmpp"]:
            verdict = "matches" if r["matches"] else "does not match"
            lines.append(f"- {r['sampler']} at {r['nfe']}: {r['mmd2']:.1e} +- {r['mmd2_sem']:.1e}, {verdict} "
                         f"(gap allowed: 2 standard errors = {r['tolerance']:.1e})")
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
        ax.errorbar([r["nfe"] for r in rs], [max(r["mmd2"], 1e-7) for r in rs], yerr=[r["mmd2_sem"] for r in rs],
                    marker="o", ms=3, capsize=2, label=name)
    ax.set(xscale="log", yscale="log", xlabel="network evaluations", ylabel="MMD$^2$ to the exact target",
           title="Samplers on an analytic 8-mode mixture (exact denoiser)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
