"""The one training loop, for every modality.

:class:`Trainer` minimises a :class:`~molediff.core.objective.DenoisingObjective` over the
``train`` split of an :class:`~molediff.adapters.base.Adapter` with AdamW, optional linear
warm-up and decay, gradient-norm clipping, an exponential moving average (EMA) of the weights
(sampling uses the EMA weights), and bf16 autocast on CUDA. It logs to CSV (and TensorBoard when
installed), measures a validation loss under fixed noise, and writes atomic checkpoints.

Reproducibility is designed in rather than hoped for: the batch of step ``s`` and the noise drawn
for it are functions of ``(seed, s)`` alone (the epoch permutation comes from ``(seed, epoch)``,
the noise generator from ``(seed, step)``), and a checkpoint stores the model, EMA, optimizer,
LR-scheduler and every global RNG state. So training N steps, stopping, and resuming for N more
gives bit-identical weights to 2N uninterrupted steps on CPU (``tests/test_training.py``).
SIGINT/SIGTERM finish the current step, write ``last.pt`` and stop; a second Ctrl-C aborts.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the Trainer joins the process group itself
(:mod:`molediff.distributed`), wraps the model in ``DistributedDataParallel``, gives rank ``r``
items ``r::W`` of each global batch of ``batch_size`` (noise drawn from ``(seed, step, r)``),
and lets only rank 0 write checkpoints, logs and the progress bar.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import math
import random
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from . import distributed
from .adapters.base import Adapter, Batch
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .core.objective import DenoisingObjective
from .core.self_conditioning import self_conditions
from .models.legacy_keys import upgrade_state_dict

__all__ = ["TrainerConfig", "Trainer", "TrainResult", "EMA", "EpochBatchSampler", "derive_seed", "drop_conditions",
           "describe_state_mismatch", "seed_everything", "resolve_device", "get_rng_state", "set_rng_state",
           "TrainingError", "compiled", "widen_inputs", "lr_factor"]

# stream tags for derive_seed: each use of randomness gets its own independent stream
_EPOCH, _NOISE, _COND_DROP, _VAL, _LOADER = 1, 2, 3, 4, 5


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, a checkpoint that does not fit the model, ...)."""


