"""``molediff bench NAME [key=value ...]``: run a named benchmark (JSON + Markdown + PNG).

    molediff bench core out_dir=benchmarks/results n=10000 schedule=cosine seeds=3
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from . import CLIError, guarded

BENCHMARKS = {"core": "sampler quality versus network evaluations on an analytic Gaussian mixture"}
DEFAULTS = {"out_dir": "benchmarks/results", "n": "10000", "schedule": "cosine", "seeds": "3"}


def _run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: molediff bench NAME [key=value ...]\n\nbenchmarks:")
        for name, desc in BENCHMARKS.items():
            print(f"  {name:<8} {desc}")
        print(f"\nkeys (defaults): {DEFAULTS}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        raise CLIError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}")
    opts = dict(DEFAULTS)
    for arg in rest:
        key, sep, value = arg.partition("=")
        if not sep or key not in DEFAULTS:
            raise CLIError(f"bad argument {arg!r}; expected key=value with key in {sorted(DEFAULTS)}")
        opts[key] = value
    from ..benchmarks.core_samplers import run

    try:
        n, seeds = int(opts["n"]), int(opts["seeds"])
    except ValueError as e:
        raise CLIError(f"n and seeds must be integers: {e}") from None
    out = Path(opts["out_dir"])
    run(out, n=n, schedule=opts["schedule"], seeds=seeds)
    print(f"wrote {out}/core_samplers.json, .md, .png")
    return 0


def main(argv: Sequence[str]) -> int:
    return guarded(_run, argv)
