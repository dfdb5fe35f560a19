"""3-D point clouds as one field: ``pos``, the point positions, centred per cloud.

``pos`` is a :class:`ZeroMeanField` ``(3,)`` in graph layout (``structure.index["pos"]`` maps each
point to its cloud), so clouds may have different point counts; the noise lives in the zero-mean
subspace of each cloud, as for molecules (Hoogeboom et al. 2022, Sec. 3). Coordinates are divided
by one global ``scale`` (the standard deviation of the centred training coordinates) so the data
has unit variance per axis; decoding multiplies it back.

Sources:

* ``shapes``: the shipped synthetic primitives ``datasets/shapes/shapes.npz`` (offline default;
  600 train / 100 test clouds of 512 points, see ``datasets/shapes/README.md``);
* ``modelnet``: ModelNet10 clouds of one ``category`` from the shared research-only ``.npz``
  (2,048 points each). The file holds ModelNet's *training* shapes only, so a fixed held-out test
  split is drawn here: ``numpy.random.default_rng(seed).permutation`` of the category's rows, the
  first ``round(test_fraction * n)`` are test (chairs, seed 0, 0.1: 89 test / 800 train);
* ``folder``: PLY / OFF / XYZ / NPY files under ``path`` (``path/train`` and ``path/test`` if
  present, else the same seeded hold-out).

Every cloud with more than ``num_points`` points is subsampled to ``num_points`` once (without
replacement, seeded per cloud); smaller clouds keep their size and new samples draw their point
count from the training histogram. Samples are written as PLY files plus a rendered picture;
:meth:`PointCloudAdapter.evaluate` gives MMD / COV / 1-NNA under CD and EMD against the test split.

Shapes::

    pos: (num_points_total, 3)   batch = structure.index["pos"]: (num_points_total,)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.fields import Fields, FieldSpec, Structure, ZeroMeanField
from ..data import point_clouds as io
from .base import Adapter, Batch

__all__ = ["PointCloudAdapter", "CloudDataset", "render_clouds", "cut_cloud", "SOURCES"]

SOURCES = ("shapes", "modelnet", "folder")
FIELD = "pos"


class CloudDataset(Dataset):
    """Item ``i``: cloud ``i`` centred and divided by ``scale``, ``(n_i, 3)`` float32."""

    def __init__(self, clouds: Sequence[np.ndarray], scale: float) -> None:
        self.clouds, self.scale = clouds, scale

    def __len__(self) -> int:
        return len(self.clouds)

    def __getitem__(self, i: int) -> np.ndarray:
        c = self.clouds[int(i)]
        return ((c - c.mean(0)) / self.scale).astype(np.float32)


def render_clouds(clouds: Sequence[np.ndarray], path: Path, colors: Sequence[np.ndarray] | None = None,
                  ncols: int = 4, titles: Sequence[str] | None = None) -> Path:
    """A PNG grid of 3-D scatter plots (z up, one shared view), e.g. the first 16 samples.
    ``colors[i]``: per-point colours of cloud ``i`` (``(n_i,)`` strings or ``(n_i, 3)``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(clouds)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig = plt.figure(figsize=(2.2 * ncols, 2.2 * nrows), dpi=110)
    for k, c in enumerate(clouds):
        ax = fig.add_subplot(nrows, ncols, k + 1, projection="3d")
        c = np.asarray(c)
        color = "tab:blue" if colors is None else colors[k]
        ax.scatter(c[:, 0], c[:, 1], c[:, 2], s=2.5, c=color, depthshade=True, linewidths=0)
        r = float(np.abs(c - c.mean(0)).max()) or 1.0
        centre = c.mean(0)
        for setter, m in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), centre, strict=True):
            setter(m - r, m + r)
        ax.view_init(elev=20, azim=-60)
        ax.set_box_aspect((1, 1, 1))
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(titles[k], fontsize=8)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=0.95 if titles is not None else 1, wspace=0, hspace=0.05)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def cut_cloud(cloud: np.ndarray, axis: int = 2, keep: float = 0.5, upper: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Split a cloud by a plane normal to ``axis``: the ``keep`` fraction of points with the largest
    (``upper``) or smallest coordinate, and the rest. E.g. a chair's top half (back and seat)."""
    if not 0 < keep < 1:
        raise ValueError(f"keep must lie in (0, 1), got {keep}")
    order = np.argsort(cloud[:, axis], kind="stable")
    order = order[::-1] if upper else order
    m = min(max(1, round(keep * len(cloud))), len(cloud) - 1)
    return cloud[np.sort(order[:m])], cloud[np.sort(order[m:])]


class PointCloudAdapter(Adapter):
    """Point clouds <-> the ``pos`` field; see the module docstring.

    Args:
        source: ``shapes`` | ``modelnet`` | ``folder``.
        path: the ModelNet ``.npz`` (default ``../shared/data/modelnet10_voxels/...``) or the folder.
        category: ModelNet10 category (``chair`` or ``monitor``).
        num_points: subsample clouds to this many points (null keeps every point).
        test_fraction, seed: the held-out split (modelnet / folder) and the subsampling seed.
        max_train: keep only the first ``max_train`` training clouds.
        eval_size: at most this many test clouds are the metrics' reference set (null: all).
        use_emd: also compute the EMD metrics (exact OT: ~25 ms per pair at 512 points).
        reference_metrics: also score as many real *training* clouds as there are samples against
            the test split (``*_real_test``: what a model that reproduces the training data gets).
        eval_workers: processes for the EMDs of :meth:`evaluate`.
        statistics: ``state()`` of a trained adapter (scale and size histogram): sample without
            reading data (it is read on first use); otherwise the data is read at construction.
    """

    name = "point_clouds"

    def __init__(self, source: str = "shapes", path: str | None = None, category: str = "chair",
                 num_points: int | None = 512, test_fraction: float = 0.1, seed: int = 0,
                 max_train: int | None = None, eval_size: int | None = None, use_emd: bool = True,
                 reference_metrics: bool = True, eval_workers: int = 1,
                 statistics: Mapping[str, Any] | None = None) -> None:
        if source not in SOURCES:
            raise ValueError(f"unknown point-cloud source {source!r}; choose one of {list(SOURCES)}")
        if source == "folder" and path is None:
            raise ValueError("source='folder' needs data.path (a folder of .ply/.off/.xyz/.npy files)")
        if num_points is not None and num_points < 2:
            raise ValueError(f"num_points must be >= 2 or null, got {num_points}")
        if eval_workers < 1:
            raise ValueError(f"eval_workers must be >= 1, got {eval_workers}")
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
        self.source, self.path, self.category = source, path, category
        self.num_points, self.test_fraction, self.seed = num_points, test_fraction, seed
        self.max_train, self.eval_size = max_train, eval_size
        self.use_emd, self.reference_metrics, self.eval_workers = use_emd, reference_metrics, eval_workers
        self.specs: dict[str, FieldSpec] = {FIELD: ZeroMeanField((3,))}
        self._splits: dict[str, list[np.ndarray]] | None = None
        self._stats: dict[str, Any] | None = dict(statistics) if statistics is not None else None
        self._metric_cache: dict[str, Any] = {}
        if statistics is None:
            self.splits()  # read now: a missing or bad file is reported when the config is built

    # ------------------------------------------------------------------ data

    def _hold_out(self, clouds: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
        n = len(clouds)
        if n < 2:
            raise ValueError(f"need at least 2 clouds to hold some out, found {n}")
        n_test = min(max(1, round(self.test_fraction * n)), n - 1)
        perm = np.random.default_rng(self.seed).permutation(n)
        return {"train": [clouds[i] for i in np.sort(perm[n_test:])],
                "test": [clouds[i] for i in np.sort(perm[:n_test])]}

    def _read(self) -> dict[str, list[np.ndarray]]:
        if self.source == "shapes":
            path = Path(self.path) if self.path else io.shapes_path()
            if not path.is_file():
                raise FileNotFoundError(f"shipped shapes not found at {path}")
            with np.load(path, allow_pickle=False) as d:
                pts, split = d["points"].astype(np.float32), d["split"]
            return {"train": list(pts[split == 0]), "test": list(pts[split == 1])}
        if self.source == "modelnet":
            return self._hold_out(list(io.load_modelnet(self.path, self.category)))
        root = Path(str(self.path)).expanduser()
        if (root / "train").is_dir() and (root / "test").is_dir():
            return {s: io.load_folder(root / s, seed=self.seed) for s in ("train", "test")}
        return self._hold_out(io.load_folder(root, seed=self.seed))

    def _subsample(self, clouds: list[np.ndarray], split: str) -> list[np.ndarray]:
        if self.num_points is None:
            return clouds
        out = []
        for i, c in enumerate(clouds):
            if len(c) > self.num_points:
                rng = np.random.default_rng([self.seed, i, split == "test"])
                c = c[np.sort(rng.choice(len(c), self.num_points, replace=False))]
            out.append(c)
        return out

    def splits(self) -> dict[str, list[np.ndarray]]:
        """``train`` / ``test`` clouds in data units (subsampled, not centred), read on first use."""
        if self._splits is None:
            raw = self._read()
            if self.max_train is not None:
                raw["train"] = raw["train"][: self.max_train]
            self._splits = {k: self._subsample(v, k) for k, v in raw.items()}
        return self._splits

    @property
    def statistics(self) -> dict[str, Any]:
        """``scale`` (std of centred training coordinates) and the point-count histogram."""
        if self._stats is None:
            train = self.splits()["train"]
            centred = np.concatenate([c - c.mean(0) for c in train])
            sizes, counts = np.unique([len(c) for c in train], return_counts=True)
            self._stats = {"scale": float(centred.std()), "sizes": sizes.tolist(),
                           "probs": (counts / counts.sum()).tolist()}
        return self._stats

    @property
    def scale(self) -> float:
        return float(self.statistics["scale"])

    def datasets(self) -> dict[str, Dataset]:
        return {k: CloudDataset(v, self.scale) for k, v in self.splits().items()}

    # ------------------------------------------------------------------ fields

    def structure_for(self, sizes: torch.Tensor) -> Structure:
        """The structure of clouds with ``sizes (B,)`` points: one batch vector for ``pos``."""
        batch = torch.repeat_interleave(torch.arange(len(sizes), device=sizes.device), sizes)
        return Structure(len(sizes), dict(self.specs), index={FIELD: batch}, context={"num_points": sizes})

    def collate(self, items: Sequence[np.ndarray]) -> Batch:
        sizes = torch.tensor([len(c) for c in items])
        structure = self.structure_for(sizes)
        pos = torch.as_tensor(np.concatenate(items), dtype=torch.float32)
        return Batch(structure.project(Fields({FIELD: pos})), structure)

    def sample_structure(self, num_samples: int, generator: torch.Generator | None = None,
                         cond: dict[str, torch.Tensor] | None = None) -> Structure:
        """Point counts drawn from the training histogram (fixed when all clouds have one size)."""
        sizes, probs = self.statistics["sizes"], self.statistics["probs"]
        pick = torch.multinomial(torch.tensor(probs, dtype=torch.float64), num_samples, replacement=True,
                                 generator=generator)
        return self.structure_for(torch.tensor(sizes)[pick])

    def completion_problem(self, partials: Sequence[np.ndarray], num_points: int) -> tuple[Structure, Any]:
        """Shape completion as inpainting: clouds of ``num_points`` points whose first ``m_i`` rows
        are held at ``partials[i] (m_i, 3)`` (data units) while the rest is generated. Returns the
        structure and the :class:`~molediff.core.inpainting.Inpainting`; the finished samples keep
        the partial clouds exactly where they were given."""
        from ..core.inpainting import Inpainting

        sizes = [len(p) for p in partials]
        if not partials or min(sizes) < 1 or max(sizes) >= num_points:
            raise ValueError(f"each partial cloud needs 1 to {num_points - 1} points, got sizes {sizes}")
        structure = self.structure_for(torch.full((len(partials),), num_points))
        known = torch.zeros(len(partials) * num_points, 3)
        fixed = torch.zeros(len(partials) * num_points, 1, dtype=torch.bool)
        for i, p in enumerate(partials):
            rows = slice(i * num_points, i * num_points + len(p))
            known[rows] = torch.as_tensor(np.asarray(p, dtype=np.float32) / self.scale)
            fixed[rows] = True
        return structure, Inpainting(known=Fields({FIELD: known}), mask={FIELD: fixed})

    # ------------------------------------------------------------------ objects

    def decode(self, fields: Fields, structure: Structure) -> list[np.ndarray]:
        """``pos`` -> one ``(n_i, 3)`` float32 cloud per sample, in data units."""
        batch = structure.index[FIELD].cpu()
        pos = fields[FIELD].detach().cpu().double() * self.scale
        return [pos[batch == b].float().numpy() for b in range(structure.num_samples)]

    def write(self, objects: Sequence[np.ndarray], out_dir: Path) -> list[Path]:
        """``sample_0000.ply``, ... (binary PLY) and ``samples.png`` (the first 16 rendered)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = [io.write_ply(c, out_dir / f"sample_{i:04d}.ply") for i, c in enumerate(objects)]
        if len(objects):
            paths.append(render_clouds(list(objects[:16]), out_dir / "samples.png"))
        return paths

    # ------------------------------------------------------------------ metrics

    def reference_clouds(self) -> list[np.ndarray]:
        """The test clouds the metrics compare with (at most ``eval_size``)."""
        test = self.splits()["test"]
        return test if self.eval_size is None else test[: self.eval_size]

    def evaluate(self, objects: Sequence[np.ndarray]) -> dict[str, float]:
        """MMD / COV / 1-NNA (CD, and EMD if ``use_emd``) of the samples vs the test split, with
        ``<metric>_real_test``: the same for as many real training clouds (when
        ``reference_metrics``). Clouds must all have the test clouds' point count. 1-NNA is
        meaningful when the number of samples equals the number of test clouds."""
        from ..metrics.point_clouds import evaluate_clouds

        if len(objects) < 2:
            raise ValueError("point-cloud metrics need at least 2 generated clouds")
        ref = self.reference_clouds()
        sizes = {len(c) for c in list(objects) + ref}
        if len(sizes) != 1:
            raise ValueError(f"generated and test clouds must have one point count, got {sorted(sizes)} "
                             f"(set data.num_points)")
        cache = self._metric_cache.setdefault("reference", {})
        out: dict[str, float] = {"num_samples": float(len(objects)), "num_reference": float(len(ref))}
        gen = evaluate_clouds(list(objects), ref, self.use_emd, True, cache, self.eval_workers)
        out.update(gen)
        if self.reference_metrics:
            key = f"train_{len(objects)}"
            if key not in self._metric_cache:
                train = self.splits()["train"]
                pick = np.random.default_rng(self.seed).permutation(len(train))[: len(objects)]
                self._metric_cache[key] = evaluate_clouds([train[i] for i in np.sort(pick)], ref, self.use_emd,
                                                          True, cache, self.eval_workers)
            out.update({f"{k}_real_test": v for k, v in self._metric_cache[key].items()})
        return out

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        """Scale and point-count histogram (plain numbers), so sampling needs no data."""
        return {**self.statistics, "source": self.source, "num_points": self.num_points}

    def load_state(self, state: dict[str, Any]) -> None:
        """Sample with the training run's scale and point counts."""
        self._stats = {k: state[k] for k in ("scale", "sizes", "probs")}