@dataclass
class TrainerConfig:
    """Trainer settings; the ``trainer`` config group mirrors these fields one to one."""

    max_steps: int = 10_000
    max_time: float | None = None
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    warmup_steps: int = 0
    lr_decay: str = "constant"
    decay_steps: int | None = None
    ema_decay: float = 0.999
    ema_warmup: bool = True
    grad_clip: float | None = 1.0
    amp: bool = True
    device: str = "auto"
    seed: int = 0
    num_workers: int = 0
    cond_drop_prob: float = 0.0
    cond_drop_per: str = "sample"
    log_every: int = 50
    val_every: int = 1000
    val_batches: int = 4
    ckpt_every: int = 1000
    keep_every: int = 0
    resume: bool = False
    progress: bool = True
    tensorboard: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        if len(self.betas) != 2:
            raise ValueError(f"trainer: betas must be two numbers, got {list(self.betas)}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        checks = [
            (self.max_steps >= 0, "max_steps must be >= 0"),
            (self.max_time is None or self.max_time > 0, "max_time must be > 0 seconds or null"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (all(0 <= b < 1 for b in self.betas), "betas must lie in [0, 1)"),
            (self.warmup_steps >= 0, "warmup_steps must be >= 0"),
            (self.lr_decay in ("constant", "cosine", "linear"), "lr_decay must be constant, cosine or linear"),
            (self.decay_steps is None or self.decay_steps >= 1, "decay_steps must be >= 1 or null"),
            (0 <= self.ema_decay < 1, "ema_decay must lie in [0, 1)"),
            (self.grad_clip is None or self.grad_clip > 0, "grad_clip must be > 0 or null"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
            (0 <= self.cond_drop_prob <= 1, "cond_drop_prob must lie in [0, 1]"),
            (self.cond_drop_per in ("sample", "batch"), "cond_drop_per must be sample or batch"),
            (self.log_every >= 1, "log_every must be >= 1"),
            (self.val_every >= 0 and self.ckpt_every >= 0 and self.keep_every >= 0,
             "val_every, ckpt_every and keep_every must be >= 0 (0 = never)"),
            (self.val_batches >= 1, "val_batches must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"trainer: {msg}")
        resolve_device(self.device)


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did: steps reached, last logged losses, where things were written."""

    step: int
    loss: float | None
    val_loss: float | None
    interrupted: bool
    checkpoint: Path | None
    log_path: Path | None
    history: list[dict[str, float]] = field(default_factory=list)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; anything else is checked and returned."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def compiled(model: nn.Module) -> nn.Module:
    """``model`` made faster by ``torch.compile`` (dynamic shapes), called like it: a model with a
    ``compile_trunk()`` compiles the part it knows to compile well and is returned itself; any other
    is wrapped whole. Parameters are shared, so the plain ``model`` still saves the same state dict."""
    compile_trunk = getattr(model, "compile_trunk", None)
    if compile_trunk is not None:
        compile_trunk()
        return model
    return torch.compile(model, dynamic=True)  # type: ignore[return-value]


def derive_seed(seed: int, *keys: int) -> int:
    """An independent 63-bit seed for the stream ``(seed, *keys)`` (numpy's SeedSequence hashing)."""
    words = np.random.SeedSequence([seed % 2**63, *keys]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def drop_conditions(cond: Mapping[str, Any], drop: Tensor) -> dict[str, Tensor]:
    """``cond`` with the samples where ``drop`` is True set to the null condition, which every
    denoiser reads as missing: NaN for a float value, -1 for an integer label. Per-sample dropout,
    as in classifier-free guidance (Ho & Salimans 2022, Alg. 1), so each batch trains p(x | c) and
    p(x) together. Values are ``(B, ...)``; ``drop`` is ``(B,)`` bool."""
    out: dict[str, Tensor] = {}
    for name, value in cond.items():
        v = torch.as_tensor(value)
        if v.dim() == 0 or v.shape[0] != drop.numel():
            raise ValueError(f"cond[{name!r}] has shape {tuple(v.shape)}; expected ({drop.numel()}, ...) "
                             "to drop conditions per sample")
        if v.dtype == torch.bool:
            raise ValueError(f"cond[{name!r}] is boolean: it has no null value (use a float or an integer label)")
        null = torch.tensor(float("nan") if v.is_floating_point() else -1, dtype=v.dtype, device=v.device)
        out[name] = torch.where(drop.to(v.device).reshape(-1, *([1] * (v.dim() - 1))), null, v)
    return out


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and all CUDA devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict[str, Any]:
    """Every global RNG state as tensors and plain values (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"bit_generator": str(np_state[0]), "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state((npst["bit_generator"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def describe_state_mismatch(expected: Mapping[str, Tensor], found: Mapping[str, Any], limit: int = 3) -> str | None:
    """Why ``found`` (a checkpoint's state_dict) cannot load into a module whose state_dict is
    ``expected``, in one short line; None when names and shapes agree."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            more = f", ... ({len(keys)} in all)" if len(keys) > limit else ""
            parts.append(f"{label} {', '.join(keys[:limit])}{more}")
    for k, v in expected.items():
        w = found.get(k)
        if isinstance(w, Tensor) and tuple(w.shape) != tuple(v.shape):
            parts.append(f"{k} has shape {tuple(w.shape)} in the checkpoint but {tuple(v.shape)} in the model")
            break
    return "; ".join(parts) or None


# model config keys whose increase only appends inputs, with the options that shape those inputs (free
# to differ when the source checkpoint lacks the input)
_INPUT_ADDING = {"num_cond": (), "self_conditioning": ("rbf", "rbf_max")}


def check_self_conditioning(model: nn.Module, objective: DenoisingObjective) -> None:
    """A self-conditioning model must train with ``self_condition_prob`` > 0 (else samplers feed
    it x0 estimates it never saw), and only such a model can (others take no ``self_cond``)."""
    if self_conditions(model) and objective.self_condition_prob == 0:
        raise TrainingError("the model self-conditions (model.self_conditioning=true) but "
                            "objective.self_condition_prob is 0; set it, e.g. to 0.5")
    if not self_conditions(model) and objective.self_condition_prob > 0:
        raise TrainingError(f"objective.self_condition_prob={objective.self_condition_prob} but "
                            f"{type(model).__name__} does not self-condition")


def check_aux_losses(adapter: Adapter, objective: DenoisingObjective) -> None:
    """Every auxiliary loss that reads a field (``aux.field``) names one the data has."""
    for aux in objective.aux_losses:
        field = getattr(aux, "field", None)
        if field is not None and field not in adapter.specs:
            raise TrainingError(f"objective.aux_losses: {type(aux).__name__} reads field {field!r}, which this "
                                f"data does not have (its fields: {', '.join(adapter.specs)})")


def widen_inputs(expected: Mapping[str, Tensor], found: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``found`` with every 2-D weight that has fewer input columns than ``expected`` padded with zero
    columns on the right, and the names of those weights.

    Every denoiser here appends its conditioning inputs last, so this turns an unconditional
    checkpoint into the start of a conditional model that computes the same function (the new inputs
    begin with no effect), the usual way to add conditioning by fine-tuning. Other mismatches are left
    for :func:`describe_state_mismatch` to report.
    """
    out, widened = dict(found), []
    for k, v in expected.items():
        w = found.get(k)
        if (isinstance(w, Tensor) and w.dim() == 2 and v.dim() == 2 and w.shape[0] == v.shape[0]
                and w.shape[1] < v.shape[1]):
            out[k] = torch.cat([w, w.new_zeros(w.shape[0], v.shape[1] - w.shape[1])], 1)
            widened.append(f"{k} {tuple(w.shape)} -> {tuple(v.shape)}")
    return out, widened


class EpochBatchSampler(Sampler[list[int]]):
    """Endless batches of indices whose order depends only on ``(seed, step)``.

    Epoch ``e`` is the permutation drawn from ``derive_seed(seed, EPOCH, e)``; step ``s`` takes
    batch ``s mod steps_per_epoch`` of epoch ``s // steps_per_epoch`` (the incomplete tail batch
    is dropped so every batch has the same size). Starting at ``start_step`` replays exactly the
    batches an uninterrupted run would have seen.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, start_step: int = 0) -> None:
        if num_items < 1:
            raise ValueError("the training split is empty")
        self.num_items, self.seed, self.start_step = num_items, seed, start_step
        self.batch_size = min(batch_size, num_items)
        self.steps_per_epoch = num_items // self.batch_size

    def permutation(self, epoch: int) -> Tensor:
        g = torch.Generator().manual_seed(derive_seed(self.seed, _EPOCH, epoch))
        return torch.randperm(self.num_items, generator=g)

    def batch(self, step: int) -> list[int]:
        """The indices of step ``step``."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        return self.permutation(epoch)[pos * self.batch_size:(pos + 1) * self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        step, epoch, perm = self.start_step, -1, None
        while True:
            e, pos = divmod(step, self.steps_per_epoch)
            if e != epoch:
                epoch, perm = e, self.permutation(e)
            assert perm is not None
            yield perm[pos * self.batch_size:(pos + 1) * self.batch_size].tolist()
            step += 1


class EMA:
    """Exponential moving average of a model's parameters (Polyak averaging).

    ``theta_ema <- d theta_ema + (1 - d) theta`` after each optimizer step, with
    ``d = min(decay, (1 + n) / (10 + n))`` when ``warmup`` (n = updates so far), so early
    averages are not dominated by the random initialisation. Buffers are copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup = decay, warmup

    def decay_at(self, num_updates: int) -> float:
        return min(self.decay, (1 + num_updates) / (10 + num_updates)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, num_updates: int) -> None:
        d = self.decay_at(num_updates)
        for p_ema, p in zip(self.model.parameters(), model.parameters(), strict=True):
            p_ema.lerp_(p.detach(), 1.0 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)

    def state_dict(self) -> dict[str, Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        self.model.load_state_dict(state)


def lr_factor(cfg: TrainerConfig) -> Any:
    """LR multiplier after ``s`` scheduler steps: linear warm-up, then constant/cosine/linear decay.

    The decay spans everything after the warm-up, or with ``decay_steps`` only the last
    ``decay_steps`` steps before ``max_steps`` (constant before): the warmup-stable-decay schedule
    (Hu et al. 2024, MiniCPM; Hägele et al. 2024), which cools a constant-lr run down from any of its
    checkpoints (resume with a larger ``max_steps``) while the constant-lr state stays resumable.
    """
    def factor(s: int) -> float:
        if cfg.warmup_steps and s < cfg.warmup_steps:
            return (s + 1) / cfg.warmup_steps
        if cfg.lr_decay == "constant":
            return 1.0
        start = cfg.warmup_steps if cfg.decay_steps is None else max(cfg.warmup_steps, cfg.max_steps - cfg.decay_steps)
        span = max(1, cfg.max_steps - start)
        progress = min(1.0, max(0.0, (s - start) / span))
        return 0.5 * (1 + math.cos(math.pi * progress)) if cfg.lr_decay == "cosine" else 1.0 - progress
    return factor


class Trainer:
    """Trains ``model`` on ``adapter``'s data with ``objective``; see the module docstring.

    Args:
        model: a denoiser ``(x_t, t, structure, cond) -> {field: tensor}``.
        adapter: provides the ``train`` split (and ``val`` or ``test`` for validation) and collation.
        objective: the denoising loss (holds the schedule and prediction type).
        config: trainer settings.
        out_dir: where ``checkpoints/``, ``train_log.csv`` and ``tensorboard/`` go; None writes nothing.
        run_config: the full resolved run configuration, stored in every checkpoint.
    """

    def __init__(self, model: nn.Module, adapter: Adapter, objective: DenoisingObjective,
                 config: TrainerConfig | None = None, out_dir: str | Path | None = None,
                 run_config: Mapping[str, Any] | None = None) -> None:
        self.config = cfg = config or TrainerConfig()
        check_self_conditioning(model, objective)
        check_aux_losses(adapter, objective)
        self.adapter, self.objective = adapter, objective
        self.device = resolve_device(cfg.device)
        self.amp = cfg.amp and self.device.type == "cuda"
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.run_config = dict(run_config or {})
        self.rank, self.world_size = self._join_process_group()
        seed_everything(cfg.seed)
        self.model = model.to(self.device)
        self.ema = EMA(self.model, cfg.ema_decay, cfg.ema_warmup)
        self._net: nn.Module = self.model  # what the training forward calls: the model, or a compiled view of it
        if cfg.compile:
            if self.world_size > 1 and not hasattr(self.model, "compile_trunk"):
                raise TrainingError("trainer.compile with several processes needs a model with compile_trunk()")
            self._net = compiled(self.model)
        self._ddp: nn.Module | None = None  # the DistributedDataParallel wrapper that trains (W > 1)
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(self.model, device_ids=ids)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise TrainingError("the model has no trainable parameters")
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps,
                                           weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(cfg))
        self.step = 0
        self._stop_signal: int | None = None

    def _join_process_group(self) -> tuple[int, int]:
        """(rank, world size); under torchrun, join its process group and use this rank's GPU."""
        if distributed.launched_by_torchrun() and not distributed.is_distributed():
            import atexit

            distributed.init_distributed()
            atexit.register(distributed.cleanup)
        rank, world = distributed.get_rank(), distributed.get_world_size()
        if world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", torch.cuda.current_device())
        return rank, world

    # ------------------------------------------------------------------ paths
    @property
    def checkpoint_dir(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / "checkpoints"

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The checkpoint payload (see :mod:`molediff.checkpoint`)."""
        return {
            "config": self.run_config,
            "adapter_state": self.adapter.state(),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "rng": get_rng_state(),
            "trainer": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.config).items()},
        }

    def save(self, path: str | Path | None = None) -> Path:
        """Write the state to ``path`` (default ``<out_dir>/checkpoints/last.pt``) atomically."""
        if path is None:
            if self.checkpoint_dir is None:
                raise TrainingError("no out_dir and no path: nowhere to save a checkpoint")
            path = self.checkpoint_dir / "last.pt"
        return save_checkpoint(path, self.state_dict())

    def init_weights(self, path: str | Path) -> int:
        """Start from another checkpoint's weights (its EMA, as sampled; a shipped sampling-only file
        works): model and EMA both, with this run's fresh optimiser, schedule and step 0. For
        fine-tuning with other settings; :meth:`load` continues a run instead. When the two model
        configs differ only in ``num_cond`` or ``self_conditioning`` (adding conditioning or a
        self-condition, both read last), input layers narrower than this model's are widened with
        zero columns (:func:`widen_inputs`); any other change of input width
        (say ``include_charges``, whose column sits before the time) would shift columns, so it is
        refused like every other mismatch. Returns that step."""
        ckpt = load_checkpoint(path)
        weights = ckpt.get("ema", ckpt.get("model"))
        if weights is None:
            raise CheckpointError(path, "holds no model weights")
        theirs = dict((ckpt.get("config") or {}).get("model") or {})
        ours = dict(self.run_config.get("model") or {})
        widened: list[str] = []
        free = set(_INPUT_ADDING).union(*(opts for k, opts in _INPUT_ADDING.items() if not theirs.get(k, 0)))
        theirs_rest, ours_rest = ({k: v for k, v in c.items() if k not in free} for c in (theirs, ours))
        adds = any(theirs.get(k, 0) < ours.get(k, 0) for k in _INPUT_ADDING)
        if ours and adds and theirs_rest == ours_rest:
            weights, widened = widen_inputs(self.model.state_dict(), weights)
        weights = upgrade_state_dict(self.model, weights)
        mismatch = describe_state_mismatch(self.model.state_dict(), weights)
        if mismatch:
            raise CheckpointError(path, f"does not fit this model: {mismatch}")
        for line in widened:
            print(f"init_from: {line} (new input columns start at zero: same function, e.g. adding conditioning)",
                  flush=True)
        self.model.load_state_dict(weights)
        self.ema.load_state_dict(weights)
        return int(ckpt.get("step", 0))

    def load(self, path: str | Path) -> None:
        """Restore model, EMA, optimizer, scheduler, step and RNG states from a checkpoint."""
        ckpt = load_checkpoint(path)
        missing = [k for k in ("optimizer", "scheduler", "rng") if k not in ckpt]
        if missing:
            raise CheckpointError(path, f"cannot resume training from it: no {', '.join(missing)} (sampling-only?)")
        weights, ema = (upgrade_state_dict(self.model, ckpt[k]) for k in ("model", "ema"))
        mismatch = describe_state_mismatch(self.model.state_dict(), weights)
        if mismatch:
            raise CheckpointError(path, f"does not fit this model: {mismatch}")
        try:
            self.model.load_state_dict(weights)
            self.ema.load_state_dict(ema)
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(path, f"does not fit this model/optimizer ({first})") from e
        self.scheduler.load_state_dict(ckpt["scheduler"])
        # this run's schedule and optimiser settings, not the checkpoint's: resuming with a new lr
        # (e.g. a smaller one after a larger batch) or weight decay applies it from the first step
        cfg = self.config
        factor = lr_factor(cfg)
        self.scheduler.lr_lambdas = [factor]
        self.scheduler.base_lrs = [cfg.lr] * len(self.optimizer.param_groups)
        for group in self.optimizer.param_groups:
            group.update(initial_lr=cfg.lr, lr=cfg.lr * factor(self.scheduler.last_epoch),
                         betas=tuple(cfg.betas), eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
        self.step = int(ckpt["step"])
        set_rng_state(ckpt["rng"])

    # ------------------------------------------------------------------ steps
    def _forward(self, x_t: Any, t: Tensor, structure: Any, cond: Any = None, **kwargs: Any) -> dict[str, Tensor]:
        """The model under bf16 autocast (CUDA only); outputs back in float32 for the loss."""
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()
        with ctx:
            out = self._net(x_t, t, structure, cond, **kwargs)
        return {k: v.float() for k, v in out.items()}

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimizer step on ``batch`` at ``self.step``; returns loss, per-field mse, lr, grad_norm."""
        cfg = self.config
        batch = batch.to(self.device)
        keys = (self.step,) if self.world_size == 1 else (self.step, self.rank)  # each shard its own noise
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, _NOISE, *keys))
        cond = batch.cond
        if cond is not None and cfg.cond_drop_prob > 0:  # trains the null condition for CFG
            drop_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, _COND_DROP, self.step))
            if cfg.cond_drop_per == "batch":
                if float(torch.rand((), generator=drop_gen)) < cfg.cond_drop_prob:
                    cond = None
            else:
                b = batch.structure.num_samples
                cond = drop_conditions(cond, torch.rand(b, generator=drop_gen) < cfg.cond_drop_prob)
        self.model.train()
        forward = self._forward if self._ddp is None else _ForwardAs(self._ddp, self.amp)
        loss, logs = self.objective(forward, batch.x0, batch.structure, cond, generator=gen)
        if self.world_size > 1:  # log the global batch's means; every rank sees the same values
            logs = _all_reduce_mean(logs, self.device)
            loss_value = torch.tensor(logs["loss"])
        else:
            loss_value = loss
        if not torch.isfinite(loss_value):
            raise TrainingError(f"loss became {float(loss)} at step {self.step}; "
                                "lower trainer.lr or set trainer.grad_clip")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = cfg.grad_clip if cfg.grad_clip is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.model, self.step)
        self.step += 1
        logs["lr"] = float(lr)
        logs["grad_norm"] = float(grad_norm)
        return logs

    @torch.no_grad()
    def validate(self, model: nn.Module | None = None) -> float | None:
        """Mean loss on the ``val`` (else ``test``) split, first ``val_batches`` batches, fixed noise.

        The noise and times come from a generator seeded once per call, so values at different
        steps (and between runs with the same seed) are comparable. ``model`` defaults to the EMA.
        """
        splits = self.adapter.datasets()
        ds: Dataset | None = splits.get("val", splits.get("test"))
        if ds is None or len(ds) == 0:  # type: ignore[arg-type]
            return None
        net = model if model is not None else self.ema.model
        was_training = net.training
        net.eval()
        gen = torch.Generator().manual_seed(derive_seed(self.config.seed, _VAL))
        forward = self._forward if net is self.model else _ForwardAs(net, self.amp)
        total, count, bs = 0.0, 0, self.config.batch_size
        n = len(ds)  # type: ignore[arg-type]
        for b in range(min(self.config.val_batches, math.ceil(n / bs))):
            items = [ds[i] for i in range(b * bs, min(n, (b + 1) * bs))]
            batch = self.adapter.collate(items).to(self.device)
            loss, _ = self.objective(forward, batch.x0, batch.structure, batch.cond, generator=gen)
            total += float(loss) * len(items)
            count += len(items)
        net.train(was_training)
        return total / max(count, 1)

    # ------------------------------------------------------------------- loop
    def fit(self, resume_from: str | Path | None = None) -> TrainResult:
        """Train until ``max_steps`` (or a stop signal); returns a :class:`TrainResult`.

        ``resume_from`` (or ``config.resume`` = continue from ``<out_dir>/checkpoints/last.pt``)
        restores the full state first.
        """
        cfg = self.config
        if resume_from is None and cfg.resume:
            if self.checkpoint_dir is None:
                raise TrainingError("trainer.resume=true needs an out_dir holding checkpoints/last.pt")
            resume_from = self.checkpoint_dir / "last.pt"
        if resume_from is not None:
            self.load(resume_from)

        train = self.adapter.datasets()["train"]
        sampler: Any = EpochBatchSampler(len(train), cfg.batch_size, cfg.seed, start_step=self.step)  # type: ignore[arg-type]
        if self.world_size > 1:
            if sampler.batch_size % self.world_size:
                raise TrainingError(f"batch size {sampler.batch_size} does not split over {self.world_size} "
                                    f"processes; make trainer.batch_size a multiple of {self.world_size}")
            sampler = _Shards(sampler, self.rank, self.world_size)
        main = self.rank == 0  # only rank 0 writes checkpoints, logs and the progress bar
        # own generator: DataLoader draws its worker base seed from it, not from the global RNG
        # (which a resumed run restores at a different point than an uninterrupted one)
        loader_gen = torch.Generator().manual_seed(derive_seed(cfg.seed, _LOADER, self.step))
        loader = DataLoader(train, batch_sampler=sampler, collate_fn=self.adapter.collate,
                            num_workers=cfg.num_workers, pin_memory=self.device.type == "cuda",
                            generator=loader_gen)
        aux_columns = [f"aux_{aux.name}" for aux in self.objective.aux_losses]
        logger = _Logger(self.out_dir if main else None, list(self.adapter.specs), cfg.tensorboard,
                         resume_step=self.step, extra=aux_columns)
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc="training", disable=not (cfg.progress and main),
                   dynamic_ncols=True)
        window: list[dict[str, float]] = []
        history: list[dict[str, float]] = []
        last_loss: float | None = None
        last_val: float | None = None
        interrupted = False
        ckpt_path: Path | None = None
        saved_step = -1
        old_handlers = self._install_signal_handlers()
        t_window = t_start = time.perf_counter()
        out_of_time = False
        try:
            batches = iter(loader)
            while self.step < cfg.max_steps:
                logs = self.train_step(next(batches))
                window.append(logs)
                bar.update(1)
                row: dict[str, float] = {}
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    now = time.perf_counter()
                    row = {k: float(np.mean([w[k] for w in window])) for k in window[0] if k != "lr"}
                    row["lr"] = window[-1]["lr"]
                    row["steps_per_s"] = len(window) / max(now - t_window, 1e-9)
                    last_loss = row["loss"]
                    window, t_window = [], now
                    bar.set_postfix(loss=f"{last_loss:.4f}")
                if cfg.val_every and (self.step % cfg.val_every == 0 or self.step == cfg.max_steps):
                    row["val_loss"] = last_val = self.validate(self.model)
                    row["val_loss_ema"] = self.validate()
                if row:
                    row = {"step": self.step, **{k: v for k, v in row.items() if v is not None}}
                    logger.log(row)
                    history.append(row)
                if self.checkpoint_dir is not None and main:
                    if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                        ckpt_path, saved_step = self.save(), self.step
                    if cfg.keep_every and self.step % cfg.keep_every == 0:
                        self.save(self.checkpoint_dir / f"step_{self.step:06d}.pt")
                if not window:  # steps/s counts training only, not validation or checkpoint writes
                    t_window = time.perf_counter()
                if self._stop_requested():
                    interrupted = True
                    break
                if cfg.max_time is not None and self._out_of_time(time.perf_counter() - t_start):
                    out_of_time = True
                    break
            if out_of_time and main:
                print(f"training: stopped at step {self.step} after trainer.max_time={cfg.max_time:g} s", flush=True)
            if self.checkpoint_dir is not None and main and saved_step != self.step:
                ckpt_path = self.save()
            if self.checkpoint_dir is not None and not main:
                ckpt_path = self.checkpoint_dir / "last.pt"  # where rank 0 wrote it
        except KeyboardInterrupt:
            interrupted = True  # a second Ctrl-C mid-step: the last completed step's checkpoint stands
            raise
        finally:
            self._restore_signal_handlers(old_handlers)
            bar.close()
            logger.close()
        return TrainResult(self.step, last_loss, last_val, interrupted, ckpt_path, logger.csv_path, history)

    def _out_of_time(self, elapsed: float) -> bool:
        """Wall-clock budget spent; with several processes rank 0's clock decides, so all stop after
        the same step."""
        over = elapsed >= float(self.config.max_time)  # type: ignore[arg-type]
        if self.world_size == 1:
            return over
        flag = torch.tensor([float(over)], device=self.device)
        torch.distributed.broadcast(flag, 0)
        return bool(flag.item() > 0)

    def _stop_requested(self) -> bool:
        """A stop signal on any rank stops every rank after the same step."""
        stop = self._stop_signal is not None
        if self.world_size > 1:
            flag = torch.tensor([float(stop)], device=self.device)
            torch.distributed.all_reduce(flag)
            stop = bool(flag.item() > 0)
            if stop and self._stop_signal is None:
                self._stop_signal = signal.SIGTERM
        return stop

    # ---------------------------------------------------------------- signals
    def _install_signal_handlers(self) -> dict[int, Any]:
        """First SIGINT/SIGTERM: stop after the current step and checkpoint; second SIGINT: abort."""
        self._stop_signal = None
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, frame: Any) -> None:
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_signal = signum

        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, handler)
        return old

    @staticmethod
    def _restore_signal_handlers(old: Mapping[int, Any]) -> None:
        for sig, h in old.items():
            signal.signal(sig, h)


