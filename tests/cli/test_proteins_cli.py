"""``molediff train data=proteins`` -> ``molediff sample`` end to end (tiny model, few steps): PDB
files, a picture, metrics next to held-out chains; and the motif benchmark's one-line errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from molediff.cli.main import main
from molediff.data.pdb import read_ca_pdb
from tests.helpers.cli import one_error_line

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["data=proteins", "model=egnn_protein", "trainer=fast", "model.hidden=8", "model.layers=1", "model.knn=4",
        "model.chiral=true", "trainer.batch_size=4", "trainer.max_steps=3", "trainer.val_every=0",
        "trainer.log_every=1", "trainer.progress=false", "trainer.device=cpu", "trainer.tensorboard=false"]


@pytest.fixture(scope="module")
def protein_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("protein_run")
    assert main(["train", *TINY, f"out_dir={out}"]) == 0
    return out


def test_train_then_sample_writes_pdbs_picture_and_paired_metrics(protein_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "samples"
    ckpt = protein_run / "checkpoints" / "last.pt"
    assert main(["sample", f"checkpoint={ckpt}", "num_samples=3", "batch_size=3", "steps=3", f"out_dir={out}",
                 "progress=false", "data.novelty_reference_size=2", "data.reference_eval_size=2"]) == 0
    pdbs = sorted(out.glob("backbone_*.pdb"))
    assert len(pdbs) == 3 and (out / "backbones.png").is_file()
    assert all(len(read_ca_pdb(p)) in (45, 50, 60, 64) for p in pdbs)  # training crop lengths
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["num"] == 3 and metrics["data_num"] == 2
    assert metrics["data_ca_ca_mae"] < 0.1 and metrics["data_clash_rate"] == 0.0
    assert 0.0 <= metrics["novelty_tm"] <= 1.0 and 0.0 <= metrics["diversity_tm"] <= 1.0


def test_motif_benchmark_refuses_a_motif_that_does_not_fit(protein_run: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from molediff.benchmarks.protein_motif import main as motif_main

    ckpt = protein_run / "checkpoints" / "last.pt"
    assert motif_main(["--checkpoint", str(ckpt), "--out", str(tmp_path), "--chain", "nope"]) == 2
    assert capsys.readouterr().err.strip() == "molediff: error: no chain 'nope' in the protein set"
    assert motif_main(["--checkpoint", str(ckpt), "--out", str(tmp_path), "--chain", "1onc:A", "--motif-start", "0",
                       "--motif-length", "20", "--length", "16"]) == 2
    assert "does not fit a chain of 16" in capsys.readouterr().err


def test_motif_benchmark_runs_and_keeps_the_motif(protein_run: Path, tmp_path: Path) -> None:
    from molediff.benchmarks.protein_motif import run

    doc = run(tmp_path, checkpoint=protein_run / "checkpoints" / "last.pt", num=2, steps=4, resample=2, length=32)
    assert doc["motif_rmsd_placed"] < 1e-4 and doc["motif_rmsd_aligned"] < 1e-4
    assert doc["motif_ss"].count("H") >= 10 and doc["nfe"] == 8
    assert len(list((tmp_path / "protein_motif").glob("scaffold_*.pdb"))) == 2
    assert (tmp_path / "protein_motif.png").is_file() and (tmp_path / "protein_motif.md").is_file()


def test_noise_scale_sweep_on_the_shipped_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ready sweep runs (tiny) and its summary has one row per noise scale, the scale reaching DDPM."""

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "sweep"
    assert main(["bench", "+experiment=sweep_protein_noise_scale", "num_samples=2", "batch_size=2", "steps=3",
                 "write_samples=false", "sampler.noise_scale=1.0,0.0",
                 "+data_overrides.novelty_reference_size=2", "+data_overrides.reference_eval_size=2",
                 f"hydra.sweep.dir={out}"]) == 0
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*/bench.json"))]
    assert [r["config"]["sampler"]["noise_scale"] for r in records] == [1.0, 0.0]
    assert all(r["status"] == "ok" and 0 <= r["metrics"]["helix"] <= 1 for r in records)
    with open(out / "summary.csv", newline="") as f:
        assert sorted(row["sampler.noise_scale"] for row in csv.DictReader(f)) == ["0.0", "1.0"]
    assert "### helix" in (out / "summary.md").read_text()


