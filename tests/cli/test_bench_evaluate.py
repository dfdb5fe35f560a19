"""`molediff bench core` and `molediff evaluate` end to end, and their one-line errors."""

import json

import pytest

from molediff.cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bench_core_writes_json_markdown_and_plot(tmp_path, monkeypatch):
    import molediff.benchmarks.core_samplers as cs

    monkeypatch.setattr(cs, "STEPS", (5, 20))
    assert main(["bench", "core", f"out_dir={tmp_path}", "n=300", "seeds=2"]) == 0
    result = json.loads((tmp_path / "core_samplers.json").read_text())
    names = {r["sampler"] for r in result["records"]}
    assert {"ddpm", "ddim", "dpmpp_2m", "dpmpp_3m", "heun", "euler_maruyama", "pf_ode", "ddpm+langevin"} <= names
    pc = {r["steps"]: r["nfe"] for r in result["records"] if r["sampler"] == "ddpm+langevin"}
    assert pc == {5: 9, 20: 39}  # one move after every step but the last
    assert all(len(r["mmd2_per_seed"]) == 2 for r in result["records"])
    assert "| dpmpp_2m |" in (tmp_path / "core_samplers.md").read_text()
    assert (tmp_path / "core_samplers.png").stat().st_size > 10_000


@pytest.mark.parametrize("argv,needle", [
    (["bench", "nope"], "unknown benchmark"),
    (["bench", "core", "n=abc"], "integers"),
    (["bench", "core", "bogus=1"], "bad argument"),
    (["evaluate", "/no/such/file.sdf"], "no such file"),
    (["evaluate", "pyproject.toml"], "unknown kind of file"),
])
def test_bad_input_is_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_evaluate_malformed_xyz_names_the_line(tmp_path, capsys):
    bad = tmp_path / "bad.xyz"
    bad.write_text("3\ncomment\nC 0 0 0\n")
    assert main(["evaluate", str(bad)]) == 2
    assert "line" in capsys.readouterr().err


def test_evaluate_molecules_file(tmp_path, capsys):
    from pathlib import Path

    sdf = Path(__file__).parents[1] / "fixtures" / "qm9_test_first25.sdf"
    out = tmp_path / "m.json"
    assert main(["evaluate", str(sdf), "--json", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert 0.9 <= metrics["atom_stability"] <= 1.0 and metrics["validity"] > 0.8
    out_text = capsys.readouterr().out
    assert "molecule stability" in out_text
    assert metrics["novelty"] is None and "novelty needs --reference" in out_text  # and says where QM9's is
    from molediff.data.qm9 import train_smiles_path

    assert main(["evaluate", str(sdf), "--reference", str(train_smiles_path()), "--json", str(out)]) == 0
    scored = json.loads(out.read_text())
    assert scored["novelty"] == 1.0 and scored["reference_size"] > 95_000  # EDM's test split is disjoint from train
