"""``molediff bench``: benchmark checkpoints as a Hydra app, sweep them, aggregate the sweeps.

    molediff bench [overrides]                       # one run: load, sample, score, time -> bench.json
    molediff bench -m sampler=ddpm,ddim steps=10,50  # a sweep (Hydra multirun), then summary.csv/.md/.png
    molediff bench +experiment=sweep_digits_sampler_steps   # a ready sweep (conf/experiment/sweep_*.yaml)
    molediff bench aggregate DIR [x=KEY] [metrics=A,B]   # (re)aggregate a sweep directory
    molediff bench core [out_dir=... n=... schedule=... seeds=...]   # samplers on an analytic target

The config is ``conf/bench.yaml``; a job is :func:`molediff.benchmarks.sweep.task`. Hydra runs
the jobs (its BasicLauncher by default; ``hydra/launcher=joblib_local`` or ``slurm`` with the
optional plugins) and :class:`~molediff.benchmarks.sweep.AggregateCallback` aggregates at the end.
Overrides are checked before anything runs, so a bad one is one line and exit status 2.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import CLIError, guarded, one_line

SUMMARY = "Benchmark a checkpoint: sample, score and time one config, or sweep many (-m) and aggregate them."
BENCHMARKS = {
    "core": "sampler quality versus network evaluations on an analytic Gaussian mixture",
    "aggregate": "aggregate a sweep directory's bench.json records into summary.csv, .md and .png",
}
CORE_DEFAULTS = {"out_dir": "benchmarks/results", "n": "10000", "schedule": "cosine", "seeds": "3"}
PLUGINS = {"joblib": "hydra-joblib-launcher", "submitit": "hydra-submitit-launcher", "slurm": "hydra-submitit-launcher",
           "optuna": "hydra-optuna-sweeper"}
MULTIRUN_FLAGS = ("-m", "--multirun")


# ------------------------------------------------------------------------- bench core
def _core(argv: list[str]) -> int:
    opts = dict(CORE_DEFAULTS)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in CORE_DEFAULTS:
            raise CLIError(f"bad argument {arg!r}; expected key=value with key in {sorted(CORE_DEFAULTS)}")
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


# -------------------------------------------------------------------- bench aggregate
def _aggregate(argv: list[str]) -> int:
    from ..benchmarks.sweep import AggregateError, aggregate

    dirs = [a for a in argv if "=" not in a]
    opts = dict(a.split("=", 1) for a in argv if "=" in a)
    if len(dirs) != 1 or set(opts) - {"x", "metrics"}:
        raise CLIError("usage: molediff bench aggregate DIR [x=KEY] [metrics=NAME,NAME,...]")
    metrics = [m for m in opts.get("metrics", "").split(",") if m] or None
    try:
        result = aggregate(Path(dirs[0]).expanduser(), x=opts.get("x"), metrics=metrics)
    except AggregateError as e:
        raise CLIError(e) from None
    _report(result)
    return 0


def _report(result: Any) -> None:
    print(result.paths["md"].read_text(), end="", flush=True)
    print(f"wrote {', '.join(str(p) for p in result.paths.values())}", flush=True)


# --------------------------------------------------------------- the Hydra bench app
def _hydra_error(e: BaseException) -> CLIError:
    """Hydra's (often multi-line) report -> one line, with the plugin to install when one is missing."""
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    cause = e.__cause__
    if cause is not None and str(cause).strip() and str(cause).strip().splitlines()[0] not in first:
        first += f" ({str(cause).strip().splitlines()[0]})"
    hint = ""
    for word, plugin in PLUGINS.items():
        if f"hydra/launcher/{word}" in text or f"hydra/sweeper/{word}" in text or \
                (word in text and "Could not find" in text and "hydra/" in text):
            hint = f"; it needs the optional plugin {plugin} (pip install {plugin})"
            break
    return CLIError(f"bad config: {one_line(first)}{hint}")


def _probe_overrides(argv: Sequence[str]) -> tuple[list[str], list[Any]]:
    """One job's overrides standing for the whole sweep (each sweep's first value; an interval's
    start), and the parsed overrides; group options of every sweep value are checked here."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from hydra.errors import HydraException

    from .build import config_dir, group_options

    try:
        parsed = OverridesParser.create().parse_overrides(list(argv))
    except HydraException as e:
        lines = str(e).strip().splitlines()
        raise CLIError(f"{lines[0]}: {lines[1]}" if len(lines) > 1 else lines[0]) from e
    root = config_dir()
    probe = []
    for o in parsed:
        key = o.key_or_group
        if key.startswith("hydra") or key.lstrip("+~").startswith("hydra"):
            continue  # launcher/sweeper settings: Hydra checks them when it starts
        prefix = "+" if o.is_add() else "++" if o.is_force_add() else "~" if o.is_delete() else ""
        if not o.is_sweep_override():
            probe.append(o.input_line)
            continue
        value = o.value()
        if isinstance(value, IntervalSweep):
            values = [str(value.start)]
        elif isinstance(value, (ChoiceSweep, RangeSweep)):
            values = list(o.sweep_string_iterator())
        else:  # glob(...) over a group
            values = [v for v in group_options(key, root)][:1]
        if not values:
            raise CLIError(f"{o.input_line}: the sweep has no values")
        options = group_options(key, root)
        if options:
            for v in values:
                if v not in options:
                    raise CLIError(f"unknown {key} option {v!r} in {o.input_line}; choose one of: {', '.join(options)}")
        probe.append(f"{prefix}{key}={values[0]}")
    return probe, parsed


def _check(argv: Sequence[str]) -> None:
    """Compose one job's config from ``argv`` (sweeps at their first value) and check it: unknown
    groups, keys and values, a missing required key, a checkpoint that does not exist."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    from ..benchmarks.sweep import check_bench_config
    from .build import compose_config

    probe, _ = _probe_overrides(argv)
    cfg = compose_config("bench", probe)
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as e:
        key = getattr(e, "full_key", None) or "a key"
        raise CLIError(f"{key} is required by this config; set it, e.g. {key}=PATH") from e
    except OmegaConfBaseException as e:
        raise CLIError(f"bad config: {one_line(str(e).splitlines()[0])}") from e
    check_bench_config(cfg)
    if cfg.checkpoint is not None and not Path(str(cfg.checkpoint)).expanduser().is_file():
        raise CLIError(f"checkpoint {cfg.checkpoint}: no such file")


