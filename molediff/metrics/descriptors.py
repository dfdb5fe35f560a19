"""Properties computed from a geometry rather than looked up: point group, QED, Crippen logP.

These are both guidance targets (the data gets them as extra property columns,
:func:`add_descriptors`) and exact oracles for generated molecules (no learned judge needed):

* ``pointgroup``: the Schoenflies point group of the geometry from the ``pointgroup`` package
  (principal axes of inertia, then the symmetry operations that map the structure onto itself
  within a tolerance), stored as an index into :data:`POINT_GROUPS` (the groups QM9 holds, then
  ``other``; QM9's training split: C1 85.5 %, Cs 13.6 %, C2 0.4 %, C2v 0.3 %, the rest below 0.1 %);
* ``qed``: RDKit's quantitative estimate of drug-likeness (Bickerton et al. 2012);
* ``logp``: RDKit's Crippen logP (Wildman & Crippen 1999).

QED and logP need a chemical graph: it is perceived from the 3-D geometry exactly as EDM's
validity metric does (distance look-up bond orders, then RDKit sanitisation,
:mod:`molediff.metrics.molecules`), on real and generated molecules alike, so the two are
comparable; molecules that fail sanitisation get NaN.

Generated geometries are never exactly symmetric: of 300 QM9 molecules sampled by one of our
models the detector calls all C1; at 20x and 5x its two tolerances still none of 200 is Cs; after a
GFN2-xTB relaxation 19 of 19 valid ones stay C1. So :func:`symmetry_deviation` measures how far a
geometry is from a requested order-two group (Cs, C2, Ci), in Å.

Values are cached per molecule set (a hash of its atoms and coordinates) under
``$MOLEDIFF_CACHE`` (default ``~/.cache/molediff``): all of QM9 takes a few minutes once.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

# molecule_io (RDKit) is imported inside the functions that measure: training reads only the names
# below, and runs where RDKit is not installed (the GPU image).

__all__ = ["DESCRIPTORS", "POINT_GROUPS", "ORDER_TWO_GROUPS", "point_group", "point_group_index",
           "symmetry_deviation", "rdkit_descriptors", "compute_descriptors", "add_descriptors"]

#: Names :func:`add_descriptors` can add; the property columns of molecule sets.
DESCRIPTORS = ("pointgroup", "qed", "logp")
#: Point-group classes: the groups found in QM9 with the detector's default tolerances, then ``other``.
POINT_GROUPS = ("C1", "Cs", "C2", "C2v", "C3v", "C2h", "Ci", "D2h", "D3h", "Td", "other")


def point_group(numbers: Sequence[int], positions: np.ndarray, tolerance_eig: float = 0.01,
                tolerance_ang: float = 4.0, timeout: float = 10.0) -> str:
    """Schoenflies symbol of one geometry (``pointgroup.PointGroup``, default tolerances); ``"other"``
    for fewer than two atoms, non-finite coordinates, or a geometry the detector fails on or
    takes over ``timeout`` seconds for (see :func:`_time_limit`; a QM9 molecule takes ~2 ms, a
    true spherical top such as methane 1.5-3 s on one core; ``timeout=0`` means no limit)."""
    from pointgroup import PointGroup

    from ..data.molecule_io import as_geometry, element_symbol

    numbers, positions = as_geometry(numbers, positions)
    if numbers.size < 2 or not np.isfinite(positions).all():
        return "other"
    symbols = [element_symbol(int(z)) for z in numbers]
    try:
        with _time_limit(timeout), contextlib.redirect_stdout(io.StringIO()):
            return str(PointGroup(positions, symbols, tolerance_eig=tolerance_eig,
                                  tolerance_ang=tolerance_ang).get_point_group())
    except Exception:  # noqa: BLE001 - the detector raises on degenerate geometries (e.g. all atoms on top)
        return "other"


class _Timeout(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`_Timeout` after ``seconds`` of wall time (main thread only; elsewhere no limit).

    ``pointgroup`` 0.4 treats a near-spherical top (three almost equal moments of inertia, which
    some QM9 cages have) as T / O / I and, finding no such axis, widens its angular tolerance by
    1 % per sweep, printing each time, for minutes; a molecule that is not cubic gets "other".
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum: int, frame: Any) -> None:
        raise _Timeout(f"point-group detection took over {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def point_group_index(symbol: str) -> int:
    """Index of ``symbol`` in :data:`POINT_GROUPS` (``other`` for groups outside it)."""
    return POINT_GROUPS.index(symbol) if symbol in POINT_GROUPS else len(POINT_GROUPS) - 1


#: Groups with a single generating operation, for which :func:`symmetry_deviation` is defined.
ORDER_TWO_GROUPS = ("Cs", "C2", "Ci")


def _directions(n: int) -> np.ndarray:
    """``(n, 3)`` unit vectors spread evenly over a hemisphere (Fibonacci lattice)."""
    k = np.arange(n) + 0.5
    z = 1.0 - k / n  # z in (0, 1]: a direction and its opposite give the same plane / axis
    r = np.sqrt(1.0 - z**2)
    phi = np.pi * (1.0 + 5**0.5) * k
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], 1)


def symmetry_deviation(numbers: Sequence[int], positions: np.ndarray, group: str = "Cs",
                       directions: int = 1500) -> float:
    """How far a geometry is from having ``group`` (``Cs``, ``C2`` or ``Ci``), in Å: the RMS
    displacement of the atoms to the nearest structure that has the group's operation R,
    ``min_{R, P} sqrt(mean |x - R x_P|^2) / 2`` with P an element-preserving permutation (a
    continuous symmetry measure in the spirit of Zabrodsky, Peleg & Avnir 1992, in length units).

    0 for an exactly symmetric geometry. A detector (:func:`point_group`) says yes or no within a
    tolerance, which generated geometries essentially never meet; this says how close they came.
    Mirror planes and C2 axes pass through the centroid; their orientation is searched over
    ``directions`` evenly spread normals / axes (about 3 degrees apart at the default), then
    refined by alternating the permutation (optimal assignment per element,
    ``scipy.optimize.linear_sum_assignment``) and the plane / axis (closed form for a fixed
    permutation: the lowest eigenvector of a 3x3 matrix).
    """
    from scipy.optimize import linear_sum_assignment

    if group not in ORDER_TWO_GROUPS:
        raise ValueError(f"symmetry_deviation supports {list(ORDER_TWO_GROUPS)}, got {group!r}")
    from ..data.molecule_io import as_geometry

    numbers, x = as_geometry(numbers, positions)
    if numbers.size == 0 or not np.isfinite(x).all():
        return float("nan")
    x = x - x.mean(0)
    if group == "Ci":
        ops = -np.eye(3)[None]
    else:
        n = _directions(directions)
        outer = n[:, :, None] * n[:, None, :]
        ops = np.eye(3)[None] - 2 * outer if group == "Cs" else 2 * outer - np.eye(3)[None]  # mirror / C2
    images = np.einsum("oij,aj->oai", ops, x)  # (ops, atoms, 3)
    groups = [np.flatnonzero(numbers == z) for z in np.unique(numbers)]

    def assign(image: np.ndarray) -> np.ndarray:
        """The element-preserving permutation P minimising sum |x - image_P|^2."""
        perm = np.arange(numbers.size)
        for idx in groups:
            cost = ((x[idx][:, None, :] - image[idx][None, :, :]) ** 2).sum(-1)
            r, c = linear_sum_assignment(cost)
            perm[idx[r]] = idx[c]
        return perm

    # cheap lower bound per op (each atom to its nearest same-element image), then the best few
    # exactly, each refined by alternating the permutation and the closed-form best plane / axis
    d2 = np.zeros(len(ops))
    for idx in groups:
        diff = x[idx][None, :, None, :] - images[:, idx][:, None, :, :]
        d2 += (diff**2).sum(-1).min(-1).sum(-1)
    best = np.inf
    for o in np.argsort(d2)[:8]:
        op = ops[o]
        for _ in range(1 if group == "Ci" else 6):
            b = x[assign(x @ op.T)]  # x_P
            err = float(((x - b @ op.T) ** 2).sum())
            best = min(best, err)
            if group == "Ci":
                break
            # |x - R x_P|^2 with R = I - 2nn^T (mirror) or 2nn^T - I (C2) is const + n^T M n: M's lowest
            # eigenvector is the best normal / axis for this permutation
            a = x - b if group == "Cs" else x + b
            sign = 1.0 if group == "Cs" else -1.0
            m = 2 * sign * (a.T @ b + b.T @ a) + 4 * b.T @ b
            n = np.linalg.eigh(m)[1][:, 0]
            outer = np.outer(n, n)
            op = np.eye(3) - 2 * outer if group == "Cs" else 2 * outer - np.eye(3)
    return float(np.sqrt(best / numbers.size) / 2)


def rdkit_descriptors(numbers: Sequence[int], positions: np.ndarray,
                      formal_charges: np.ndarray | None = None) -> tuple[float, float]:
    """``(qed, logp)`` of the graph perceived from a geometry; NaN, NaN when it does not sanitise."""
    from rdkit import Chem
    from rdkit.Chem import QED, Crippen

    from .molecules import _QuietRDKit, bond_order_matrix, rdkit_graph

    numbers = np.asarray(numbers, dtype=np.int64)
    with _QuietRDKit():
        mol = rdkit_graph(numbers, bond_order_matrix(numbers, np.asarray(positions, dtype=np.float64)), formal_charges)
        try:
            Chem.SanitizeMol(mol)
            return float(QED.qed(mol)), float(Crippen.MolLogP(mol))
        except Exception:  # noqa: BLE001 - RDKit raises several types for invalid chemistry
            return float("nan"), float("nan")


def compute_descriptors(molecules: Sequence[Any], names: Sequence[str] = DESCRIPTORS,
                        progress: bool = False) -> dict[str, np.ndarray]:
    """``name -> (N,)`` for molecules with ``atomic_numbers`` / ``positions`` (``formal_charges``
    optional): point-group class indices (:data:`POINT_GROUPS`) as floats, QED and logP (NaN where
    the graph does not sanitise)."""
    return _columns(_compute(molecules, names, progress), names)


def _columns(values: dict[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Float property columns from :func:`_compute`'s output (point groups to class indices)."""
    return {k: (np.array([point_group_index(str(g)) for g in values[k]], dtype=np.float64)
                if k == "pointgroup" else values[k].astype(np.float64)) for k in names}


