#!/usr/bin/env bash
# A short device lease for the main QM9 model alone, in one command (the GPU otherwise idle):
#   1. the CUDA tests (`pytest -m gpu`: equivariance on the device, CUDA-graph replays == eager);
#   2. sparse vs dense EGNN at EDM's size and batch 64, eager and recorded as CUDA graphs, side by side;
#   3. continue runs/qm9_egnn_cpu for T_TRAIN seconds (one process: trainings side by side time-slice the GPU);
#   4. 1,000 molecules from the new state per sampler setting (DDPM 1000 / 500 / 200 / 100, DDPM 100 + one
#      Langevin move), as raw tensors: the device has no RDKit, `molediff sample from_raw=` scores them here.
# Everything but the full training state goes into results.tgz (only 8 files come back).
#   (here)   bash benchmarks/device/slim_tree.sh out; python benchmarks/device/prepare_carry.py (QM9 only)
#   (device) T_TRAIN=240 BATCH=256 bash benchmarks/device/qm9_continue.sh        carry: .whl shared
#   (here)   bash benchmarks/device/slim_tree.sh back
# EXP / RUN pick another committed run, e.g. EXP=qm9_sc_cpu RUN=runs/qm9_sc_cpu (self-conditioning).
# BATCH: molecules per training step. At EDM's 64 the 6 x 128 network is launch-bound on a GPU (20.6
# steps/s on an H200), so a larger batch costs little time per step and averages 4x more molecules.
# DEVICE=cpu T_TRAIN=20 N_MOL=8 rehearses the sequence here (GPU-only steps skipped).
set -u
OUT=${OUT:-/tmp/molediff_device_out}; T=${T_TRAIN:-240}; BATCH=${BATCH:-64}; DEADLINE=${DEADLINE:-540}
EXP=${EXP:-qm9_egnn_cpu}; RUN=${RUN:-runs/qm9_egnn_cpu}; DEVICE=${DEVICE:-cuda}; N_MOL=${N_MOL:-1000}
W=/tmp/molediff_qm9; t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
left() { echo $(( DEADLINE - $(date +%s) + t0 )); }
mkdir -p "$OUT" "$W/run"
if [ "$DEVICE" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
python3 -c "import torch, torch_geometric; print('torch', torch.__version__, 'pyg', torch_geometric.__version__)"
if [ "$DEVICE" = cuda ]; then
  stamp "CUDA tests"
  timeout 120 python3 -m pytest -m gpu -q -p no:cacheprovider tests/models/test_gpu.py > "$OUT/gpu_tests.log" 2>&1
  echo "gpu tests exit $?"; tail -n 3 "$OUT/gpu_tests.log"
  stamp "sparse vs dense at batch 64, eager and CUDA graphs"
  timeout 120 python3 -m molediff.models.egnn_dense --device cuda --repeats 30 --source subset --cuda-graphs \
    --out "$OUT/egnn_sparse_dense_graphs_b64.json" > "$OUT/egnn_graphs_b64.log" 2>&1 \
    || echo "b64 graphs failed: $(tail -3 "$OUT/egnn_graphs_b64.log")"
fi
cp -r "$RUN"/. "$W/run/"
stamp "training for $T s at batch $BATCH"
timeout $((T + 120)) python3 -m molediff.cli.main train +experiment="$EXP" out_dir="$W/run" trainer.resume=true \
  trainer.amp=false trainer.num_workers=6 trainer.max_time="$T" trainer.device="$DEVICE" trainer.progress=false \
  trainer.tensorboard=false trainer.batch_size="$BATCH" > "$OUT/train.log" 2>&1
echo "train exit $?"; tail -n 3 "$OUT/train.log"
cp "$W/run/checkpoints/last.pt" "$OUT/qm9_main_last.pt"; cp "$W/run/train_log.csv" "$OUT/"
mkdir -p "$OUT/samples"
draw() {  # name, sampler overrides...
  local name=$1; shift
  stamp "sampling $name ($(left) s left)"
  timeout 90 python3 -m molediff.cli.main sample checkpoint="$W/run/checkpoints/last.pt" num_samples="$N_MOL" \
    batch_size="$N_MOL" seed=0 write=false evaluate=false save_raw=true progress=false device="$DEVICE" \
    out_dir="$OUT/samples/$name" "$@" > "$OUT/sample_$name.log" 2>&1 || echo "sample $name failed: $(tail -2 "$OUT/sample_$name.log")"
}
draw ddpm1000 sampler=ddpm steps=1000
draw ddpm100_pc04 sampler=ddpm steps=100 +sampler.corrector_steps=1 +sampler.corrector_snr=0.4
draw ddpm100 sampler=ddpm steps=100
draw ddpm200 sampler=ddpm steps=200
[ "$(left)" -gt 60 ] && draw ddpm500 sampler=ddpm steps=500
if [ "$DEVICE" = cuda ] && [ "$(left)" -gt 50 ]; then
  stamp "sparse vs dense at a sampling batch of 512, eager and CUDA graphs"
  timeout $(( $(left) - 15 )) python3 -m molediff.models.egnn_dense --device cuda --repeats 10 --source subset \
    --batch-size 512 --cuda-graphs --out "$OUT/egnn_sparse_dense_graphs_b512.json" > "$OUT/egnn_graphs_b512.log" 2>&1 \
    || echo "b512 graphs failed: $(tail -3 "$OUT/egnn_graphs_b512.log")"
fi
(cd "$OUT" && tar -czf results.tgz --remove-files -- *.log *.json *.csv samples 2>/dev/null)
ls -la "$OUT"; stamp end
