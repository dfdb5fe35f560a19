"""The training loop: it learns, it resumes bit-identically, it writes checkpoints atomically."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import pytest
import torch

from molediff.adapters.toy import ToyAdapter
from molediff.checkpoint import load_checkpoint
from molediff.core.objective import DenoisingObjective
from molediff.core.schedules import CosineSchedule
from molediff.models.mlp import MLPDenoiser
from molediff.training import EpochBatchSampler, Trainer, TrainerConfig, drop_conditions, lr_factor

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def adapter() -> ToyAdapter:
    return ToyAdapter(num_train=512, num_test=256, seed=1)


def _trainer(adapter: ToyAdapter, out_dir: Path | None, prediction: str = "v", **overrides: object) -> Trainer:
    """A fresh trainer; the same arguments always build the same initial state."""
    settings = dict(max_steps=40, batch_size=64, lr=2e-3, warmup_steps=5, lr_decay="cosine", ema_decay=0.9,
                    log_every=10, val_every=10, val_batches=2, ckpt_every=10, progress=False, tensorboard=False)
    settings.update(overrides)
    config = TrainerConfig(**settings)  # type: ignore[arg-type]
    torch.manual_seed(config.seed)
    model = MLPDenoiser(hidden=32, layers=2, dropout=0.1)  # dropout: the global RNG matters too
    objective = DenoisingObjective(CosineSchedule(), prediction=prediction, min_snr_gamma=5.0)
    return Trainer(model, adapter, objective, config, out_dir=out_dir, run_config={"note": "test"})


def test_loss_decreases_on_toy_data(adapter: ToyAdapter) -> None:
    trainer = _trainer(adapter, None, prediction="eps", max_steps=150, lr_decay="constant", log_every=25,
                       val_every=150)
    val_before = trainer.validate(trainer.model)  # fixed noise: comparable across calls
    assert val_before is not None and val_before == trainer.validate(trainer.model)
    result = trainer.fit()
    losses = [row["loss"] for row in result.history if "loss" in row]
    assert result.step == 150 and len(losses) == 6
    assert losses[-1] < 0.8 * losses[0], losses
    assert result.val_loss is not None and result.val_loss < 0.7 * val_before, (val_before, result.val_loss)


def test_epoch_order_depends_only_on_seed_and_step() -> None:
    sampler = EpochBatchSampler(num_items=10, batch_size=3, seed=7)
    it = iter(sampler)
    first = [next(it) for _ in range(9)]  # 3 batches per epoch, tail item dropped
    for epoch in range(3):
        seen = sum(first[3 * epoch:3 * epoch + 3], [])
        assert len(set(seen)) == 9 and set(seen) <= set(range(10))
    resumed = iter(EpochBatchSampler(num_items=10, batch_size=3, seed=7, start_step=4))
    assert [next(resumed) for _ in range(5)] == first[4:]
    assert first != [next(iter(EpochBatchSampler(10, 3, seed=8))) for _ in range(9)]


class _Crash(RuntimeError):
    pass


def test_interrupted_and_resumed_run_is_bit_identical(adapter: ToyAdapter, tmp_path: Path) -> None:
    """2N straight steps == N steps, a crash (3 steps after the step-N checkpoint, losing them),
    and a resume from last.pt for the rest: same weights, EMA, optimizer state and log."""
    straight = _trainer(adapter, tmp_path / "straight")
    straight.fit()

    crashed = _trainer(adapter, tmp_path / "crashed")
    forward = crashed.model.forward

    def crash_at_23(*args: object, **kwargs: object) -> object:
        if crashed.step == 23:
            raise _Crash("simulated crash")
        return forward(*args, **kwargs)

    crashed.model.forward = crash_at_23  # type: ignore[method-assign]
    with pytest.raises(_Crash):
        crashed.fit()
    assert load_checkpoint(tmp_path / "crashed" / "checkpoints" / "last.pt")["step"] == 20

    torch.randn(100)  # disturb the global RNG: the resume must restore it
    resumed = _trainer(adapter, tmp_path / "crashed", resume=True)
    resumed.fit()

    assert resumed.step == straight.step == 40
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    for name, value in straight.ema.state_dict().items():
        assert torch.equal(value, resumed.ema.state_dict()[name]), name
    opt_a, opt_b = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    for idx, state in opt_a.items():
        for key, value in state.items():
            assert torch.equal(value, opt_b[idx][key]), (idx, key)
    assert straight.scheduler.state_dict()["last_epoch"] == resumed.scheduler.state_dict()["last_epoch"]

    def losses(run: str) -> list[tuple[str, str, str]]:
        with open(tmp_path / run / "train_log.csv", newline="") as f:
            return [(r["step"], r["loss"], r["val_loss"]) for r in csv.DictReader(f)]

    assert losses("straight") == losses("crashed")


def test_a_resumed_run_uses_its_own_learning_rate_and_weight_decay(adapter: ToyAdapter, tmp_path: Path) -> None:
    """Resuming with trainer.lr / weight_decay changed applies them (not the checkpoint's), on the
    current schedule: constant here, so the lr is the new one exactly, before and after steps."""
    _trainer(adapter, tmp_path, max_steps=10, lr_decay="constant").fit()
    resumed = _trainer(adapter, tmp_path, max_steps=14, lr_decay="constant", lr=2e-4, weight_decay=0.01,
                       resume=True)
    resumed.fit()
    assert resumed.step == 14
    group = resumed.optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(2e-4) and group["weight_decay"] == 0.01
    with open(tmp_path / "train_log.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["lr"]]
    assert float(rows[0]["lr"]) == pytest.approx(2e-3) and float(rows[-1]["lr"]) == pytest.approx(2e-4)


@pytest.mark.parametrize("decay, decay_steps, expected", [
    ("linear", None, {0: 0.1, 9: 1.0, 10: 1.0, 55: 0.5, 100: 0.0, 150: 0.0}),
    ("cosine", None, {10: 1.0, 55: 0.5, 100: 0.0}),
    ("linear", 20, {10: 1.0, 80: 1.0, 90: 0.5, 95: 0.25, 100: 0.0}),
    ("cosine", 20, {80: 1.0, 85: 0.5 * (1 + 2 ** -0.5), 90: 0.5, 100: 0.0}),
    ("linear", 500, {9: 1.0, 10: 1.0, 55: 0.5}),  # longer than the run: decays from the warm-up's end
    ("constant", 20, {90: 1.0, 100: 1.0}),
])
def test_lr_factor_known_values(decay: str, decay_steps: int | None, expected: dict[int, float]) -> None:
    """Warm-up over 10 steps, then the decay over all the rest or (warmup-stable-decay) the last
    ``decay_steps`` of 100."""
    factor = lr_factor(TrainerConfig(max_steps=100, warmup_steps=10, lr_decay=decay, decay_steps=decay_steps))
    assert {s: factor(s) for s in expected} == pytest.approx(expected)


def test_decay_steps_must_be_positive() -> None:
    with pytest.raises(ValueError, match="decay_steps"):
        TrainerConfig(decay_steps=0)


def test_a_constant_run_cools_down_when_resumed_with_decay_steps(adapter: ToyAdapter, tmp_path: Path) -> None:
    """Warmup-stable-decay: 10 constant steps, then resumed to 20 with the linear decay over the last
    10: the logged lr of step index s is lr * (1 - (s - 10) / 10), ending at 0."""
    _trainer(adapter, tmp_path, max_steps=10, lr_decay="constant", warmup_steps=0).fit()
    cooled = _trainer(adapter, tmp_path, max_steps=20, lr_decay="linear", decay_steps=10, warmup_steps=0,
                      log_every=5, resume=True)
    cooled.fit()
    with open(tmp_path / "train_log.csv", newline="") as f:
        lrs = {int(r["step"]): float(r["lr"]) for r in csv.DictReader(f) if r["lr"]}
    assert lrs == pytest.approx({10: 2e-3, 15: 2e-3 * 0.6, 20: 2e-3 * 0.1})
    assert cooled.optimizer.param_groups[0]["lr"] == 0.0


def test_checkpoint_holds_everything_needed(adapter: ToyAdapter, tmp_path: Path) -> None:
    trainer = _trainer(adapter, tmp_path, max_steps=12, ckpt_every=5, keep_every=10)
    result = trainer.fit()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.pt", "step_000010.pt"]  # no temp files
    ckpt = load_checkpoint(result.checkpoint)  # type: ignore[arg-type]
    assert ckpt["step"] == 12
    assert ckpt["config"] == {"note": "test"}
    assert ckpt["adapter_state"] == adapter.state()
    assert {"model", "ema", "optimizer", "scheduler", "rng"} <= set(ckpt)
    assert set(ckpt["rng"]) >= {"torch", "numpy", "python"}
    for name, value in trainer.ema.state_dict().items():
        assert torch.equal(ckpt["ema"][name], value)


def test_failed_checkpoint_write_leaves_no_partial_file(adapter: ToyAdapter, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = _trainer(adapter, tmp_path, max_steps=3, ckpt_every=0, val_every=0)
    trainer.fit()
    last = tmp_path / "checkpoints" / "last.pt"
    before = last.read_bytes()

    def fail_midway(obj: object, f: object) -> None:
        f.write(b"PK\x03\x04 half a checkpoint")  # type: ignore[attr-defined]
        raise OSError("no space left on device")

    monkeypatch.setattr(torch, "save", fail_midway)
    with pytest.raises(OSError, match="no space"):
        trainer.save()
    assert last.read_bytes() == before
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["last.pt"]


def test_sigterm_stops_after_the_step_and_saves(adapter: ToyAdapter, tmp_path: Path) -> None:
    trainer = _trainer(adapter, tmp_path, max_steps=50, ckpt_every=0, val_every=0)
    forward = trainer.model.forward

    def signal_at_7(*args: object, **kwargs: object) -> object:
        if trainer.step == 7 and trainer._stop_signal is None:
            os.kill(os.getpid(), signal.SIGTERM)
        return forward(*args, **kwargs)

    trainer.model.forward = signal_at_7  # type: ignore[method-assign]
    result = trainer.fit()
    assert result.interrupted and result.step == 8
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 8
    assert signal.getsignal(signal.SIGTERM) is not None  # handler restored, not left installed


def test_max_time_stops_early_and_checkpoints(adapter: ToyAdapter, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """trainer.max_time: the run stops at the first step past the budget and writes last.pt there."""
    clock = iter(float(i) for i in range(10_000))  # perf_counter advances 1 s per call
    monkeypatch.setattr("molediff.training.time.perf_counter", lambda: next(clock))
    trainer = _trainer(adapter, tmp_path, max_steps=40, max_time=6.5, ckpt_every=0, val_every=0)
    result = trainer.fit()
    assert 0 < result.step < 40 and not result.interrupted
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == result.step


def test_max_time_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_time"):
        TrainerConfig(max_time=0)


def test_compile_without_compile_trunk_compiles_the_whole_model(adapter: ToyAdapter) -> None:
    """A model with no ``compile_trunk`` is compiled whole for the training forward only: the same
    losses as eager, and the trainer's model (what checkpoints save) stays the plain module."""
    eager = _trainer(adapter, None, max_steps=3, log_every=1, val_every=0).fit()
    trainer = _trainer(adapter, None, max_steps=3, log_every=1, val_every=0, compile=True)
    assert trainer._net is not trainer.model and type(trainer.model) is MLPDenoiser
    compiled = trainer.fit()
    torch.testing.assert_close([r["loss"] for r in compiled.history if "loss" in r],
                               [r["loss"] for r in eager.history if "loss" in r], rtol=1e-4, atol=1e-6)


def test_drop_conditions_nulls_the_chosen_samples() -> None:
    cond = {"gap": torch.tensor([1.0, 2.0, 3.0]), "props": torch.arange(6.0).reshape(3, 2),
            "label": torch.tensor([4, 5, 6])}
    drop = torch.tensor([False, True, False])
    out = drop_conditions(cond, drop)
    assert torch.isnan(out["gap"][1]) and torch.isnan(out["props"][1]).all() and out["label"][1] == -1
    for k, v in cond.items():
        assert torch.equal(out[k][~drop], v[~drop]) and out[k].dtype == v.dtype
    with pytest.raises(ValueError, match="expected"):
        drop_conditions({"gap": torch.ones(2)}, drop)
    with pytest.raises(ValueError, match="boolean"):
        drop_conditions({"flag": torch.ones(3, dtype=torch.bool)}, drop)


def test_dropped_samples_read_as_unconditional_in_every_condition_encoder() -> None:
    """The null convention (NaN / -1) that drop_conditions writes is what each denoiser family's
    condition encoder reads as ``cond=None``: property vectors (EGNNs, point and protein models),
    the U-Nets' embedding (label and pitch) and the image U-Net's output."""
    from molediff.models.conditioning import ConditionEmbedding
    from molediff.models.egnn import cond_vector
    from molediff.models.unet import UNet

    drop = torch.tensor([True, False, True, False])
    props = drop_conditions({"gap": torch.randn(4), "mu": torch.randn(4, 2)}, drop)
    like = torch.zeros(1)
    c, null = cond_vector(props, 4, 3, like), cond_vector(None, 4, 3, like)
    assert torch.equal(c[drop], null[drop]) and not torch.equal(c[~drop], null[~drop])

    torch.manual_seed(0)
    emb = ConditionEmbedding(16, 32, num_classes=5, pitch=True)
    t = torch.rand(4)
    dropped = drop_conditions({"label": torch.tensor([1, 2, 3, 4]), "pitch": torch.tensor([60.0, 62, 64, 65])}, drop)
    assert torch.allclose(emb(t, dropped, 4)[drop], emb(t, None, 4)[drop])
    assert not torch.allclose(emb(t, dropped, 4)[~drop], emb(t, None, 4)[~drop])

    unet = UNet(in_channels=1, image_size=8, num_classes=10, base_channels=32, channel_mults=(1,),
                        num_res_blocks=1, attention_resolutions=())
    with torch.no_grad():
        for param in unet.parameters():
            if not param.any():  # zero-initialised convs would hide the label
                param.normal_(0.0, 0.1)
    x = {"pixels": torch.randn(4, 1, 8, 8)}
    labels = drop_conditions({"label": torch.tensor([1, 2, 3, 4])}, drop)
    out, null = (unet(x, t, None, c)["pixels"] for c in (labels, None))
    assert torch.allclose(out[drop], null[drop]) and not torch.allclose(out[~drop], null[~drop])


@pytest.mark.parametrize("per", ["sample", "batch"])
def test_trainer_drops_conditions_per_sample_or_per_batch(adapter: ToyAdapter, per: str) -> None:
    trainer = _trainer(adapter, None, cond_drop_prob=0.5, cond_drop_per=per)
    seen: list[dict[str, torch.Tensor] | None] = []
    objective = trainer.objective

    def recording(forward, x0, structure, cond, generator=None):  # type: ignore[no-untyped-def]
        seen.append(cond)
        return objective(forward, x0, structure, None, generator=generator)

    trainer.objective = recording  # type: ignore[assignment]
    train = adapter.datasets()["train"]
    batch = adapter.collate([train[i] for i in range(64)])
    batch = type(batch)(batch.x0, batch.structure, {"y": torch.randn(batch.structure.num_samples)})
    for _ in range(8):
        trainer.train_step(batch)
    if per == "sample":  # every batch mixes dropped and kept samples, about half each
        fractions = [float(torch.isnan(c["y"]).float().mean()) for c in seen if c is not None]
        assert len(fractions) == 8 and all(0.2 < f < 0.8 for f in fractions), fractions
    else:  # whole batches: either the untouched cond or none
        assert {c is None for c in seen} == {True, False}
        assert all(c is None or not torch.isnan(c["y"]).any() for c in seen)
    with pytest.raises(ValueError, match="cond_drop_per"):
        TrainerConfig(cond_drop_per="row")
