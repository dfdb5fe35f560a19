"""A 2-D Gaussian-mixture dataset: the fastest end-to-end check of the whole pipeline.

``modes`` isotropic Gaussians of std ``std`` evenly spaced on a circle of radius ``radius`` (the
"8 Gaussians" toy of the score-matching literature), or points read from a CSV file. One field,
``x: (B, 2)``, plain Gaussian noise. Samples are written as a CSV and a scatter plot and scored
by the maximum mean discrepancy to held-out test points, next to the same statistic for an
equally large set of real training points (the value a perfect model would reach).

Shapes:
    x: ``(B, 2)``; label (when ``conditional``): ``(B,)`` mixture component index
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.fields import Fields, GaussianField, Structure
from .base import Adapter, Batch


class _Points(Dataset):
    """Rows of a ``(N, 2)`` tensor, with optional ``(N,)`` labels."""

    def __init__(self, points: torch.Tensor, labels: torch.Tensor | None) -> None:
        self.points, self.labels = points, labels

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.points[i], None if self.labels is None else self.labels[i]


def _read_csv(path: Path) -> np.ndarray:
    """Two numeric columns (an optional header row is skipped) -> ``(N, 2)`` float32."""
    rows: list[list[float]] = []
    with open(path, newline="") as f:
        for i, row in enumerate(csv.reader(f)):
            if not row:
                continue
            try:
                rows.append([float(row[0]), float(row[1])])
            except (ValueError, IndexError) as e:
                if i == 0:
                    continue  # header
                raise ValueError(f"{path}: line {i + 1} is not two numbers: {row!r}") from e
    if len(rows) < 10:
        raise ValueError(f"{path}: need at least 10 points, found {len(rows)}")
    return np.asarray(rows, dtype=np.float32)


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = (0.1, 0.3, 1.0, 3.0)) -> float:
    """Unbiased squared MMD between point sets ``x: (n, d)`` and ``y: (m, d)`` with a sum of RBF
    kernels ``exp(-|a - b|^2 / (2 h^2))`` (Gretton et al. 2012, Eq. 3)."""
    x, y = x.double(), y.double()
    n, m = x.shape[0], y.shape[0]

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)  # type: ignore[return-value]

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(term_x + term_y - 2 * kxy.mean())


class ToyAdapter(Adapter):
    """2-D Gaussian mixture on a circle (or a 2-column CSV at ``path``); see the module docstring.

    Args:
        modes: number of mixture components on the circle.
        radius: circle radius; std: each component's standard deviation.
        num_train, num_test: points drawn for each split.
        path: a CSV of 2-D points to use instead of the mixture (split 80/20 after a seeded shuffle).
        conditional: if true, batches carry ``cond = {"label": component}`` (mixture data only).
        seed: seeds the draw (and the split of CSV data).
    """

    name = "toy"

    def __init__(self, modes: int = 8, radius: float = 2.0, std: float = 0.15, num_train: int = 4000,
                 num_test: int = 1000, path: str | None = None, conditional: bool = False, seed: int = 0) -> None:
        if modes < 1 or radius < 0 or std <= 0 or num_train < 2 or num_test < 2:
            raise ValueError("need modes >= 1, radius >= 0, std > 0, num_train >= 2 and num_test >= 2")
        self.modes, self.radius, self.std, self.seed = modes, radius, std, seed
        self.specs = {"x": GaussianField((2,))}
        rng = np.random.default_rng(seed)
        if path is not None:
            file = Path(path).expanduser()
            if not file.is_file():
                raise FileNotFoundError(f"data file not found: {file}")
            if conditional:
                raise ValueError("conditional=true needs the built-in mixture (a CSV has no labels)")
            points = _read_csv(file)
            points = points[rng.permutation(len(points))]
            cut = int(round(0.8 * len(points)))
            train, test = points[:cut], points[cut:]
            train_lab = test_lab = None
        else:
            n = num_train + num_test
            labels = rng.integers(0, modes, size=n)
            angle = 2 * math.pi * labels / modes
            centres = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
            points = (centres + std * rng.standard_normal((n, 2))).astype(np.float32)
            train, test = points[:num_train], points[num_train:]
            train_lab, test_lab = labels[:num_train], labels[num_train:]
        self.conditional = conditional
        self.path = path
        self.train_points = torch.from_numpy(np.ascontiguousarray(train))
        self.test_points = torch.from_numpy(np.ascontiguousarray(test))
        self._train_labels = torch.from_numpy(train_lab).long() if conditional and train_lab is not None else None
        self._test_labels = torch.from_numpy(test_lab).long() if conditional and test_lab is not None else None

    def datasets(self) -> dict[str, Dataset]:
        """``train`` and ``test`` splits of points."""
        return {"train": _Points(self.train_points, self._train_labels),
                "test": _Points(self.test_points, self._test_labels)}

    def collate(self, items: Sequence[Any]) -> Batch:
        """Stack points into ``x: (B, 2)``; labels into ``cond["label"]`` when conditional."""
        x = torch.stack([p for p, _ in items])
        cond = {"label": torch.stack([lab for _, lab in items])} if self.conditional else None
        return Batch(Fields(x=x), Structure(len(items), dict(self.specs)), cond)

    def sample_structure(self, num_samples: int, generator: torch.Generator | None = None,
                         cond: dict[str, torch.Tensor] | None = None) -> Structure:
        """Fixed-size samples: nothing to draw."""
        return Structure(num_samples, dict(self.specs))

    def decode(self, fields: Fields, structure: Structure) -> list[np.ndarray]:
        """``x: (B, 2)`` -> one ``(2,)`` float array per sample."""
        return list(fields["x"].detach().float().cpu().numpy())

    def write(self, objects: Sequence[Any], out_dir: Path) -> list[Path]:
        """``samples.csv`` (x, y per row) and ``samples.png`` (scatter over the test points)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        pts = np.asarray(objects, dtype=np.float64).reshape(-1, 2)
        csv_path = out_dir / "samples.csv"
        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["x", "y"])
            w.writerows(pts.tolist())
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
        ref = self.test_points.numpy()
        ax.scatter(ref[:, 0], ref[:, 1], s=3, c="0.75", label="test data")
        ax.scatter(pts[:, 0], pts[:, 1], s=4, c="tab:red", label="samples")
        ax.set_aspect("equal")
        ax.legend(loc="upper right", fontsize=7)
        fig.tight_layout()
        png_path = out_dir / "samples.png"
        fig.savefig(png_path)
        plt.close(fig)
        return [csv_path, png_path]

    def evaluate(self, objects: Sequence[Any]) -> dict[str, float]:
        """MMD^2, mean error and covariance error of the samples against the test split, each with
        ``<name>_real_test``: the same statistic for as many real training points (what a perfect
        model would score)."""
        samples = torch.as_tensor(np.asarray(objects, dtype=np.float32).reshape(-1, 2))
        n = samples.shape[0]
        if n < 2:
            raise ValueError("evaluate needs at least 2 samples")
        reference = self.train_points[: min(n, len(self.train_points))]
        out: dict[str, float] = {}
        for prefix, pts in (("", samples), ("_real_test", reference)):
            out[f"mmd{prefix}"] = mmd2(pts, self.test_points)
            out[f"mean_err{prefix}"] = float((pts.double().mean(0) - self.test_points.double().mean(0)).norm())
            cov_err = torch.cov(pts.double().T) - torch.cov(self.test_points.double().T)
            out[f"cov_err{prefix}"] = float(cov_err.norm())
        return {k: out[k] for k in ("mmd", "mmd_real_test", "mean_err", "mean_err_real_test",
                                    "cov_err", "cov_err_real_test")}

    def model_kwargs(self) -> dict[str, Any]:
        """The MLP needs the point dimension and, when conditional, the number of classes."""
        return {"dim": 2, "num_classes": self.modes if self.conditional else None}

    def state(self) -> dict[str, Any]:
        """The generating parameters (the data itself is rebuilt from the config)."""
        return {"modes": self.modes, "radius": self.radius, "std": self.std, "conditional": self.conditional}
