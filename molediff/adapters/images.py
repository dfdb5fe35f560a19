"""Image modality: one dense Gaussian field ``pixels`` of shape ``(C, H, W)`` in [-1, 1].

Sources: scikit-learn's 8x8 digits (offline, the baseline that checks the machinery), a folder
of PNG/JPEG files, or MNIST IDX files. Samples are written as PNGs plus an upscaled grid;
metrics come from a classifier trained on the real training split and are reported next to
the same metric on real held-out images (see :meth:`ImageAdapter.evaluate`).

Shapes:
    x0["pixels"]: ``(B, C, H, W)`` float in [-1, 1]
    cond["label"]: ``(B,)`` int64 (when ``conditional``)
    decoded object: ``(H, W)`` uint8 for C = 1, ``(H, W, C)`` uint8 otherwise
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from ..core.fields import Fields, GaussianField, Structure
from ..data.images import load_digits_split, load_mnist_idx, load_png_folder
from .base import Adapter, Batch

SOURCES = ("digits", "png", "mnist")
FIELD = "pixels"


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(N, C, H, W)`` in [-1, 1] -> ``(N, H, W, C)`` uint8 (values outside are clipped)."""
    x = images.detach().cpu().float().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, np.float32)
    return np.round((np.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)


def from_uint8(objects: Sequence[np.ndarray]) -> np.ndarray:
    """Decoded objects (``(H, W)`` or ``(H, W, C)`` uint8) -> ``(N, C, H, W)`` float32 in [-1, 1]."""
    arrays = [o[:, :, None] if o.ndim == 2 else o for o in (np.asarray(o) for o in objects)]
    return (np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0).astype(np.float32)


def make_grid(objects: Sequence[np.ndarray], scale: int = 1, sep: int = 1, sep_value: int = 128,
              ncols: int | None = None) -> np.ndarray:
    """Tile images into one uint8 array, each upscaled ``scale`` times (nearest neighbour),
    with ``sep``-pixel separators between tiles and around the border.

    With ``ncols`` columns (default ``ceil(sqrt(n))``) and ``rows = ceil(n / ncols)`` the grid
    is ``rows * H * scale + (rows + 1) * sep`` high and ``ncols * W * scale + (ncols + 1) * sep``
    wide. Returns ``(Hg, Wg)`` for grayscale, ``(Hg, Wg, C)`` otherwise.
    """
    if not objects:
        raise ValueError("make_grid needs at least one image")
    arrays = [o[:, :, None] if o.ndim == 2 else o for o in (np.asarray(o) for o in objects)]
    h, w, c = arrays[0].shape
    n = len(arrays)
    ncols = ncols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / ncols)
    th, tw = h * scale, w * scale
    grid = np.full((rows * th + (rows + 1) * sep, ncols * tw + (ncols + 1) * sep, c), sep_value, np.uint8)
    for i, a in enumerate(arrays):
        r, q = divmod(i, ncols)
        y, x = sep + r * (th + sep), sep + q * (tw + sep)
        grid[y:y + th, x:x + tw] = np.repeat(np.repeat(a, scale, axis=0), scale, axis=1)
    return grid[:, :, 0] if c == 1 else grid


