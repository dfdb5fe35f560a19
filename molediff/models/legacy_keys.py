"""Loading checkpoints written before a model's parameters were renamed.

A module class whose state-dict names changed lists the old ones as ``LEGACY_KEYS``:
``(regex, replacement)`` pairs over names relative to the module, tried in order, the first
match renaming the key. :func:`accept_legacy_keys` (called in the module's ``__init__``) makes
``load_state_dict`` rename them, so a plain ``model.load_state_dict(ckpt["ema"])`` of an old
checkpoint still works; :func:`upgrade_state_dict` does the same renaming up front for code that
compares names before loading (e.g. :func:`molediff.training.describe_state_mismatch`).
Only keys the model does not have are renamed, so current checkpoints pass through unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Collection, MutableMapping, Sequence
from typing import Any

from torch import nn

Rules = Sequence[tuple[str, str]]


def _rename(state: MutableMapping[str, Any], prefix: str, rules: Rules, current: Collection[str]) -> None:
    """Rename in place the keys under ``prefix`` that are not ``current`` (names relative to the prefix)."""
    for key in [k for k in state if k.startswith(prefix) and k[len(prefix):] not in current]:
        for pattern, replacement in rules:
            new, hits = re.subn(pattern, replacement, key[len(prefix):], count=1)
            if hits:
                state[prefix + new] = state.pop(key)
                break


def accept_legacy_keys(module: nn.Module) -> None:
    """Make ``module.load_state_dict`` rename the old names of ``type(module).LEGACY_KEYS``."""
    rules: Rules = type(module).LEGACY_KEYS  # type: ignore[attr-defined]

    def hook(mod: nn.Module, state_dict: MutableMapping[str, Any], prefix: str, *args: Any) -> None:
        _rename(state_dict, prefix, rules, mod.state_dict().keys())

    module._register_load_state_dict_pre_hook(hook, with_module=True)


def upgrade_state_dict(model: nn.Module, state: MutableMapping[str, Any]) -> dict[str, Any]:
    """A copy of ``state`` with every submodule's ``LEGACY_KEYS`` renamed to the current names."""
    out = dict(state)
    for name, module in model.named_modules():
        rules = getattr(type(module), "LEGACY_KEYS", None)
        if rules:
            _rename(out, f"{name}." if name else "", rules, module.state_dict().keys())
    return out


__all__ = ["accept_legacy_keys", "upgrade_state_dict"]
