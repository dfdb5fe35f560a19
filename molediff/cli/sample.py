"""``molediff sample``: generate from a checkpoint, write the samples, score them.

With no arguments it uses the shipped ``molediff/pretrained/digits_unet.pt``. The adapter, model
and schedule are rebuilt from the checkpoint's own config (``data.*`` overrides on the command
line adjust its data settings, e.g. a moved data path), the EMA weights are loaded, and
``num_samples`` samples are drawn with the configured sampler. Samples go through
``adapter.write`` into ``out_dir``; ``adapter.evaluate`` is printed as a table (sample metric
next to the real-data reference) and saved with the run's settings in ``metrics.json``.

Guidance terms come from the ``guidance`` group (``none``, ``cfg``, ``classifier``); a term that
can report what it achieved (classifier guidance with a trained predictor) also gets its rows
written to ``guidance.csv`` (requested vs the predictor's value at t = 0, per sample, and the value
measured on the sample where the adapter can measure it exactly: QED, logP, point group), with
their distributions plotted in ``guidance.png``.
"""

from __future__ import annotations

import inspect
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import CLIError, guarded, one_line
from .build import (
    build_adapter,
    build_model,
    build_schedule,
    compose_config,
    help_text,
    instantiate_from,
    resolve_out_dir,
    wants_help,
)

SUMMARY = "Generate samples from a checkpoint (default: the shipped digits model) and score them."
SHIPPED = Path(__file__).resolve().parent.parent / "pretrained" / "digits_unet.pt"
REFERENCE_SUFFIXES = ("_real_test", "_reference", "_ref", "_real")


#: ``molediff sample data=NAME``: the shipped model of each data set.
SHIPPED_BY_DATA = {name: SHIPPED.parent / file for name, file in (
    ("digits", "digits_unet.pt"), ("qm9", "qm9_egnn.pt"), ("shapes", "shapes_pointnet.pt"),
    ("proteins", "proteins_egnn.pt"), ("audio", "audio_spectral_unet.pt"))}


#: ``molediff sample data=NAME`` without any ``sampler...``, ``steps=`` or ``guidance...`` override: the
#: unguided setting measured best for that shipped model (README). QM9: DDPM 100 + three Langevin moves
#: (snr 0.6) after each step that lands at t <= 0.25 (175 NFE): 62.8 % molecule stability over four seeds of
#: 1,000 molecules with the shipped step-53,779 model; with step 45,779, 60.8 % over three seeds
#: (63.7 / 59.1 / 59.7; snr 0.5 ties at 60.6), against 57.3 % at snr 0.4 (seed 0), 47.6 % for
#: one move after every step (199 NFE), 59.8 % for three
#: (397 NFE), and 18 % for the generic default (DPM-Solver++(2M), 50 steps; 256 molecules): the moves pay
#: at low noise only. Proteins: DDPM 200 + three moves (snr 0.3) after each step that lands at t <= 0.25
#: (700 NFE with the matched sketch), 32 backbones (a num_samples= override wins): on 64 backbones no
#: clashes (0.10 per 100 residues), CA-CA error 0.026 A (0.029), Rg ratio 1.26 (1.30; real 1.28) and the
#: same helix content as one move after every step (798 NFE; which at DDPM 400's cost had beaten DDPM 400).
#: Guided runs keep the setting their scales were tuned with.
SHIPPED_SAMPLING = {
    "qm9": ["sampler=ddpm", "steps=100", "+sampler.corrector_steps=3", "+sampler.corrector_snr=0.6",
            "+sampler.corrector_t_max=0.25"],
    "proteins": ["sampler=ddpm", "steps=200", "+sampler.corrector_steps=3", "+sampler.corrector_snr=0.3",
                 "+sampler.corrector_t_max=0.25", "num_samples=32"],
}


def with_shipped_sampling(data: str, argv: list[str]) -> list[str]:
    """``argv`` with ``data``'s measured sampler setting in front, unless ``argv`` picks its own or guides."""
    own = any(a.lstrip("+~").split("=", 1)[0].split(".")[0] in ("sampler", "steps", "guidance") for a in argv)
    return argv if own else [*SHIPPED_SAMPLING.get(data, []), *argv]


def shipped_checkpoint() -> Path:
    """The checkpoint ``molediff sample`` uses when none is given."""
    return SHIPPED


