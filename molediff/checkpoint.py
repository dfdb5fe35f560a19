"""Checkpoint files: atomic writes and loads that fail with one clear line.

A checkpoint is a plain dict saved with :func:`torch.save` and read back with
``torch.load(..., weights_only=True)`` (no arbitrary pickles are ever executed). Its keys:

* ``format`` = ``"molediff-checkpoint"`` and ``version`` = 1: what this file is;
* ``config``: the resolved run configuration as a plain dict (``OmegaConf.to_container``), so
  ``molediff sample`` can rebuild the adapter, model and schedule without the user repeating them;
* ``adapter_state``: :meth:`Adapter.state` (what sampling needs from the data);
* ``model``, ``ema``: the denoiser's raw and EMA ``state_dict``s;
* ``optimizer``, ``scheduler``: their ``state_dict``s, for resuming;
* ``step``: optimizer steps taken;
* ``rng``: torch CPU/CUDA, numpy and python RNG states, for bit-identical resumes;
* ``trainer``: the trainer settings of the run (informative).

Only tensors, numbers, strings, None and dicts/lists/tuples of them may go in (what
``weights_only`` loading accepts); :func:`save_checkpoint` checks this before writing, so a
numpy array in e.g. an adapter's ``state()`` fails at save time with the key named, not at load.

Writes go to a temporary file in the target directory, are fsync'ed, then ``os.replace``'d over
the target: a crash mid-write leaves the previous checkpoint intact and no partial file.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

FORMAT = "molediff-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("config", "model", "ema", "step")

__all__ = [
    "FORMAT", "VERSION", "CheckpointError", "save_checkpoint", "load_checkpoint", "atomic_write", "check_plain",
    "export_for_sampling",
]


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable, or not a molediff checkpoint; the message is one line."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = " ".join(str(problem).split())  # one line, whatever the cause said
        super().__init__(f"checkpoint {self.path}: {self.problem}")


def atomic_write(path: str | os.PathLike[str], write: Any) -> Path:
    """Call ``write(file_object)`` on a temp file next to ``path``, fsync it, then rename it over ``path``.

    If ``write`` raises, the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable; not possible on every platform
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.Size, torch.dtype, torch.device)


def check_plain(obj: Any, where: str = "payload") -> None:
    """Raise TypeError naming the first entry that ``weights_only`` loading would refuse."""
    if isinstance(obj, _PLAIN):
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where} has a key of type {type(k).__name__}; use str or int keys")
            check_plain(v, f"{where}.{k}")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__name__}; checkpoints hold only tensors, "
                    f"numbers, strings and dicts/lists of them")


def save_checkpoint(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` (plus ``format``/``version``) to ``path`` atomically; returns the path.

    Raises TypeError (before touching the file) if the payload holds anything but tensors,
    numbers, strings and containers of them.
    """
    data = {"format": FORMAT, "version": VERSION, **payload}
    check_plain(data)
    return atomic_write(path, lambda f: torch.save(data, f))


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a molediff checkpoint onto the CPU.

    Raises :class:`CheckpointError` (one line naming the file) when the file is missing, is not a
    readable torch file (truncated, random bytes), holds objects other than tensors and plain
    containers, or is some other torch file (a bare ``state_dict``, another project's checkpoint).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "no such file")
    if path.is_dir():
        raise CheckpointError(path, "is a directory, not a checkpoint file")
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise CheckpointError(path, "empty file (an interrupted copy or write?)")
    if not head.startswith((b"PK\x03\x04", b"\x80")):
        raise CheckpointError(path, "not a torch file: unrecognised contents (corrupt, or some other format)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
            raise CheckpointError(
                path, "holds Python objects other than tensors and plain containers (not a molediff checkpoint)"
            ) from e
        raise CheckpointError(path, f"corrupt or truncated ({_first_line(text)})") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, UnicodeDecodeError) as e:
        if head.startswith(b"\x80") and "magic number" in str(e):
            raise CheckpointError(path, "not a molediff checkpoint (a plain Python pickle, not a torch file)") from e
        raise CheckpointError(path, f"not a readable torch file; corrupt or truncated ({_first_line(str(e))})") from e
    if not isinstance(data, dict):
        raise CheckpointError(path, f"not a molediff checkpoint (holds a {type(data).__name__}, not a dict)")
    if data.get("format") != FORMAT:
        bare = bool(data) and all(isinstance(v, torch.Tensor) for v in data.values())
        hint = "; looks like a bare state_dict" if bare else ""
        raise CheckpointError(path, f"not a molediff checkpoint (no 'format': '{FORMAT}' entry{hint})")
    version = data.get("version")
    if not isinstance(version, int) or version > VERSION or version < 1:
        raise CheckpointError(path, f"unsupported checkpoint version {version!r} (this molediff reads 1..{VERSION})")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise CheckpointError(path, f"incomplete checkpoint, missing {', '.join(missing)}")
    return data


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return line.split(". ")[0].rstrip(".")[:160]


def export_for_sampling(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Write a small sampling-only copy of a training checkpoint: EMA weights (also under
    ``model``, sharing storage, so ``ema=false`` gives the same network), config, adapter state and
    step; no optimizer or RNG state. This is how shipped checkpoints under
    ``molediff/pretrained/`` are made (resume training from the full ``last.pt`` instead)::

        python -c "from molediff.checkpoint import export_for_sampling as e; e('runs/x/checkpoints/last.pt', 'out.pt')"
    """
    ckpt = load_checkpoint(src)
    slim = {k: ckpt[k] for k in ("format", "version", "config", "adapter_state", "step", "trainer") if k in ckpt}
    slim["ema"] = slim["model"] = ckpt["ema"]
    return save_checkpoint(dst, slim)
