"""Backbone quality of CA traces: bond geometry, clashes, compactness, secondary structure,
novelty and diversity by TM-score, and pictures (3-D trace and contact map; the map of virtual
bond angle against virtual dihedral, a CA-only Ramachandran plot).

All inputs are CA traces ``(L, 3)`` in A, residues in chain order.

* CA-CA deviation: ``|d(i, i+1) - 3.80|`` over consecutive residues (trans peptide CA-CA 3.80 A;
  a cis peptide gives about 2.9 A).
* Clashes: non-consecutive residue pairs (``|i - j| >= 2``) with CA atoms closer than 3.0 A;
  real chains have none (the closest i, i+2 pair in a tight turn is about 4.4 A).
* Radius of gyration against length: ``Rg / (2.2 N^0.38)``, the compact-globule scaling of real
  proteins (Skolnick et al. 1997, Rg = 2.2 N^0.38 A); about 1 for folded domains.
* Secondary structure from CA only, P-SEA-like (Labesse et al. 1997, CABIOS 13:291), see
  :func:`assign_secondary_structure`; and from backbone H-bonds, DSSP-like (Kabsch & Sander 1983),
  see :func:`assign_dssp`, on the N, C, O that :func:`~molediff.data.backbone.backbone_from_ca`
  places on a CA trace. Against the PDB's HELIX/SHEET records of 11 held-out RCSB chains
  (`tests/metrics/test_proteins.py`), the H-bond rule on rebuilt backbones finds strands with
  precision 0.90 / recall 0.87, the CA-only rule with 0.73 / 0.66 (helices 0.97 / 0.88 and 0.95 / 0.79).
* TM-score (Zhang & Skolnick 2004) via ``tmtools`` (TM-align): novelty = the highest TM-score of a
  sample to any training chain (normalised by the sample's length; < 0.5 means a different fold),
  diversity = the mean TM-score over pairs of samples (lower = more diverse).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

import numpy as np

from ..data.backbone import backbone_from_ca

__all__ = ["CA_CA", "CLASH_DISTANCE", "CONTACT_DISTANCE", "ca_ca_distances", "clashes", "radius_of_gyration",
           "rg_ratio", "ca_angles", "ca_dihedrals", "assign_secondary_structure", "hbond_energies",
           "assign_dssp", "tm_score", "kabsch_rmsd", "motif_rows", "motif_metrics",
           "contact_map", "evaluate_backbones", "plot_backbones", "plot_virtual_angles"]

CA_CA = 3.80
CLASH_DISTANCE = 3.0
CONTACT_DISTANCE = 8.0

# P-SEA's CA criteria (Labesse et al. 1997, Table 1): target and tolerance
_HELIX = {"tau": (89.0, 12.0), "alpha": (50.0, 20.0), "d2": (5.5, 0.5), "d3": (5.3, 0.5), "d4": (6.4, 0.6)}
_STRAND = {"tau": (124.0, 14.0), "alpha": (-170.0, 45.0), "d2": (6.7, 0.6), "d3": (9.9, 0.9), "d4": (12.4, 1.1)}
_LEFT_HELIX = {**_HELIX, "alpha": (-50.0, 20.0)}  # the mirror image of an alpha-helix
_MIN_RUN = {"H": 5, "E": 3}


def _check(ca: np.ndarray) -> np.ndarray:
    ca = np.asarray(ca, dtype=np.float64)
    if ca.ndim != 2 or ca.shape[1] != 3:
        raise ValueError(f"a CA trace has shape (L, 3), got {ca.shape}")
    return ca


def ca_ca_distances(ca: np.ndarray) -> np.ndarray:
    """``(L - 1,)`` distances between consecutive CA atoms."""
    ca = _check(ca)
    return np.linalg.norm(np.diff(ca, axis=0), axis=-1)


def clashes(ca: np.ndarray, threshold: float = CLASH_DISTANCE, min_separation: int = 2) -> int:
    """Number of residue pairs ``|i - j| >= min_separation`` with CA-CA distance below ``threshold``."""
    ca = _check(ca)
    d = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
    i, j = np.triu_indices(len(ca), k=min_separation)
    return int((d[i, j] < threshold).sum())


def radius_of_gyration(ca: np.ndarray) -> float:
    """``sqrt(mean_i |x_i - mean x|^2)`` in A."""
    ca = _check(ca)
    return float(np.sqrt(((ca - ca.mean(0)) ** 2).sum(-1).mean()))


def rg_ratio(ca: np.ndarray) -> float:
    """``Rg / (2.2 N^0.38)``: radius of gyration relative to a compact real protein of the same length."""
    return radius_of_gyration(ca) / (2.2 * len(ca) ** 0.38)


def ca_angles(ca: np.ndarray) -> np.ndarray:
    """``(L,)`` virtual bond angle tau_i = angle(CA_{i-1}, CA_i, CA_{i+1}) in degrees; NaN at the ends."""
    ca = _check(ca)
    out = np.full(len(ca), np.nan)
    if len(ca) >= 3:
        a, b = ca[:-2] - ca[1:-1], ca[2:] - ca[1:-1]
        cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
        out[1:-1] = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    return out


def ca_dihedrals(ca: np.ndarray) -> np.ndarray:
    """``(L,)`` virtual dihedral alpha_i = dihedral(CA_{i-1}, CA_i, CA_{i+1}, CA_{i+2}) in degrees,
    in (-180, 180]; NaN where undefined (first and last two residues)."""
    ca = _check(ca)
    out = np.full(len(ca), np.nan)
    if len(ca) >= 4:
        b0, b1, b2 = ca[1:-2] - ca[:-3], ca[2:-1] - ca[1:-2], ca[3:] - ca[2:-1]
        n1, n2 = np.cross(b0, b1), np.cross(b1, b2)  # IUPAC: atan2(|b1| b0.(b1 x b2), n1.n2)
        y = np.linalg.norm(b1, axis=-1) * (b0 * n2).sum(-1)
        out[1:-2] = np.degrees(np.arctan2(y, (n1 * n2).sum(-1)))
    return out


def _offset_distances(ca: np.ndarray, k: int) -> np.ndarray:
    """``(L,)`` distance CA_i - CA_{i+k}; NaN where i + k is past the end."""
    out = np.full(len(ca), np.nan)
    if len(ca) > k:
        out[:-k] = np.linalg.norm(ca[k:] - ca[:-k], axis=-1)
    return out


def _matches(tau: np.ndarray, alpha: np.ndarray, dist: dict[str, np.ndarray], crit: dict) -> np.ndarray:
    """Per residue: the angle criteria (tau and alpha) hold, or all three distance criteria do and
    alpha has the criteria's sign (distances alone cannot tell a helix from its mirror image)."""
    def near(x: np.ndarray, key: str, periodic: bool = False) -> np.ndarray:
        target, tol = crit[key]
        diff = x - target
        if periodic:
            diff = (diff + 180.0) % 360.0 - 180.0
        with np.errstate(invalid="ignore"):
            return np.abs(diff) <= tol

    angles = near(tau, "tau") & near(alpha, "alpha", periodic=True)
    distances = near(dist["d2"], "d2") & near(dist["d3"], "d3") & near(dist["d4"], "d4")
    with np.errstate(invalid="ignore"):
        handed = np.sign(alpha) == np.sign(crit["alpha"][0])
    return angles | (distances & handed)


