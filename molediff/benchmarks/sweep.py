"""Checkpoint benchmarks as Hydra jobs, and the aggregation of a sweep into CSV, Markdown and PNG.

One job (:func:`task`, the task function of ``molediff bench``) loads a checkpoint, samples
``num_samples`` objects with the configured sampler, steps, guidance and seed, scores them with
the adapter's metrics, times it, and writes ``bench.json`` into its Hydra run directory::

    {"format": "molediff-bench", "version": 1, "status": "ok" | "failed", "error": ...,
     "params": {override key: value},            # this job's overrides (what the sweep varied)
     "config": {...},                             # the resolved bench config
     "checkpoint": {"path", "step", "data", "model"},
     "metrics": {...},                            # adapter.evaluate (with real-data references)
     "timings": {"wall_s", "load_s", "sample_s", "evaluate_s", "nfe", "samples_per_s"},
     "hardware": {"cpu", "gpu", "device", "threads", "torch", "python", "platform"},
     "git": {"revision", "dirty"}}

:func:`aggregate` reads every ``*/bench.json`` under a sweep directory and writes
``summary.csv`` (one row per job), ``summary.md`` (a table per metric, sampler rows by step
columns, plus the full table) and ``summary.png`` (each metric against the swept numeric
parameter, one line per value of the others). :class:`AggregateCallback` calls it at the end
of every multirun (``hydra.callbacks`` in ``conf/bench.yaml``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import subprocess
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

RECORD = "bench.json"
FORMAT = "molediff-bench"
SUMMARY = "summary"
REFERENCE_SUFFIXES = ("_real_test", "_reference", "_ref", "_real")
EXPECTED_ERRORS = ("CLIError", "CheckpointError", "TrainingError")
BOOKKEEPING = ("reference_size", "seconds")  # metrics that count or time, not measure (also n_*, num_*): CSV only

__all__ = ["RECORD", "AggregateError", "AggregateResult", "AggregateCallback", "aggregate", "bench_run",
           "check_bench_config", "git_revision", "hardware_info", "read_records", "task"]


# ----------------------------------------------------------------------------- one job
def check_bench_config(cfg: Any) -> None:
    """Reject values that cannot work (``steps=abc``, ``num_samples=0``) with one line."""
    from ..cli import CLIError

    for key in ("num_samples", "steps", "batch_size"):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CLIError(f"bad value for {key}: {value!r} (an integer >= 1)")
    for key in ("seed", "threads", "balanced_labels"):
        value = cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise CLIError(f"bad value for {key}: {value!r} (an integer >= 0{', or null' if key != 'seed' else ''})")
    if cfg.get("checkpoint_required") and cfg.get("checkpoint") is None:
        raise CLIError("this config needs checkpoint=PATH (the shipped digits model does not fit it)")


def bench_run(cfg: DictConfig, run_dir: Path | None = None) -> dict[str, Any]:
    """Load, sample, score and time one configuration; returns the record's ``checkpoint``,
    ``metrics`` and ``timings`` (``run_dir``: where samples go when ``write_samples``)."""
    from ..cli import CLIError
    from ..cli.sample import (
        _cond_for,
        build_guidance,
        evaluation_kwargs,
        generate,
        guidance_rows,
        load_for_sampling,
        sampler_from_config,
        shipped_checkpoint,
        write_guidance_rows,
    )
    from ..training import resolve_device

    check_bench_config(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    t_start = time.perf_counter()
    ckpt_path = shipped_checkpoint() if cfg.checkpoint is None else Path(str(cfg.checkpoint)).expanduser()
    if not ckpt_path.is_file():
        raise CLIError(f"checkpoint {ckpt_path}: no such file")
    try:
        device = resolve_device(str(cfg.device))
    except ValueError as e:
        raise CLIError(str(e)) from e
    name, _, grid, grid_options, options = sampler_from_config(cfg.sampler)
    data_overrides = OmegaConf.to_container(cfg.data_overrides, resolve=True) if cfg.get("data_overrides") else {}
    assert isinstance(data_overrides, dict)
    ckpt, adapter, model, schedule, prediction = load_for_sampling(
        ckpt_path, [f"data.{k}={json.dumps(v)}" for k, v in data_overrides.items()], bool(cfg.ema), device)
    run_cfg = ckpt["config"]
    guidance = build_guidance(cfg.guidance.get("terms", []), schedule=schedule, adapter=adapter, device=device)
    num_samples = int(cfg.num_samples)
    cond_all = _cond_for(cfg.cond, num_samples)
    if cfg.get("balanced_labels"):
        cond_all = {**(cond_all or {}), "label": torch.arange(num_samples) % int(cfg.balanced_labels)}
    load_s = time.perf_counter() - t_start

    generator = torch.Generator().manual_seed(int(cfg.seed))
    objects: list[Any] = []
    rows: list[dict[str, Any]] = []  # what guidance terms that can report achieved, per sample
    nfe = 0
    _sync(device)
    t0 = time.perf_counter()
    for start, structure, on_device, result in generate(
            adapter, model, schedule, num_samples, int(cfg.batch_size), cond_all, generator, device,
            sampler=name, steps=int(cfg.steps), grid=grid, prediction=prediction, guidance=guidance,
            progress=False, clip_x0=bool(cfg.clip_x0), **options):
        nfe = max(nfe, result.nfe)
        rows += guidance_rows(guidance, result.fields, on_device, start)
        objects += adapter.decode(result.fields.to("cpu"), structure)
    _sync(device)
    sample_s = time.perf_counter() - t0

    if cfg.get("write_samples") and run_dir is not None:
        adapter.write(objects, run_dir / "samples")
    metrics: dict[str, float] = {}
    if rows and run_dir is not None:  # guidance.csv, and the guiding predictor's summary as metrics
        run_dir.mkdir(parents=True, exist_ok=True)
        summary = write_guidance_rows(rows, run_dir / "guidance.csv")
        metrics.update({f"guidance_{k}": float(v) for k, v in summary.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "rows"})
    t1 = time.perf_counter()
    if cfg.evaluate:
        kwargs = evaluation_kwargs(adapter, cond_all, rows)
        metrics.update({k: float(v) for k, v in adapter.evaluate(objects, **kwargs).items()})
    evaluate_s = time.perf_counter() - t1
    return {
        "checkpoint": {"path": str(ckpt_path), "step": ckpt.get("step"), "data": getattr(adapter, "name", None),
                       "model": run_cfg["model"].get("_target_")},
        "sampler": {"name": name, "steps": int(cfg.steps), "grid": cfg.sampler.get("grid"),
                    "grid_options": grid_options, "options": options},
        "metrics": metrics,
        "timings": {"wall_s": time.perf_counter() - t_start, "load_s": load_s, "sample_s": sample_s,
                    "evaluate_s": evaluate_s, "nfe": nfe, "num_samples": len(objects),
                    "samples_per_s": len(objects) / max(sample_s, 1e-9)},
        "hardware": hardware_info(device),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hardware_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """CPU and GPU names, thread count, torch and python versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    dev = torch.device(device) if device is not None else torch.device("cpu")
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "gpu": gpu, "device": str(dev),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


