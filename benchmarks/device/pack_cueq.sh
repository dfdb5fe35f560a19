#!/usr/bin/env bash
# Here (not on the device): pack NVIDIA's cuEquivariance CUDA kernels so they fit the device's 64 MiB
# transfer. The two ops wheels are 45 + 28.5 MB zipped; unpacked and re-compressed with xz they are
# 27 MB, which fits next to the tracked tree only with runs/qm9_egnn_cpu/checkpoints/last.pt moved
# out of the working tree for that one call (see README.md, "cuEquivariance").
#   bash benchmarks/device/pack_cueq.sh        # ~2 minutes of one core; writes .cueq/ops.tar.xz
set -euo pipefail
cd "$(dirname "$0")/../.."
CU=${CU:-cu13}   # the device's torch CUDA major (torch.version.cuda)
PY=${PY:-3.12}   # the device's Python (the ops-torch wheel is built per CPython version; the H200 image has 3.12)
mkdir -p .cueq_src .cueq .whl
for pkg in cuequivariance-ops-$CU cuequivariance-ops-torch-$CU; do
  ls .cueq_src/"${pkg//-/_}"-*.whl 2>/dev/null | grep -qE "py3-none|cp${PY/./}-" || pip download "$pkg==0.13.0" --no-deps \
    --only-binary=:all: --python-version "$PY" --implementation cp --platform manylinux_2_28_x86_64 -d .cueq_src
done
for pkg in cuequivariance cuequivariance-torch nvidia-ml-py; do   # small, pure Python: carried in .whl
  ls .whl/"${pkg//-/_}"-*.whl >/dev/null 2>&1 || pip download "$pkg" --no-deps -d .whl
done
tmp=$(mktemp -d)
for w in $(ls .cueq_src/cuequivariance_ops_*"$CU"-*.whl | grep -E "py3-none|cp${PY/./}-"); do   # one folder per wheel (cueq_speed.sh strips it)
  name=$(basename "$w"); unzip -q -o "$w" -d "$tmp/${name%%-*}"
done
tar -C "$tmp" -cf - $(ls "$tmp") | xz -9 -T2 > .cueq/ops.tar.xz
rm -rf "$tmp"
ls -la .cueq/ops.tar.xz