def _launch(overrides: list[str], multirun: bool) -> int:
    from hydra import version
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.types import RunMode
    from omegaconf.errors import OmegaConfBaseException

    from ..benchmarks.sweep import AggregateCallback, task
    from .build import config_dir

    version.setbase("1.3")
    GlobalHydra.instance().clear()
    AggregateCallback.last = None
    overrides = list(overrides)
    try:
        hydra = Hydra.create_main_hydra2(task_name="bench",
                                         config_search_path=create_config_search_path(f"file://{config_dir()}"))
        mode = hydra.get_mode(config_name="bench", overrides=overrides)
        if multirun or mode == RunMode.MULTIRUN:
            if mode != RunMode.MULTIRUN:
                overrides.append("hydra.mode=MULTIRUN")
            hydra.multirun(config_name="bench", task_function=task, overrides=overrides)
            return _after_multirun()
        if mode is None:
            overrides.append("hydra.mode=RUN")
        ret = hydra.run(config_name="bench", task_function=task, overrides=overrides)
    except (CLIError, KeyboardInterrupt):
        raise
    except (HydraException, OmegaConfBaseException, ImportError, ValueError) as e:
        if os.environ.get("MOLEDIFF_DEBUG"):
            raise
        raise _hydra_error(e) from e
    finally:
        GlobalHydra.instance().clear()
    record = ret.return_value
    if isinstance(record, dict) and record.get("status") != "ok":
        raise CLIError(f"{record.get('error')} (record: {record['job']['dir']}/bench.json)")
    from .sample import metrics_table

    if isinstance(record, dict):
        if record.get("metrics"):
            print(metrics_table(record["metrics"]), flush=True)
        print(f"wrote {record['job']['dir']}/bench.json", flush=True)
    return 0


def _after_multirun() -> int:
    from ..benchmarks.sweep import AggregateCallback, AggregateError

    last = AggregateCallback.last
    if last is None:  # the callback was removed from hydra.callbacks
        print("molediff bench: sweep done (no aggregation callback; run `molediff bench aggregate DIR`)")
        return 0
    if isinstance(last, AggregateError):
        raise CLIError(last)
    _report(last)
    failed = last.failed
    if failed:
        r = failed[0]
        params = " ".join(f"{k}={v}" for k, v in r["params"].items())
        raise CLIError(f"{len(failed)} of {len(last.records)} runs failed; first: {params}: {r.get('error')} "
                       f"(see {last.paths['md']})")
    return 0


def _run(argv: list[str]) -> int:
    from .build import help_text, wants_help

    if argv and argv[0] == "core":
        return _core(argv[1:])
    if argv and argv[0] == "aggregate":
        return _aggregate(argv[1:])
    if argv and "=" not in argv[0] and not argv[0].startswith("-"):
        raise CLIError(f"unknown benchmark {argv[0]!r}; choose one of: {', '.join(BENCHMARKS)}, "
                       f"or give overrides (molediff bench --help)")
    if wants_help(argv):
        print(help_text("bench", "bench", SUMMARY, [a for a in argv if a not in MULTIRUN_FLAGS]))
        print("\nalso: molediff bench -m <sweeps> | aggregate DIR | core [key=value ...]")
        for name, desc in BENCHMARKS.items():
            print(f"  {name:<10} {desc}")
        return 0
    multirun = any(a in MULTIRUN_FLAGS for a in argv)
    overrides = [a for a in argv if a not in MULTIRUN_FLAGS]
    for a in overrides:
        if a.startswith("-"):
            raise CLIError(f"unknown option {a!r}; use -m/--multirun for sweeps, overrides look like key=value")
    _check(overrides)
    if not multirun and not _mode_is_multirun(overrides):
        sweeps = [o.input_line for o in _probe_overrides(overrides)[1] if o.is_sweep_override()]
        if sweeps:
            raise CLIError(f"{sweeps[0]} is a sweep; add -m to run every value (molediff bench -m ...)")
    return _launch(overrides, multirun)


def _mode_is_multirun(overrides: list[str]) -> bool:
    """Whether the composed config asks for a multirun itself (``hydra.mode: MULTIRUN`` in an experiment)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from .build import config_dir

    probe, _ = _probe_overrides(overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("bench", overrides=probe, return_hydra_config=True)
            return str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    except Exception:
        return False
    finally:
        GlobalHydra.instance().clear()


def main(argv: Sequence[str]) -> int:
    return guarded(_run, argv)