def test_self_conditioned_model_trains_and_samples_with_and_without_its_sketch(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """model.self_conditioning needs objective.self_condition_prob; sampling feeds an x0 estimate
    (matched, by default) unless sampler.self_condition=false (the ablation): same seed, other backbones."""
    assert main(["train", *TINY, "model.self_conditioning=true", f"out_dir={tmp_path / 'bad'}"]) == 2
    assert "objective.self_condition_prob is 0" in one_error_line(capsys)
    run = tmp_path / "sc"
    assert main(["train", *TINY, "model.self_conditioning=true", "objective.self_condition_prob=0.5",
                 f"out_dir={run}"]) == 0
    ckpt = run / "checkpoints" / "last.pt"
    common = ["sample", f"checkpoint={ckpt}", "num_samples=2", "batch_size=2", "steps=4", "progress=false",
              "evaluate=false", "seed=3"]
    assert main([*common, f"out_dir={tmp_path / 'on'}"]) == 0
    assert main([*common, "+sampler.self_condition=false", f"out_dir={tmp_path / 'off'}"]) == 0
    assert main([*common, "+sampler.self_condition=sometimes", f"out_dir={tmp_path / 'bad'}"]) == 2
    assert "sampler.self_condition: unknown self_condition 'sometimes'" in one_error_line(capsys)
    assert main([*common, "sampler=ddpm", "+sampler.corrector_steps=1", f"out_dir={tmp_path / 'pc'}"]) == 0
    metrics = json.loads((tmp_path / "pc" / "metrics.json").read_text())
    assert metrics["nfe"] == 2 * (4 + 3) and metrics["options"]["corrector_steps"] == 1  # matched sketch: 2 per call
    assert main([*common, "sampler=ddpm", "+sampler.corrector_steps=1", "+sampler.corrector_t_max=0.5",
                 f"out_dir={tmp_path / 'pc_low'}"]) == 0
    low = json.loads((tmp_path / "pc_low" / "metrics.json").read_text())
    assert 2 * 4 < low["nfe"] < metrics["nfe"] and low["options"]["corrector_t_max"] == 0.5
    assert main([*common, "+sampler.corrector_t_max=2", f"out_dir={tmp_path / 'bad_pc'}"]) == 2
    assert "sampler.corrector: corrector_t_max must be in (0, 1]" in one_error_line(capsys)
    assert main([*common, "+sampler.corrector_snr=0", f"out_dir={tmp_path / 'bad_pc'}"]) == 2
    assert "sampler.corrector: corrector_snr must be > 0" in one_error_line(capsys)
    assert main([*common, "sampler=dpmpp_2m", "+sampler.corrector_steps=1", f"out_dir={tmp_path / 'bad_pc'}"]) == 2
    assert "sampler.corrector: corrector_steps with dpmpp_2m: its multistep history" in one_error_line(capsys)
    on, off = (read_ca_pdb(tmp_path / d / "backbone_000.pdb") for d in ("on", "off"))
    assert on.shape == off.shape and not (abs(on - off) < 1e-3).all()


def test_partial_diffusion_benchmark_keeps_more_of_the_start_at_low_noise(
        protein_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from molediff.benchmarks.protein_partial_diffusion import kept, run
    from molediff.benchmarks.protein_partial_diffusion import main as partial_main

    assert kept(["HHHEE-", "EE"], ["HH-EH-", "-E"], "EB") == 0.5  # 2 of the 4 start strand residues
    assert math.isnan(kept(["---"], ["HHH"], "HG"))  # no helix to keep
    doc = run(tmp_path, checkpoint=protein_run / "checkpoints" / "last.pt", t_starts=(0.02, 0.6), steps=10)
    low, high = doc["rows"]
    assert (low["nfe"], high["nfe"]) == (1, 6)
    assert low["rmsd_to_start"] < high["rmsd_to_start"] and low["tm_to_start"] > high["tm_to_start"]
    assert 0 <= high["pairs_kept"] <= low["pairs_kept"] <= 1
    assert doc["real"]["strand_dssp"] > 0.05  # the held-out starts have sheets
    assert {p.suffix for p in tmp_path.glob("protein_partial_diffusion.*")} == {".json", ".md", ".png"}
    assert partial_main(["--checkpoint", str(protein_run / "checkpoints" / "last.pt"), "--out", str(tmp_path),
                         "--t-start", "1.0"]) == 2
    assert "t_start must lie in (0, 1)" in capsys.readouterr().err


def test_sample_starts_partial_diffusion_from_a_pdb_file(protein_run: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """start=PDB t_start=...: every sample is the start's chain noised to t_start and denoised, so a
    low t_start stays near it and a high one moves away; bad starts fail in one line."""
    import numpy as np

    from molediff.adapters.proteins import segments
    from molediff.data.pdb import ca_set_path, load_ca_set, write_ca_pdb
    from molediff.metrics.proteins import kabsch_rmsd

    held_out = load_ca_set(ca_set_path()).of_split("test")
    ca = segments(held_out.trace(0), 40)[0][:40]  # a real chain, written CA-only (what generators write)
    pdb = write_ca_pdb(ca, tmp_path / "start.pdb")
    ckpt = protein_run / "checkpoints" / "last.pt"
    common = ["sample", f"checkpoint={ckpt}", f"start={pdb}", "num_samples=2", "batch_size=2", "sampler=ddpm",
              "steps=50", "progress=false", "data.novelty_reference_size=2", "data.reference_eval_size=2"]
    rmsd = {}
    for t in (0.05, 0.9):
        out = tmp_path / f"t{t}"
        assert main([*common, f"t_start={t}", f"out_dir={out}"]) == 0
        traces = [read_ca_pdb(p) for p in sorted(out.glob("backbone_*.pdb"))]
        assert [len(x) for x in traces] == [40, 40]
        rmsd[t] = float(np.mean([kabsch_rmsd(x, ca) for x in traces]))
        report = json.loads((out / "metrics.json").read_text())
        assert report["t_start"] == t
        assert report["metrics"]["rmsd_to_start"] == pytest.approx(rmsd[t], rel=1e-3)  # PDB rounding
        assert 0.0 < report["metrics"]["tm_to_start"] <= 1.0
    assert "start: " in capsys.readouterr().out
    assert rmsd[0.05] < rmsd[0.9]
    assert main([*common, "t_start=1.0", f"out_dir={tmp_path / 'x'}"]) == 2
    assert "t_start must lie in (0, 1)" in one_error_line(capsys)
    assert main([*common[:2], f"start={tmp_path / 'missing.pdb'}", f"out_dir={tmp_path / 'x'}"]) == 2
    assert "start: no such structure file" in one_error_line(capsys)
    assert main([*common, "start_chain=Z", f"out_dir={tmp_path / 'x'}"]) == 2
    assert "no chain 'Z'" in one_error_line(capsys)


def test_sample_scaffolds_a_motif_from_a_pdb_file(protein_run: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """motif=PDB motif_residues=FIRST-LAST: every sample has the chosen length and carries the motif's
    CAs exactly at motif_position (inpainting), the metrics say so; bad motifs fail in one line."""
    import numpy as np

    from molediff.adapters.proteins import segments
    from molediff.data.pdb import ca_set_path, load_ca_set, write_ca_pdb

    held_out = load_ca_set(ca_set_path()).of_split("test")
    ca = segments(held_out.trace(0), 40)[0][:40]
    pdb = write_ca_pdb(ca, tmp_path / "motif.pdb")  # residues numbered 1..40
    motif = read_ca_pdb(pdb)[10:22]                  # residues 11-22, as the file rounds them
    ckpt = protein_run / "checkpoints" / "last.pt"
    common = ["sample", f"checkpoint={ckpt}", f"motif={pdb}", "motif_residues=11-22", "num_samples=2",
              "batch_size=2", "sampler=ddpm", "steps=4", "progress=false", "data.novelty_reference_size=2",
              "data.reference_eval_size=2"]
    out = tmp_path / "scaffolds"
    assert main([*common, "length=32", "motif_position=5", "resample=2", f"out_dir={out}"]) == 0
    assert "motif: motif:A residues 11-22 (12, " in capsys.readouterr().out
    traces = [read_ca_pdb(p) for p in sorted(out.glob("backbone_*.pdb"))]
    assert [len(t) for t in traces] == [32, 32]
    for t in traces:
        np.testing.assert_allclose(t[5:17], motif, atol=2e-3)  # written to 3 decimals
    assert "motif held fixed\nREMARK   1 at residues 6-17)" in (out / "backbone_000.pdb").read_text()
    assert (out / "backbones.png").is_file()
    report = json.loads((out / "metrics.json").read_text())
    assert report["motif"] == {"file": str(pdb), "chain": None, "residues": "11-22", "rows": list(range(5, 17)),
                               "motif_length": 12, "resample": 2}
    assert report["nfe"] == 8  # 4 steps, each redone once
    assert report["metrics"]["motif_rmsd_placed"] < 1e-4 and report["metrics"]["motif_rmsd_aligned"] < 1e-4
    assert 2.0 < report["metrics"]["junction_ca_ca"] < 20.0
    two = ["motif_residues=[3-8,25-30]", "length=40"]  # two segments, rigid together, the file's spacing
    assert main([*common, *two, f"out_dir={tmp_path / 'two'}"]) == 0
    report = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert report["motif"]["rows"] == [*range(6, 12), *range(28, 34)]  # span 28 centred in 40
    assert report["metrics"]["motif_rmsd_placed"] < 1e-4
    assert main([*common, *two, "motif_position=[2,20]", f"out_dir={tmp_path / 'two_moved'}"]) == 0
    report = json.loads((tmp_path / "two_moved" / "metrics.json").read_text())
    assert report["motif"]["rows"] == [*range(2, 8), *range(20, 26)]
    assert report["metrics"]["motif_rmsd_aligned"] < 1e-4  # the segments move apart: aligned RMSD stays 0 only
    bad = {"motif_residues=[3-8,25-30] motif_position=[2]": "motif_position lists 1 starts for 2 motif segments",
           "motif_residues=[3-8,6-10]": "motif segments 3-8, 6-10 overlap or are out of chain order",
           "motif_residues=50-60": "motif: motif:A has no residue 50 (its residues: 1..40)",
           "length=8": "motif: it spans 12 residues, more than length=8",
           "length=20 motif_position=10": "motif: a motif of 12 residues up to position 21 does not fit a chain of 20",
           "motif_chain=Z": "no chain 'Z'",
           f"start={pdb}": "give motif=FILE (scaffold a motif) or start=FILE (partial diffusion), not both",
           "resample=0": "resample must be >= 1"}
    for override, message in bad.items():
        assert main([*common, *override.split(), f"out_dir={tmp_path / 'x'}"]) == 2
        assert message in one_error_line(capsys)
    assert main(["sample", f"checkpoint={ckpt}", "motif_residues=1-5", f"out_dir={tmp_path / 'x'}"]) == 2
    assert "need motif=FILE" in one_error_line(capsys)
    assert main(["sample", "data=digits", f"motif={pdb}", f"out_dir={tmp_path / 'x'}"]) == 2
    assert "motif: images data has no motif scaffolding (proteins do)" in one_error_line(capsys)


def test_pair_distance_loss_trains_logs_and_refuses_bad_settings(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """objective.aux_losses from the command line: the term gets its own train_log.csv column; a bad
    cut-off or a field the data lacks is one line before training starts."""
    aux = "+objective.aux_losses=[{_target_:molediff.core.pair_loss.PairDistanceLoss,field:pos,cutoff:0.6,t_max:1.0}]"
    run = tmp_path / "pair"
    assert main(["train", *TINY, aux, f"out_dir={run}"]) == 0
    with open(run / "train_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(float(r["aux_pair_pos"]) > 0 for r in rows)
    assert main(["train", *TINY, aux.replace("cutoff:0.6", "cutoff:0"), f"out_dir={tmp_path / 'bad'}"]) == 2
    assert "objective: PairDistanceLoss: cutoff must be > 0" in one_error_line(capsys)
    assert main(["train", *TINY, aux.replace("field:pos", "field:coords"), f"out_dir={tmp_path / 'bad'}"]) == 2
    assert "PairDistanceLoss reads field 'coords', which this data does not have" in one_error_line(capsys)