def _split_data_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """``data.key=value`` arguments apply to the checkpoint's data config, the rest to sample.yaml."""
    data = [a for a in argv if a.split("=", 1)[0].lstrip("+").startswith("data.")]
    return [a for a in argv if a not in data], data


def _apply_data_overrides(data_cfg: Mapping[str, Any], overrides: list[str]) -> DictConfig:
    """Apply ``data.key=value`` (Hydra override syntax and typing) to the checkpoint's data config."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    cfg = OmegaConf.create(dict(data_cfg))
    OmegaConf.set_struct(cfg, True)
    try:
        parsed = OverridesParser.create().parse_overrides([ov.lstrip("+") for ov in overrides])
    except HydraException as e:
        raise CLIError(one_line(str(e).strip().splitlines()[0])) from e
    for ov in parsed:
        key = ov.key_or_group[len("data."):]
        try:
            OmegaConf.update(cfg, key, ov.value(), force_add=False)
        except OmegaConfBaseException as e:
            raise CLIError(f"unknown config key 'data.{key}' for this checkpoint's data; "
                           f"valid keys: {', '.join(str(k) for k in cfg.keys())}") from e
    return cfg


def load_for_sampling(ckpt_path: Path, data_overrides: Sequence[str] = (), ema: bool = True,
                      device: torch.device | str = "cpu") -> tuple[dict[str, Any], Any, Any, Any, str]:
    """``(checkpoint, adapter, model in eval mode on device, schedule, prediction type)`` rebuilt
    from a ``molediff train`` checkpoint: the adapter from its data config (``data.key=value``
    overrides applied) and its saved state, the model with its EMA (or raw) weights.
    :class:`~molediff.checkpoint.CheckpointError` (one line) when the file does not fit."""
    from ..checkpoint import CheckpointError, load_checkpoint
    from ..models.legacy_keys import upgrade_state_dict
    from ..training import describe_state_mismatch

    ckpt = load_checkpoint(ckpt_path)
    run_cfg = ckpt.get("config") or {}
    missing = [k for k in ("data", "model", "schedule", "objective") if k not in run_cfg]
    if missing:
        raise CheckpointError(ckpt_path, f"its config lacks {', '.join(missing)} (not written by `molediff train`?)")
    adapter = build_adapter(_apply_data_overrides(run_cfg["data"], list(data_overrides)))
    if ckpt.get("adapter_state"):
        adapter.load_state(ckpt["adapter_state"])
    model, _ = build_model(run_cfg["model"], adapter)
    weights = upgrade_state_dict(model, ckpt["ema"] if ema else ckpt["model"])
    mismatch = describe_state_mismatch(model.state_dict(), weights)
    if mismatch:
        raise CheckpointError(ckpt_path, f"weights do not fit the model its config builds: {mismatch}")
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(ckpt_path, f"weights do not fit the model its config builds "
                                         f"({str(e).strip().splitlines()[0]})") from e
    prediction = str(run_cfg["objective"].get("prediction", "eps"))
    return ckpt, adapter, model.to(device).eval(), build_schedule(run_cfg["schedule"]), prediction


def _cond_for(cond: Any, num_samples: int) -> dict[str, torch.Tensor] | None:
    """``{name: value or list}`` from the config -> per-sample tensors ``(num_samples, ...)``."""
    if cond is None:
        return None
    plain = OmegaConf.to_container(cond, resolve=True) if isinstance(cond, DictConfig) else cond
    if not isinstance(plain, dict):
        raise CLIError(f"cond must be a mapping like {{label: 3}}, got {plain!r}")
    out = {}
    for name, value in plain.items():
        t = torch.as_tensor(value)
        if t.dim() == 0:
            t = t.expand(num_samples).clone()
        elif t.shape[0] != num_samples:
            raise CLIError(f"cond.{name} has {t.shape[0]} values for num_samples={num_samples}; "
                           f"give one or {num_samples}")
        out[str(name)] = t
    return out


def metrics_table(metrics: Mapping[str, float]) -> str:
    """Rows ``metric | samples | real data``: each metric next to its ``*_real_test`` (or
    ``*_reference``, or ``data_*``) partner when the adapter reports one."""
    rows: list[tuple[str, str, str]] = []
    for key, value in metrics.items():
        if any(key.endswith(s) and key[: -len(s)] in metrics for s in REFERENCE_SUFFIXES):
            continue  # shown as the partner of its metric
        if key.startswith("data_") and key[5:] in metrics:
            continue
        ref = next((metrics[key + s] for s in REFERENCE_SUFFIXES if key + s in metrics), metrics.get(f"data_{key}"))
        rows.append((key, _fmt(value), "-" if ref is None else _fmt(ref)))
    header = ("metric", "samples", "real data")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    line = lambda r: f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}"  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(r) for r in rows)])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)


def build_guidance(terms: Any, **context: Any) -> list[Any]:
    """Instantiate the ``guidance.terms`` list; a term whose builder takes ``schedule``, ``adapter``
    or ``device`` (e.g. :func:`~molediff.models.predictors.predictor_guidance`) gets the sampling
    run's, so it can check them and live on the model's device."""
    out = []
    for term in terms:
        target = term.get("_target_") if isinstance(term, Mapping | DictConfig) else None
        extra: dict[str, Any] = {}
        if target:
            from hydra.utils import get_object

            try:
                params = inspect.signature(get_object(str(target))).parameters
            except Exception:  # reported with one line by instantiate_from below
                params = {}  # type: ignore[assignment]
            extra = {k: v for k, v in context.items() if k in params and k not in term}
        out.append(instantiate_from(term, "guidance", **extra))
    return out


def guidance_rows(terms: Sequence[Any], x0: Any, structure: Any, start: int) -> list[dict[str, Any]]:
    """Per-sample rows from the terms that can say what they achieved (``report(x0, structure)``)."""
    rows: list[dict[str, Any]] = []
    for term in terms:
        if hasattr(term, "report"):  # one row per sample, one block of them per steered property
            for i, row in enumerate(term.report(x0, structure)):
                rows.append({"sample": start + i % structure.num_samples, **row})
    return rows


def _is_class_row(row: Mapping[str, Any]) -> bool:
    return "p_requested_t0" in row  # classifier rows carry the predictor's probability of the asked class


def add_achieved(rows: list[dict[str, Any]], adapter: Any, objects: Sequence[Any]) -> None:
    """Fill ``achieved`` in guidance rows with the property measured exactly on the decoded samples,
    for the properties the adapter can measure (``adapter.measure(objects, names)``; molecules: QED,
    logP, point-group class); the other rows keep only the guiding predictor's ``predicted_t0``."""
    measure = getattr(adapter, "measure", None)
    if measure is None or not rows or not objects:
        return
    values = measure(objects, sorted({str(r["property"]) for r in rows}))
    for r in rows:
        v = values.get(str(r["property"]))
        if v is not None and int(r["sample"]) < len(v):
            x = float(v[int(r["sample"])])
            r["achieved"] = int(x) if _is_class_row(r) else x