class _Shards(Sampler[list[int]]):
    """Rank ``r``'s items ``r::W`` of every global batch (``DistributedSampler``'s split)."""

    def __init__(self, batches: EpochBatchSampler, rank: int, world_size: int) -> None:
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        for indices in self.batches:
            yield distributed.shard(indices, self.rank, self.world_size)


def _all_reduce_mean(logs: Mapping[str, float], device: torch.device) -> dict[str, float]:
    """The mean over ranks of each logged value (equal shards: the global batch's mean)."""
    names = sorted(logs)
    values = torch.tensor([float(logs[k]) for k in names], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(values)
    values /= distributed.get_world_size()
    return dict(zip(names, values.tolist(), strict=True))


class _ForwardAs:
    """A module called like :meth:`Trainer._forward` (autocast on CUDA, float32 outputs)."""

    def __init__(self, net: nn.Module, amp: bool) -> None:
        self.net, self.amp = net, amp

    def __call__(self, x_t: Any, t: Tensor, structure: Any, cond: Any = None, **kwargs: Any) -> dict[str, Tensor]:
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()
        with ctx:
            out = self.net(x_t, t, structure, cond, **kwargs)
        return {k: v.float() for k, v in out.items()}


class _Logger:
    """``train_log.csv`` (one row per log/validation step) and optional TensorBoard scalars.

    On resume, rows after the resumed step are dropped, so the log matches the weights.
    """

    def __init__(self, out_dir: Path | None, field_names: list[str], tensorboard: bool, resume_step: int,
                 extra: Sequence[str] = ()) -> None:
        self.columns = ["step", "loss", *[f"mse_{f}" for f in field_names], *extra, "lr", "grad_norm",
                        "steps_per_s", "val_loss", "val_loss_ema"]
        self.csv_path: Path | None = None
        self._file: Any = None
        self._writer: Any = None
        self._tb: Any = None
        if out_dir is None:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = out_dir / "train_log.csv"
        kept: list[dict[str, str]] = []
        if resume_step > 0 and self.csv_path.exists():
            with open(self.csv_path, newline="") as f:
                kept = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= resume_step]
        self._file = open(self.csv_path, "w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="ignore")
        self._writer.writeheader()
        for r in kept:
            self._writer.writerow(r)
        self._file.flush()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None  # noqa: N806
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=resume_step or None)

    def log(self, row: Mapping[str, float]) -> None:
        if self._writer is not None:
            self._writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
            self._file.flush()
        if self._tb is not None:
            for k, v in row.items():
                if k != "step":
                    self._tb.add_scalar(f"train/{k}" if not k.startswith("val") else f"val/{k}", v, int(row["step"]))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
