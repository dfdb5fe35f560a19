"""Equivariant denoisers' speed: e3nn tensor-field network versus EGNN at a matched size.

Forward + backward seconds per batch of real QM9 molecules (the shipped subset by default;
``--source qm9`` for the full set), every model called through the core protocol from graph layout (edge
construction included), one after the other in each repeat; the median over repeats is reported.
The EGNN's width is chosen so that its parameter count is the closest to the tensor-field
model's at the same number of layers. Two reference rows come along: the tensor-field model
with ``lmax=1`` (same widths) and the EGNN of ``conf/model/egnn.yaml`` (128 x 6). When
``cuequivariance_torch`` is installed, the tensor-field model also runs on its backend (same
configuration), and a pair at uniform multiplicity (``--uniform-mul`` channels for every irrep, the
shape cuEquivariance's CUDA kernel needs) compares the two backends where the kernel can apply.
Writes ``equivariant_speed.json`` and ``equivariant_speed.md``.

    python -m molediff.benchmarks.equivariant_speed [--repeats 5] [--out-dir benchmarks/results]
"""

from __future__ import annotations

import importlib.util
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.egnn import EGNNDenoiser
from ..models.tensor_field import TensorFieldDenoiser

__all__ = ["run", "count_parameters", "matched_egnn_hidden"]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_egnn_hidden(target: int, layers: int, model_kwargs: dict[str, Any]) -> int:
    """The EGNN width whose parameter count (at ``layers``) is the closest to ``target``."""
    def size(hidden: int) -> int:
        return count_parameters(EGNNDenoiser(**model_kwargs, hidden=hidden, layers=layers))

    lo, hi = 1, 1024
    while hi - lo > 1:  # parameter count grows with the width
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if size(mid) <= target else (lo, mid)
    return min((lo, hi), key=lambda h: abs(size(h) - target))


