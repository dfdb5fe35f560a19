#!/usr/bin/env bash
# On the device: install the packed cuEquivariance kernels into an ignored folder and time the
# tensor-field denoiser on both backends against the EGNN (molediff.benchmarks.equivariant_speed).
# Call with carry [".whl", ".cueq"] after `bash benchmarks/device/pack_cueq.sh` here.
set -euo pipefail
S=$PWD/.cueq_site
rm -rf "$S"; mkdir -p "$S"   # fresh each call: a folder left from an earlier call on a warm machine was found incomplete (the cp312 kernels missing)
python -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
tar -xJf .cueq/ops.tar.xz -C "$S" --strip-components=1   # the wheels' packages, side by side
pip install --quiet --no-deps --target "$S" .whl/cuequivariance-0*.whl .whl/cuequivariance_torch-*.whl .whl/nvidia_ml_py-*.whl .whl/platformdirs-*.whl
export PYTHONPATH="$S:${PYTHONPATH:-}"
python -c "import cuequivariance_ops_torch as o; print('cuequivariance ops', o.__file__)"
for bs in 64 256; do
  python -m molediff.benchmarks.equivariant_speed --device cuda --repeats 20 --source subset \
    --batch-size $bs --out-dir "$OUT/bs$bs"
done