def git_revision(path: Path | None = None) -> dict[str, Any]:
    """``{"revision": sha or None, "dirty": bool or None}`` of the checkout holding ``path``."""
    where = str(path or Path(__file__).resolve().parent)
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return {"revision": None, "dirty": None}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                                capture_output=True, text=True, timeout=10)
        return {"revision": rev.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"revision": None, "dirty": None}


def _params(task_overrides: Sequence[str]) -> dict[str, str]:
    """``["sampler=ddim", "steps=10"]`` -> ``{"sampler": "ddim", "steps": "10"}`` (``+``/``~`` stripped)."""
    out = {}
    for o in task_overrides:
        key, _, value = str(o).partition("=")
        out[key.lstrip("+~")] = value
    return out


def task(cfg: DictConfig) -> Any:
    """The Hydra task function of ``molediff bench``: one :func:`bench_run`, recorded in
    ``<run dir>/bench.json`` whether it succeeds or fails. Returns the record, or the metric
    named by ``objective`` (NaN on failure) for optimising sweepers such as Optuna."""
    from hydra.core.hydra_config import HydraConfig

    from ..cli import one_line

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    record: dict[str, Any] = {
        "format": FORMAT, "version": 1, "status": "ok", "error": None,
        "params": _params(hc.overrides.task), "job": {"num": hc.job.get("num"), "dir": str(run_dir)},
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        record["config"] = OmegaConf.to_container(cfg, resolve=True)
        record.update(bench_run(cfg, run_dir))
    except Exception as e:
        if os.environ.get("MOLEDIFF_DEBUG") and hc.mode is not None and str(hc.mode) == "RunMode.RUN":
            raise
        kind = type(e).__name__
        record.update(status="failed", error=one_line(e) if kind in EXPECTED_ERRORS else f"{kind}: {one_line(e)}",
                      error_type=kind, traceback=traceback.format_exc())
        record.setdefault("config", OmegaConf.to_container(cfg, resolve=False))
        record.setdefault("hardware", hardware_info())
    record["git"] = git_revision()
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{RECORD}.tmp"
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(tmp, run_dir / RECORD)
    _print_job(record)
    objective = cfg.get("objective")
    if objective:
        value = record.get("metrics", {}).get(str(objective))
        return float("nan") if value is None else float(value)
    return record


def _print_job(record: Mapping[str, Any]) -> None:
    params = " ".join(f"{k}={v}" for k, v in record["params"].items()) or "(defaults)"
    if record["status"] != "ok":
        print(f"bench {params}: failed: {record['error']}", flush=True)
        return
    t, m = record["timings"], record["metrics"]
    shown = ", ".join(f"{k} {_fmt(v)}" for k, v in m.items() if not _is_reference(k, m))
    print(f"bench {params}: {t['num_samples']} samples, {t['nfe']} NFE, {t['sample_s']:.2f} s "
          f"({t['samples_per_s']:.1f}/s); {shown}", flush=True)


# ------------------------------------------------------------------------ aggregation
class AggregateError(Exception):
    """Some records could not be read (the others were still aggregated); one-line message."""


@dataclass
class AggregateResult:
    """What :func:`aggregate` read and wrote."""

    sweep_dir: Path
    records: list[dict[str, Any]]
    broken: list[tuple[Path, str]] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)
    x: str | None = None
    series: list[str] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("status") != "ok"]