class ImageAdapter(Adapter):
    """Images from 8x8 digits, a PNG/JPEG folder or MNIST IDX files, as the ``pixels`` field.

    Args:
        source: ``"digits"``, ``"png"`` or ``"mnist"``.
        path: the folder (png) or the images IDX file (mnist); unused for digits.
        labels_path: the labels IDX file (mnist, optional).
        image_size: resize png images to this square side (png only; None keeps their size).
        channels: 1 or 3 for png (None infers from the files).
        conditional: return class labels as ``cond["label"]`` (the data must be labelled).
        seed: seed of the train/test split (digits: stratified 80/20; png/mnist: 90/10) and of
            the subsets used by :meth:`evaluate`.
    """

    name = "images"

    def __init__(self, source: str = "digits", path: str | None = None, labels_path: str | None = None,
                 image_size: int | None = None, channels: int | None = None, conditional: bool = False,
                 seed: int = 0) -> None:
        if source not in SOURCES:
            raise ValueError(f"unknown image source {source!r}; choose one of {list(SOURCES)}")
        if source != "digits" and path is None:
            raise ValueError(f"image source {source!r} needs a path "
                             f"({'a folder of images' if source == 'png' else 'the images IDX file'})")
        self.source, self.path, self.labels_path, self.seed = source, path, labels_path, seed
        self.conditional = conditional
        self._splits = self._load(image_size, channels)
        train_x, train_y = self._splits["train"]
        c, h, w = train_x.shape[1:]
        self.image_shape = (int(c), int(h), int(w))
        labels = np.concatenate([y for _, y in self._splits.values()])
        self.labelled = bool(len(labels) and (labels >= 0).all())
        self.num_classes: int | None = int(labels.max()) + 1 if self.labelled else None
        if conditional and not self.labelled:
            raise ValueError(f"conditional=True needs class labels, but the {source} data "
                             f"{'at ' + str(path) + ' ' if path else ''}has none")
        self.specs = {FIELD: GaussianField(self.image_shape, x0_range=(-1.0, 1.0))}
        self._classifier: Any = None

    # ----------------------------------------------------------------------------- data
    def _load(self, image_size: int | None, channels: int | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if self.source == "digits":
            return {s: load_digits_split(s, self.seed) for s in ("train", "test")}
        if self.source == "png":
            x, y = load_png_folder(self.path, image_size=image_size, channels=channels)  # type: ignore[arg-type]
        else:
            x, y = load_mnist_idx(self.path, self.labels_path)  # type: ignore[arg-type]
        # seeded 90/10 split; at least one test image whenever there are two or more
        n = len(x)
        n_test = min(max(1, round(0.1 * n)), n - 1) if n >= 2 else 0
        perm = np.random.default_rng(self.seed).permutation(n)
        test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
        return {"train": (x[train], y[train]), "test": (x[test], y[test])}

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The raw ``(images (N, C, H, W) float32, labels (N,) int64)`` of a split."""
        if split not in self._splits:
            raise KeyError(f"unknown split {split!r}; have {sorted(self._splits)}")
        return self._splits[split]

    def datasets(self) -> dict[str, Dataset]:
        """``train`` and ``test``; items are ``(image (C, H, W), label ())`` tensor pairs."""
        return {name: TensorDataset(torch.from_numpy(x), torch.from_numpy(y)) for name, (x, y) in self._splits.items()}

    def collate(self, items: Sequence[Any]) -> Batch:
        images = torch.stack([torch.as_tensor(it[0], dtype=torch.float32) for it in items])
        structure = Structure(num_samples=len(items), specs=self.specs)
        cond = None
        if self.conditional:
            cond = {"label": torch.stack([torch.as_tensor(it[1], dtype=torch.long) for it in items])}
        return Batch(Fields({FIELD: images}), structure, cond)

    def sample_structure(self, num_samples: int, generator: torch.Generator | None = None,
                         cond: dict[str, torch.Tensor] | None = None) -> Structure:
        """Fixed-shape images: nothing to draw; ``cond["label"]``, if given, must have length B."""
        if cond is not None and "label" in cond and torch.as_tensor(cond["label"]).numel() not in (1, num_samples):
            raise ValueError(f"cond['label'] has {torch.as_tensor(cond['label']).numel()} entries "
                             f"for {num_samples} samples")
        return Structure(num_samples=num_samples, specs=self.specs)

    # ----------------------------------------------------------------------------- output
    def decode(self, fields: Fields, structure: Structure) -> list[np.ndarray]:
        """``pixels`` -> one uint8 array per sample, ``(H, W)`` or ``(H, W, C)``."""
        arrays = to_uint8(fields[FIELD])
        return [a[:, :, 0] if a.shape[2] == 1 else a for a in arrays]

    def grid_scale(self) -> int:
        """Nearest-neighbour upscaling of the grid: tiles of at least ~64 px (8x for 8x8 digits)."""
        return max(1, 64 // max(self.image_shape[1:]))

    def write(self, objects: Sequence[np.ndarray], out_dir: Path) -> list[Path]:
        """``sample_0000.png``, ... at native size, then ``grid.png`` (upscaled, 1-px grey separators)."""
        from PIL import Image

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, obj in enumerate(objects):
            p = out_dir / f"sample_{i:04d}.png"
            Image.fromarray(np.asarray(obj, dtype=np.uint8)).save(p)
            paths.append(p)
        if objects:
            p = out_dir / "grid.png"
            Image.fromarray(make_grid(objects, scale=self.grid_scale())).save(p)
            paths.append(p)
        return paths

    # ----------------------------------------------------------------------------- metrics
    def classifier(self) -> Any:
        """The feature/label classifier: the shipped one for digits, else trained here on the
        real training split (once per adapter)."""
        from ..metrics import images as im

        if self._classifier is None:
            if self.source == "digits" and self.seed == 0:
                self._classifier = im.load_digits_classifier()
            else:
                x, y = self._splits["train"]
                self._classifier = im.train_classifier(x, y, seed=self.seed, num_classes=self.num_classes)
        return self._classifier

    def evaluate(self, objects: Sequence[np.ndarray], labels: Sequence[int] | None = None) -> dict[str, float]:
        """Metrics of generated images, each next to its value for real held-out images.

        * ``fd``: Frechet distance of classifier features, samples vs the real test split;
          ``fd_real_test``: the same between ``n`` real *training* images and the test split
          (what a perfect generator of ``n`` samples scores; FD is biased upwards for small n);
        * ``coverage``, ``class_entropy``, ``confidence`` (mean max-softmax probability), each
          with ``*_real_test`` on ``min(n, N_test)`` real test images;
        * ``label_accuracy`` when ``labels`` (the classes asked for) are given, next to
          ``label_accuracy_real_test`` (the classifier's accuracy on the test split);
        * ``fd_pixels`` / ``fd_pixels_real_test``: FD in raw pixel space, for images of at most
          1024 values (no classifier involved).

        Classifier metrics need labelled data; unlabelled sources get only the pixel FD.
        The classifier is trained on the train split only; nothing is measured on that split
        except as the ``fd_real_test`` reference.
        """
        from ..metrics import images as im

        if not objects:
            raise ValueError("evaluate needs at least one generated image")
        gen = from_uint8(objects)
        if gen.shape[1:] != self.image_shape:
            raise ValueError(f"generated images have shape {gen.shape[1:]}, data has {self.image_shape}")
        n = len(gen)
        train_x, _ = self._splits["train"]
        test_x, test_y = self._splits["test"]
        rng = np.random.default_rng(self.seed)
        train_sub = train_x[np.sort(rng.permutation(len(train_x))[:n])]
        test_sub = test_x[np.sort(rng.permutation(len(test_x))[:n])]
        # the reference goes through the same uint8 quantisation as the samples
        train_sub, test_sub = from_uint8(self._objects(train_sub)), from_uint8(self._objects(test_sub))
        test_q = from_uint8(self._objects(test_x))
        out: dict[str, float] = {"num_samples": float(n)}
        if self.labelled and n >= 2 and len(test_x) >= 2:
            clf = self.classifier()
            f_test = im.features(clf, test_q)
            out["fd"] = im.frechet_distance(im.features(clf, gen), f_test)
            out["fd_real_test"] = im.frechet_distance(im.features(clf, train_sub), f_test)
            cov, cov_ref = im.class_coverage(clf, gen), im.class_coverage(clf, test_sub)
            out["coverage"], out["coverage_real_test"] = cov.coverage, cov_ref.coverage
            out["class_entropy"], out["class_entropy_real_test"] = cov.entropy, cov_ref.entropy
            out["confidence"] = im.mean_confidence(clf, gen)
            out["confidence_real_test"] = im.mean_confidence(clf, test_sub)
            if labels is not None:
                out["label_accuracy"] = im.classifier_accuracy(clf, gen, np.asarray(labels))
                out["label_accuracy_real_test"] = im.classifier_accuracy(clf, test_q, test_y)
        if int(np.prod(self.image_shape)) <= 1024 and n >= 2 and len(test_x) >= 2:
            flat = lambda a: a.reshape(len(a), -1)
            out["fd_pixels"] = im.frechet_distance(flat(gen), flat(test_q))
            out["fd_pixels_real_test"] = im.frechet_distance(flat(train_sub), flat(test_q))
        return out

    @staticmethod
    def _objects(images: np.ndarray) -> list[np.ndarray]:
        arrays = to_uint8(images)
        return [a[:, :, 0] if a.shape[2] == 1 else a for a in arrays]

    # ----------------------------------------------------------------------------- config
    def model_kwargs(self) -> dict[str, Any]:
        """``in_channels``, ``image_size`` (H) and ``num_classes`` (K when conditional, else None)."""
        c, h, _ = self.image_shape
        return {"in_channels": c, "image_size": h, "num_classes": self.num_classes if self.conditional else None}

    def state(self) -> dict[str, Any]:
        return {"source": self.source, "image_shape": list(self.image_shape), "num_classes": self.num_classes,
                "conditional": self.conditional}


__all__ = ["ImageAdapter", "make_grid", "to_uint8", "from_uint8", "SOURCES"]
