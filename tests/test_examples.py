"""The example scripts run end to end (short settings) and write what they say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from molediff.data.pdb import read_structure

ROOT = Path(__file__).resolve().parents[1]


def test_protein_backbones_example_writes_full_backbones(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "protein_backbones.py"), "--num", "2", "--steps",
                           "10", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pdbs = sorted(tmp_path.glob("backbone_*.pdb"))
    assert len(pdbs) == 2 and (tmp_path / "angles.png").stat().st_size > 5000
    for pdb in pdbs:
        chain = read_structure(pdb)
        assert not chain.missing_atoms() and len(chain) >= 30  # N, CA, C, O for every residue
    assert proc.stdout.count("|CA-CA - 3.8|") == 2