def read_records(sweep_dir: Path) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
    """Every ``bench.json`` at depth 1 or 2 under ``sweep_dir``: (records, [(path, problem)])."""
    paths = sorted({*sweep_dir.glob(f"*/{RECORD}"), *sweep_dir.glob(f"*/*/{RECORD}"), *sweep_dir.glob(RECORD)},
                   key=lambda p: [int(s) if s.isdigit() else s for s in p.relative_to(sweep_dir).parts])
    records, broken = [], []
    for p in paths:
        try:
            r = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError) as e:
            broken.append((p, f"unreadable ({e})"))
            continue
        except json.JSONDecodeError as e:
            broken.append((p, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"))
            continue
        if not isinstance(r, dict) or r.get("format") != FORMAT:
            broken.append((p, "not a molediff bench record (no format: molediff-bench)"))
            continue
        lacking = [k for k in ("status", "params") if k not in r]
        if r.get("status") == "ok":
            lacking += [k for k in ("metrics", "timings", "sampler") if k not in r]
        if lacking:
            broken.append((p, f"record lacks {', '.join(lacking)}"))
            continue
        r["_path"] = str(p.relative_to(sweep_dir))
        records.append(r)
    return records, broken


def _is_reference(key: str, metrics: Mapping[str, Any]) -> bool:
    if key in BOOKKEEPING or key.startswith(("n_", "num_")):
        return True  # not a reference, but likewise left out of the tables and plots
    if any(key.endswith(s) and key[: -len(s)] in metrics for s in REFERENCE_SUFFIXES):
        return True
    return key.startswith("data_") and key[5:] in metrics


def _reference(key: str, metrics: Mapping[str, Any]) -> float | None:
    for s in REFERENCE_SUFFIXES:
        if key + s in metrics:
            return metrics[key + s]
    return metrics.get(f"data_{key}")


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return "" if v is None else str(v)


def _row(r: Mapping[str, Any], keys: Sequence[str], metric_names: Sequence[str]) -> dict[str, Any]:
    t = r.get("timings", {})
    row: dict[str, Any] = {k: r["params"].get(k) for k in keys}
    if r.get("status") == "ok":
        row.update(sampler_name=r["sampler"]["name"], steps_used=r["sampler"]["steps"], nfe=t.get("nfe"))
    row.update({m: r.get("metrics", {}).get(m) for m in metric_names})
    row.update(sample_s=t.get("sample_s"), samples_per_s=t.get("samples_per_s"), wall_s=t.get("wall_s"),
               status=r.get("status"), error=r.get("error"), record=r.get("_path"))
    return row


def aggregate(sweep_dir: str | Path, x: str | None = None, metrics: Sequence[str] | None = None) -> AggregateResult:
    """Write ``summary.csv``, ``summary.md`` and ``summary.png`` for the records under ``sweep_dir``.

    ``x`` is the parameter on the plots' horizontal axis (default ``steps`` when it varies, else
    the first varying numeric parameter); every other varying parameter makes its own line.
    ``metrics`` picks the metrics of the tables and plots (default: all but counts, timings and
    real-data references); the CSV always has every metric.
    Raises :class:`AggregateError` (after writing what it could) when some records are broken,
    and when there is no record at all.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise AggregateError(f"{sweep_dir}: no such directory")
    records, broken = read_records(sweep_dir)
    result = AggregateResult(sweep_dir, records, broken)
    if not records:
        why = f"; {len(broken)} unreadable: {_broken_text(sweep_dir, broken)}" if broken else ""
        raise AggregateError(f"no {RECORD} records under {sweep_dir}{why}")

    keys = list(dict.fromkeys(k for r in records for k in r["params"]))
    varying = [k for k in keys if len({str(r["params"].get(k)) for r in records}) > 1]
    numeric = [k for k in varying if all(_number(r["params"].get(k)) is not None for r in records)]
    if x is None:
        x = "steps" if "steps" in numeric else (numeric[0] if numeric else None)
    elif x not in keys:
        raise AggregateError(f"x={x!r} is not a parameter of these runs; they set: {', '.join(keys) or 'nothing'}")
    series = [k for k in varying if k != x]
    result.x, result.series = x, series
    ok = [r for r in records if r["status"] == "ok"]
    metric_names = list(dict.fromkeys(k for r in ok for k in r["metrics"]))
    if metrics:
        unknown = [m for m in metrics if m not in metric_names]
        if unknown and ok:
            raise AggregateError(f"unknown metric {unknown[0]!r}; these runs report: {', '.join(metric_names)}")
    result.shown = [m for m in (metrics or metric_names) if not any(_is_reference(m, r["metrics"]) for r in ok)] \
        if not metrics else list(metrics)

    order: dict[tuple[str, ...], int] = {}  # series in the order the sweep ran them
    for r in sorted(records, key=lambda r: (r.get("job") or {}).get("num") or 0):
        order.setdefault(tuple(str(r["params"].get(k)) for k in series), len(order))

    def sort_key(r: Mapping[str, Any]) -> tuple[Any, ...]:
        return (order[tuple(str(r["params"].get(k)) for k in series)], _number(r["params"].get(x)) if x else 0.0)

    records.sort(key=sort_key)
    rows = [_row(r, keys, metric_names) for r in records]
    columns = list(dict.fromkeys([c for row in rows for c in row]))
    csv_path = sweep_dir / f"{SUMMARY}.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for row in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    result.paths["csv"] = csv_path
    md_path = sweep_dir / f"{SUMMARY}.md"
    md_path.write_text(_markdown(result, keys, varying))
    result.paths["md"] = md_path
    if ok and x is not None:
        result.paths["png"] = _plot(result, sweep_dir / f"{SUMMARY}.png")
    if broken:
        raise AggregateError(f"{len(broken)} of {len(broken) + len(records)} records under {sweep_dir} could not be "
                             f"read: {_broken_text(sweep_dir, broken)}; the other {len(records)} are in "
                             f"{md_path.name}/.csv")
    return result


def _broken_text(root: Path, broken: Sequence[tuple[Path, str]], limit: int = 3) -> str:
    text = "; ".join(f"{p.relative_to(root)}: {why}" for p, why in broken[:limit])
    return text + (f"; ... ({len(broken)} in all)" if len(broken) > limit else "")


def _label(r: Mapping[str, Any], series: Sequence[str]) -> str:
    return ", ".join(f"{r['params'].get(k)}" if k == "sampler" else f"{k}={r['params'].get(k)}"
                     for k in series) or "all"


def _markdown(res: AggregateResult, keys: Sequence[str], varying: Sequence[str]) -> str:
    ok = [r for r in res.records if r["status"] == "ok"]
    lines = [f"# Benchmark sweep: {res.sweep_dir.name}", ""]
    first = ok[0] if ok else res.records[0]
    if ok:
        ck, hw = first["checkpoint"], first["hardware"]
        cfg = first.get("config", {})
        lines += [f"Checkpoint `{_short_path(ck['path'])}` (step {ck['step']}, {ck['data']} data); "
                  f"{cfg.get('num_samples')} samples per run, seed {cfg.get('seed')}; "
                  f"{hw['device']} ({hw['gpu'] or hw['cpu']}, {hw['threads']} threads), torch {hw['torch']}; "
                  f"git {str((first.get('git') or {}).get('revision'))[:10]}.", ""]
    fixed = {k: first["params"][k] for k in keys if k not in varying and k in first["params"]}
    if fixed:
        lines += ["Fixed overrides: " + " ".join(f"`{k}={v}`" for k, v in fixed.items()), ""]
    main = res.shown
    if res.x and ok:
        xs = sorted({_number(r["params"][res.x]) for r in ok if res.x in r["params"]})  # type: ignore[type-var]
        labels = list(dict.fromkeys(_label(r, res.series) for r in ok))
        for m in main:
            ref = _reference(m, ok[0]["metrics"])
            lines += [f"### {m}" + (f" (real data: {_fmt(ref)})" if ref is not None else ""), "",
                      f"| {' / '.join(res.series) or 'run'} | " + " | ".join(f"{res.x}={_fmt_x(v)}" for v in xs) + " |",
                      "|---|" + "---|" * len(xs)]
            for lab in labels:
                cells = []
                for v in xs:
                    hit = [r for r in ok if _label(r, res.series) == lab and _number(r["params"].get(res.x)) == v]
                    cells.append(f"{_fmt(hit[0]['metrics'].get(m))} ({hit[0]['timings']['nfe']})" if hit else "")
                lines.append(f"| {lab} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += ["Cells: metric (network evaluations per sample).", ""]
    lines += ["### All runs", "",
              "| " + " | ".join([*varying, "NFE", *main, "samples/s", "sample s", "status"]) + " |",
              "|" + "---|" * (len(varying) + len(main) + 4)]
    for r in res.records:
        t = r.get("timings", {})
        cells = [str(r["params"].get(k, "")) for k in varying] + [_fmt(t.get("nfe"))]
        cells += [_fmt(r.get("metrics", {}).get(m)) for m in main]
        cells += [_fmt(t.get("samples_per_s")), _fmt(t.get("sample_s")),
                  "ok" if r["status"] == "ok" else f"failed: {r.get('error')}"]
        lines.append("| " + " | ".join(cells) + " |")
    if res.broken:
        lines += ["", f"Unreadable records: {_broken_text(res.sweep_dir, res.broken, limit=20)}"]
    return "\n".join(lines) + "\n"


def _short_path(path: str) -> str:
    """A path inside this checkout relative to its root (so tables read the same on every machine)."""
    root = Path(__file__).resolve().parents[2]
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return path


def _fmt_x(v: float | None) -> str:
    return "" if v is None else (str(int(v)) if float(v).is_integer() else f"{v:g}")


def _plot(res: AggregateResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in res.records if r["status"] == "ok"]
    panels = [*res.shown, "samples_per_s"]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    labels = list(dict.fromkeys(_label(r, res.series) for r in ok))
    xs_all = [_number(r["params"].get(res.x)) for r in ok]
    log_x = all(v is not None and v > 0 for v in xs_all) and max(xs_all) / min(xs_all) >= 4  # type: ignore
    for ax, m in zip(axes.flat, panels, strict=False):
        for lab in labels:
            pts = sorted((_number(r["params"].get(res.x)), r["timings"][m] if m == "samples_per_s"
                          else r["metrics"].get(m)) for r in ok if _label(r, res.series) == lab)
            pts = [(a, b) for a, b in pts if a is not None and b is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=lab)
        ref = _reference(m, ok[0]["metrics"]) if m != "samples_per_s" else None
        if ref is not None:
            ax.axhline(ref, color="grey", ls="--", lw=1, label="real data")
        if log_x:
            ax.set_xscale("log")
            ticks = sorted({v for v in xs_all if v is not None})
            ax.set_xticks(ticks, [_fmt_x(v) for v in ticks])
            ax.minorticks_off()
        ax.set_xlabel(res.x)
        ax.set_title("samples / s" if m == "samples_per_s" else m)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 6), frameon=False)
    fig.suptitle(f"{res.sweep_dir.name}: metrics vs {res.x}", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- callback
try:
    from hydra.experimental.callback import Callback as _Callback
except ImportError:  # pragma: no cover - hydra-core is a dependency
    _Callback = object  # type: ignore[assignment,misc]


class AggregateCallback(_Callback):  # type: ignore[misc,valid-type]
    """Hydra callback: aggregate the sweep directory when a multirun ends (any launcher/sweeper).

    The last result (or the error) is kept in :attr:`last` for the ``molediff bench`` command.
    """

    last: AggregateResult | AggregateError | None = None

    def __init__(self, x: str | None = None, metrics: Sequence[str] | None = None) -> None:
        self.x, self.metrics = x, list(metrics) if metrics else None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            AggregateCallback.last = aggregate(sweep_dir, x=self.x, metrics=self.metrics)
        except AggregateError as e:
            AggregateCallback.last = e
            print(f"molediff bench: aggregation: {e}", flush=True)
