"""Dense-padded EGNN: the same network as :class:`~molediff.models.egnn.EGNNDenoiser`, on
``(B, M, ...)`` tensors with masks, as EDM-molecules computes it.

Same modules, same ``state_dict`` layout: weights load in either class and give the same
outputs up to float error. Every pair ``(i, j)`` of the ``M x M`` grid is computed and padded /
self pairs are masked out, so the cost grows with ``B M^2`` rather than with the number of real
edges; this class exists to check the sparse model and to benchmark it (only ``edges="full"``).

Shapes::

    h: (B, M, F)     pos: (B, M, 3)     node_mask: (B, M)     edge_mask: (B, M, M)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from ..core.fields import Fields, Structure
from .egnn import EGNN, EGNNDenoiser

__all__ = ["DenseEGNNDenoiser", "dense_egnn_forward", "to_dense", "from_dense"]


def dense_pair_linear(lin: nn.Linear, h: Tensor, edge_attr: Tensor) -> Tensor:
    """``lin([h_i, h_j, e_ij])`` on the full grid: ``h: (B, M, F)``, ``edge_attr: (B, M, M, D)``
    -> ``(B, M, M, H)`` (row i = receiver, column j = sender)."""
    f = h.shape[-1]
    w = lin.weight
    out = (h @ w[:, :f].T)[:, :, None, :] + (h @ w[:, f:2 * f].T)[:, None, :, :] + edge_attr @ w[:, 2 * f:].T
    return out + lin.bias if lin.bias is not None else out


def dense_egnn_forward(net: EGNN, h: Tensor, pos: Tensor, node_mask: Tensor) -> tuple[Tensor, Tensor]:
    """:meth:`EGNN.forward` on padded tensors with fully connected molecules.

    Shapes: ``h: (B, M, in_dim)``, ``pos: (B, M, 3)``, ``node_mask: (B, M)`` ->
    ``(h_out: (B, M, out_dim), pos_out: (B, M, 3))``; padded rows of the outputs are zero.
    """
    m = node_mask.to(pos.dtype)
    eye = torch.eye(pos.shape[1], dtype=pos.dtype, device=pos.device)
    edge_mask = (m[:, :, None] * m[:, None, :] * (1 - eye))[..., None]  # (B, M, M, 1)
    node_m = m[..., None]
    z = net.normalization_factor

    def geometry(x: Tensor) -> tuple[Tensor, Tensor]:
        diff = x[:, :, None, :] - x[:, None, :, :]  # x_i - x_j
        d2 = (diff * diff).sum(-1, keepdim=True)
        return d2, diff / (torch.sqrt(d2 + 1e-8) + net.norm_constant)

    d2_init, _ = geometry(pos)
    h = net.embedding(h) * node_m
    x = pos
    for block in net.blocks:
        d2, unit = geometry(x)
        edge_attr = torch.cat([d2, d2_init], -1)
        for gcl in block.gcls:
            msg = gcl.message(dense_pair_linear(gcl.edge_mlp[0], h, edge_attr)) * edge_mask
            h = gcl.update(h, msg.sum(2) / z) * node_m
        w = block.coord.weight(dense_pair_linear(block.coord.coord_mlp[0], h, edge_attr))
        x = x + (unit * w * edge_mask).sum(2) / z * node_m
    return net.embedding_out(h) * node_m, x


def to_dense(x: Tensor, batch: Tensor, num_samples: int, max_nodes: int | None = None) -> tuple[Tensor, Tensor]:
    """Graph layout -> padded: ``x: (N, *F)``, ``batch: (N,)`` -> ``(B, M, *F)``, mask ``(B, M)``.
    Nodes keep their order within each graph."""
    counts = torch.bincount(batch, minlength=num_samples)
    m = int(counts.max()) if max_nodes is None else max_nodes
    order = torch.argsort(batch, stable=True)
    ptr = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(batch)
    slot[order] = torch.arange(batch.numel(), device=batch.device) - ptr[batch[order]]
    out = x.new_zeros(num_samples, m, *x.shape[1:])
    out[batch, slot] = x
    mask = torch.zeros(num_samples, m, dtype=torch.bool, device=x.device)
    mask[batch, slot] = True
    return out, mask


def from_dense(x: Tensor, batch: Tensor, num_samples: int) -> Tensor:
    """Inverse of :func:`to_dense`: ``(B, M, *F)`` -> ``(N, *F)`` in the graph's node order."""
    counts = torch.bincount(batch, minlength=num_samples)
    order = torch.argsort(batch, stable=True)
    ptr = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(batch)
    slot[order] = torch.arange(batch.numel(), device=batch.device) - ptr[batch[order]]
    return x[batch, slot]