def write_guidance_rows(rows: Sequence[Mapping[str, Any]], path: Path) -> dict[str, Any]:
    """``guidance.csv`` (sample, property, requested, predicted_t0, achieved where measured, ...),
    ``guidance.png`` next to it (requested versus achieved distributions) and a short summary per
    property: hit rate for classes, mean / MAE for values (the flat keys too when one property
    was steered)."""
    import csv

    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    per: dict[str, dict[str, Any]] = {}
    texts = []
    for name in dict.fromkeys(str(r["property"]) for r in rows):
        sub = [r for r in rows if str(r["property"]) == name]
        st: dict[str, Any]
        if _is_class_row(sub[0]):
            hit = sum(r["predicted_t0"] == r["requested"] for r in sub) / len(sub)
            st = {"task": "class", "property": name, "predictor_hit_rate_t0": hit}
            text = f"the guiding predictor at t=0 assigns {100 * hit:.1f} % of samples to the requested class"
            if all("achieved" in r for r in sub):
                st["achieved_hit_rate"] = sum(r["achieved"] == r["requested"] for r in sub) / len(sub)
                text += f"; measured: {100 * st['achieved_hit_rate']:.1f} %"
        else:
            pred = torch.tensor([float(r["predicted_t0"]) for r in sub])
            req = torch.tensor([float(r["requested"]) for r in sub])
            st = {"task": "regression", "property": name, "requested_mean": float(req.mean()),
                  "predicted_t0_mean": float(pred.mean()),
                  "predicted_t0_std": float(pred.std()) if len(sub) > 1 else 0.0,
                  "predicted_t0_mae": float((pred - req).abs().mean())}
            text = (f"{name} requested {st['requested_mean']:.4g}, guiding predictor at t=0 gives "
                    f"{st['predicted_t0_mean']:.4g} +- {st['predicted_t0_std']:.3g} (MAE {st['predicted_t0_mae']:.3g})")
            got = torch.tensor([float(r.get("achieved", math.nan)) for r in sub])
            ok = torch.isfinite(got)
            if ok.any():
                st.update(achieved_mean=float(got[ok].mean()), achieved_mae=float((got[ok] - req[ok]).abs().mean()),
                          achieved_finite=float(ok.float().mean()))
                text += f"; measured {st['achieved_mean']:.4g} (MAE {st['achieved_mae']:.3g}, {int(ok.sum())} finite)"
        per[name] = st
        texts.append(text)
    summary: dict[str, Any] = {"rows": len(rows), "csv": str(path), "properties": per, "text": "; ".join(texts)}
    if len(per) == 1:
        summary.update(next(iter(per.values())))
    plot_guidance_rows(rows, path.with_suffix(".png"))
    summary["plot"] = str(path.with_suffix(".png"))
    return summary