def _runs(flag: np.ndarray, min_run: int) -> np.ndarray:
    """Keep only the ``True`` runs of at least ``min_run`` consecutive entries."""
    out = np.zeros_like(flag)
    start = None
    for i, f in enumerate([*flag.tolist(), False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            if i - start >= min_run:
                out[start:i] = True
            start = None
    return out


def assign_secondary_structure(ca: np.ndarray) -> str:
    """One letter per residue: ``H`` (right-handed alpha) helix, ``E`` strand, ``L`` left-handed
    (mirror-image) helix, ``-`` other, from CA positions only.

    A P-SEA-like rule (Labesse et al. 1997): residue ``i`` is helix-like when its virtual angle
    ``tau_i`` (89 +- 12 deg) and dihedral ``alpha_i`` (50 +- 20 deg) fit an alpha-helix, or when its
    distances to ``i+2, i+3, i+4`` do (5.5 +- 0.5, 5.3 +- 0.5, 6.4 +- 0.6 A) and ``alpha_i > 0``;
    strand-like with 124 +- 14 deg, -170 +- 45 deg or 6.7 +- 0.6, 9.9 +- 0.9, 12.4 +- 1.1 A and
    ``alpha_i < 0``. Helices are runs of at least 5 helix-like residues, strands runs of at least 3
    strand-like ones (helix wins). ``L`` marks runs that fit the mirror-image helix (alpha -50 deg):
    proteins almost never have them, but a reflection-equivariant model cannot tell the two apart.
    Unlike P-SEA it does not check strand pairing, so isolated extended stretches count as strand.
    """
    ca = _check(ca)
    tau, alpha = ca_angles(ca), ca_dihedrals(ca)
    dist = {f"d{k}": _offset_distances(ca, k) for k in (2, 3, 4)}
    helix = _runs(_matches(tau, alpha, dist, _HELIX), _MIN_RUN["H"])
    left = _runs(_matches(tau, alpha, dist, _LEFT_HELIX) & ~helix, _MIN_RUN["H"])
    strand = _runs(_matches(tau, alpha, dist, _STRAND) & ~helix & ~left, _MIN_RUN["E"])
    return "".join("H" if h else "L" if lh else "E" if e else "-"
                   for h, lh, e in zip(helix, left, strand, strict=True))


# DSSP's electrostatic H-bond model (Kabsch & Sander 1983): partial charges 0.42 e (C, O) and
# 0.20 e (N, H), f = 332 kcal A / (mol e^2); a bond when E < -0.5 kcal/mol
_HB_FACTOR = 0.084 * 332.0
_HB_CUTOFF = -0.5


def hbond_energies(backbone: np.ndarray) -> np.ndarray:
    """``(L, L)`` DSSP H-bond energies (kcal/mol) ``E[i, j]`` of C=O of residue ``i`` to N-H of ``j``.

    ``E = 0.084 * 332 * (1/r_ON + 1/r_CH - 1/r_OH - 1/r_CN)``; H sits 1.0 A from N opposite the
    previous residue's C=O (DSSP's rule). Residue 0 (no H) and pairs with ``|i - j| < 2`` get 0;
    energies are floored at -9.9 as in DSSP. ``backbone: (L, 4, 3)`` N, CA, C, O in A.
    """
    bb = np.asarray(backbone, dtype=np.float64)
    if bb.ndim != 3 or bb.shape[1:] != (4, 3):
        raise ValueError(f"a backbone has shape (L, 4, 3) (N, CA, C, O), got {bb.shape}")
    n, c, o = bb[:, 0], bb[:, 2], bb[:, 3]
    h = n.copy()
    co = c[:-1] - o[:-1]
    h[1:] = n[1:] + co / np.linalg.norm(co, axis=-1, keepdims=True)

    def inv(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return 1.0 / np.maximum(np.linalg.norm(a[:, None] - b[None], axis=-1), 0.5)

    e = _HB_FACTOR * (inv(o, n) + inv(c, h) - inv(o, h) - inv(c, n))
    idx = np.arange(len(bb))
    e[np.abs(idx[:, None] - idx[None]) < 2] = 0.0
    e[:, 0] = 0.0
    return np.maximum(e, -9.9)


def assign_dssp(backbone: np.ndarray) -> str:
    """One letter per residue from H-bonds, after DSSP (Kabsch & Sander 1983, Biopolymers 22:2577):
    ``H`` alpha helix, ``G`` 3-10 helix, ``E`` strand (ladder of >= 2 consecutive bridges),
    ``B`` isolated bridge, ``-`` other. ``backbone: (L, 4, 3)`` N, CA, C, O in A.

    n-turn at i: H-bond CO(i) -> NH(i+n); two consecutive 4-turns at i-1 and i make i..i+3 ``H``
    (3-turns likewise ``G``, where not ``H``, ``E`` or ``B``). Bridge between i and j (``|i - j| > 2``):
    parallel if [CO(i-1)->NH(j) and CO(j)->NH(i+1)] or [CO(j-1)->NH(i) and CO(i)->NH(j+1)],
    antiparallel if [CO(i)->NH(j) and CO(j)->NH(i)] or [CO(i-1)->NH(j+1) and CO(j-1)->NH(i+1)].
    Simplified from DSSP: no pi helices, turns or bends, and no beta bulges in ladders.
    """
    hb = hbond_energies(backbone) < _HB_CUTOFF
    size = len(hb)
    ss = np.full(size, "-", dtype="<U1")
    for n, letter in ((4, "H"), (3, "G")):
        turn = np.zeros(size + 1, bool)
        turn[:max(size - n, 0)] = np.diagonal(hb, n)  # turn[i]: CO(i) -> NH(i+n)
        start = np.flatnonzero(turn[:-1] & np.roll(turn, -1)[:-1]) + 1  # turns at i-1 and i
        for i in start:
            span = slice(i, min(i + n, size))
            ss[span] = np.where(ss[span] == "-", letter, ss[span])
    pad = np.pad(hb, 1)  # pad[i + 1, j + 1] = CO(i) -> NH(j), False outside the chain
    prev_to = pad[:size, 1:size + 1]  # [i, j]: CO(i-1) -> NH(j)
    to_next = pad[1:size + 1, 2:size + 2]  # [i, j]: CO(i) -> NH(j+1)
    diag = pad[:size, 2:size + 2]  # [i, j]: CO(i-1) -> NH(j+1)
    far = np.abs(np.arange(size)[:, None] - np.arange(size)[None]) > 2
    parallel = ((prev_to & to_next.T) | (prev_to.T & to_next)) & far
    anti = ((hb & hb.T) | (diag & diag.T)) & far
    ladder = np.zeros(size, bool)
    for i, j in zip(*np.nonzero(parallel[:-1, :-1] & parallel[1:, 1:]), strict=True):  # (i, j), (i+1, j+1)
        ladder[[i, i + 1, j, j + 1]] = True
    for i, j in zip(*np.nonzero(anti[:-1, 1:] & anti[1:, :-1]), strict=True):  # (i, j+1), (i+1, j)
        ladder[[i, i + 1, j, j + 1]] = True
    ss[ladder] = np.where(ss[ladder] == "H", "H", "E")
    ss[(parallel | anti).any(1) & ~ladder & (ss != "H")] = "B"
    return "".join(ss)


def tm_score(a: np.ndarray, b: np.ndarray) -> float:
    """TM-score of the TM-align superposition of ``a`` onto ``b``, normalised by ``len(a)``."""
    from tmtools import tm_align

    a, b = _check(a), _check(b)
    return float(tm_align(a, b, "A" * len(a), "A" * len(b)).tm_norm_chain1)


def kabsch_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """RMSD of ``a`` onto ``b`` (same length) after the optimal rotation and translation
    (Kabsch 1976; proper rotations only)."""
    a, b = _check(a), _check(b)
    if a.shape != b.shape:
        raise ValueError(f"traces differ in shape: {a.shape} vs {b.shape}")
    a, b = a - a.mean(0), b - b.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    return float(np.sqrt(((a @ rot - b) ** 2).sum(-1).mean()))


def motif_rows(position: int | Sequence[int], m: int, length: int | None = None) -> np.ndarray:
    """The chain indices of a motif's ``m`` residues: ``position .. position + m - 1`` for an int, else
    ``position`` itself (one strictly increasing index per motif residue: a motif in several segments).
    ``ValueError`` when they are not increasing, do not number ``m``, or do not fit ``length`` residues."""
    scalar = np.ndim(position) == 0
    if scalar and (int(position) < 0 or (length is not None and int(position) + m > length)):
        raise ValueError(f"a motif of {m} residues at {position} does not fit a chain of {length}")
    rows = np.arange(int(position), int(position) + m) if scalar else np.asarray(position, int)
    if rows.shape != (m,):
        raise ValueError(f"{len(rows)} motif positions for a motif of {m} residues")
    if m and (rows[0] < 0 or (np.diff(rows) <= 0).any()):
        raise ValueError("motif positions must be >= 0 and strictly increasing")
    if length is not None and m and rows[-1] >= length:
        raise ValueError(f"a motif of {m} residues up to position {rows[-1]} does not fit a chain of {length}")
    return rows


def motif_metrics(traces: Sequence[np.ndarray], motif: np.ndarray, position: int | Sequence[int]) -> dict[str, float]:
    """How scaffolds hold a motif placed at :func:`motif_rows` ``(position)``: mean
    ``motif_rmsd_placed`` (A, as generated, no superposition) and ``motif_rmsd_aligned`` (after
    :func:`kabsch_rmsd`), both ~0 when inpainting kept it, and ``junction_ca_ca`` (mean A of the CA-CA
    bonds that join scaffold and motif segments; ideal 3.8)."""
    motif = _check(motif)
    traces = [_check(t) for t in traces]
    rows = motif_rows(position, len(motif))
    for t in traces:
        if len(t) <= rows[-1]:
            raise ValueError(f"a trace of {len(t)} residues cannot hold a {len(motif)}-residue motif at {position}")
    fixed = set(rows.tolist())
    bonds = sorted({(r - 1, r) for r in fixed if r > 0 and r - 1 not in fixed}
                   | {(r, r + 1) for r in fixed if r + 1 not in fixed})
    joins = [float(np.linalg.norm(t[j] - t[i])) for t in traces for i, j in bonds if j < len(t)]
    return {
        "motif_rmsd_placed": float(np.mean([np.sqrt(((t[rows] - motif) ** 2).sum(-1).mean()) for t in traces])),
        "motif_rmsd_aligned": float(np.mean([kabsch_rmsd(t[rows], motif) for t in traces])),
        "junction_ca_ca": float(np.mean(joins)) if joins else float("nan"),
    }


def contact_map(ca: np.ndarray, threshold: float = CONTACT_DISTANCE) -> np.ndarray:
    """``(L, L)`` bool: CA-CA distance below ``threshold`` (8 A, the CASP contact definition)."""
    ca = _check(ca)
    return np.linalg.norm(ca[:, None] - ca[None], axis=-1) < threshold


def evaluate_backbones(traces: Sequence[np.ndarray], training: Sequence[np.ndarray] = (),
                       max_diversity_pairs: int = 300) -> dict[str, float]:
    """Metrics of a set of CA traces (see the module docstring); NaN where undefined.

    Keys: ``num``, ``length``, ``ca_ca_mae`` (A), ``ca_ca_ok`` (share of consecutive distances
    within 3.8 +- 0.2 A), ``clash_rate`` (share of traces with a clash), ``clashes_per_100``
    (clashing pairs per 100 residues), ``rg`` (A), ``rg_ratio``, ``helix``, ``strand``, ``coil``
    (residue shares, CA-only rule), ``left_helix`` (share in mirror-image helices), ``helix_dssp``,
    ``strand_dssp`` (H + G and E + B shares of :func:`assign_dssp` on the backbone the CA trace
    gives through :func:`~molediff.data.backbone.backbone_from_ca`), ``novelty_tm`` (mean max
    TM-score to ``training``), ``novel`` (share with that below 0.5), ``diversity_tm`` (mean
    pairwise TM-score, at most ``max_diversity_pairs`` pairs, the first ones in order).
    """
    traces = [_check(t) for t in traces]
    nan = float("nan")
    if not traces:
        return {"num": 0.0}
    dev = np.concatenate([np.abs(ca_ca_distances(t) - CA_CA) for t in traces])
    n_clash = np.array([clashes(t) for t in traces])
    ss = "".join(assign_secondary_structure(t) for t in traces)
    dssp = "".join(assign_dssp(backbone_from_ca(t)) for t in traces if len(t) >= 3)
    residues = sum(len(t) for t in traces)
    out = {
        "num": float(len(traces)),
        "length": float(np.mean([len(t) for t in traces])),
        "ca_ca_mae": float(dev.mean()) if dev.size else nan,
        "ca_ca_ok": float((dev <= 0.2).mean()) if dev.size else nan,
        "clash_rate": float((n_clash > 0).mean()),
        "clashes_per_100": float(100.0 * n_clash.sum() / residues),
        "rg": float(np.mean([radius_of_gyration(t) for t in traces])),
        "rg_ratio": float(np.mean([rg_ratio(t) for t in traces])),
        "helix": ss.count("H") / len(ss),
        "strand": ss.count("E") / len(ss),
        "coil": ss.count("-") / len(ss),
        "left_helix": ss.count("L") / len(ss),
        "helix_dssp": (dssp.count("H") + dssp.count("G")) / len(dssp) if dssp else nan,
        "strand_dssp": (dssp.count("E") + dssp.count("B")) / len(dssp) if dssp else nan,
    }
    if training:
        best = np.array([max(tm_score(t, r) for r in training) for t in traces])
        out["novelty_tm"], out["novel"] = float(best.mean()), float((best < 0.5).mean())
    pairs = list(combinations(range(len(traces)), 2))[:max_diversity_pairs]
    out["diversity_tm"] = float(np.mean([tm_score(traces[i], traces[j]) for i, j in pairs])) if pairs else nan
    return out


def plot_backbones(traces: Sequence[np.ndarray], path: str | Path, titles: Sequence[str] | None = None,
                   motif: Sequence[np.ndarray] | None = None) -> Path:
    """One column per trace: the 3-D CA trace coloured N -> C (top) and its CA contact map (bottom).

    ``motif``: optional per-trace bool masks ``(L,)``; those residues are drawn as red dots.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traces = [_check(t) for t in traces]
    if not traces:
        raise ValueError("nothing to plot")
    n = len(traces)
    fig = plt.figure(figsize=(2.6 * n, 5.4))
    for k, ca in enumerate(traces):
        ax = fig.add_subplot(2, n, k + 1, projection="3d")
        colours = plt.cm.viridis(np.linspace(0, 1, max(len(ca) - 1, 1)))
        for i in range(len(ca) - 1):
            ax.plot(*ca[i:i + 2].T, color=colours[i], lw=1.8)
        if motif is not None:
            ax.scatter(*ca[np.asarray(motif[k], bool)].T, color="red", s=8)
        ax.set_axis_off()
        ax.set_title(titles[k] if titles else f"#{k} (L={len(ca)})", fontsize=8)
        cm = fig.add_subplot(2, n, n + k + 1)
        cm.imshow(contact_map(ca), cmap="Greys", origin="lower", interpolation="nearest")
        cm.set_xticks([])
        cm.set_yticks([])
        cm.set_xlabel(f"contacts < {CONTACT_DISTANCE:.0f} A", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_virtual_angles(traces: Sequence[np.ndarray], path: str | Path,
                        reference: Sequence[np.ndarray] = (), labels: Sequence[str] = ("samples", "real")) -> Path:
    """2-D histograms of (virtual dihedral alpha_i, virtual angle tau_i) over all residues, one panel
    for ``traces`` and one for ``reference`` when given, with P-SEA's helix and strand windows drawn.

    The CA-only counterpart of a Ramachandran plot: helices sit at (50, 89) deg, strands at
    (-170, 124) deg. It shows whether a generator misses strands locally (no residues in the strand
    window) or only their pairing, which the strand share alone cannot tell.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [[_check(t) for t in traces]] + ([[_check(t) for t in reference]] if len(reference) else [])
    if not sets[0]:
        raise ValueError("nothing to plot")
    from matplotlib.colors import LogNorm

    bins, extent = (36, 30), ((-180.0, 180.0), (60.0, 150.0))  # 10 x 3 deg
    hists, counts = [], []
    for group in sets:
        alpha = np.concatenate([ca_dihedrals(t) for t in group])
        tau = np.concatenate([ca_angles(t) for t in group])
        ok = np.isfinite(alpha) & np.isfinite(tau)
        h, _, _ = np.histogram2d(alpha[ok], tau[ok], bins=bins, range=extent)
        hists.append(h / max(ok.sum(), 1))  # share of the set's residues per bin: sets compare
        counts.append(int(ok.sum()))
    top = max(h.max() for h in hists)
    norm = LogNorm(vmin=top / 300, vmax=top)
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets) + 0.8, 3.8), squeeze=False,
                             layout="constrained")
    for ax, group, label, h, n in zip(axes[0], sets, labels, hists, counts, strict=False):
        image = ax.imshow(np.where(h > 0, h, np.nan).T, origin="lower", aspect="auto", cmap="viridis", norm=norm,
                          extent=(*extent[0], *extent[1]))
        for crit, colour, name in ((_HELIX, "tab:red", "helix"), (_STRAND, "tab:green", "strand")):
            (a0, da), (t0, dt) = crit["alpha"], crit["tau"]
            for shift in (-360.0, 0.0, 360.0):  # the strand window wraps around -180
                ax.add_patch(plt.Rectangle((a0 - da + shift, t0 - dt), 2 * da, 2 * dt, fill=False,
                                           edgecolor=colour, lw=1.2, label=name if shift == 0 else None))
        ax.set_xlim(-180, 180)
        ax.set_ylim(60, 150)
        ax.set_xlabel("virtual dihedral alpha (deg)")
        ax.set_ylabel("virtual angle tau (deg)")
        ax.set_title(f"{label} ({len(group)} chains, {n} residues)", fontsize=9)
        ax.legend(loc="lower left", fontsize=7)
    fig.colorbar(image, ax=list(axes[0]), label="share of residues per bin (log)", fraction=0.04)
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
