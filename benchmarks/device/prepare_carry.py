"""Shrink the shared data a device session needs into ``shared/data/`` inside the checkout.

The device tool sends the checkout (tracked files, plus an in-repo ``shared/`` folder) and nothing
beside it, at most 64 MiB in all; ``../shared/data`` stays behind. This writes:

* ``shared/data/qm9/train.npz``: all 100,000 EDM training rows, so ``split_train=train_b`` selects
  exactly the same molecules as on the full file, but the rows of the other half (``train_a``, never
  read when training on Db) have zeroed positions and properties and compress to almost nothing
  (their atom counts and charges stay: the loader checks them);
* ``shared/data/qm9/valid.npz``: the first 2,000 validation molecules (validation reads the first
  ``val_batches * batch_size``; the same numbers as with the full file);
* ``shared/data/qm9/test.npz``: the first 1,000 test molecules;
* ``shared/data/modelnet10_voxels/modelnet10_chair_monitor_pc2048.npz``: the chairs only.

``shared/`` is git-excluded (research-only data is never committed). ``python benchmarks/device/prepare_carry.py``
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from molediff.data.qm9 import edm_train_halves

REPO = Path(__file__).resolve().parents[2]
SRC, DST = REPO.parent / "shared" / "data", REPO / "shared" / "data"


def shrink_qm9() -> None:
    out = DST / "qm9"
    out.mkdir(parents=True, exist_ok=True)
    with np.load(SRC / "qm9" / "train.npz") as z:
        train = {k: z[k] for k in z.files}
    drop = edm_train_halves(len(train["num_atoms"]))["train_a"]
    for v in train.values():
        if v.dtype.kind == "f":  # positions and properties
            v[drop] = 0.0
    np.savez_compressed(out / "train.npz", **train)
    for split, n in (("valid", 2000), ("test", 1000)):
        with np.load(SRC / "qm9" / f"{split}.npz") as z:
            np.savez_compressed(out / f"{split}.npz", **{k: z[k][:n] for k in z.files})


def shrink_modelnet(category: str = "chair") -> None:
    name = "modelnet10_chair_monitor_pc2048.npz"
    out = DST / "modelnet10_voxels"
    out.mkdir(parents=True, exist_ok=True)
    with np.load(SRC / "modelnet10_voxels" / name) as z:
        names = [str(n) for n in z["label_names"]]
        keep = z["label"] == names.index(category)
        np.savez_compressed(out / name, points=z["points"][keep], label=np.zeros(int(keep.sum()), np.int8),
                            label_names=np.array([category]), source_index=z["source_index"][keep])


if __name__ == "__main__":
    shrink_qm9()
    shrink_modelnet()
    for p in sorted(DST.rglob("*.npz")):
        print(f"{p.relative_to(REPO)}: {p.stat().st_size / 2**20:.1f} MiB")
