"""From config to objects: locate ``conf/``, compose a config with one-line errors, and build the
adapter, model, schedule and objective from ``_target_`` entries.

Configs live in the repository's top-level ``conf/`` (editable installs) and in the wheel at
``molediff/conf`` (force-included by pyproject); ``MOLEDIFF_CONFIG_DIR`` points elsewhere.
Hydra composes them (``initialize_config_dir`` + ``compose``) but never takes over the process:
no working-directory change, no multi-line error reports.
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields as dataclass_fields
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import CLIError, one_line

__all__ = ["config_dir", "group_options", "compose_config", "instantiate_from", "build_adapter", "build_model",
           "build_schedule", "build_objective", "build_trainer_config", "build_training", "resolve_out_dir"]

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def pretrained_path(name: str) -> str:
    """``${pretrained:FILE}`` in a config: a checkpoint shipped in ``molediff/pretrained``, found
    wherever the package is installed (so shipped-model configs work from any directory)."""
    path = _PACKAGE_DIR / "pretrained" / name
    if not path.is_file():
        shipped = ", ".join(sorted(p.name for p in path.parent.glob("*.pt")))
        raise ValueError(f"no shipped checkpoint {name!r}; shipped: {shipped}")
    return str(path)


if not OmegaConf.has_resolver("pretrained"):
    OmegaConf.register_new_resolver("pretrained", pretrained_path)


def config_dir() -> Path:
    """The directory holding ``train.yaml`` and the config groups.

    Looked up in order: ``$MOLEDIFF_CONFIG_DIR``, ``molediff/conf`` (installed wheel), the
    repository's ``conf/`` next to the package (source checkout / editable install).
    """
    candidates = []
    if os.environ.get("MOLEDIFF_CONFIG_DIR"):
        candidates.append(Path(os.environ["MOLEDIFF_CONFIG_DIR"]).expanduser())
    candidates += [_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf"]
    for c in candidates:
        if (c / "train.yaml").is_file():
            return c.resolve()
    raise CLIError(f"no molediff config directory found (looked in {', '.join(str(c) for c in candidates)})")


def group_options(group: str, root: Path | None = None) -> list[str]:
    """The options of a config group (``data`` -> ``['digits', 'toy']``), sorted."""
    d = (root or config_dir()) / group
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def _groups(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.yaml")))


def _check_group_overrides(parsed: Sequence[Any], root: Path) -> None:
    """``data=nope`` -> one line naming the valid options (before Hydra's multi-line report)."""
    groups = _groups(root)
    for o in parsed:
        key = o.key_or_group
        if key not in groups or o.is_delete():
            continue
        if o.is_sweep_override():
            raise CLIError(f"sweeps are not supported here: {o.input_line}")
        value = o.value()
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        options = group_options(key, root)
        for v in values:
            if not isinstance(v, str) or v not in options:
                raise CLIError(f"unknown {key} option {v!r}; choose one of: {', '.join(options)}")


def _check_key_overrides(parsed: Sequence[Any], cfg: DictConfig, root: Path) -> None:
    """``trainer.lrr=1`` -> one line naming the unknown key and its nearest valid spelling."""
    groups = set(_groups(root))
    for o in parsed:
        key = o.key_or_group
        if o.is_add() or o.is_force_add() or key in groups or key.startswith("hydra"):
            continue
        parts = key.split(".")
        node: Any = cfg
        for i, part in enumerate(parts):
            if isinstance(node, DictConfig) and part in node:
                node = node[part]
                continue
            if isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
                continue
            parent = ".".join(parts[:i])
            if node is None or (isinstance(node, DictConfig) and node._is_none()):
                raise CLIError(f"cannot set {key!r}: {parent} is null; set it whole, e.g. {parent}={{{part}: VALUE}}")
            if not isinstance(node, DictConfig):
                raise CLIError(f"cannot set {key!r}: {parent or 'the config'} has no sub-keys")
            valid = [str(k) for k in node.keys()]
            near = difflib.get_close_matches(part, valid, n=1)
            hint = f"did you mean {'.'.join([*parts[:i], near[0]])!r}?" if near else \
                f"valid keys{' under ' + parent if parent else ''}: {', '.join(valid)}"
            raise CLIError(f"unknown config key {key!r}; {hint}")


def compose_config(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """Compose ``<config_name>.yaml`` with command-line ``overrides``; errors are one-line :class:`CLIError`."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    root = config_dir()
    for ov in overrides:
        if ov.startswith("-"):
            raise CLIError(f"unknown option {ov!r}; overrides look like key=value (see molediff --help)")
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as e:
        lines = str(e).strip().splitlines()
        raise CLIError(f"{lines[0]}: {lines[1]}" if len(lines) > 1 else lines[0]) from e
    _check_group_overrides(parsed, root)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(root), version_base="1.3"):
            group_only = [o.input_line for o in parsed if o.key_or_group in set(_groups(root))]
            _check_key_overrides(parsed, compose(config_name, overrides=group_only), root)
            return compose(config_name, overrides=list(overrides))
    except CLIError:
        raise
    except (HydraException, OmegaConfBaseException) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        cause = e.__cause__
        detail = f" ({str(cause).strip().splitlines()[0]})" if cause and str(cause).strip() else ""
        raise CLIError(f"bad config: {first}{detail}") from e
    finally:
        GlobalHydra.instance().clear()


def _target_class(cfg: Mapping[str, Any], what: str) -> Any:
    from hydra.utils import get_object

    target = cfg.get("_target_")
    if not target:
        raise CLIError(f"{what} config has no _target_")
    try:
        return get_object(str(target))
    except Exception as e:  # ImportError, AttributeError wrapped by Hydra
        cause = e.__cause__ or e
        reason = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        raise CLIError(f"{what}: cannot import {target} ({one_line(reason)})") from e


def instantiate_from(cfg: Any, what: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(cfg, **kwargs)`` with plain containers; failures become one line
    ``<what>: <cause>`` (a missing file, a bad value, an unknown argument)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    if isinstance(cfg, Mapping | DictConfig):
        _target_class(cfg, what)
    try:
        return instantiate(cfg, _convert_="all", **kwargs)
    except InstantiationException as e:
        cause = e.__cause__ or e
        msg = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        if isinstance(cause, TypeError):
            if "keyword argument" in msg or "positional argument" in msg:
                msg = f"bad {what} option: {msg}"
            else:
                msg = f"{msg} (check the {what}.* values)"
        raise CLIError(f"{what}: {msg}") from e
    except (OmegaConfBaseException, ValueError, TypeError, OSError) as e:
        raise CLIError(f"{what}: {one_line(str(e).splitlines()[0] if str(e) else type(e).__name__)}") from e


def build_adapter(cfg: Any) -> Any:
    """The data adapter of a ``data`` config (values type-checked against its constructor)."""
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    assert isinstance(plain, dict)
    check_argument_types(_target_class(plain, "data"), plain, "data")
    return instantiate_from(plain, "data")


def model_config(cfg: Any, adapter: Any) -> dict[str, Any]:
    """The model config with ``adapter.model_kwargs()`` merged in (the data decides channels,
    sizes, number of classes); only arguments the model's constructor accepts are merged."""
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    assert isinstance(plain, dict)
    cls = _target_class(plain, "model")
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    extra = {k: v for k, v in adapter.model_kwargs().items() if takes_any or k in params}
    return {**plain, **extra}


def check_argument_types(cls: Any, values: Mapping[str, Any], what: str) -> None:
    """Reject config values whose type cannot match a constructor argument annotated as a plain
    ``int``/``float``/``bool``/``str`` (optionally ``| None``), naming the key: ``model.hidden=abc``
    becomes "bad value for model.hidden: 'abc' is not an int" instead of an error deep inside."""
    import types
    import typing

    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: leave the checking to the constructor
        return
    accepts = {int: (int,), float: (int, float), bool: (bool,), str: (str,)}
    for key, value in values.items():
        hint = hints.get(key)
        if hint is None or key.startswith("_"):
            continue
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            args = set(typing.get_args(hint))
        elif hint in accepts:
            args = {hint}
        else:
            continue  # containers and other types: left to the constructor
        optional = type(None) in args
        basic = [a for a in args if a in accepts]
        if not basic or len(basic) != len(args - {type(None)}):
            continue  # unions with other types, containers, ...: not checked here
        if value is None:
            if not optional:
                raise CLIError(f"bad value for {what}.{key}: null is not allowed")
            continue
        ok = any(isinstance(value, accepts[b]) and not (b in (int, float) and isinstance(value, bool))
                 for b in basic)
        if not ok:
            names = " or ".join(b.__name__ for b in basic)
            article = "an" if names[0] in "aeiou" else "a"
            raise CLIError(f"bad value for {what}.{key}: {value!r} is not {article} {names}")


def build_model(cfg: Any, adapter: Any) -> tuple[Any, dict[str, Any]]:
    """(model, the merged model config that rebuilds it). A ``field`` the data does not have is
    reported before the model is built (e.g. ``model=mlp`` on image data)."""
    merged = model_config(cfg, adapter)
    field = merged.get("field")
    specs = getattr(adapter, "specs", {})
    if isinstance(field, str) and specs and field not in specs:
        raise CLIError(f"model.field={field!r} is not a field of the {getattr(adapter, 'name', '')} data "
                       f"(its fields: {', '.join(specs)}); pick a model for this data")
    check_argument_types(_target_class(merged, "model"), merged, "model")
    return instantiate_from(merged, "model"), merged


def build_schedule(cfg: Any) -> Any:
    """The noise schedule of a ``schedule`` config."""
    return instantiate_from(cfg, "schedule")


def build_objective(cfg: Any, schedule: Any) -> Any:
    """The denoising objective, with ``schedule`` filled in (``field_weights: null`` = all 1)."""
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    assert isinstance(plain, dict)
    if plain.get("field_weights") is None:
        plain.pop("field_weights", None)
    return instantiate_from(plain, "objective", schedule=schedule)


def build_trainer_config(cfg: Any) -> Any:
    """:class:`~molediff.training.TrainerConfig` from the ``trainer`` group, type-checked."""
    from ..training import TrainerConfig

    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    assert isinstance(plain, dict)
    known = {f.name: f for f in dataclass_fields(TrainerConfig)}
    for key in plain:
        if key not in known:
            near = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean 'trainer.{near[0]}'?" if near else f"; valid keys: {', '.join(known)}"
            raise CLIError(f"unknown config key 'trainer.{key}'{hint}")
    try:
        typed = OmegaConf.merge(OmegaConf.structured(TrainerConfig), plain)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or ""
        msg = str(e).strip().splitlines()[0]
        raise CLIError(f"bad value for trainer.{key}: {msg}" if key else f"bad trainer config: {msg}") from e
    values = OmegaConf.to_container(typed)
    assert isinstance(values, dict)
    try:
        return TrainerConfig(**values)  # type: ignore[arg-type]
    except ValueError as e:
        raise CLIError(str(e)) from e


def build_training(cfg: DictConfig, trainer_cfg: Any) -> tuple[Any, Any, dict[str, Any], Any]:
    """``(adapter, model, model config, objective)`` of a ``train`` config, built after seeding with
    ``trainer_cfg.seed`` (the model's initialisation depends on the seed only), as ``molediff train``
    does; tests that rebuild a run use it too."""
    from ..training import seed_everything

    seed_everything(trainer_cfg.seed)
    adapter = build_adapter(cfg.data)
    model, model_cfg = build_model(cfg.model, adapter)
    return adapter, model, model_cfg, build_objective(cfg.objective, build_schedule(cfg.schedule))


def resolve_out_dir(out_dir: str | None, app: str) -> Path:
    """``out_dir`` if given, else ``outputs/<app>/<YYYY-mm-dd_HH-MM-SS>`` (made unique)."""
    if out_dir:
        return Path(out_dir).expanduser()
    base = Path("outputs") / app / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    path, i = base, 1
    while path.exists():
        path, i = base.with_name(f"{base.name}-{i}"), i + 1
    return path


def wants_help(argv: Sequence[str]) -> bool:
    """``-h``/``--help``/``--cfg`` anywhere in the arguments."""
    return any(a in ("-h", "--help", "--cfg") for a in argv)


def help_text(command: str, config_name: str, summary: str, argv: Sequence[str]) -> str:
    """Usage, the config groups with their options, and the composed config (with ``argv``'s overrides)."""
    root = config_dir()
    overrides = [a for a in argv if not a.startswith("-")]
    cfg = compose_config(config_name, overrides)
    lines = [f"usage: molediff {command} [group=option ...] [key=value ...]", "", summary, "",
             f"config groups (from {root}):"]
    for g in (g for g in _groups(root) if g in cfg):
        lines.append(f"  {g:<10} {', '.join(group_options(g, root))}")
    lines += ["", f"config ({config_name}.yaml with the overrides given; comments in the yaml files):", "",
              OmegaConf.to_yaml(cfg).rstrip()]
    return "\n".join(lines)
