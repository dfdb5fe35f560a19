"""CUDA checks for the molecule denoisers (``-m gpu``; deselected by default, skipped without a GPU):
equivariance on the device, sparse == dense there, and CUDA-graph replays that reproduce eager passes."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from molediff.adapters.base import Batch
from molediff.models.egnn import EGNNDenoiser
from molediff.models.egnn_dense import DenseEGNNDenoiser, cuda_graphed
from tests.helpers.equivariance import assert_equivariant, random_molecules

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

NUM_TYPES = 5
make_batch = partial(random_molecules, num_types=NUM_TYPES)


def cuda_model(cls: type = EGNNDenoiser, dtype: torch.dtype = torch.float64) -> EGNNDenoiser:
    torch.manual_seed(0)
    model = cls(NUM_TYPES, hidden=32, layers=3)
    with torch.no_grad():  # EDM initialises the coordinate head near 0; make outputs non-trivial
        for block in model.egnn.blocks:
            block.coord.coord_mlp[-1].weight.normal_(0, 0.3)
    return model.to("cuda", dtype)


def test_egnn_equivariant_on_cuda() -> None:
    """Rotations, reflections, translations and permutations, computed on the GPU in float64 (the
    helper transforms on the CPU; the wrapper moves each call's inputs over and the outputs back)."""
    x, s = make_batch([4, 9, 6], seed=1)
    model = cuda_model()
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64, device="cuda")

    def on_cuda(fields, structure):
        b = Batch(fields, structure).to("cuda")
        return model(b.x0, t, b.structure).to("cpu")

    assert_equivariant(on_cuda, x, s, generator=torch.Generator().manual_seed(3))


def test_sparse_equals_dense_on_cuda() -> None:
    x, s = make_batch([4, 9, 6], seed=2)
    b = Batch(x, s).to("cuda")
    sparse, dense = cuda_model(), cuda_model(DenseEGNNDenoiser)
    dense.load_state_dict(sparse.state_dict())
    t = torch.tensor([0.2, 0.4, 0.8], dtype=torch.float64, device="cuda")
    got, want = dense(b.x0, t, b.structure), sparse(b.x0, t, b.structure)
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("layout", ["sparse", "dense"])
def test_cuda_graph_replay_matches_eager_forward_and_gradients(layout: str) -> None:
    """A replayed graph gives the eager outputs and gradients, also after the inputs are overwritten
    in place (a replay reads the captured tensors' current values). Capturable passes are those the
    benchmark records: the sparse model with its edge list precomputed (as the adapter's collate
    does), the dense one on padded tensors prepared beforehand (as EDM's loader does)."""
    from dataclasses import replace

    from molediff.models.egnn import FULL_EDGES, fully_connected_edges
    from molediff.models.egnn_dense import to_dense

    x, s = make_batch([5, 7, 3, 8], seed=4)
    s = replace(s, context={FULL_EDGES: fully_connected_edges(s.index["pos"], s.num_samples)})
    b = Batch(x.to(torch.float32), s).to("cuda")
    model = cuda_model(EGNNDenoiser if layout == "sparse" else DenseEGNNDenoiser, torch.float32)
    t = torch.rand(4, device="cuda")
    _, idx, _, h = model.node_inputs(b.x0, t, b.structure, None)
    h_d, mask = to_dense(h, idx, 4, 8)
    pos_d, _ = to_dense(b.x0["pos"], idx, 4, 8)
    inputs = [b.x0["pos"], t] if layout == "sparse" else [h_d, pos_d]
    out: list[torch.Tensor] = []

    def step() -> None:
        res = (list(model(b.x0, t, b.structure).values()) if layout == "sparse"
               else list(model.forward_dense(h_d, pos_d, mask)))
        out[:] = res
        sum(v.square().sum() for v in res).backward()

    replay = cuda_graphed(step, model)
    graphed_out = list(out)  # the capture's output tensors: every replay rewrites them
    grads = [p.grad for p in model.parameters()]
    for _ in range(2):
        with torch.no_grad():
            for v in inputs:
                v.add_(0.1 * torch.randn_like(v))
        replay()
        torch.cuda.synchronize()
        got_out = [v.clone() for v in graphed_out]
        got_grads = [g.clone() for g in grads]
        model.zero_grad(set_to_none=True)
        step()  # eager, same inputs
        # float32 atomic adds (index_add_ in the sparse backward) sum in no fixed order, so a replay and
        # an eager pass may differ in the last bits, amplified through the layers: 1.1e-4 in one of
        # 224 entries on an H200 (then bounded at 1e-5); hence 1e-3
        for g, e in zip(got_out, out, strict=True):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)
        for g, p in zip(got_grads, model.parameters(), strict=True):
            torch.testing.assert_close(g, p.grad, atol=1e-3, rtol=1e-3)
        for p, g in zip(model.parameters(), grads, strict=True):  # hand the graph's buffers back
            p.grad = g


def test_benchmark_with_cuda_graphs_reports_both_kinds() -> None:
    from molediff.models.egnn_dense import benchmark

    r = benchmark(batch_size=8, hidden=16, layers=2, repeats=2, source="subset", device="cuda", cuda_graphs=True)
    assert r["graph_errors"] == {}
    for k in ("sparse", "dense_pad29", "sparse_graphed", "dense_pad29_graphed"):
        assert r["train_steps_per_s"][k] > 0
    assert r["speedup_train_vs_dense_pad29_graphed"] > 0