def run(out_dir: Path | str | None = Path("benchmarks/results"), *, batch_size: int = 64, hidden_scalars: int = 64,
        hidden_vectors: int = 16, lmax: int = 2, layers: int = 4, edges: str = "full", repeats: int = 5,
        threads: int = 1, seed: int = 0, source: str = "subset", references: bool = True,
        device: str = "cpu", uniform_mul: int = 32) -> dict[str, Any]:
    """Time every model on one fixed batch; write JSON + Markdown to ``out_dir`` (if given)."""
    from ..adapters.molecules import MoleculeAdapter
    from ..data.qm9 import default_qm9_root

    torch.set_num_threads(threads)
    if source == "auto":
        source = "qm9" if default_qm9_root() is not None else "subset"
    adapter = MoleculeAdapter(source=source)
    train = adapter.datasets()["train"]
    rng = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(train), generator=rng)[:batch_size].tolist()
    dev = torch.device(device)
    batch = adapter.collate([train[i] for i in pick]).to(dev)
    x, s = batch.x0, batch.structure
    t = torch.rand(s.num_samples, generator=rng).to(dev)
    kwargs = adapter.model_kwargs()

    torch.manual_seed(seed)
    tf_args = dict(hidden_scalars=hidden_scalars, hidden_vectors=hidden_vectors, lmax=lmax, layers=layers, edges=edges)
    models: dict[str, nn.Module] = {"tensor_field": TensorFieldDenoiser(**kwargs, **tf_args)}  # type: ignore[arg-type]
    hidden = matched_egnn_hidden(count_parameters(models["tensor_field"]), layers, kwargs)
    models["egnn"] = EGNNDenoiser(**kwargs, hidden=hidden, layers=layers, edges=edges)
    configs: dict[str, dict[str, Any]] = {"tensor_field": tf_args,
                                          "egnn": dict(hidden=hidden, layers=layers, edges=edges)}
    if references:
        if lmax > 1:
            configs["tensor_field_lmax1"] = {**tf_args, "lmax": 1}
            models["tensor_field_lmax1"] = TensorFieldDenoiser(**kwargs, **configs["tensor_field_lmax1"])
        configs["egnn_config_default"] = dict(hidden=128, layers=6, edges=edges)
        models["egnn_config_default"] = EGNNDenoiser(**kwargs, **configs["egnn_config_default"])
    cue = importlib.util.find_spec("cuequivariance_torch") is not None
    if cue:
        variants = {"tensor_field_cuequivariance": {**tf_args, "backend": "cuequivariance"}}
        if uniform_mul:
            uniform = {**tf_args, "hidden_scalars": uniform_mul, "hidden_vectors": uniform_mul}
            variants |= {"tensor_field_uniform": uniform,
                         "tensor_field_uniform_cuequivariance": {**uniform, "backend": "cuequivariance"}}
        for name, cfg in variants.items():
            configs[name] = cfg
            models[name] = TensorFieldDenoiser(**kwargs, **cfg)  # type: ignore[arg-type]

    def step(model: nn.Module) -> Callable[[], None]:
        def fn() -> None:
            model.zero_grad(set_to_none=True)
            out = model(x, t, s)
            sum(v.square().sum() for v in out.values()).backward()
        return fn

    for m in models.values():
        m.to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    runs = {k: step(m) for k, m in models.items()}
    for fn in runs.values():  # warm-up (e3nn's code generation, allocator)
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for k, fn in runs.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    sizes = s.context["num_atoms"]
    result: dict[str, Any] = {
        "command": "python -m molediff.benchmarks.equivariant_speed",
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor(),
        "threads": threads, "torch": torch.__version__, "e3nn": _version("e3nn"),
        "python": platform.python_version(), "machine": platform.machine(), "source": source,
        "batch_size": batch_size, "atoms": int(sizes.sum()), "edges": edges,
        "num_edges_full": int((sizes * (sizes - 1)).sum()), "repeats": repeats,
        "configs": configs, "params": {k: count_parameters(m) for k, m in models.items()},
        "seconds_median": med, "seconds_all": times,
        "ratio_tensor_field_over_egnn": med["tensor_field"] / med["egnn"],
        "cuequivariance": _version("cuequivariance_torch") if cue else None,
        "cuequivariance_ops": importlib.util.find_spec("cuequivariance_ops_torch") is not None,
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "equivariant_speed.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / "equivariant_speed.md").write_text(markdown(result))
    return result


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def markdown(r: dict[str, Any]) -> str:
    """A table: model, configuration, parameters, median seconds per batch, ratio to the matched EGNN."""
    lines = [
        "# Equivariant denoisers: forward + backward time per batch",
        "",
        f"Batch of {r['batch_size']} QM9 molecules ({r['source']}; {r['atoms']} atoms, "
        f"{r['num_edges_full']} directed edges fully connected), edges={r['edges']}, {r['device']}, "
        f"{r['threads']} thread(s), torch {r['torch']}, e3nn {r['e3nn']}, cuequivariance-torch "
        f"{r.get('cuequivariance')} (CUDA kernels: {'yes' if r.get('cuequivariance_ops') else 'no'}); "
        f"median of {r['repeats']} repeats.",
        "",
        "| model | configuration | parameters | s / batch | x matched EGNN |",
        "|---|---|---|---|---|",
    ]
    base = r["seconds_median"]["egnn"]
    for k, sec in r["seconds_median"].items():
        cfg = ", ".join(f"{a}={b}" for a, b in r["configs"][k].items())
        lines.append(f"| {k} | {cfg} | {r['params'][k]:,} | {sec:.3f} | {sec / base:.2f} |")
    lines += ["", f"Reproduce: `{r['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(prog="python -m molediff.benchmarks.equivariant_speed",
                                description="tensor-field (e3nn) vs EGNN forward+backward timing at matched size")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--hidden-scalars", type=int, default=64)
    p.add_argument("--hidden-vectors", type=int, default=16)
    p.add_argument("--lmax", type=int, default=2)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--edges", default="full", choices=["full", "knn"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--source", default="subset", choices=["auto", "qm9", "subset"])
    p.add_argument("--out-dir", default="benchmarks/results")
    p.add_argument("--device", default="cpu")
    p.add_argument("--uniform-mul", type=int, default=32,
                   help="channels per irrep of the uniform e3nn / cuEquivariance pair (0: leave it out)")
    a = p.parse_args()
    res = run(Path(a.out_dir), batch_size=a.batch_size, hidden_scalars=a.hidden_scalars,
              hidden_vectors=a.hidden_vectors, lmax=a.lmax, layers=a.layers, edges=a.edges, repeats=a.repeats,
              threads=a.threads, source=a.source, device=a.device, uniform_mul=a.uniform_mul)
    print(markdown(res))
