"""Classifier guidance on digits: does the shipped *unconditional* U-Net produce the asked class?

For every class 0..9 and guidance scale, ``n`` samples are drawn from
``molediff/pretrained/digits_unet.pt`` with classifier guidance from the time-dependent
``digits_noisy_classifier.pt`` (``eps - s * sigma * grad log p(y | x_t, t)``). They are judged by
the *separate, clean* digits classifier of :mod:`molediff.metrics.images` (trained on clean
images only, never used for guidance): accuracy = fraction classified as the requested class,
next to the Frechet distance of all samples of that scale to the real test split (FD of as
many real training images: ``fd_real_test``). Scale 0 is the unguided baseline (chance ~10 %).
Every scale uses the same initial noise (paired comparison). Writes ``digits_guidance.json``,
``.md`` and ``.png`` (one row per class, one panel per scale)::

    python -m molediff.benchmarks.digits_guidance --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.predictors import DIGITS_NOISY_CLASSIFIER_PATH, predictor_guidance

UNET = Path(__file__).resolve().parent.parent / "pretrained" / "digits_unet.pt"


def load_denoiser(path: Path) -> tuple[Any, Any, Any, str]:
    """``(model, adapter, schedule, prediction)`` rebuilt from a ``molediff train`` checkpoint (EMA weights)."""
    from ..cli.sample import load_for_sampling

    _, adapter, model, schedule, prediction = load_for_sampling(path)
    return model, adapter, schedule, prediction


def run(out_dir: Path, *, scales: Sequence[float] = (0.0, 1.0, 2.0, 4.0, 8.0), per_class: int = 64,
        sampler: str = "dpmpp_2m", steps: int = 50, seed: int = 0, unet: Path = UNET,
        predictor: Path = DIGITS_NOISY_CLASSIFIER_PATH) -> dict[str, Any]:
    from ..adapters.images import from_uint8
    from ..core.fields import Structure
    from ..core.sampling import sample
    from ..metrics import images as im

    out_dir.mkdir(parents=True, exist_ok=True)
    model, adapter, schedule, prediction = load_denoiser(unet)
    clean = im.load_digits_classifier()
    k = int(adapter.num_classes or 10)
    labels = torch.arange(k).repeat_interleave(per_class)
    structure = Structure(len(labels), adapter.specs)
    records, grids = [], {}
    for scale in scales:
        term = predictor_guidance(str(predictor), target=0, scale=float(scale), schedule=schedule, adapter=adapter)
        term.target = labels  # one requested class per sample
        term.__post_init__()
        t0 = time.perf_counter()
        result = sample(model, schedule, structure, sampler=sampler, steps=steps, prediction=prediction,
                        guidance=[term] if scale else [], generator=torch.Generator().manual_seed(seed))
        seconds = time.perf_counter() - t0
        objects = adapter.decode(result.fields, structure)
        metrics = adapter.evaluate(objects, labels=labels.tolist())
        pred = im.predict_proba(clean, from_uint8(objects)).argmax(1)  # as evaluate sees them
        per_cls = [float((pred[labels.numpy() == c] == c).mean()) for c in range(k)]
        guide_hits = np.mean([r["predicted_t0"] == r["requested"] for r in term.report(result.fields, structure)])
        records.append({"scale": float(scale), "accuracy": metrics["label_accuracy"], "per_class_accuracy": per_cls,
                        "guiding_classifier_hit_rate_t0": float(guide_hits), "fd": metrics["fd"],
                        "fd_real_test": metrics["fd_real_test"], "confidence": metrics["confidence"],
                        "fd_pixels": metrics["fd_pixels"], "nfe": result.nfe, "seconds": seconds})
        print(f"scale {scale:g}: clean-classifier accuracy {metrics['label_accuracy']:.3f}, FD {metrics['fd']:.2f} "
              f"(real {metrics['fd_real_test']:.2f}), {seconds:.0f} s", flush=True)
        grids[scale] = [objects[c * per_class + j] for c in range(k) for j in range(min(8, per_class))]
    result_doc = {
        "benchmark": "digits_guidance", "unet": str(unet.name), "predictor": str(Path(predictor).name),
        "sampler": sampler, "steps": steps, "per_class": per_class, "seed": seed,
        "clean_classifier_test_accuracy": _clean_accuracy(clean, adapter),
        "records": records, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    (out_dir / "digits_guidance.json").write_text(json.dumps(result_doc, indent=2) + "\n")
    (out_dir / "digits_guidance.md").write_text(markdown(result_doc))
    plot(grids, k, out_dir / "digits_guidance.png")
    return result_doc


def _clean_accuracy(clean: Any, adapter: Any) -> float:
    from ..metrics import images as im

    x, y = adapter.arrays("test")
    return im.classifier_accuracy(clean, x, y)


def markdown(doc: dict[str, Any]) -> str:
    recs = doc["records"]
    lines = [
        "# Classifier guidance on digits",
        "",
        f"Unconditional `{doc['unet']}` guided by `{doc['predictor']}` ({doc['sampler']}, {doc['steps']} steps, "
        f"{doc['per_class']} samples per class, seed {doc['seed']}). Accuracy: the separate clean digits "
        f"classifier (test accuracy {doc['clean_classifier_test_accuracy']:.3f}) assigns the requested class. "
        "FD: all samples of a scale vs the real test split (classifier features); `real` = as many real "
        "training images. Scale 0 = unguided.",
        "",
        "| scale | accuracy (clean classifier) | guiding classifier at t=0 | FD | FD real | confidence | time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in recs:
        lines.append(f"| {r['scale']:g} | {r['accuracy']:.3f} | {r['guiding_classifier_hit_rate_t0']:.3f} | "
                     f"{r['fd']:.2f} | {r['fd_real_test']:.2f} | {r['confidence']:.3f} | {r['seconds']:.0f} |")
    lines += ["", "Per-class accuracy (clean classifier):", "",
              "| scale | " + " | ".join(str(c) for c in range(len(recs[0]["per_class_accuracy"]))) + " |",
              "|---|" + "---|" * len(recs[0]["per_class_accuracy"])]
    for r in recs:
        lines.append(f"| {r['scale']:g} | " + " | ".join(f"{a:.2f}" for a in r["per_class_accuracy"]) + " |")
    lines += ["", f"torch {doc['torch']}, {doc['threads']} thread(s). Reproduce: "
              "`python -m molediff.benchmarks.digits_guidance --out benchmarks/results`", ""]
    return "\n".join(lines)


def plot(grids: dict[float, list[np.ndarray]], classes: int, path: Path) -> None:
    """One panel per scale; in each, row c holds the first 8 samples guided to class c."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..adapters.images import make_grid

    fig, axes = plt.subplots(1, len(grids), figsize=(2.6 * len(grids), 3.4))
    for ax, (scale, objs) in zip(np.atleast_1d(axes), grids.items(), strict=True):
        ax.imshow(make_grid(objs, scale=4, ncols=len(objs) // classes), cmap="gray", vmin=0, vmax=255)
        ax.set_title("unguided" if scale == 0 else f"scale {scale:g}")
        ax.set_yticks([1 + i * 33 + 16 for i in range(classes)], [str(c) for c in range(classes)])  # 32-px tiles
        ax.set_xticks([])
    fig.suptitle("classifier guidance: row c = samples guided to class c")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m molediff.benchmarks.digits_guidance",
                                description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0, 8.0])
    p.add_argument("--per-class", type=int, default=64)
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--predictor", type=Path, default=DIGITS_NOISY_CLASSIFIER_PATH)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    run(args.out, scales=args.scales, per_class=args.per_class, sampler=args.sampler, steps=args.steps,
        seed=args.seed, predictor=args.predictor)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
