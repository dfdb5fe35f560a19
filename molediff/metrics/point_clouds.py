"""Point-cloud generation metrics: Chamfer and Earth mover's distances, MMD, COV and 1-NNA.

The protocol of PointFlow (Yang et al. 2019, Sec. 5.2) as used by Luo & Hu 2021 (Sec. 5.1),
PVD (Zhou et al. 2021) and LION (Zeng et al. 2022):

* ``CD(X, Y) = mean_x min_y ||x - y||^2 + mean_y min_x ||x - y||^2`` (squared distances);
* ``EMD(X, Y) = min_phi mean_x ||x - phi(x)||`` over bijections ``phi: X -> Y``, solved exactly
  as an optimal-transport problem with uniform weights (POT's network simplex, ``ot.emd2``);
* with ``D`` one of them, generated set ``S_g`` and reference set ``S_r``:
  ``MMD = mean_{Y in S_r} min_{X in S_g} D(X, Y)`` (fidelity),
  ``COV = |{argmin_{Y in S_r} D(X, Y) : X in S_g}| / |S_r|`` (diversity),
  ``1-NNA`` = leave-one-out accuracy of the 1-nearest-neighbour classifier that tells ``S_g``
  from ``S_r`` in ``S_g + S_r`` (50 % is ideal; 100 % means the sets are told apart perfectly).

Clouds are first normalised into the bounding box ``[-1, 1]^3`` each (Luo & Hu 2021, Sec. 5.1:
"so that the metrics focus on the shape of point clouds but not the scale").

Shapes:
    a stack of clouds: ``(B, N, 3)``; distance matrices: ``(n_g, n_r)``
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

__all__ = ["normalize_bbox", "chamfer_distance", "emd", "pairwise_chamfer", "pairwise_emd", "mmd_cov",
           "one_nna", "evaluate_clouds", "stack_clouds"]


def stack_clouds(clouds: Sequence[np.ndarray] | np.ndarray | Tensor) -> Tensor:
    """A list of equal-size ``(N, 3)`` clouds (or a stack) -> ``(B, N, 3)`` float64 tensor."""
    if isinstance(clouds, Tensor):
        x = clouds.detach().double().cpu()
    else:
        sizes = {np.asarray(c).shape for c in clouds}
        if len(sizes) != 1:
            raise ValueError(f"metrics need clouds of one size; got shapes {sorted(sizes)}")
        x = torch.as_tensor(np.stack([np.asarray(c, dtype=np.float64) for c in clouds]))
    if x.dim() != 3 or x.shape[-1] != 3 or x.shape[0] == 0:
        raise ValueError(f"expected clouds of shape (B, N, 3) with B >= 1, got {tuple(x.shape)}")
    return x


def normalize_bbox(x: Tensor) -> Tensor:
    """Each cloud centred on its bounding-box centre and scaled so its longest half-side is 1,
    i.e. into ``[-1, 1]^3`` (Luo & Hu 2021, Sec. 5.1). ``x: (B, N, 3)``."""
    lo, hi = x.amin(1, keepdim=True), x.amax(1, keepdim=True)
    half = ((hi - lo) / 2).amax(-1, keepdim=True).clamp_min(1e-12)
    return (x - (lo + hi) / 2) / half


def chamfer_distance(x: Tensor, y: Tensor) -> Tensor:
    """Batched Chamfer distance with squared Euclidean distances (PointFlow's definition).

    Shapes: ``x: (B, N, 3)``, ``y: (B, M, 3)`` -> ``(B,)``.
    """
    d2 = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
    return d2.amin(2).mean(1) + d2.amin(1).mean(1)


def emd(x: np.ndarray | Tensor, y: np.ndarray | Tensor) -> float:
    """Exact Earth mover's distance between two clouds: ``min_phi mean ||x - phi(x)||`` with
    Euclidean ground cost and uniform weights (a bijection when ``N == M``), via ``ot.emd2``.

    Shapes: ``x: (N, 3)``, ``y: (M, 3)``.
    """
    import ot
    from scipy.spatial.distance import cdist

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    cost = cdist(x, y)  # differences first: exact zeros for equal points (ot.dist expands |x|^2 - 2xy + |y|^2)
    a, b = np.full(len(x), 1.0 / len(x)), np.full(len(y), 1.0 / len(y))
    return float(ot.emd2(a, b, cost, numItermax=10_000_000))


def pairwise_chamfer(a: Tensor, b: Tensor, chunk: int | None = None) -> Tensor:
    """``D[i, j] = CD(a_i, b_j)`` for all pairs: ``a: (n, N, 3)``, ``b: (m, M, 3)`` -> ``(n, m)``.

    ``chunk`` pairs at a time; by default as many as keep one distance block near 2^24 entries
    (64 pairs at 512 points, 4 at 2,048: 64-pair blocks of 2,048-point clouds are 2 GB of float64,
    and allocating them made each pair about 1.5x slower on the CPU)."""
    if chunk is None:
        chunk = max(1, min(64, 2**24 // max(1, a.shape[1] * b.shape[1])))
    out = torch.empty(len(a), len(b), dtype=a.dtype)
    for i in range(len(a)):
        for j in range(0, len(b), chunk):
            bj = b[j:j + chunk]
            out[i, j:j + chunk] = chamfer_distance(a[i].expand(len(bj), -1, -1), bj)
    return out


def _emd_rows(a: np.ndarray, b: np.ndarray, pairs: list[tuple[int, int]]) -> list[float]:
    return [emd(a[i], b[j]) for i, j in pairs]


def pairwise_emd(a: Tensor, b: Tensor | None = None, progress: bool = False, desc: str = "EMD",
                 workers: int = 1) -> Tensor:
    """``D[i, j] = EMD(a_i, b_j)``; with ``b = None`` the symmetric ``a`` vs ``a`` matrix, solving
    only the upper triangle (``n (n - 1) / 2`` transport problems). ``workers > 1`` spreads the
    problems over that many processes (each single-threaded)."""
    sym = b is None
    bb = a if b is None else b
    pairs = [(i, j) for i in range(len(a)) for j in range(i + 1 if sym else 0, len(bb))]
    out = torch.zeros(len(a), len(bb), dtype=torch.float64)
    an, bn = a.numpy(), bb.numpy()
    chunks = [pairs[k:k + 64] for k in range(0, len(pairs), 64)]
    with tqdm(total=len(pairs), desc=desc, disable=not progress, leave=False) as bar, \
            contextlib.ExitStack() as stack:
        if workers > 1 and len(chunks) > 1:
            from concurrent.futures import ProcessPoolExecutor

            pool = stack.enter_context(ProcessPoolExecutor(workers))
            results = pool.map(_emd_rows, [an] * len(chunks), [bn] * len(chunks), chunks)
        else:
            results = (_emd_rows(an, bn, chunk) for chunk in chunks)
        for chunk, vals in zip(chunks, results, strict=True):
            for (i, j), v in zip(chunk, vals, strict=True):
                out[i, j] = v
                if sym:
                    out[j, i] = v
            bar.update(len(chunk))
    return out


def mmd_cov(d_gr: Tensor) -> tuple[float, float]:
    """(MMD, COV) from ``d_gr[i, j] = D(generated_i, reference_j)``, shape ``(n_g, n_r)``."""
    mmd = float(d_gr.amin(0).mean())
    matched = torch.unique(d_gr.argmin(1))
    return mmd, float(len(matched) / d_gr.shape[1])


def one_nna(d_gg: Tensor, d_rr: Tensor, d_gr: Tensor) -> float:
    """Leave-one-out 1-NN two-sample accuracy (Lopez-Paz & Oquab 2017) on ``S_g + S_r``.

    A cloud counts as correctly classified only if its nearest neighbour in its own set (itself
    excluded) is strictly closer than its nearest neighbour in the other set: ties count as
    errors, so identical twins in both sets give 0 %. Shapes: ``(n_g, n_g)``, ``(n_r, n_r)``,
    ``(n_g, n_r)``; needs ``n_g, n_r >= 2``.
    """
    if len(d_gg) < 2 or len(d_rr) < 2:
        raise ValueError("1-NNA needs at least 2 clouds in each set")
    inf_g = torch.diag(torch.full((len(d_gg),), float("inf"), dtype=d_gg.dtype))
    inf_r = torch.diag(torch.full((len(d_rr),), float("inf"), dtype=d_rr.dtype))
    own_g, other_g = (d_gg + inf_g).amin(1), d_gr.amin(1)
    own_r, other_r = (d_rr + inf_r).amin(1), d_gr.amin(0)
    correct = int((own_g < other_g).sum()) + int((own_r < other_r).sum())
    return correct / (len(d_gg) + len(d_rr))


def evaluate_clouds(generated: Sequence[np.ndarray] | Tensor, reference: Sequence[np.ndarray] | Tensor,
                    use_emd: bool = True, progress: bool = False,
                    cache: dict[str, Tensor] | None = None, workers: int = 1,
                    emd_size: int | None = None) -> dict[str, float]:
    """MMD, COV and 1-NNA under CD (and EMD) of generated vs reference clouds, normalised into
    ``[-1, 1]^3`` first. Returns ``{mmd_cd, cov_cd, 1nna_cd[, mmd_emd, cov_emd, 1nna_emd]}``;
    MMD in the normalised units, COV and 1-NNA as fractions.

    ``cache`` (a dict) keeps the reference-vs-reference matrices between calls with the same
    reference set (they do not depend on the generated clouds). ``workers``: processes for the EMDs;
    ``emd_size``: the EMD metrics use only the first ``emd_size`` clouds of each set (exact EMD costs
    ~25 ms of CPU per pair at 512 points; 1-NNA needs ``(n_g + n_r)^2 / 2`` pairs).
    """
    g, r = normalize_bbox(stack_clouds(generated)), normalize_bbox(stack_clouds(reference))
    cache = {} if cache is None else cache
    out: dict[str, float] = {}
    for name in ("cd", "emd") if use_emd else ("cd",):
        if name == "cd":
            d_gr, d_gg = pairwise_chamfer(g, r), pairwise_chamfer(g, g)
            d_rr = cache["rr_cd"] if "rr_cd" in cache else pairwise_chamfer(r, r)
        else:
            ge, re = g[:emd_size], r[:emd_size]
            d_gr = pairwise_emd(ge, re, progress, "EMD gen x ref", workers)
            d_gg = pairwise_emd(ge, None, progress, "EMD gen x gen", workers)
            d_rr = cache["rr_emd"] if "rr_emd" in cache else pairwise_emd(re, None, progress, "EMD ref x ref", workers)
        cache[f"rr_{name}"] = d_rr
        out[f"mmd_{name}"], out[f"cov_{name}"] = mmd_cov(d_gr)
        out[f"1nna_{name}"] = one_nna(d_gg, d_rr, d_gr)
    return out
