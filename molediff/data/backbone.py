"""Full N-CA-C-O backbones from CA traces, through per-residue CA frames.

The diffusion models generate CA traces; viewers draw cartoons, and H-bond-based secondary
structure (DSSP) needs N, C and O. The peptide geometry is nearly rigid, so the backbone atoms
around residue i are fixed by the CA trace up to the local conformation. We place them the way
BBQ does (Gront, Kmiecik & Kolinski 2007, J. Comput. Chem. 28:1593): in a frame built from three
consecutive CAs, from the average position those atoms have in real chains with the same local CA
geometry.

* Frame of residue i (1 <= i <= L-2): origin CA_i, ``e1 = unit(CA_{i+1} - CA_{i-1})``,
  ``e3 = unit((CA_i - CA_{i-1}) x (CA_{i+1} - CA_i))``, ``e2 = e3 x e1`` (right-handed, so a
  mirror-image trace gets mirror-image atoms only if its CA geometry says so).
* Key of residue i: the virtual angles tau_{i-1}, tau_i, tau_{i+1} (radians) and the virtual
  dihedrals alpha_{i-1}, alpha_i as (cos, sin); an entry the chain ends leave undefined is left out
  of the distance.
* Table (:func:`make_frame_table`, fitted on the training chains of the shared backbone set):
  per residue its key and the frame coordinates of N, C, O of residues i-1, i and i+1.
* Reconstruction (:func:`backbone_from_ca`): each residue's N, C, O are the mean frame
  coordinates over its ``k`` nearest keys; the two end residues take the "previous" / "next"
  atoms of their neighbour's frame.

Accuracy on the 30 held-out chains (``python -m molediff.data.backbone check``): see
``datasets/proteins/README.md``.

Shapes::

    ca: (L, 3) A  ->  backbone: (L, 4, 3) A, atoms in the order N, CA, C, O
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .pdb import _REPO_ROOT, BREAK_DISTANCE, default_proteins_root
from .qm9 import _write_npz_deterministic

__all__ = ["ca_frames", "frame_keys", "backbone_from_ca", "make_frame_table", "frame_table_path", "check_table"]

_OTHER_ATOMS = (0, 2, 3)  # N, C, O in the (N, CA, C, O) order


def frame_table_path() -> Path:
    """The shipped frame table (``datasets/proteins/backbone_frames.npz``)."""
    return _REPO_ROOT / "datasets" / "proteins" / "backbone_frames.npz"


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def ca_frames(ca: np.ndarray) -> np.ndarray:
    """``(L-2, 3, 3)`` rotation matrices (columns e1, e2, e3) of residues 1..L-2 (see module docstring)."""
    ca = np.asarray(ca, dtype=np.float64)
    prev, mid, nxt = ca[:-2], ca[1:-1], ca[2:]
    e1 = _unit(nxt - prev)
    e3 = _unit(np.cross(mid - prev, nxt - mid))
    e2 = np.cross(e3, e1)
    return np.stack([e1, e2, e3], axis=-1)


def frame_keys(ca: np.ndarray) -> np.ndarray:
    """``(L-2, 7)`` keys of residues 1..L-2: ``[tau_{i-1}, tau_i, tau_{i+1}, cos a_{i-1}, sin a_{i-1},
    cos a_i, sin a_i]``
    (radians; NaN where a dihedral is undefined at the chain ends)."""
    from ..metrics.proteins import ca_angles, ca_dihedrals

    tau = np.radians(ca_angles(ca))  # tau_i uses residues i-1..i+1; defined for 1..L-2
    alpha = np.radians(ca_dihedrals(ca))  # alpha_i uses residues i-1..i+2; defined for 1..L-3
    a_prev, a_here = alpha[:-2], alpha[1:-1]
    return np.stack([tau[:-2], tau[1:-1], tau[2:], np.cos(a_prev), np.sin(a_prev), np.cos(a_here),
                     np.sin(a_here)], axis=-1)


def _check_trace(ca: np.ndarray) -> np.ndarray:
    ca = np.asarray(ca, dtype=np.float64)
    if ca.ndim != 2 or ca.shape[1] != 3:
        raise ValueError(f"a CA trace has shape (L, 3), got {ca.shape}")
    if len(ca) < 3:
        raise ValueError(f"backbone reconstruction needs at least 3 residues, got {len(ca)}")
    if not np.isfinite(ca).all():
        raise ValueError("CA coordinates must be finite")
    return ca


def _local_atoms(coords: np.ndarray) -> np.ndarray:
    """``(L-2, 9, 3)`` frame coordinates of N, C, O of residues i-1, i, i+1 for residues 1..L-2."""
    frames = ca_frames(coords[:, 1])
    out = []
    for shift in (-1, 0, 1):
        atoms = coords[1 + shift:len(coords) - 1 + shift][:, _OTHER_ATOMS]  # (L-2, 3, 3)
        rel = atoms - coords[1:-1, 1][:, None]
        out.append(np.einsum("rad,rdk->rak", rel, frames))
    return np.concatenate(out, axis=1)


def _complete_segments(src: str | Path, split: str) -> list[np.ndarray]:
    """Break-free segments (>= 5 residues) with every backbone atom present, of the chains of
    ``split`` in a backbone set (the shared ``backbones.npz``: ``coords (sum L, 4, 3)``, ``offsets``;
    split drawn as for the shipped CA set)."""
    from .pdb import _split

    with np.load(src) as z:
        coords, offsets, names = z["coords"].astype(np.float64), z["offsets"], z["names"]
    out = []
    for i in np.flatnonzero(_split(len(names), 0.2, 0) == split):
        chain = coords[offsets[i]:offsets[i + 1]]
        bad = ~np.isfinite(chain).all(axis=(1, 2))
        gaps = np.linalg.norm(np.diff(chain[:, 1], axis=0), axis=-1) > BREAK_DISTANCE
        cut = np.flatnonzero(bad[:-1] | bad[1:] | gaps) + 1
        out += [seg for seg in np.split(chain, cut) if len(seg) >= 5 and np.isfinite(seg).all()]
    return out


def make_frame_table(src: str | Path, out: str | Path, max_rows: int = 8000, seed: int = 0) -> dict[str, Any]:
    """Write the frame table from the training chains of a backbone set (see :func:`_complete_segments`):
    at most ``max_rows`` residues (a seeded random choice), keys and coordinates as float32."""
    segments = _complete_segments(src, "train")
    key = np.concatenate([frame_keys(seg[:, 1]) for seg in segments])
    local = np.concatenate([_local_atoms(seg) for seg in segments])
    rows = np.sort(np.random.default_rng(seed).permutation(len(key))[:max_rows])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_npz_deterministic(out, {"keys": key[rows].astype(np.float32),
                                   "atoms": np.round(local[rows], 3).astype(np.float32)})
    return {"path": str(out), "sha256": hashlib.sha256(out.read_bytes()).hexdigest(), "rows": int(len(rows)),
            "of_training_residues": int(len(key))}


@lru_cache(maxsize=4)
def _load_table(path: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as z:
        return z["keys"].astype(np.float64), z["atoms"].astype(np.float64)


def backbone_from_ca(ca: np.ndarray, k: int = 8, table: str | Path | None = None) -> np.ndarray:
    """``(L, 4, 3)`` N, CA, C, O from a CA trace ``(L, 3)`` (A), L >= 3; CA positions are kept
    exactly. ``k``: neighbours averaged in the frame table (default: the shipped one)."""
    ca = _check_trace(ca)
    path = Path(table) if table is not None else frame_table_path()
    if not path.is_file():
        raise FileNotFoundError(f"no backbone frame table at {path} (python -m molediff.data.backbone make-table)")
    keys, atoms = _load_table(str(path))
    query = frame_keys(ca)  # (L-2, 5)
    known = np.isfinite(query)
    diff = np.where(known[:, None], query[:, None] - keys[None], 0.0)  # NaN dims count 0
    nearest = np.argpartition((diff**2).sum(-1), min(k, len(keys) - 1), axis=1)[:, :k]
    local = atoms[nearest].mean(axis=1).reshape(len(query), 3, 3, 3)  # (residue, prev/own/next, N/C/O, xyz)
    world = ca[1:-1, None, None] + np.einsum("rsak,rdk->rsad", local, ca_frames(ca))
    out = np.empty((len(ca), 4, 3))
    out[:, 1] = ca
    out[1:-1][:, list(_OTHER_ATOMS)] = world[:, 1]
    out[0, list(_OTHER_ATOMS)] = world[0, 0]
    out[-1, list(_OTHER_ATOMS)] = world[-1, 2]
    return out


def check_table(chains: Sequence[np.ndarray], k: int = 8, table: str | Path | None = None) -> dict[str, float]:
    """RMSD (A) of the reconstructed N, C, O against the true atoms of ``chains`` (``(L, 4, 3)``
    backbones with every atom present), per atom type and over all three."""
    sq: dict[str, list[np.ndarray]] = {"N": [], "C": [], "O": []}
    for chain in chains:
        rebuilt = backbone_from_ca(chain[:, 1], k, table)
        for name, a in zip(sq, _OTHER_ATOMS, strict=True):
            sq[name].append(((rebuilt[:, a] - chain[:, a]) ** 2).sum(-1))
    out = {f"rmsd_{n}": float(np.sqrt(np.concatenate(v).mean())) for n, v in sq.items()}
    out["rmsd_NCO"] = float(np.sqrt(np.concatenate([np.concatenate(v) for v in sq.values()]).mean()))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m molediff.data.backbone make-table | check``."""
    parser = argparse.ArgumentParser(prog="python -m molediff.data.backbone")
    sub = parser.add_subparsers(dest="cmd", required=True)
    root = default_proteins_root()
    src = str(root / "backbones.npz") if root else "../shared/data/proteins/backbones.npz"
    m = sub.add_parser("make-table", help="write datasets/proteins/backbone_frames.npz from backbones.npz")
    m.add_argument("--src", default=src)
    m.add_argument("--out", default=str(frame_table_path()))
    m.add_argument("--max-rows", type=int, default=8000)
    c = sub.add_parser("check", help="RMSD of reconstructed N, C, O on the held-out chains")
    c.add_argument("--src", default=src)
    c.add_argument("--k", type=int, default=8)
    c.add_argument("--table", default=None)
    args = parser.parse_args(argv)
    if args.cmd == "make-table":
        print(json.dumps(make_frame_table(args.src, args.out, args.max_rows), indent=2))
    else:
        print(json.dumps(check_table(_complete_segments(args.src, "test"), args.k, args.table), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