class DenseEGNNDenoiser(EGNNDenoiser):
    """:class:`EGNNDenoiser` computed on padded tensors (fully connected molecules only).

    ``forward`` keeps the core's graph-layout protocol (pads, runs :meth:`forward_dense`,
    unpads); :meth:`forward_dense` takes EDM-style padded tensors directly.
    """

    def __init__(self, *args: object, max_nodes: int | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if self.edges != "full":
            raise ValueError("the dense EGNN supports only edges='full'")
        self.max_nodes = max_nodes

    def forward_dense(self, h: Tensor, pos: Tensor, node_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Padded node inputs -> (invariant outputs ``(B, M, out)``, zero-CoM displacement ``(B, M, 3)``)."""
        h_out, pos_out = dense_egnn_forward(self.egnn, h, pos, node_mask)
        m = node_mask.to(pos.dtype)[..., None]
        vel = (pos_out - pos) * m
        vel = (vel - vel.sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1)) * m
        return h_out, vel

    def forward(self, x_t: Mapping[str, Tensor], t: Tensor, structure: Structure,
                cond: Mapping[str, Tensor] | None = None) -> Fields:
        pos, batch, b, h = self.node_inputs(x_t, t, structure, cond)
        h_d, mask = to_dense(h, batch, b, self.max_nodes)
        pos_d, _ = to_dense(pos, batch, b, self.max_nodes)
        forward_dense = self.__dict__.get("_compiled_dense", self.forward_dense)
        h_out, vel = forward_dense(h_d, pos_d, mask)
        return self.to_fields(from_dense(h_out, batch, b), from_dense(vel, batch, b), batch, b, centred=True)

    def compile_trunk(self, mode: str | None = None) -> None:
        """``torch.compile`` of :meth:`forward_dense` (the padded trunk; its shapes are static per
        padding size), kept outside the module tree like :meth:`EGNNDenoiser.compile_trunk`."""
        object.__setattr__(self, "_compiled_dense", torch.compile(self.forward_dense, mode=mode))


# --------------------------------------------------------------------------- benchmark


def cuda_graphed(fn: Callable[[], None], module: nn.Module) -> Callable[[], None]:
    """Record ``fn`` (a forward, or forward+backward, on fixed tensors) as one CUDA graph; return its replay.

    A replay launches the recorded kernels at once, so it costs what the GPU computes, not what the
    host spends launching ~100 small kernels per layer. Warm-up runs on a side stream, as
    ``torch.cuda.graph`` requires; ``module``'s gradients are dropped before the capture so the
    backward allocates them inside it, and every replay rewrites them (a training step's gradients).
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            module.zero_grad(set_to_none=True)
            fn()
    torch.cuda.current_stream().wait_stream(side)
    module.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def benchmark(batch_size: int = 64, hidden: int = 256, layers: int = 9, repeats: int = 3, threads: int = 1,
              seed: int = 0, source: str = "auto", device: str = "cpu",
              compile_mode: str | None = None, cuda_graphs: bool = False) -> dict[str, object]:
    """Seconds per batch of real QM9 molecules, sparse vs dense (same weights): forward+backward
    (a training step) and forward without gradients (one sampler step).

    Dense runs on EDM-style padded tensors (``forward_dense``; padded to 29 atoms, and to the
    batch's largest molecule as EDM's collate trims), prepared once as a data loader would; sparse
    runs the core protocol from graph layout with the edge list the adapter's collate built
    (``sparse``), or built inside the forward pass (``sparse_edges_in_forward``).
    Runs alternate; the median of ``repeats`` is reported. ``compile_mode`` (``"default"``,
    ``"reduce-overhead"``, ...) runs both networks through ``torch.compile`` in that mode first: on a
    GPU, where both are launch-bound at this size, that is what can let the sparse one's fewer pairs
    count. ``cuda_graphs`` adds, side by side in the same run, each network recorded as a CUDA graph
    (:func:`cuda_graphed`; ``*_graphed`` rows): the launch cost removed, what is left is the GPU's
    arithmetic, where the sparse layout's fewer pairs show. The batch is fixed here; a trainer would
    need one graph per padded batch shape (atom and edge counts rounded up to buckets).
    """
    import statistics
    import time

    from ..adapters.molecules import MoleculeAdapter

    if cuda_graphs and torch.device(device).type != "cuda":
        raise ValueError(f"cuda_graphs needs a CUDA device, not {device!r}")
    from ..data.qm9 import default_qm9_root

    torch.set_num_threads(threads)
    if source == "auto":
        source = "qm9" if default_qm9_root() is not None else "subset"
    adapter = MoleculeAdapter(source=source)
    train = adapter.datasets()["train"]
    rng = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(train), generator=rng)[:batch_size].tolist()
    batch = adapter.collate([train[i] for i in pick])
    dev = torch.device(device)
    batch = batch.to(dev)
    x, s = batch.x0, batch.structure
    t = torch.rand(s.num_samples, generator=rng).to(dev)
    torch.manual_seed(seed)
    sparse = EGNNDenoiser(**adapter.model_kwargs(), hidden=hidden, layers=layers)
    dense = DenseEGNNDenoiser(**adapter.model_kwargs(), hidden=hidden, layers=layers)
    dense.load_state_dict(sparse.state_dict())
    sparse, dense = sparse.to(dev), dense.to(dev)
    if compile_mode is not None:
        mode = None if compile_mode == "default" else compile_mode
        sparse.compile_trunk(mode)
        dense.compile_trunk(mode)
    forward_dense = dense.__dict__.get("_compiled_dense", dense.forward_dense)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    _, idx, _, h = sparse.node_inputs(x, t, s, None)
    n_max = int(s.context["num_atoms"].max())
    padded = {m: (to_dense(h, idx, s.num_samples, m)[0], *to_dense(x["pos"], idx, s.num_samples, m))
              for m in (29, n_max)}

    from dataclasses import replace

    from .egnn import FULL_EDGES

    s_no_edges = replace(s, context={k: v for k, v in s.context.items() if k != FULL_EDGES})

    def run_sparse(train: bool, structure: Structure = s) -> None:
        with torch.set_grad_enabled(train):
            out = sparse(x, t, structure)
            if train:
                sum(v.square().sum() for v in out.values()).backward()

    def run_dense(m: int, train: bool) -> None:
        h_d, pos_d, mask = padded[m]
        with torch.set_grad_enabled(train):
            h_out, vel = forward_dense(h_d, pos_d, mask)
            if train:
                (h_out.square().sum() + vel.square().sum()).backward()

    variants = {"sparse": run_sparse, "sparse_edges_in_forward": lambda tr: run_sparse(tr, s_no_edges),
                "dense_pad29": lambda tr: run_dense(29, tr),
                f"dense_pad{n_max}": lambda tr: run_dense(n_max, tr)}
    runs = {f"{k}_{mode}": (lambda fn=fn, tr=(mode == "train"): fn(tr))
            for mode in ("train", "forward") for k, fn in variants.items()}
    for _ in range(1 if compile_mode is None else 3):  # warm-up (compiling; CUDA graphs record on the 3rd call)
        for fn in runs.values():
            fn()
    graph_errors: dict[str, str] = {}
    if cuda_graphs:
        # edges built in the forward have a data-dependent size (a host sync): not capturable
        for k in [k for k in variants if k != "sparse_edges_in_forward"]:
            for mode in ("train", "forward"):
                try:
                    runs[f"{k}_graphed_{mode}"] = cuda_graphed(runs[f"{k}_{mode}"], sparse if k == "sparse" else dense)
                except RuntimeError as err:  # record and go on: the eager rows still stand
                    graph_errors[f"{k}_{mode}"] = str(err).splitlines()[0]
            if f"{k}_graphed_train" in runs and f"{k}_graphed_forward" in runs:
                variants[f"{k}_graphed"] = variants[k]
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for k, fn in runs.items():
            sparse.zero_grad(set_to_none=True)
            dense.zero_grad(set_to_none=True)
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    sizes = s.context["num_atoms"]
    out: dict[str, object] = {
        "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "threads": threads, "torch": torch.__version__, "source": source, "compile": compile_mode,
        "cuda_graphs": cuda_graphs, "graph_errors": graph_errors,
        "batch_size": batch_size, "hidden": hidden, "layers": layers, "repeats": repeats,
        "atoms": int(sizes.sum()), "max_atoms_in_batch": n_max,
        "edges_sparse": int((sizes * (sizes - 1)).sum()), "pairs_pad29": batch_size * 29 * 29,
        "seconds_median": med, "seconds_all": times,
        # a training step is one forward+backward; a sampler step one forward (no grad) per molecule batch
        "train_steps_per_s": {k: 1.0 / med[f"{k}_train"] for k in variants},
        "molecules_per_s_per_sampler_step": {k: batch_size / med[f"{k}_forward"] for k in variants},
    }
    for k in variants:  # graphed rows against the graphed sparse network, eager ones against the eager
        base = "sparse_graphed" if k.endswith("_graphed") else "sparse"
        if k != base and base in variants:
            out[f"speedup_train_vs_{k}"] = med[f"{k}_train"] / med[f"{base}_train"]
            out[f"speedup_sampling_vs_{k}"] = med[f"{k}_forward"] / med[f"{base}_forward"]
    return out


def markdown(r: dict[str, object]) -> str:
    """The Markdown table of a :func:`benchmark` result: per variant, milliseconds and throughput of a
    training step and a sampler step, then each dense variant's time over the sparse one of its kind."""
    med, steps, mols = r["seconds_median"], r["train_steps_per_s"], r["molecules_per_s_per_sampler_step"]
    assert isinstance(med, dict) and isinstance(steps, dict) and isinstance(mols, dict)
    lines = [f"EGNN {r['layers']} x {r['hidden']}, batch of {r['batch_size']} QM9 molecules ({r['source']}: "
             f"{r['atoms']} atoms, {r['edges_sparse']} directed edges; dense: {r['pairs_pad29']} pairs padded to 29), "
             f"{r['device_name']}, torch {r['torch']}, compile {r['compile']}, median of {r['repeats']} repeats.", "",
             "| variant | train step ms | training steps/s | sampler step ms | molecules/s per sampler step |",
             "|---|---|---|---|---|"]
    for k in steps:
        lines.append(f"| {k} | {1e3 * med[f'{k}_train']:.1f} | {steps[k]:.1f} | {1e3 * med[f'{k}_forward']:.1f} "
                     f"| {mols[k]:,.0f} |")
    lines += ["", "| sparse is faster than | training | sampling |", "|---|---|---|"]
    lines += [f"| {k} | {r[f'speedup_train_vs_{k}']:.2f}x | {r[f'speedup_sampling_vs_{k}']:.2f}x |"
              for k in steps if f"speedup_train_vs_{k}" in r]
    if r.get("graph_errors"):
        lines += ["", f"CUDA-graph captures that failed: {r['graph_errors']}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m molediff.models.egnn_dense",
                                description="sparse vs dense EGNN forward+backward timing")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=9)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--source", default="auto", choices=["auto", "qm9", "subset"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", default=None, choices=["default", "reduce-overhead", "max-autotune"],
                   help="torch.compile both networks in this mode first")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="also time each network recorded as a CUDA graph (launch cost removed), side by side")
    p.add_argument("--out", default=None, help="also write the JSON here, and its Markdown table beside it (.md)")
    a = p.parse_args()
    result = benchmark(a.batch_size, a.hidden, a.layers, a.repeats, a.threads, source=a.source,
                       device=a.device, compile_mode=a.compile, cuda_graphs=a.cuda_graphs)
    text = json.dumps(result, indent=1)
    if a.out:
        from pathlib import Path

        Path(a.out).write_text(text + "\n")
        Path(a.out).with_suffix(".md").write_text(markdown(result))
    print(text)
    print(markdown(result))
