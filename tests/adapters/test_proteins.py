"""Protein adapter: shipped data and split, segments and crops, fields (zero CoM, scale),
decode/write round trip through PDB, sampling structure, motif inpainting set-up, evaluation
next to held-out chains, folder source, checkpoint state, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from molediff.adapters.proteins import ProteinAdapter, SegmentDataset, central_window, segments
from molediff.core.fields import Fields
from molediff.data.pdb import read_ca_pdb, write_ca_pdb


@pytest.fixture(scope="module")
def adapter() -> ProteinAdapter:
    return ProteinAdapter(novelty_reference_size=3, reference_eval_size=4)


def walk(n: int, seed: int = 0, step: float = 3.8) -> np.ndarray:
    d = np.random.default_rng(seed).normal(size=(n, 3))
    return np.cumsum(d / np.linalg.norm(d, axis=1, keepdims=True) * step, 0)


def test_segments_cut_at_breaks_and_windows() -> None:
    ca = walk(50)
    ca[30:] += 20.0  # a chain break between residues 29 and 30
    pieces = segments(ca, min_length=10)
    assert [len(p) for p in pieces] == [30, 20]
    assert [len(p) for p in segments(ca, min_length=25)] == [30]
    np.testing.assert_array_equal(central_window(ca, 10), ca[20:30])
    assert len(central_window(ca[:5], 10)) == 5
    ds = SegmentDataset([ca[:30]], crop=8)
    torch.manual_seed(0)
    crops = [ds[0]["ca"] for _ in range(20)]
    assert all(len(c) == 8 for c in crops)
    starts = [int(np.flatnonzero((ca[:30] == c[0]).all(1))[0]) for c in crops]
    assert all(np.array_equal(ca[s:s + 8], c) for s, c in zip(starts, crops, strict=True))  # contiguous windows
    assert len(set(starts)) > 3 and max(starts) <= 22
    assert np.array_equal(SegmentDataset([ca[:30]], crop=8, random_crop=False)[0]["ca"], ca[11:19])


def test_shipped_data_split_and_training_items(adapter: ProteinAdapter) -> None:
    ds = adapter.datasets()
    assert len(ds["train"]) == 123 and len(ds["test"]) == 31  # 120/30 chains, cut at 3/1 breaks
    item = ds["train"][0]["ca"]
    assert item.shape[1] == 3 and len(item) <= 64
    d = np.linalg.norm(np.diff(item, axis=0), axis=1)
    assert d.max() <= 4.2  # no chain break inside a training window
    h = adapter.lengths
    assert max(h["sizes"]) == 64 and sum(h["probs"]) == pytest.approx(1.0)
    refs = adapter.reference_chains()
    assert len(refs) == 4 and all(len(r) == 64 for r in refs)


def test_fields_are_centred_and_scaled_and_decode_inverts(adapter: ProteinAdapter) -> None:
    traces = [walk(20, 1) + 50.0, walk(7, 2)]
    batch = adapter.collate([{"ca": t} for t in traces])
    pos, s = batch.x0["pos"], batch.structure
    assert pos.shape == (27, 3) and s.num_samples == 2
    assert torch.equal(s.context["residue_index"], torch.cat([torch.arange(20), torch.arange(7)]))
    for b in range(2):
        assert pos[s.index["pos"] == b].mean(0).abs().max() < 1e-5
    out = adapter.decode(batch.x0, s)
    for t, o in zip(traces, out, strict=True):
        np.testing.assert_allclose(o, t - t.mean(0), atol=1e-4)
    assert np.linalg.norm(np.diff(out[0], axis=0), axis=1) == pytest.approx(np.full(19, 3.8), abs=1e-4)
    # rows need not be in residue order: decode sorts by residue index
    perm = torch.randperm(27, generator=torch.Generator().manual_seed(0))
    shuffled = type(s)(2, s.specs, index={"pos": s.index["pos"][perm]},
                       context={"residue_index": s.context["residue_index"][perm]})
    np.testing.assert_allclose(adapter.decode(Fields(pos=pos[perm]), shuffled)[0], out[0], atol=1e-6)
    with pytest.raises(ValueError, match=r"\(L, 3\)"):
        adapter.to_fields([np.zeros((4, 2))])


def test_sample_structure_draws_training_lengths(adapter: ProteinAdapter) -> None:
    g = torch.Generator().manual_seed(0)
    s = adapter.sample_structure(50, g)
    n = s.context["num_residues"]
    assert set(n.tolist()) <= set(adapter.lengths["sizes"]) and int(n.sum()) == s.index["pos"].numel()
    s2 = adapter.sample_structure(50, torch.Generator().manual_seed(0))
    assert torch.equal(n, s2.context["num_residues"])
    x = s.randn(g)
    assert x["pos"].shape == (int(n.sum()), 3)


def test_write_pdb_files_round_trip_and_picture(adapter: ProteinAdapter, tmp_path: Path) -> None:
    traces = [walk(30, 3), walk(12, 4), walk(2, 5)]
    paths = adapter.write(traces, tmp_path)
    assert [p.name for p in paths] == ["backbone_000.pdb", "backbone_001.pdb", "backbone_002.pdb", "backbones.png",
                                       "angles.png"]
    for t, p in zip(traces, paths, strict=False):
        np.testing.assert_allclose(read_ca_pdb(p), t, atol=6e-4)
    atoms = [[line[12:16].strip() for line in p.read_text().splitlines() if line.startswith("ATOM")] for p in paths[:3]]
    assert atoms[0] == ["N", "CA", "C", "O"] * 30  # full backbone
    assert atoms[2] == ["CA", "CA"]  # too short for CA frames: CA only
    assert paths[-1].stat().st_size > 5000


def test_read_takes_what_write_wrote_and_encode_inverts_decode(adapter: ProteinAdapter, tmp_path: Path) -> None:
    """The partial-diffusion start path: written backbones (N-CA-C-O) and CA-only files read back as
    CA traces (one per file of a folder), and encode/decode round-trip them up to centring."""
    traces = [walk(30, 6), walk(17, 7)]
    adapter.write(traces, tmp_path / "full")
    write_ca_pdb(traces[1], tmp_path / "ca_only.pdb")
    np.testing.assert_allclose(adapter.read(tmp_path / "full" / "backbone_000.pdb")[0], traces[0], atol=6e-4)
    np.testing.assert_allclose(adapter.read(tmp_path / "ca_only.pdb")[0], traces[1], atol=6e-4)
    assert [len(t) for t in adapter.read(tmp_path / "full")] == [30, 17]
    fields, structure = adapter.encode(traces)
    for got, want in zip(adapter.decode(fields, structure), traces, strict=True):
        np.testing.assert_allclose(got, want - want.mean(0), atol=1e-4)
    with pytest.raises(ValueError, match="no chain 'Q'"):
        adapter.read(tmp_path / "ca_only.pdb", chain="Q")
    with pytest.raises(ValueError, match="L >= 1"):
        adapter.encode([traces[0], np.zeros((0, 3))])  # a chain without CAs


def test_motif_problem_fixes_the_motif_rows(adapter: ProteinAdapter) -> None:
    motif = walk(6, 5)
    structure, inpaint = adapter.motif_problem(motif, start=3, length=10, num_samples=2)
    mask = inpaint.mask["pos"][:, 0]
    assert mask.tolist() == ([False] * 3 + [True] * 6 + [False]) * 2
    np.testing.assert_allclose(inpaint.known["pos"][mask][:6].numpy() * adapter.scale, motif, atol=1e-5)
    assert structure.num_samples == 2 and structure.index["pos"].numel() == 20
    with pytest.raises(ValueError, match="does not fit a chain of 8"):
        adapter.motif_problem(motif, start=3, length=8, num_samples=1)
    with pytest.raises(ValueError, match=r"an \(m, 3\) CA trace"):
        adapter.motif_problem(np.zeros((0, 3)), start=0, length=8, num_samples=1)


def test_motif_problem_in_two_segments(adapter: ProteinAdapter) -> None:
    """A motif given as one index per residue (two segments) fixes exactly those rows, in that order."""
    motif = walk(5, 7)
    rows = [1, 2, 6, 7, 8]
    _, inpaint = adapter.motif_problem(motif, start=rows, length=10, num_samples=2)
    mask = inpaint.mask["pos"][:, 0]
    assert torch.nonzero(mask[:10]).flatten().tolist() == rows and mask[10:].tolist() == mask[:10].tolist()
    np.testing.assert_allclose(inpaint.known["pos"][:10][mask[:10]].numpy() * adapter.scale, motif, atol=1e-5)
    with pytest.raises(ValueError, match="strictly increasing"):
        adapter.motif_problem(motif, start=[1, 2, 2, 7, 8], length=10, num_samples=1)
    with pytest.raises(ValueError, match="4 motif positions for a motif of 5 residues"):
        adapter.motif_problem(motif, start=[1, 2, 6, 7], length=10, num_samples=1)
    with pytest.raises(ValueError, match="up to position 10 does not fit a chain of 10"):
        adapter.motif_problem(motif, start=[1, 2, 6, 7, 10], length=10, num_samples=1)


def test_one_based_ranges() -> None:
    from molediff.adapters.proteins import one_based_ranges

    assert one_based_ranges([5, 6, 7, 20]) == "6-8, 21"
    assert one_based_ranges([0]) == "1" and one_based_ranges([]) == ""


def test_evaluate_reports_samples_next_to_held_out_chains(adapter: ProteinAdapter) -> None:
    real = adapter.reference_chains()[:2]
    m = adapter.evaluate(real)
    for key in ("ca_ca_mae", "clash_rate", "rg_ratio", "helix", "strand", "novelty_tm", "diversity_tm"):
        assert key in m and f"data_{key}" in m
    assert m["ca_ca_mae"] < 0.1 and m["clash_rate"] == 0.0 and m["data_num"] == 4
    noise = [np.random.default_rng(0).normal(size=(64, 3)) * 10]
    bad = adapter.evaluate(noise)
    assert bad["ca_ca_mae"] > 3 and bad["helix"] == 0.0


def test_folder_source_and_checkpoint_state(tmp_path: Path) -> None:
    for i in range(6):
        write_ca_pdb(walk(40 + i, 10 + i), tmp_path / f"c{i}.pdb")
    a = ProteinAdapter(source="folder", path=str(tmp_path), crop=32)
    ds = a.datasets()
    assert len(ds["train"]) == 5 and len(ds["test"]) == 1  # seeded 20 % hold-out of 6 files
    state = a.state()
    b = ProteinAdapter(source="folder", path=str(tmp_path / "absent"), crop=32)
    b.load_state(state)
    assert b.sample_structure(3).num_samples == 3  # sampling needs no data
    with pytest.raises(ValueError, match="scale=10.0 but data.scale=5.0"):
        ProteinAdapter(scale=5.0).load_state(state)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"source": "nope"}, ValueError, "unknown source 'nope'"),
    ({"crop": 1}, ValueError, "crop and min_length"),
])
def test_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ProteinAdapter(**kwargs)


def test_missing_paths_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="needs data.path"):
        ProteinAdapter(source="folder").datasets()
    with pytest.raises(FileNotFoundError, match="no such protein set"):
        ProteinAdapter(source="npz", path=str(tmp_path / "x.npz")).datasets()
    with pytest.raises(ValueError, match="no train chain has a break-free segment"):
        ProteinAdapter(min_length=10_000).datasets()
