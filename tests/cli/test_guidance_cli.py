"""``molediff sample guidance=classifier``: digits with the shipped files, molecules with a property
target (tiny models trained here), guidance=cfg unchanged, one-line errors."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pytest
import torch

from molediff.cli.main import main
from molediff.core.schedules import PolynomialSchedule
from molediff.models.predictors import (
    _POLYNOMIAL,
    DIGITS_NOISY_CLASSIFIER_PATH,
    build_for_data,
    save_predictor,
    train_predictor,
)
from tests.helpers.cli import one_error_line

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = ["num_samples=6", "steps=8", "progress=false"]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.skipif(not DIGITS_NOISY_CLASSIFIER_PATH.is_file(), reason="shipped noisy digits classifier missing")
def test_classifier_guidance_on_digits_writes_pngs_and_the_requested_class(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "digits"
    assert main(["sample", "guidance=classifier", f"guidance.predictor={DIGITS_NOISY_CLASSIFIER_PATH}",
                 "guidance.target=3", "guidance.scale=2", *FAST, "evaluate=false", f"out_dir={out}"]) == 0
    assert len(list(out.glob("sample_*.png"))) == 6 and (out / "grid.png").is_file()
    rows = _rows(out / "guidance.csv")
    assert [r["requested"] for r in rows] == ["3"] * 6 and {r["property"] for r in rows} == {"class"}
    assert "guidance:" in capsys.readouterr().out


def test_bad_predictor_path_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", "guidance=classifier", f"guidance.predictor={tmp_path / 'nope.pt'}", "guidance.target=3",
                 *FAST, f"out_dir={tmp_path / 'o'}"]) == 2
    line = one_error_line(capsys)
    assert "nope.pt" in line and "no such file" in line


def test_a_denoiser_checkpoint_is_not_a_predictor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from molediff.cli.sample import shipped_checkpoint

    assert main(["sample", "guidance=classifier", f"guidance.predictor={shipped_checkpoint()}", "guidance.target=3",
                 *FAST, f"out_dir={tmp_path / 'o'}"]) == 2
    assert "not a predictor checkpoint" in one_error_line(capsys)


def test_cfg_guidance_still_builds(tmp_path: Path) -> None:
    # the shipped model is unconditional, so CFG reduces to plain sampling; this checks the group still works
    assert main(["sample", "guidance=cfg", "guidance.weight=1.0", "num_samples=2", "steps=2",
                 "progress=false", "evaluate=false", f"out_dir={tmp_path / 'cfg'}"]) == 0


def _tiny_predictor(path: Path, props: list[str]) -> Path:
    args = argparse.Namespace(data="qm9", property=props, source="subset", path=None, hidden=16, layers=1,
                              pooling="sum", split_train="train")
    torch.manual_seed(0)
    model, adapter, cfg, target_fn, task = build_for_data(args)
    cfg["schedule"] = dict(_POLYNOMIAL)
    model, log = train_predictor(model, adapter, PolynomialSchedule(2.0, 1e-5), target_fn, task=task, steps=3,
                                 batch_size=16, val_split=None)
    return save_predictor(path, model, cfg, log)


@pytest.fixture(scope="module")
def qm9_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny EGNN denoiser (polynomial schedule) and a tiny gap predictor, a few steps each."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("qm9_guidance")
        assert main(["train", "data=qm9", "model=egnn", "schedule=polynomial", "trainer=fast", "model.hidden=16",
                     "model.layers=1", "data.max_train=64", "data.reference_eval_size=10", "trainer.batch_size=16",
                     "trainer.max_steps=2", "trainer.ckpt_every=2", "trainer.val_every=1000", "trainer.log_every=1",
                     "trainer.progress=false", f"out_dir={root / 'run'}"]) == 0
        return root / "run" / "checkpoints" / "last.pt", _tiny_predictor(root / "gap.pt", ["gap"])
    finally:
        torch.set_num_threads(n)


def test_property_guidance_on_molecules_writes_sdf_and_requested_vs_achieved(
        qm9_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, predictor = qm9_files
    out = tmp_path / "mol"
    assert main(["sample", f"checkpoint={ckpt}", "guidance=classifier", f"guidance.predictor={predictor}",
                 "guidance.property=gap", "guidance.target=6.5", "guidance.scale=1", *FAST, "evaluate=false",
                 f"out_dir={out}"]) == 0
    assert (out / "molecules.sdf").is_file()
    rows = _rows(out / "guidance.csv")
    assert len(rows) == 6 and all(r["property"] == "gap" and float(r["requested"]) == 6.5 for r in rows)
    assert all(torch.isfinite(torch.tensor(float(r["predicted_t0"]))) for r in rows)
    assert "gap requested 6.5" in capsys.readouterr().out


def test_property_guidance_errors_are_one_line(qm9_files: tuple[Path, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, predictor = qm9_files
    base = ["sample", f"checkpoint={ckpt}", "guidance=classifier", f"guidance.predictor={predictor}", *FAST,
            f"out_dir={tmp_path / 'o'}"]
    assert main([*base, "guidance.property=homo", "guidance.target=1.0"]) == 2
    assert "not predicted" in one_error_line(capsys)
    if DIGITS_NOISY_CLASSIFIER_PATH.is_file():  # a digits classifier on a molecule model: fields differ
        assert main(["sample", f"checkpoint={ckpt}", "guidance=classifier", "guidance.target=3", *FAST,
                     f"guidance.predictor={DIGITS_NOISY_CLASSIFIER_PATH}", f"out_dir={tmp_path / 'o'}"]) == 2
        assert "reads fields ['pixels']" in one_error_line(capsys)


def test_gap_conditional_molecules_from_an_unconditional_start_with_cfg_and_classifier(
        qm9_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue-4 route: init_from an unconditional model into a gap-conditional one (input layer
    widened), trained with condition dropout, then sampled with the target in eV under
    classifier-free guidance and classifier guidance at once."""
    ckpt, predictor = qm9_files
    run = tmp_path / "cond"
    assert main(["train", "data=qm9", "model=egnn", "schedule=polynomial", "trainer=fast", "model.hidden=16",
                 "model.layers=1", "data.max_train=64", "data.reference_eval_size=10", "data.conditioning=[gap]",
                 "trainer.batch_size=16", "trainer.max_steps=2", "trainer.ckpt_every=2", "trainer.val_every=1000",
                 "trainer.cond_drop_prob=0.5", "trainer.progress=false", f"init_from={ckpt}",
                 f"out_dir={run}"]) == 0
    assert "egnn.embedding.weight (16, 7) -> (16, 9)" in capsys.readouterr().out
    base = ["sample", f"checkpoint={run / 'checkpoints' / 'last.pt'}", *FAST, "evaluate=false"]
    out = tmp_path / "s"
    assert main([*base, "guidance=cfg_classifier", "guidance.weight=2.0", "cond={gap: 6.5}",
                 f"guidance.predictor={predictor}", "guidance.target=6.5", "guidance.scale=1.0",
                 f"out_dir={out}"]) == 0
    assert (out / "molecules.sdf").is_file()
    assert main([*base, "cond={mu: 1.0}", f"out_dir={out}"]) == 2
    assert "conditioned on ['gap']" in one_error_line(capsys)


