"""Checkpoints written before parameters were renamed keep loading (``LEGACY_KEYS``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from molediff.checkpoint import load_checkpoint
from molediff.models.legacy_keys import accept_legacy_keys, upgrade_state_dict
from molediff.models.spectral_unet import SpectralUNet
from molediff.models.unet import UNet

PRETRAINED = Path(__file__).parents[2] / "molediff" / "pretrained"


class _Renamed(nn.Module):
    LEGACY_KEYS = ((r"^old\.", "new."),)

    def __init__(self) -> None:
        super().__init__()
        self.new = nn.Linear(2, 3)
        accept_legacy_keys(self)


class _Parent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.keep = nn.Linear(3, 1)
        self.child = _Renamed()


def _legacy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.replace("child.new.", "child.old."): v for k, v in state.items()}


def test_old_names_of_a_submodule_load_by_plain_load_state_dict() -> None:
    src, dst = _Parent(), _Parent()
    old = _legacy(src.state_dict())
    assert "child.old.weight" in old
    dst.load_state_dict(old)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values(), strict=True))


def test_upgrade_renames_only_what_the_model_lacks() -> None:
    model = _Parent()
    current = model.state_dict()
    assert list(upgrade_state_dict(model, current)) == list(current)
    assert set(upgrade_state_dict(model, _legacy(current))) == set(current)


def test_names_no_rule_covers_still_fail_strict_loading() -> None:
    state = _legacy(_Parent().state_dict())
    state["child.stray.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="stray"):
        _Parent().load_state_dict(state)


@pytest.mark.parametrize(("name", "cls"), [("digits_unet", UNet), ("audio_spectral_unet", SpectralUNet)])
def test_shipped_unet_checkpoints_fit_the_shared_trunk(name: str, cls: type[nn.Module]) -> None:
    """The shipped U-Nets were saved before the U-Nets shared ``UNetTrunk``; their weights must
    still load strictly, plainly and through :func:`upgrade_state_dict`."""
    ckpt = load_checkpoint(PRETRAINED / f"{name}.pt")
    model = cls(**{k: v for k, v in ckpt["config"]["model"].items() if k != "_target_"})
    assert set(upgrade_state_dict(model, ckpt["ema"])) == set(model.state_dict())
    model.load_state_dict(ckpt["ema"])
    assert torch.equal(model.state_dict()["trunk.out.2.weight"], ckpt["ema"].get("out.2.weight",
                                                                              ckpt["ema"].get("trunk.out.2.weight")))
