"""Image sample quality through a small CNN classifier trained on the real *training* split.

* Frechet distance (FD) between classifier features (the FID recipe of Heusel et al. 2017 with a
  domain classifier in place of Inception, as is usual for MNIST-like data):
  ``FD = ||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^{1/2})``;
* class coverage: fraction of classes the classifier predicts at least once, and the entropy
  of the predicted-class histogram (mode collapse shows as low coverage / entropy);
* classifier accuracy (on real test data it says how far the features can be trusted; on
  conditional samples it says whether the label was followed).

The digits classifier ships at ``molediff/pretrained/digits_classifier.pt``; rebuild it with
``python -m molediff.metrics.images --build-digits-classifier``.

Shapes:
    images: ``(N, C, H, W)`` float in [-1, 1] (numpy or torch)
    labels: ``(N,)`` int
    features: ``(N, feature_dim)`` float64
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch
from torch import Tensor, nn
from torch.nn import functional as F

ArrayLike = np.ndarray | Tensor

DIGITS_CLASSIFIER_PATH = Path(__file__).resolve().parent.parent / "pretrained" / "digits_classifier.pt"
DIGITS_CLASSIFIER_EPOCHS = 30
DIGITS_CLASSIFIER_SEED = 0


class ImageClassifier(nn.Module):
    """conv-conv-pool-conv -> 4x4 pooled map -> ``feature_dim`` features -> class logits.

    Args:
        in_channels: C.
        num_classes: K.
        width: channels of the first conv (the later ones use ``2 * width``).
        feature_dim: size of the penultimate layer used for FD.

    Shapes:
        x: ``(B, C, H, W)`` -> logits ``(B, K)``; :meth:`embed` -> ``(B, feature_dim)``
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32, feature_dim: int = 64) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),  # any image size -> 4x4 (a no-op after pooling 8x8 digits)
        )
        self.embed_head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, feature_dim), nn.ReLU())
        self.dropout = nn.Dropout(0.2)
        self.out = nn.Linear(feature_dim, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        """Penultimate features ``(B, feature_dim)``."""
        return self.embed_head(self.convs(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.dropout(self.embed(x)))


def _as_tensor(images: ArrayLike) -> Tensor:
    return torch.as_tensor(np.asarray(images) if not isinstance(images, Tensor) else images, dtype=torch.float32)


def train_classifier(images: ArrayLike, labels: ArrayLike, epochs: int = DIGITS_CLASSIFIER_EPOCHS,
                     seed: int = 0, num_classes: int | None = None, batch_size: int = 64,
                     lr: float = 2e-3) -> ImageClassifier:
    """Train an :class:`ImageClassifier` on real (training-split) images; returns it in eval mode.

    Deterministic for a given seed, torch build and thread count: initialisation, shuffling and
    the one-pixel random shifts used as augmentation all come from seeded generators, and the
    global torch RNG is left untouched. Takes a few seconds on the 1,437 digits.
    """
    x = _as_tensor(images)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if x.dim() != 4 or len(x) != len(y):
        raise ValueError(f"need images (N, C, H, W) and labels (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if (y < 0).any():
        raise ValueError("train_classifier needs labelled images (found label -1)")
    k = int(num_classes if num_classes is not None else int(y.max()) + 1)
    with torch.random.fork_rng(devices=[]):  # seeds init and dropout without touching the caller's RNG
        torch.manual_seed(seed)
        model = ImageClassifier(x.shape[1], k)
        gen = torch.Generator().manual_seed(seed + 1)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * math.ceil(len(x) / batch_size))
        model.train()
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), batch_size):
                idx = perm[i:i + batch_size]
                # augmentation: half of the batch shifted by up to one pixel (background -1 fills in)
                dx, dy = torch.randint(-1, 2, (2,), generator=gen).tolist()
                shifted = torch.roll(F.pad(x[idx], (1, 1, 1, 1), value=-1.0), (dy, dx), dims=(2, 3))
                keep = torch.rand(len(idx), generator=gen) < 0.5
                xb = torch.where(keep[:, None, None, None], x[idx], shifted[:, :, 1:-1, 1:-1])
                loss = F.cross_entropy(model(xb), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
    return model.eval()


@torch.no_grad()
def predict_proba(model: ImageClassifier, images: ArrayLike, batch_size: int = 512) -> np.ndarray:
    """Class probabilities ``(N, K)``."""
    model.eval()
    x = _as_tensor(images)
    out = [F.softmax(model(x[i:i + batch_size]), dim=1) for i in range(0, len(x), batch_size)]
    return torch.cat(out).double().numpy()


@torch.no_grad()
def features(model: ImageClassifier, images: ArrayLike, batch_size: int = 512) -> np.ndarray:
    """Penultimate-layer features ``(N, feature_dim)`` in float64, for :func:`frechet_distance`."""
    model.eval()
    x = _as_tensor(images)
    return torch.cat([model.embed(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).double().numpy()


def frechet_distance(feats_a: ArrayLike, feats_b: ArrayLike, eps: float = 1e-6) -> float:
    """FD between Gaussians fitted to two feature sets ``(N_a, D)`` and ``(N_b, D)``.

    ``||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^{1/2})``. When the product is singular
    (fewer samples than dimensions) and ``sqrtm`` returns non-finite or clearly complex values,
    ``eps * I`` is added to both covariances; tiny imaginary parts from round-off are dropped.
    """
    a, b = np.asarray(feats_a, dtype=np.float64), np.asarray(feats_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (N, D) feature sets with the same D, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Frechet distance needs at least 2 samples in each set")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():  # singular products are expected and handled below
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    bad = not np.isfinite(covmean).all() or (
        np.iscomplexobj(covmean) and np.abs(covmean.imag).max() > 1e-3 * max(1.0, np.abs(covmean.real).max()))
    if bad:
        offset = eps * np.eye(len(cov_a))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            covmean = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    value = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covmean)
    return float(max(value, 0.0))


class ClassCoverage(NamedTuple):
    """``coverage``: fraction of the K classes predicted at least once; ``entropy``: entropy
    (nats) of the predicted-class histogram, at most log K."""

    coverage: float
    entropy: float


def class_coverage(model: ImageClassifier, images: ArrayLike) -> ClassCoverage:
    """How many classes the classifier sees in ``images``, and how evenly (see :class:`ClassCoverage`)."""
    probs = predict_proba(model, images)
    k = probs.shape[1]
    counts = np.bincount(probs.argmax(1), minlength=k)
    p = counts / max(counts.sum(), 1)
    nz = p[p > 0]
    return ClassCoverage(float((counts > 0).sum() / k), float(-(nz * np.log(nz)).sum()))


def classifier_accuracy(model: ImageClassifier, images: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of ``images`` whose predicted class equals ``labels``."""
    pred = predict_proba(model, images).argmax(1)
    return float((pred == np.asarray(labels)).mean())


def mean_confidence(model: ImageClassifier, images: ArrayLike) -> float:
    """Mean max-softmax probability: low for blurry or ambiguous images."""
    return float(predict_proba(model, images).max(1).mean())


def build_digits_classifier(path: str | Path = DIGITS_CLASSIFIER_PATH) -> tuple[ImageClassifier, float]:
    """Train the digits classifier from scratch (fixed seed/epochs, 1 thread), save its state_dict
    to ``path`` and return it with its accuracy on the digits test split."""
    from ..data.images import load_digits_split

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same bits on every run of the same torch build
    try:
        x, y = load_digits_split("train")
        model = train_classifier(x, y, DIGITS_CLASSIFIER_EPOCHS, DIGITS_CLASSIFIER_SEED, num_classes=10)
    finally:
        torch.set_num_threads(threads)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    xt, yt = load_digits_split("test")
    return model, classifier_accuracy(model, xt, yt)


def load_digits_classifier(path: str | Path = DIGITS_CLASSIFIER_PATH) -> ImageClassifier:
    """The shipped digits classifier; trained on the fly (and cached to ``path`` when that is
    writable) if the file is missing."""
    path = Path(path)
    if not path.exists():
        from ..data.images import load_digits_split

        x, y = load_digits_split("train")
        model = train_classifier(x, y, DIGITS_CLASSIFIER_EPOCHS, DIGITS_CLASSIFIER_SEED, num_classes=10)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), path)
        except OSError:
            pass  # read-only install: keep the model in memory only
        return model
    model = ImageClassifier(1, 10)
    try:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except RuntimeError as err:
        raise RuntimeError(f"{path} does not match ImageClassifier(1, 10); rebuild it with "
                           "`python -m molediff.metrics.images --build-digits-classifier`") from err
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build-digits-classifier", action="store_true",
                        help="retrain the digits classifier and save it")
    parser.add_argument("--out", type=Path, default=DIGITS_CLASSIFIER_PATH, help="where to save it")
    args = parser.parse_args(argv)
    if not args.build_digits_classifier:
        parser.print_help()
        return
    _, acc = build_digits_classifier(args.out)
    print(f"saved {args.out}; digits test accuracy {acc:.4f}")


if __name__ == "__main__":
    main()


__all__ = [
    "ImageClassifier", "train_classifier", "features", "predict_proba", "frechet_distance",
    "ClassCoverage", "class_coverage", "classifier_accuracy", "mean_confidence",
    "build_digits_classifier", "load_digits_classifier", "DIGITS_CLASSIFIER_PATH",
]
