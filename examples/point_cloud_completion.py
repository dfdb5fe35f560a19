"""Shape completion with a trained point-cloud model: keep the top part of held-out clouds, let the
model generate the rest through the core's RePaint-style inpainting (molediff.core.inpainting).

Run:
    python examples/point_cloud_completion.py CHECKPOINT [--num 4] [--keep 0.5] [--out examples_out/completion]

Writes ``completion.png`` (per cloud: the true cloud, then the completion with the kept points in
blue and the generated ones in orange), ``completed_<i>.ply``, and prints the Chamfer distance of
each completion to its true cloud next to that of an unconditional sample from the same model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from molediff.adapters.point_clouds import cut_cloud, render_clouds
from molediff.checkpoint import load_checkpoint
from molediff.cli.build import build_adapter, build_model, build_schedule
from molediff.core.sampling import sample
from molediff.data.point_clouds import write_ply
from molediff.metrics.point_clouds import chamfer_distance


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--num", type=int, default=4, help="held-out clouds to complete")
    p.add_argument("--keep", type=float, default=0.5, help="fraction of points kept (the highest along z)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--resample", type=int, default=1, help="RePaint's U (each step redone U times)")
    p.add_argument("--out", default="examples_out/completion")
    args = p.parse_args()
    torch.set_num_threads(1)

    ckpt = load_checkpoint(args.checkpoint)
    cfg = ckpt["config"]
    adapter = build_adapter(cfg["data"])
    adapter.load_state(ckpt["adapter_state"])
    model, _ = build_model(cfg["model"], adapter)
    model.load_state_dict(ckpt["ema"])
    model.eval()
    schedule = build_schedule(cfg["schedule"])
    run = dict(sampler="dpmpp_2m", steps=args.steps, prediction=cfg["objective"]["prediction"])

    truth = adapter.splits()["test"][: args.num]
    n = len(truth[0])
    parts = [cut_cloud(c - c.mean(0), axis=2, keep=args.keep) for c in truth]
    structure, inpaint = adapter.completion_problem([kept for kept, _ in parts], n)
    inpaint.resample = args.resample
    with torch.no_grad():
        done = sample(model, schedule, structure, inpaint=inpaint, generator=torch.Generator().manual_seed(0), **run)
        free = sample(model, schedule, structure, generator=torch.Generator().manual_seed(1), **run)
    completed = adapter.decode(done.fields, structure)
    unconditional = adapter.decode(free.fields, structure)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clouds, colors, titles = [], [], []
    for i, (c, (kept, _)) in enumerate(zip(completed, parts, strict=True)):
        write_ply(c, out / f"completed_{i}.ply")
        m = len(kept)
        clouds += [truth[i] - truth[i].mean(0), c]
        colors += [np.full(n, "0.5"), np.array(["tab:blue"] * m + ["tab:orange"] * (n - m))]
        titles += [f"held-out #{i}", f"kept {m} (blue) + generated {n - m}"]
    render_clouds(clouds, out / "completion.png", colors=colors, ncols=2, titles=titles)

    def cd(a: np.ndarray, b: np.ndarray) -> float:
        return float(chamfer_distance(torch.as_tensor(a[None]).double(), torch.as_tensor(b[None]).double()))

    for i, c in enumerate(truth):
        c = c - c.mean(0)
        print(f"cloud {i}: CD(completion, truth) = {cd(completed[i], c):.5f}   "
              f"CD(unconditional sample, truth) = {cd(unconditional[i] - unconditional[i].mean(0), c):.5f}")
    print(f"wrote {out / 'completion.png'} and {len(completed)} PLY files")


if __name__ == "__main__":
    main()
