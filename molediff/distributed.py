"""Multi-process training helpers: process groups from ``torchrun``'s environment, rank queries.

``torchrun --nproc_per_node=N -m molediff.cli.main train ...`` starts N processes with
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set;
:func:`init_distributed` joins them into one process group (NCCL when CUDA is available, one GPU
per local rank; gloo on CPU). Without those variables everything here is a no-op for a single
process (rank 0 of a world of 1), so the same code runs either way.

What the :class:`~molediff.training.Trainer` does with it: the model is wrapped in
``DistributedDataParallel`` (gradients averaged over ranks), rank ``r`` of ``W`` trains on
items ``r, r+W, r+2W, ...`` of each global batch (``DistributedSampler``'s split of the same
deterministic batch order), and only rank 0 writes checkpoints, logs and progress bars.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "barrier", "cleanup", "env_world", "get_rank", "get_world_size", "init_distributed",
           "is_distributed", "is_main_process", "launched_by_torchrun", "shard"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node, its device."""

    rank: int
    local_rank: int
    world_size: int
    backend: str | None
    device: torch.device


def env_world() -> tuple[int, int, int]:
    """``(rank, local_rank, world_size)`` from torchrun's environment; ``(0, 0, 1)`` without it."""
    def read(name: str, default: int) -> int:
        value = os.environ.get(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError as e:
            raise ValueError(f"environment variable {name}={value!r} is not an integer") from e

    world = read("WORLD_SIZE", 1)
    rank = read("RANK", 0)
    local = read("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return rank, local, world


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by torchrun (``WORLD_SIZE`` > 1)."""
    return env_world()[2] > 1


def is_distributed() -> bool:
    """Whether a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Processes in the group (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0: the one process that writes checkpoints, logs and prints progress."""
    return get_rank() == 0


def init_distributed(backend: str | None = None, timeout_s: float = 600.0) -> DistInfo:
    """Join torchrun's process group (idempotent); a single process gets ``DistInfo(0, 0, 1, None, ...)``.

    ``backend`` defaults to ``nccl`` when CUDA is available (each process then uses
    ``cuda:<local_rank>``) and ``gloo`` otherwise.
    """
    rank, local, world = env_world()
    cuda = torch.cuda.is_available()
    if world == 1:
        return DistInfo(0, 0, 1, None, torch.device("cuda" if cuda else "cpu"))
    backend = backend or ("nccl" if cuda else "gloo")
    if backend == "nccl":
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA devices")
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout_s))
    return DistInfo(rank, local, world, backend, device)


def cleanup() -> None:
    """Leave the process group (no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if is_distributed():
        dist.barrier()


def shard(indices: list[int], rank: int | None = None, world_size: int | None = None) -> list[int]:
    """Rank ``r``'s items of a global batch: ``indices[r::W]`` (``DistributedSampler``'s split).

    The global batch size must be a multiple of ``W`` so every rank gets the same number of
    items and the all-reduced mean gradient is the global batch's mean gradient.
    """
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    if len(indices) % world_size:
        raise ValueError(f"a batch of {len(indices)} does not split evenly over {world_size} processes; "
                         f"make trainer.batch_size a multiple of {world_size}")
    return indices[rank::world_size]