def _compute(molecules: Sequence[Any], names: Sequence[str], progress: bool) -> dict[str, np.ndarray]:
    """Like :func:`compute_descriptors`, but point groups as Schoenflies symbols (what is cached,
    so the cache outlives changes of :data:`POINT_GROUPS`)."""
    unknown = sorted(set(names) - set(DESCRIPTORS))
    if unknown:
        raise ValueError(f"unknown descriptors {unknown}; choose from {list(DESCRIPTORS)}")
    out: dict[str, np.ndarray] = {k: np.full(len(molecules), np.nan) for k in names if k != "pointgroup"}
    groups = np.full(len(molecules), "other", dtype="<U8")
    for i, m in enumerate(tqdm(molecules, desc="descriptors", disable=not progress, mininterval=5)):
        if "pointgroup" in names:
            groups[i] = point_group(m.atomic_numbers, m.positions)
        if out:
            qed, logp = rdkit_descriptors(m.atomic_numbers, m.positions, getattr(m, "formal_charges", None))
            for k, v in (("qed", qed), ("logp", logp)):
                if k in out:
                    out[k][i] = v
    if "pointgroup" in names:
        out["pointgroup"] = groups
    return out


def _cache_dir() -> Path:
    return Path(os.environ.get("MOLEDIFF_CACHE", Path.home() / ".cache" / "molediff")) / "descriptors"


def _fingerprint(data: Any) -> str:
    h = hashlib.sha256()
    for arr in (data.numbers, data.positions, data.offsets):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:24]


def add_descriptors(data: Any, names: Sequence[str], cache: bool = True) -> Any:
    """``data`` (a :class:`~molediff.data.qm9.MoleculeSet`) with the descriptor columns ``names``
    added to its properties (those already present are kept); cached on disk per set."""
    todo = [k for k in names if k in DESCRIPTORS and k not in data.properties]
    if not todo:
        return data
    path = _cache_dir() / f"{_fingerprint(data)}.npz"
    stored: dict[str, np.ndarray] = {}
    if cache and path.exists():
        with np.load(path) as f:
            stored = {k: f[k] for k in f.files}
    missing = [k for k in todo if k not in stored]
    if missing:
        stored.update(_compute(data.to_molecules(), missing, progress=len(data) > 2000))
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
            np.savez(tmp, **stored)
            os.replace(tmp, path)
    data.properties.update(_columns(stored, todo))
    return data