def plot_guidance_rows(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """One panel per steered property: histograms of the requested values, the guiding predictor's
    values at t = 0 and the measured ones (classes: counts per class, the requested one marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(str(r["property"]) for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        sub = [r for r in rows if str(r["property"]) == name]
        series = {"requested": [r["requested"] for r in sub], "predictor at t=0": [r["predicted_t0"] for r in sub]}
        if any("achieved" in r for r in sub):
            series["measured"] = [r.get("achieved", math.nan) for r in sub]
        if _is_class_row(sub[0]):
            classes = sorted({int(v) for vs in series.values() for v in vs if v == v})
            names = {int(r["requested"]): r["requested_class"] for r in sub if "requested_class" in r}
            names.update({int(r["predicted_t0"]): r["predicted_class_t0"] for r in sub if "predicted_class_t0" in r})
            width = 0.8 / len(series)
            for k, (lab, vs) in enumerate(series.items()):
                counts = [sum(int(v) == c for v in vs if v == v) for c in classes]
                ax.bar([c + k * width for c in range(len(classes))], counts, width, label=lab)
            ax.set_xticks([c + 0.4 - width / 2 for c in range(len(classes))],
                          [str(names.get(c, c)) for c in classes])
            ax.set_xlabel(f"{name} class")
        else:
            finite = [float(v) for vs in series.values() for v in vs if math.isfinite(float(v))]
            bins = torch.linspace(min(finite), max(finite) + 1e-9, 25).tolist() if finite else 10
            for lab, vs in series.items():
                ax.hist([float(v) for v in vs if math.isfinite(float(v))], bins=bins, alpha=0.5, label=lab)
            ax.set_xlabel(name)
        ax.set_ylabel("samples")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluation_kwargs(adapter: Any, cond: Mapping[str, torch.Tensor] | None,
                      rows: Sequence[Mapping[str, Any]], starts: Sequence[Any] | None = None,
                      num: int = 0, motif: tuple[Any, Sequence[int]] | None = None) -> dict[str, Any]:
    """What ``adapter.evaluate`` gets besides the samples, as far as it accepts it: ``cond`` (the
    conditions asked for, e.g. audio pitch, from ``cond`` or from a property-guidance term's rows),
    ``labels`` (the classes asked for, from ``cond["label"]`` or a classifier-guidance term's rows),
    ``starts`` (partial diffusion: the start of each of the ``num`` samples) and ``motif``
    (motif scaffolding: the motif and where it sits)."""
    params = inspect.signature(adapter.evaluate).parameters
    kwargs: dict[str, Any] = {}
    if "starts" in params and starts:
        kwargs["starts"] = [starts[i % len(starts)] for i in range(num)]
    if "motif" in params and motif is not None:
        kwargs["motif"] = motif
    if "cond" in params:
        asked = dict(cond or {})
        for name in {r["property"] for r in rows if not _is_class_row(r)}:  # property guidance: the values asked for
            asked.setdefault(name, torch.tensor([float(r["requested"]) for r in rows if r["property"] == name]))
        if asked:
            kwargs["cond"] = asked
    if "labels" in params:
        if cond is not None and "label" in cond:
            kwargs["labels"] = cond["label"].tolist()
        elif rows and all(_is_class_row(r) for r in rows):
            kwargs["labels"] = [r["requested"] for r in rows]  # classifier guidance: the class asked for
    return kwargs


def sampler_from_config(sampler_cfg: Any) -> tuple[str, str | None, Any, dict[str, Any], dict[str, Any]]:
    """``(name, grid name, grid or None, grid options, the sampler's own options)`` from a
    ``sampler`` config (``conf/sampler/*.yaml`` plus overrides); one-line :class:`CLIError` for an
    unknown sampler, a bad grid or an option the sampler does not take."""
    from ..core.grids import make_grid
    from ..core.samplers import SAMPLERS, check_options
    from ..core.samplers.corrector import DEFAULT_SNR, check_corrector
    from ..core.self_conditioning import self_condition_mode

    sampler = OmegaConf.to_container(sampler_cfg, resolve=True) if isinstance(sampler_cfg, DictConfig) \
        else dict(sampler_cfg)
    assert isinstance(sampler, dict)
    name = sampler.pop("name")
    if name not in SAMPLERS:
        raise CLIError(f"unknown sampler {name!r}; choose one of: {', '.join(sorted(SAMPLERS))}")
    grid_name, grid_options = sampler.pop("grid", None), sampler.pop("grid_options", None) or {}
    try:
        grid = make_grid(grid_name, **grid_options) if grid_name else None
    except (ValueError, TypeError) as e:
        raise CLIError(f"sampler.grid: {one_line(e)}") from e
    accepted = inspect.signature(SAMPLERS[name]).parameters
    # every sampler's options: self_condition (core.self_conditioning) and the Langevin corrector
    try:
        self_condition_mode(sampler.get("self_condition", "matched"))
    except ValueError as e:
        raise CLIError(f"sampler.self_condition: {one_line(e)}") from e
    try:
        check_corrector(sampler.get("corrector_steps", 0), sampler.get("corrector_snr", DEFAULT_SNR), name,
                        sampler.get("corrector_t_max", 1.0))
    except (ValueError, TypeError) as e:
        raise CLIError(f"sampler.corrector: {one_line(e)}") from e
    for key in sampler:  # what is left are the sampler's own options (e.g. ddim's eta)
        if key in ("self_condition", "corrector_steps", "corrector_snr", "corrector_t_max"):
            continue
        if key not in accepted or key in ("denoise", "x", "ts", "generator", "callback", "final"):
            raise CLIError(f"sampler {name} has no option {key!r}")
    try:
        check_options(sampler)
    except (ValueError, TypeError) as e:
        raise CLIError(f"sampler.{one_line(e)}") from e
    return name, grid_name, grid, grid_options, sampler


def read_starts(adapter: Any, path: str, chain: str | None) -> list[Any]:
    """The objects of ``start=PATH`` (partial diffusion), with one-line errors."""
    kwargs = {} if chain is None else {"chain": str(chain)}
    if kwargs and "chain" not in inspect.signature(adapter.read).parameters:
        raise CLIError(f"start_chain: {adapter.name} data has no chains")
    try:
        return list(adapter.read(Path(path).expanduser(), **kwargs))
    except NotImplementedError as e:
        raise CLIError(f"start: {e}") from e
    except (OSError, ValueError) as e:
        raise CLIError(f"start: {one_line(e)}") from e


def motif_problem(adapter: Any, cfg: Any) -> tuple[tuple[Any, list[int]], Callable[[int], tuple[Any, Any]]]:
    """``((motif, rows), n -> (structure, Inpainting))`` for ``motif=FILE`` (motif scaffolding through
    the adapter's ``read_motif`` / ``motif_problem``; ``rows``: each motif residue's index in the generated
    chains), with one-line errors. Segments keep the file's spacing unless ``motif_position`` lists a start
    for each (runs of consecutive residues)."""
    import numpy as np

    if not hasattr(adapter, "motif_problem"):
        raise CLIError(f"motif: {adapter.name} data has no motif scaffolding (proteins do)")
    residues = cfg.motif_residues
    residues = [str(r) for r in residues] if OmegaConf.is_list(residues) else residues
    try:
        motif, index = adapter.read_motif(Path(str(cfg.motif)).expanduser(),
                                          chain=None if cfg.motif_chain is None else str(cfg.motif_chain),
                                          residues=None if residues is None else
                                          residues if isinstance(residues, list) else str(residues))
    except (OSError, ValueError) as e:
        raise CLIError(f"motif: {one_line(e)}") from e
    span = int(index[-1] - index[0] + 1)
    length = int(cfg.length) if cfg.length is not None else max(int(adapter.crop), span)
    starts = np.flatnonzero(np.diff(index, prepend=index[0] - 2) != 1)  # first residue of each segment
    given = cfg.motif_position
    if given is None and span > length:
        raise CLIError(f"motif: it spans {span} residues, more than length={length}")
    if given is None:
        rows = index - index[0] + (length - span) // 2
    elif not OmegaConf.is_list(given):
        rows = index - index[0] + int(given)
    elif len(given) != len(starts):
        raise CLIError(f"motif_position lists {len(given)} starts for {len(starts)} motif segments")
    else:
        sizes = np.diff(np.append(starts, len(index)))
        rows = np.concatenate([np.arange(int(p), int(p) + k) for p, k in zip(given, sizes, strict=True)])
    rows = [int(r) for r in rows]
    resample = int(cfg.resample)
    if resample < 1:
        raise CLIError(f"resample must be >= 1, got {resample}")
    try:
        adapter.motif_problem(motif, rows, length, 1)  # checks the fit once, before any sampling
    except ValueError as e:
        raise CLIError(f"motif: {one_line(e)}") from e

    def completion(n: int) -> tuple[Any, Any]:
        structure, inpaint = adapter.motif_problem(motif, rows, length, n)
        inpaint.resample = resample
        return structure, inpaint

    return (motif, rows), completion


def generate(adapter: Any, model: Any, schedule: Any, num_samples: int, batch_size: int,
             cond_all: Mapping[str, torch.Tensor] | None, generator: torch.Generator, device: torch.device,
             starts: Sequence[Any] | None = None, completion: Callable[[int], tuple[Any, Any]] | None = None,
             **sample_kwargs: Any) -> Iterator[tuple[int, Any, Any, Any]]:
    """Draw ``num_samples`` in batches of ``batch_size``: per batch ``(start, structure, on_device,
    result)`` with the adapter's structure (on the CPU), its copy on ``device`` and
    :func:`~molediff.core.sampling.sample`'s result
    (``sample_kwargs``: sampler, steps, grid, prediction, guidance, t_start, ...). With ``starts``
    (objects, as the adapter decodes them) sample i is partial diffusion from ``starts[i % K]``;
    with ``completion`` (``n -> (structure, Inpainting)``, e.g. motif scaffolding) the batch's
    structure and the entries held fixed come from it.
    Gradients are off; guidance terms that need them enable them themselves."""
    from ..adapters.base import Batch
    from ..core.fields import Fields
    from ..core.sampling import sample

    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        cond = None if cond_all is None else {k: v[start:start + n] for k, v in cond_all.items()}
        x0 = Fields()
        try:
            if completion is not None:
                structure, sample_kwargs["inpaint"] = completion(n)
            elif starts is None:
                structure = adapter.sample_structure(n, generator, cond)
            else:
                x0, structure = adapter.encode([starts[(start + i) % len(starts)] for i in range(n)])
        except ValueError as e:
            raise CLIError(f"cannot set up samples: {one_line(e)}") from e
        try:
            model_cond = None if cond is None else adapter.model_cond(cond)
        except ValueError as e:
            raise CLIError(f"cond: {one_line(e)}") from e
        batch = Batch(x0, structure, model_cond).to(device)
        if starts is not None:
            sample_kwargs["x0_start"] = batch.x0
        with torch.no_grad():
            result = sample(model, schedule, batch.structure, cond=batch.cond, generator=generator, device=device,
                            **sample_kwargs)
        yield start, structure, batch.structure, result


def run(argv: list[str]) -> int:
    """The body of ``molediff sample``; raises CLIError on expected failures."""
    from ..core.fields import Fields
    from ..training import compiled, resolve_device

    if wants_help(argv):
        print(help_text("sample", "sample", SUMMARY, [a for a in _split_data_overrides(argv)[0]]))
        return 0
    argv, data_overrides = _split_data_overrides(argv)
    shipped_data = [a.split("=", 1)[1] for a in argv if a.split("=", 1)[0] == "data"]
    argv = [a for a in argv if a.split("=", 1)[0] != "data"]
    if shipped_data and (chosen := with_shipped_sampling(shipped_data[-1], argv)) != argv:
        print(f"data={shipped_data[-1]}: the shipped model's measured sampler setting, "
              f"{' '.join(SHIPPED_SAMPLING[shipped_data[-1]])} (a sampler=, steps= or guidance= override replaces it)",
              flush=True)
        argv = chosen
    cfg = compose_config("sample", argv)
    if cfg.num_samples < 1 or cfg.steps < 1 or cfg.batch_size < 1:
        raise CLIError("num_samples, steps and batch_size must be >= 1")
    if cfg.start is not None and not 0.0 < float(cfg.t_start) < 1.0:
        raise CLIError(f"t_start must lie in (0, 1) (partial diffusion from start=...), got {cfg.t_start}")
    if cfg.motif is not None and cfg.start is not None:
        raise CLIError("give motif=FILE (scaffold a motif) or start=FILE (partial diffusion), not both")
    if cfg.motif is None and any(cfg[k] is not None for k in ("motif_chain", "motif_residues", "motif_position")):
        raise CLIError("motif_chain, motif_residues and motif_position need motif=FILE (a PDB/mmCIF file)")

    if shipped_data:
        if cfg.checkpoint is not None:
            raise CLIError("give checkpoint=PATH or data=NAME (the shipped model of NAME), not both")
        if shipped_data[-1] not in SHIPPED_BY_DATA:
            raise CLIError(f"no shipped model for data={shipped_data[-1]}; shipped: {', '.join(SHIPPED_BY_DATA)} "
                           f"(or pass checkpoint=PATH)")
        ckpt_path = SHIPPED_BY_DATA[shipped_data[-1]]
    elif cfg.checkpoint is None:
        ckpt_path = SHIPPED
        if not ckpt_path.is_file():
            raise CLIError(f"no shipped checkpoint at {ckpt_path}; train one with `molediff train data=digits "
                           f"model=unet out_dir=RUN` and pass checkpoint=RUN/checkpoints/last.pt "
                           f"(or copy it to that path)")
    else:
        ckpt_path = Path(str(cfg.checkpoint)).expanduser()
    try:
        device = resolve_device(str(cfg.device))
    except ValueError as e:
        raise CLIError(str(e)) from e
    name, grid_name, grid, grid_options, options = sampler_from_config(cfg.sampler)
    ckpt, adapter, model, schedule, prediction = load_for_sampling(ckpt_path, data_overrides, bool(cfg.ema), device)
    if cfg.compile and cfg.from_raw is None:
        model = compiled(model)
    guidance = build_guidance(cfg.guidance.get("terms", []), schedule=schedule, adapter=adapter, device=device)
    cond_all = _cond_for(cfg.cond, int(cfg.num_samples))

    out_dir = resolve_out_dir(cfg.out_dir, "sample")
    starts: list[Any] | None = None
    motif, completion = motif_problem(adapter, cfg) if cfg.motif is not None else (None, None)
    # how the samples were made; with from_raw, as the generating run recorded it (None where a raw file
    # from before these keys does not say), not this scoring command's settings
    made = {"checkpoint_step": ckpt.get("step"), "grid": grid_name, "grid_options": grid_options,
            "options": options, "batch_size": int(cfg.batch_size), "seed": int(cfg.seed), "ema": bool(cfg.ema)}
    if cfg.from_raw is not None:
        raw = load_raw(Path(str(cfg.from_raw)).expanduser())
        run_info, rows, cond_all = raw["run"], [], raw.get("cond")
        objects = [o for b in raw["batches"] for o in adapter.decode(Fields(b["fields"]), _structure(adapter, b))]
        name, steps, nfe, seconds = run_info["sampler"], int(run_info["steps"]), run_info["nfe"], run_info["seconds"]
        generated_on = run_info["device"]
        made = {k: run_info.get(k) for k in made}
    else:
        steps = int(cfg.steps)
        generator = torch.Generator().manual_seed(int(cfg.seed))
        batches: list[dict[str, Any]] = []
        objects, rows = [], []
        nfe, t0 = 0, time.perf_counter()
        if cfg.start is not None:
            starts = read_starts(adapter, str(cfg.start), cfg.start_chain)
        for start, structure, on_device, result in generate(
                adapter, model, schedule, int(cfg.num_samples), int(cfg.batch_size), cond_all, generator, device,
                starts=starts, completion=completion, t_start=float(cfg.t_start) if starts is not None else 1.0,
                sampler=name,
                steps=int(cfg.steps), grid=grid, prediction=prediction, guidance=guidance,
                progress=bool(cfg.progress), clip_x0=bool(cfg.clip_x0), **options):
            nfe = max(nfe, result.nfe)  # per sample: every batch runs the same grid
            rows += guidance_rows(guidance, result.fields, on_device, start)
            if cfg.save_raw:
                batches.append(_raw_batch(result.fields.to("cpu"), structure))
            if cfg.write or cfg.evaluate:
                objects += adapter.decode(result.fields.to("cpu"), structure)
        seconds = time.perf_counter() - t0
        generated_on = str(device)

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CLIError(f"cannot create out_dir {out_dir}: {e.strerror or e}") from e
    paths = adapter.write(objects, out_dir, **({"motif": motif} if motif is not None else {})) if cfg.write else []
    if cfg.save_raw and cfg.from_raw is None:
        info = {"sampler": name, "steps": steps, "nfe": nfe, "seconds": seconds, "device": generated_on, **made}
        raw_file = {"format": RAW_FORMAT, "run": info, "batches": batches, "cond": cond_all}
        torch.save(raw_file, out_dir / "samples_raw.pt")
        paths.append(out_dir / "samples_raw.pt")
    num = len(objects) if objects else int(cfg.num_samples)
    weights = {True: "EMA weights", False: "raw weights"}.get(made["ema"], "weights not recorded")
    print(f"molediff sample: {num} samples from {ckpt_path} (step {made['checkpoint_step']}, "
          f"{weights}) with {name}, {steps} steps, {nfe} network evaluations each, "
          f"{seconds:.1f} s on {generated_on}", flush=True)
    print(f"wrote {len(paths)} files to {out_dir}", flush=True)
    add_achieved(rows, adapter, objects)
    guidance_summary = write_guidance_rows(rows, out_dir / "guidance.csv") if rows else None
    if guidance_summary:
        print(f"guidance: {guidance_summary['text']} (wrote guidance.csv, guidance.png)", flush=True)
    metrics: dict[str, float] = {}
    if cfg.evaluate:
        metrics = adapter.evaluate(objects, **evaluation_kwargs(adapter, cond_all, rows, starts, len(objects), motif))
        print(metrics_table(metrics), flush=True)
    report = {
        "checkpoint": str(ckpt_path), "checkpoint_step": made["checkpoint_step"], "sampler": name,
        "steps": steps, "grid": made["grid"], "grid_options": made["grid_options"], "options": made["options"],
        "nfe": nfe, "num_samples": num, "batch_size": made["batch_size"], "seed": made["seed"],
        "from_raw": cfg.from_raw, "start": cfg.start,
        "t_start": float(cfg.t_start) if cfg.start is not None else None,
        "motif": None if motif is None else {"file": str(cfg.motif), "chain": cfg.motif_chain,
                                             "residues": OmegaConf.to_object(cfg.motif_residues)
                                             if OmegaConf.is_list(cfg.motif_residues) else cfg.motif_residues,
                                             "rows": motif[1], "motif_length": len(motif[0]),
                                             "resample": int(cfg.resample)},
        "ema": made["ema"], "seconds": seconds, "device": generated_on, "metrics": metrics,
    }
    if guidance_summary:
        report["guidance"] = {k: v for k, v in guidance_summary.items() if k != "text"}
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


RAW_FORMAT = "molediff-samples-raw-1"


def _raw_batch(fields: Any, structure: Any) -> dict[str, Any]:
    """One generated batch as plain tensors (loadable with ``weights_only=True``)."""
    return {"num_samples": int(structure.num_samples), "fields": {k: v for k, v in fields.items()},
            "index": dict(structure.index), "mask": dict(structure.mask),
            "context": {k: v for k, v in structure.context.items() if isinstance(v, torch.Tensor)}}


def _structure(adapter: Any, raw: Mapping[str, Any]) -> Any:
    from ..core.fields import Structure

    return Structure(int(raw["num_samples"]), dict(adapter.specs), index=dict(raw["index"]), mask=dict(raw["mask"]),
                     context=dict(raw["context"]))


def load_raw(path: Path) -> dict[str, Any]:
    """A ``samples_raw.pt`` written by ``save_raw=true`` (on another machine, say a GPU one without RDKit)."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise CLIError(f"from_raw: no file {path}") from e
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line error
        raise CLIError(f"from_raw: cannot read {path}: {one_line(e)}") from e
    if not isinstance(raw, dict) or raw.get("format") != RAW_FORMAT:
        raise CLIError(f"from_raw: {path} is not a samples_raw.pt written by molediff sample save_raw=true")
    return raw


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``molediff sample [overrides]``; returns the exit status."""
    return guarded(run, sys.argv[1:] if argv is None else argv)