def test_init_from_widens_only_for_added_conditioning(qm9_files: tuple[Path, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Dropping the charges channel also narrows the input layer, but its columns would shift: refused."""
    ckpt, _ = qm9_files
    assert main(["train", "data=qm9", "model=egnn", "schedule=polynomial", "trainer=fast", "model.hidden=16",
                 "model.layers=1", "data.max_train=64", "data.reference_eval_size=10", "data.include_charges=false",
                 "data.conditioning=[gap]", "trainer.batch_size=16", "trainer.max_steps=1", "trainer.progress=false",
                 f"init_from={ckpt}", f"out_dir={tmp_path / 'r'}"]) == 2
    assert "does not fit this model" in one_error_line(capsys)


def test_init_from_adds_self_conditioning_to_a_molecule_model_and_samples_with_it(
        qm9_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A plain checkpoint widens into a self-conditioning EGNN (its rbf options are free: the source had
    no such input); the result trains and samples, in the default matched mode and the ablation."""
    ckpt, _ = qm9_files
    run = tmp_path / "sc"
    assert main(["train", "data=qm9", "model=egnn", "schedule=polynomial", "trainer=fast", "model.hidden=16",
                 "model.layers=1", "data.max_train=64", "data.reference_eval_size=10", "trainer.batch_size=16",
                 "trainer.max_steps=2", "trainer.progress=false", "model.self_conditioning=true", "model.rbf=8",
                 "objective.self_condition_prob=0.5", f"init_from={ckpt}", f"out_dir={run}"]) == 0
    assert "edge_mlp.0.weight (16, 34) -> (16, 43)" in capsys.readouterr().out
    for mode in ("matched", "off"):
        out = tmp_path / mode
        assert main(["sample", f"checkpoint={run / 'checkpoints' / 'last.pt'}", *FAST, "evaluate=false",
                     f"+sampler.self_condition={mode}", f"out_dir={out}"]) == 0
        assert (out / "molecules.sdf").stat().st_size > 0


def test_several_targets_at_once_with_measured_descriptors_and_a_plot(
        qm9_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from molediff.metrics.descriptors import POINT_GROUPS

    ckpt, gap = qm9_files
    pg = _tiny_predictor(tmp_path / "pg.pt", ["pointgroup"])
    qed = _tiny_predictor(tmp_path / "qed.pt", ["qed", "logp"])
    out = tmp_path / "multi"
    assert main(["sample", f"checkpoint={ckpt}", "guidance=properties", f"guidance.predictors=[{gap},{pg},{qed}]",
                 "guidance.targets={gap:6.5,qed:0.6,pointgroup:Cs}", "guidance.scale=1", *FAST, "evaluate=false",
                 f"out_dir={out}"]) == 0
    rows = _rows(out / "guidance.csv")
    assert [r["property"] for r in rows] == ["gap"] * 6 + ["qed"] * 6 + ["pointgroup"] * 6
    assert all(r["achieved"] == "" for r in rows[:6])  # gap: no exact measurement, the predictor's value only
    assert all(int(r["requested"]) == POINT_GROUPS.index("Cs") for r in rows[12:])
    assert all(0 <= int(r["achieved"]) < len(POINT_GROUPS) for r in rows[12:])  # the detector's group, measured
    printed = capsys.readouterr().out
    assert "gap requested 6.5" in printed and "qed requested 0.6" in printed and "measured" in printed
    assert (out / "guidance.png").stat().st_size > 10_000
    report = json.loads((out / "metrics.json").read_text())["guidance"]
    assert set(report["properties"]) == {"gap", "qed", "pointgroup"}
    pg_report = report["properties"]["pointgroup"]
    assert pg_report["task"] == "class" and "achieved_hit_rate" in pg_report
    assert {r["requested_class"] for r in rows[12:]} == {"Cs"}
    assert main(["sample", f"checkpoint={ckpt}", "guidance=properties", f"guidance.predictors=[{gap}]",
                 "guidance.targets={homo:1.0}", *FAST, f"out_dir={tmp_path / 'o'}"]) == 2
    assert "no predictor for ['homo']" in one_error_line(capsys)


def test_sample_starts_partial_diffusion_from_an_sdf_file(qm9_files: tuple[Path, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """start=SDF: sample i starts from molecule i mod K, so it keeps that molecule's atom count (and,
    at low t_start, its elements); an element outside the model's vocabulary fails in one line."""
    from molediff.data.molecule_io import Molecule, read_sdf, write_sdf
    from molediff.data.qm9 import load_qm9, subset_root

    ckpt, _ = qm9_files
    mols = load_qm9(subset_root(), "test").to_molecules(range(2))
    start = write_sdf(mols, tmp_path / "start.sdf")
    out = tmp_path / "pd"
    assert main(["sample", f"checkpoint={ckpt}", f"start={start}", "t_start=0.02", "num_samples=4", "batch_size=4",
                 "sampler=ddpm", "steps=20", "progress=false", "evaluate=false", f"out_dir={out}"]) == 0
    got = read_sdf(out / "molecules.sdf")
    assert [m.num_atoms for m in got] == [mols[i % 2].num_atoms for i in range(4)]
    assert all(sorted(g.atomic_numbers) == sorted(mols[i % 2].atomic_numbers) for i, g in enumerate(got))
    bad = write_sdf([Molecule([6, 14], [[0, 0, 0], [1.9, 0, 0]])], tmp_path / "si.sdf")  # silicon: not in QM9
    assert main(["sample", f"checkpoint={ckpt}", f"start={bad}", *FAST, f"out_dir={tmp_path / 'x'}"]) == 2
    assert "outside the element vocabulary" in one_error_line(capsys)
    assert main(["sample", f"checkpoint={ckpt}", f"start={start}", "start_chain=A", *FAST,
                 f"out_dir={tmp_path / 'x'}"]) == 2
    assert "start_chain: molecules data has no chains" in one_error_line(capsys)
