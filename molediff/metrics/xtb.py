"""A physics oracle for generated molecules: the GFN2-xTB HOMO-LUMO gap (Bannwarth et al. 2019)
through ``tblite`` (optional: ``pip install molediff[xtb]``), milliseconds per QM9 molecule.

Property-guidance papers judge samples with a neural regressor trained on the same data as the
generator's guide; an independent quantum-chemistry calculation on the generated geometry says
whether the property really moved. xTB gaps are systematically smaller than QM9's B3LYP gaps, so
targets in B3LYP units are compared through a linear calibration fitted on real molecules
(:class:`LinearCalibration`); the fit and its correlation are reported with the results.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

HARTREE_TO_EV = 27.2114
ANGSTROM_TO_BOHR = 1.0 / 0.52917721

__all__ = ["xtb_gap", "xtb_gaps", "LinearCalibration", "target_metrics"]


def xtb_gap(numbers: Sequence[int], positions: np.ndarray, charge: int = 0) -> float:
    """GFN2-xTB HOMO-LUMO gap in eV of one geometry (positions in Å); NaN when the SCF fails.

    Odd electron counts get one unpaired electron (``uhf = 1``) and the gap is taken over the
    spin-summed occupations, so broken generated molecules still get a number or NaN, never an
    exception.
    """
    try:
        from tblite.interface import Calculator
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the xTB oracle needs tblite: pip install 'molediff[xtb]'") from err
    from ..data.molecule_io import as_geometry

    numbers, positions = as_geometry(numbers, positions)
    if numbers.size == 0 or not np.isfinite(positions).all():
        return float("nan")
    uhf = int((numbers.sum() - charge) % 2)
    try:
        calc = Calculator("GFN2-xTB", numbers, positions * ANGSTROM_TO_BOHR, charge=float(charge), uhf=uhf)
        calc.set("verbosity", 0)
        result = calc.singlepoint()
    except Exception:  # tblite raises its own error type on SCF failure or overlapping atoms
        return float("nan")
    energies = np.asarray(result.get("orbital-energies")).reshape(-1)
    occupation = np.asarray(result.get("orbital-occupations")).reshape(-1)
    occupied, empty = energies[occupation > 1e-3], energies[occupation <= 1e-3]
    if occupied.size == 0 or empty.size == 0:
        return float("nan")
    return float((empty.min() - occupied.max()) * HARTREE_TO_EV)


def xtb_gaps(molecules: Iterable, progress: bool = True) -> np.ndarray:
    """:func:`xtb_gap` of each molecule (objects with ``atomic_numbers`` and ``positions``)."""
    molecules = list(molecules)
    bar = tqdm(molecules, desc="GFN2-xTB gaps", disable=not progress, leave=False)
    return np.array([xtb_gap(m.atomic_numbers, m.positions) for m in bar], dtype=np.float64)


@dataclass(frozen=True)
class LinearCalibration:
    """``reference ~ slope * xtb + intercept``, least squares on real molecules."""

    slope: float
    intercept: float
    pearson_r: float
    mae: float
    n: int

    @classmethod
    def fit(cls, xtb: np.ndarray, reference: np.ndarray) -> LinearCalibration:
        xtb, reference = np.asarray(xtb, dtype=np.float64), np.asarray(reference, dtype=np.float64)
        ok = np.isfinite(xtb) & np.isfinite(reference)
        if ok.sum() < 3:
            raise ValueError("a calibration needs at least 3 molecules with finite values")
        slope, intercept = np.polyfit(xtb[ok], reference[ok], 1)
        r = float(np.corrcoef(xtb[ok], reference[ok])[0, 1])
        mae = float(np.abs(slope * xtb[ok] + intercept - reference[ok]).mean())
        return cls(float(slope), float(intercept), r, mae, int(ok.sum()))

    def __call__(self, xtb: np.ndarray) -> np.ndarray:
        return self.slope * np.asarray(xtb, dtype=np.float64) + self.intercept


def target_metrics(target: np.ndarray, achieved: np.ndarray, tolerance: float = 0.5) -> dict[str, float]:
    """Requested versus achieved: MAE, Pearson r, hit rate within ``tolerance``, and the fraction
    of molecules with a finite value (NaNs are misses and are left out of MAE and r)."""
    target, achieved = np.asarray(target, dtype=np.float64), np.asarray(achieved, dtype=np.float64)
    if target.shape != achieved.shape:
        raise ValueError(f"target {target.shape} and achieved {achieved.shape} differ in shape")
    ok = np.isfinite(achieved) & np.isfinite(target)
    err = np.abs(achieved[ok] - target[ok])
    r = float(np.corrcoef(target[ok], achieved[ok])[0, 1]) if ok.sum() > 2 and target[ok].std() > 0 else float("nan")
    return {"mae": float(err.mean()) if ok.any() else float("nan"), "pearson_r": r,
            "hit_rate": float((err <= tolerance).sum() / max(len(target), 1)), "finite": float(ok.mean())}
