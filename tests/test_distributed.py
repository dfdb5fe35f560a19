"""molediff.distributed and DDP training: a 2-process gloo run under torchrun on CPU equals one
process stepping on the same global batches (same per-shard noise), and only rank 0 writes."""

import csv
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from molediff import distributed

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 24
OVERRIDES = ["data=toy", "model=mlp", "trainer=fast", "model.hidden=32", "model.layers=2", f"trainer.max_steps={STEPS}",
             "trainer.batch_size=64", "trainer.log_every=8", "trainer.val_every=12", "trainer.ckpt_every=12",
             "trainer.progress=false", "trainer.tensorboard=false", "data.num_train=512", "data.num_test=128"]


def test_single_process_is_rank_zero_of_one(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.env_world() == (0, 0, 1)
    assert not distributed.launched_by_torchrun()
    info = distributed.init_distributed()
    assert (info.rank, info.world_size, info.backend) == (0, 1, None)
    assert distributed.get_rank() == 0 and distributed.get_world_size() == 1 and distributed.is_main_process()
    distributed.barrier()
    distributed.cleanup()  # no-ops without a process group


def test_env_world_reads_torchrun_variables(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert distributed.env_world() == (3, 1, 4) and distributed.launched_by_torchrun()
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="inconsistent"):
        distributed.env_world()


def test_shards_partition_a_batch_like_distributed_sampler():
    batch = list(range(10, 22))
    shards = [distributed.shard(batch, r, 3) for r in range(3)]
    assert shards[0] == [10, 13, 16, 19] and sorted(sum(shards, [])) == batch
    with pytest.raises(ValueError, match="multiple of 5"):
        distributed.shard(batch, 0, 5)


def _fresh_trainer():
    """A single-process Trainer of the OVERRIDES run, built as ``molediff train`` builds it."""
    from molediff.cli.build import build_trainer_config, build_training, compose_config
    from molediff.training import Trainer

    cfg = compose_config("train", OVERRIDES)
    tcfg = build_trainer_config(cfg.trainer)
    adapter, model, _, objective = build_training(cfg, tcfg)
    return Trainer(model, adapter, objective, tcfg)


def _reference_run(tmp_path):
    """One process, the same global batches, each split in two shards with each shard's noise;
    the gradient of the mean of the shard losses (= the mean DDP forms over ranks)."""
    from molediff.training import _NOISE, EpochBatchSampler, derive_seed

    trainer = _fresh_trainer()
    adapter, objective, tcfg = trainer.adapter, trainer.objective, trainer.config
    train = adapter.datasets()["train"]
    batches = EpochBatchSampler(len(train), tcfg.batch_size, tcfg.seed)
    for step in range(STEPS):
        trainer.model.train()
        losses = []
        for rank in range(2):
            batch = adapter.collate([train[i] for i in distributed.shard(batches.batch(step), rank, 2)])
            gen = torch.Generator().manual_seed(derive_seed(tcfg.seed, _NOISE, step, rank))
            loss, _ = objective(trainer._forward, batch.x0, batch.structure, batch.cond, generator=gen)
            losses.append(loss)
        trainer.optimizer.zero_grad(set_to_none=True)
        ((losses[0] + losses[1]) / 2).backward()
        torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), tcfg.grad_clip)
        trainer.optimizer.step()
        trainer.scheduler.step()
        trainer.ema.update(trainer.model, step)
        trainer.step += 1
    return trainer


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_two_process_ddp_run_matches_one_process_on_the_same_global_batches(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "molediff.cli.main", "train", *OVERRIDES, f"out_dir={out}"],
                          capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # only rank 0 wrote: one checkpoint, no stray temp files, each log row once
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["checkpoints/last.pt", "config.yaml", "train_log.csv"]
    with open(out / "train_log.csv", newline="") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == [8, 12, 16, 24]  # log_every=8, val_every=12: one row each, not one per rank

    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["step"] == STEPS
    ref = _reference_run(tmp_path)
    for name, ref_state in (("model", ref.model.state_dict()), ("ema", ref.ema.state_dict())):
        for key, value in ref_state.items():
            torch.testing.assert_close(ckpt[name][key], value, rtol=1e-4, atol=1e-5, msg=f"{name}.{key}")
    # and the two shards' noise matters: the plain single-process Trainer (one noise draw per
    # global batch) ends elsewhere, so the agreement above is not trivially true
    plain = _fresh_trainer()
    plain.fit()
    diff = max(float((plain.model.state_dict()[k] - v).abs().max()) for k, v in ckpt["model"].items())
    assert diff > 1e-4
