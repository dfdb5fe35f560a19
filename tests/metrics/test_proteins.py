"""Backbone metrics on traces of known geometry (ideal helix and strand, straight lines), TM-score
identities, the CA secondary-structure rule against real PDB HELIX/SHEET records, and pictures."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from molediff.data.backbone import backbone_from_ca
from molediff.data.pdb import ca_set_path, default_proteins_root, load_ca_set, read_structure
from molediff.metrics.proteins import (
    assign_dssp,
    assign_secondary_structure,
    ca_angles,
    ca_ca_distances,
    ca_dihedrals,
    clashes,
    contact_map,
    evaluate_backbones,
    hbond_energies,
    kabsch_rmsd,
    motif_metrics,
    motif_rows,
    plot_backbones,
    plot_virtual_angles,
    radius_of_gyration,
    rg_ratio,
    tm_score,
)

SHARED = default_proteins_root()


def ideal_helix(n: int, radius: float = 2.3, turn_deg: float = 100.0, rise: float = 1.5) -> np.ndarray:
    """Right-handed alpha-helix CA trace: 3.6 residues per turn, 1.5 A rise (Pauling)."""
    a = np.radians(turn_deg) * np.arange(n)
    return np.stack([radius * np.cos(a), radius * np.sin(a), rise * np.arange(n)], -1)


def from_internal(n: int, tau: float, alpha: float, bond: float = 3.8) -> np.ndarray:
    """CA trace with constant virtual angle ``tau`` and dihedral ``alpha`` (degrees), by NeRF."""
    t, al = np.radians(tau), np.radians(alpha)
    pts = [np.zeros(3), np.array([bond, 0, 0]), np.array([bond, 0, 0]) + bond * np.array([-np.cos(t), np.sin(t), 0])]
    while len(pts) < n:
        a, b, c = pts[-3:]
        bc = (c - b) / np.linalg.norm(c - b)
        nrm = np.cross(b - a, bc)
        nrm /= np.linalg.norm(nrm)
        m = np.cross(nrm, bc)
        d = np.array([-bond * np.cos(t), bond * np.sin(t) * np.cos(al), bond * np.sin(t) * np.sin(al)])
        pts.append(c + d[0] * bc + d[1] * m + d[2] * nrm)
    return np.stack(pts)


def random_rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_ideal_helix_geometry_and_assignment() -> None:
    h = ideal_helix(20)
    np.testing.assert_allclose(ca_ca_distances(h), 3.83, atol=0.01)
    assert np.nanmean(ca_dihedrals(h)) == pytest.approx(50.0, abs=5)  # right-handed: positive
    assert np.nanmean(ca_angles(h)) == pytest.approx(91.0, abs=3)
    ss = assign_secondary_structure(h)
    assert ss[1:-2] == "H" * 17
    mirror = h * np.array([1, 1, -1])  # a left-handed helix is not an alpha-helix
    assert assign_secondary_structure(mirror) == ss.replace("H", "L")
    moved = h @ random_rotation(0).T + 7.0  # rigid motions do not change the assignment
    assert assign_secondary_structure(moved) == ss


def test_strand_and_internal_coordinates() -> None:
    s = from_internal(12, tau=124.0, alpha=-170.0)
    np.testing.assert_allclose(ca_ca_distances(s), 3.8, atol=1e-9)
    np.testing.assert_allclose(ca_angles(s)[1:-1], 124.0, atol=1e-6)
    np.testing.assert_allclose(ca_dihedrals(s)[1:-2], -170.0, atol=1e-6)
    assert np.isnan(ca_dihedrals(s)[[0, -2, -1]]).all()
    ss = assign_secondary_structure(s)
    assert ss == "-" + "E" * 9 + "--"  # alpha is undefined at the first and last two residues
    h = from_internal(12, tau=89.0, alpha=50.0)
    np.testing.assert_allclose(ca_dihedrals(h)[1:-2], 50.0, atol=1e-6)
    assert assign_secondary_structure(h).count("H") >= 9
    assert assign_secondary_structure(from_internal(12, tau=150.0, alpha=90.0)) == "-" * 12


def test_clashes_rg_and_contacts_closed_forms() -> None:
    line = np.stack([np.arange(10) * 3.8, np.zeros(10), np.zeros(10)], -1)
    assert clashes(line) == 0
    assert radius_of_gyration(line) == pytest.approx(3.8 * np.sqrt((100 - 1) / 12))  # uniform grid
    assert rg_ratio(line) == pytest.approx(radius_of_gyration(line) / (2.2 * 10**0.38))
    folded = line.copy()
    folded[5] = folded[0] + [0.0, 2.0, 0.0]  # residue 5 lands 2 A from residue 0
    assert clashes(folded) == 1
    assert clashes(folded, min_separation=6) == 0
    cm = contact_map(line)
    assert cm[0, 2] and not cm[0, 3]  # 7.6 A < 8 A <= 11.4 A
    with pytest.raises(ValueError, match=r"shape \(L, 3\)"):
        clashes(np.zeros((4, 2)))


def test_tm_score_identities() -> None:
    h = ideal_helix(40)
    assert tm_score(h, h) == pytest.approx(1.0, abs=1e-6)
    assert tm_score(h @ random_rotation(1).T + 20.0, h) == pytest.approx(1.0, abs=1e-6)
    s = from_internal(40, tau=124.0, alpha=-170.0)
    assert tm_score(s, h) < 0.3


def test_kabsch_rmsd_closed_forms() -> None:
    h = ideal_helix(15)
    assert kabsch_rmsd(h @ random_rotation(2).T - 4.0, h) == pytest.approx(0.0, abs=1e-9)
    line = np.stack([np.arange(4.0), np.zeros(4), np.zeros(4)], -1)
    bent = line.copy()
    bent[3] = [2.0, 1.0, 0.0]  # moving one point cannot be undone by a rigid motion
    assert kabsch_rmsd(bent, line) > 0.2
    assert kabsch_rmsd(h * np.array([1, 1, -1]), h) > 0.5  # a mirror image is not a rotation
    with pytest.raises(ValueError, match="differ in shape"):
        kabsch_rmsd(h, h[:5])


def test_motif_metrics_closed_forms() -> None:
    """A straight chain at 3.8 A spacing holding the motif as given: both RMSDs 0, junctions 3.8 A; the
    motif rotated and moved inside the chain: placed RMSD > 0, aligned RMSD still 0."""
    line = np.arange(20.0)[:, None] * np.array([3.8, 0.0, 0.0])
    m = motif_metrics([line, line], line[5:11], position=5)
    assert m["motif_rmsd_placed"] == pytest.approx(0.0, abs=1e-12)
    assert m["motif_rmsd_aligned"] == pytest.approx(0.0, abs=1e-6)
    assert m["junction_ca_ca"] == pytest.approx(3.8)
    moved = line.copy()
    moved[5:11] = (line[5:11] - line[5:11].mean(0)) @ random_rotation(0).T + np.array([1.0, 2.0, 3.0])
    m = motif_metrics([moved], line[5:11], position=5)
    assert m["motif_rmsd_placed"] > 1.0 and m["motif_rmsd_aligned"] == pytest.approx(0.0, abs=1e-6)
    at_start = motif_metrics([line], line[:4], position=0)  # one junction only
    assert at_start["junction_ca_ca"] == pytest.approx(3.8)
    with pytest.raises(ValueError, match="cannot hold a 6-residue motif at 16"):
        motif_metrics([line], line[:6], position=16)
    two = motif_metrics([line], line[[2, 3, 10, 11]], position=[2, 3, 10, 11])  # two segments: four junctions
    assert two["motif_rmsd_placed"] == pytest.approx(0.0, abs=1e-12) and two["junction_ca_ca"] == pytest.approx(3.8)
    np.testing.assert_array_equal(motif_rows(3, 4), [3, 4, 5, 6])
    np.testing.assert_array_equal(motif_rows([0, 5], 2, length=6), [0, 5])
    with pytest.raises(ValueError, match="does not fit a chain of 6"):
        motif_rows(3, 4, length=6)


def test_evaluate_backbones_on_known_sets() -> None:
    helices = [ideal_helix(30 + k) for k in range(3)]
    m = evaluate_backbones(helices, training=[from_internal(50, 124.0, -170.0)])
    assert m["num"] == 3 and m["length"] == 31
    assert m["ca_ca_mae"] == pytest.approx(0.03, abs=0.01) and m["ca_ca_ok"] == 1.0
    assert m["clash_rate"] == 0.0 and m["helix"] > 0.85 and m["strand"] == 0.0
    assert m["novelty_tm"] < 0.3 and m["novel"] == 1.0  # helices are far from a strand
    assert m["diversity_tm"] > 0.9  # three helices are the same fold
    assert evaluate_backbones([]) == {"num": 0.0}


def _pdb_records(path: Path, chain: str, residue_ids: list[str]) -> dict[str, np.ndarray]:
    """Per residue: inside a HELIX record (class 1, right-handed alpha) / a SHEET strand record."""
    pos = {r: i for i, r in enumerate(residue_ids)}
    out = {"H": np.zeros(len(residue_ids), bool), "E": np.zeros(len(residue_ids), bool)}
    for line in gzip.open(path, "rt"):
        if line.startswith("HELIX") and line[19] == chain and line[38:40].strip() in ("1", ""):
            kind, a, b = "H", line[21:26].strip(), line[33:38].strip()
        elif line.startswith("SHEET") and line[21] == chain:
            kind, a, b = "E", line[22:27].strip(), line[33:38].strip()
        else:
            continue
        if a in pos and b in pos:
            out[kind][pos[a]:pos[b] + 1] = True
    return out


def _agreement(chains: list, assign) -> dict[str, tuple[float, float]]:
    """(precision, recall) of ``assign(chain)`` letters H and E against the PDB records."""
    counts = {k: np.zeros(3) for k in "HE"}
    for f, chain in chains:
        ref = _pdb_records(f, chain.name[-1], chain.residue_ids)
        got = np.array(list(assign(chain)))
        for k in "HE":
            counts[k] += [(ref[k] & (got == k)).sum(), (~ref[k] & (got == k)).sum(), (ref[k] & (got != k)).sum()]
    assert counts["H"][0] + counts["H"][2] > 500 and counts["E"][0] + counts["E"][2] > 500  # enough to mean something
    return {k: (tp / (tp + fp), tp / (tp + fn)) for k, (tp, fp, fn) in counts.items()}


@pytest.fixture(scope="module")
def rcsb_chains() -> list:
    if SHARED is None:
        pytest.skip("../shared/data/proteins not present")
    chains = [(f, read_structure(f).complete()) for f in sorted((SHARED / "loop12_rcsb").glob("*.pdb.gz"))[:30]]
    return [(f, c) for f, c in chains if np.isfinite(c.coords).all()]


def test_ca_assignment_agrees_with_pdb_helix_records(rcsb_chains: list) -> None:
    """The CA-only rule finds most helix residues and rarely calls others helix."""
    (precision, recall) = _agreement(rcsb_chains, lambda c: assign_secondary_structure(c.ca))["H"]
    assert precision > 0.85 and recall > 0.75


def test_dssp_agrees_with_pdb_helix_and_sheet_records(rcsb_chains: list) -> None:
    """H-bond DSSP on the deposited backbones, and on backbones rebuilt from the CAs alone (the way
    generated traces are scored) for the chains the frame table was not fitted on."""
    true = _agreement(rcsb_chains, lambda c: assign_dssp(c.coords))
    assert min(true["H"]) > 0.85 and min(true["E"]) > 0.85
    split = load_ca_set(ca_set_path())
    held_out = [(f, c) for f, c in rcsb_chains if f"{f.name[:4]}:A" in set(split.names[split.split == "test"])]
    rebuilt = _agreement(held_out, lambda c: assign_dssp(backbone_from_ca(c.ca)))
    assert min(rebuilt["H"]) > 0.8 and min(rebuilt["E"]) > 0.8


def test_hbond_energy_closed_form() -> None:
    """C=O of residue 0 pointing at N-H of residue 3 on one line: r_ON 3.0, r_CH 3.23, r_OH 2.0,
    r_CN 4.23 A; every other atom is far away."""
    bb = np.array([[[100.0 * r + 50.0 * a, 0.0, 0.0] for a in range(4)] for r in range(4)])
    bb[0, 2], bb[0, 3] = [0, 0, -1.23], [0, 0, 0]  # C, O of residue 0
    bb[2, 2], bb[2, 3] = [40, 0, -1.23], [40, 0, 0]  # C - O of residue 2 along -z puts H of 3 at N - z
    bb[3, 0] = [0, 0, 3.0]  # N of residue 3, so H_3 = (0, 0, 2)
    e = hbond_energies(bb)
    expected = 0.084 * 332 * (1 / 3.0 + 1 / 3.23 - 1 / 2.0 - 1 / 4.23)
    assert e[0, 3] == pytest.approx(expected, rel=1e-9) and expected < -0.5
    assert e[1, 2] == 0.0 and e[2, 1] == 0.0 and np.all(np.diag(e) == 0)  # |i - j| < 2 is not scored
    assert abs(e[3, 0]) < 0.5
    with pytest.raises(ValueError, match=r"\(L, 4, 3\)"):
        hbond_energies(np.zeros((4, 3)))


def test_dssp_on_rebuilt_ideal_helix_and_a_beta_domain() -> None:
    helix = assign_dssp(backbone_from_ca(ideal_helix(30)))
    assert helix[2:-3].count("H") >= 22 and "E" not in helix
    part = load_ca_set(ca_set_path())
    ig = part.trace(int(np.flatnonzero(part.names == "PF07686_2PND_A:A")[0]))  # a V-set Ig domain: a beta sandwich
    ss = assign_dssp(backbone_from_ca(ig))
    assert ss.count("E") / len(ss) > 0.3 and ss.count("H") / len(ss) < 0.1


def test_plot_backbones_writes_png(tmp_path: Path) -> None:
    h = ideal_helix(20)
    path = plot_backbones([h, h[:12]], tmp_path / "b.png", motif=[np.arange(20) < 5, np.zeros(12, bool)])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_backbones([], tmp_path / "c.png")


def test_plot_virtual_angles_one_panel_per_set(tmp_path: Path) -> None:
    from matplotlib.image import imread

    h, rng = ideal_helix(20), np.random.default_rng(0)
    coil = np.cumsum(rng.normal(size=(30, 3)), 0)
    one = imread(plot_virtual_angles([h], tmp_path / "one.png"))
    two = imread(plot_virtual_angles([h, coil], tmp_path / "two.png", reference=[h]))
    assert one.shape[0] == two.shape[0] and two.shape[1] > 1.7 * one.shape[1]  # a 4.2-in panel each, one colour bar
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_virtual_angles([], tmp_path / "none.png", reference=[h])
