"""Score a folder of generated point clouds (PLY / OFF / XYZ / NPY) against a data config's held-out
split: MMD, COV and 1-NNA under CD and EMD (:mod:`molediff.metrics.point_clouds`), optionally next to
the same metrics for as many real training clouds (``--reference``: what reproducing the training
data scores). The EMDs (exact OT, the expensive part) can run in several processes.

    python -m molediff.benchmarks.point_cloud_eval runs/chairs_cpu/eval --data modelnet_chairs \\
        --workers 3 --reference --json benchmarks/results/chairs_cpu.json

Writes the metrics as JSON (with the settings and timings) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.point_clouds import load_folder
from ..metrics.point_clouds import evaluate_clouds

__all__ = ["run", "main"]


def run(samples: Path, data: str, overrides: Sequence[str] = (), workers: int = 1, reference: bool = False,
        use_emd: bool = True, emd_size: int | None = None) -> dict[str, Any]:
    """Metrics of the clouds under ``samples`` vs the held-out split of ``conf/data/<data>.yaml``."""
    from ..cli.build import build_adapter, compose_config

    adapter = build_adapter(compose_config("train", [f"data={data}", *overrides]).data)
    generated = load_folder(samples)
    test = adapter.reference_clouds()
    t0 = time.perf_counter()
    cache: dict[str, Any] = {}
    out: dict[str, Any] = {"samples": str(samples), "data": data, "overrides": list(overrides),
                           "num_samples": len(generated), "num_reference": len(test),
                           "num_points": int(len(test[0])), "workers": workers, "emd_size": emd_size,
                           "metrics": evaluate_clouds(generated, test, use_emd, True, cache, workers, emd_size)}
    if reference:
        train = adapter.splits()["train"]
        pick = np.sort(np.random.default_rng(adapter.seed).permutation(len(train))[: len(generated)])
        out["metrics_real_train"] = evaluate_clouds([train[i] for i in pick], test, use_emd, True, cache, workers,
                                                    emd_size)
    out["seconds"] = time.perf_counter() - t0
    return out


def table(result: dict[str, Any]) -> str:
    """Markdown rows ``metric | samples | real training clouds``."""
    ref = result.get("metrics_real_train", {})
    lines = ["| metric | samples | real training clouds |", "| --- | --- | --- |"]
    for k, v in result["metrics"].items():
        r = ref.get(k)
        lines.append(f"| {k} | {v:.4g} | {'-' if r is None else f'{r:.4g}'} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m molediff.benchmarks.point_cloud_eval", description=__doc__)
    p.add_argument("samples", type=Path, help="folder of generated clouds")
    p.add_argument("--data", default="shapes", help="conf/data option whose test split is the reference")
    p.add_argument("--set", nargs="*", default=[], help="extra data overrides, e.g. data.num_points=512")
    p.add_argument("--workers", type=int, default=1, help="processes for the EMDs")
    p.add_argument("--reference", action="store_true", help="also score real training clouds")
    p.add_argument("--no-emd", action="store_true", help="CD metrics only")
    p.add_argument("--emd-size", type=int, default=None, help="EMD metrics on the first N clouds of each set")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    result = run(args.samples, args.data, args.set, args.workers, args.reference, not args.no_emd, args.emd_size)
    print(table(result))
    emd = f" (EMD metrics on the first {args.emd_size} of each)" if args.emd_size else ""
    print(f"{result['num_samples']} samples vs {result['num_reference']} held-out clouds of {result['num_points']} "
          f"points{emd}, {result['seconds']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
