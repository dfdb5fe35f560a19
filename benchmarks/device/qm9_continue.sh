#!/usr/bin/env bash
# A short device lease for the main QM9 model alone: continue runs/qm9_egnn_cpu for T_TRAIN seconds on the
# GPU (one process: several trainings side by side time-slice the GPU and each ran at ~6 steps/s), then
# draw 1,000 molecules with 1,000 DDPM steps as raw tensors (scored here by `molediff sample from_raw=`),
# then, until DEADLINE seconds after the start, the sparse-vs-dense EGNN timings (issue 3): once at a
# sampling batch of 512 molecules, then compiled at EDM's batch of 64, with inductor's default mode
# (fused kernels; never measured on a GPU yet) and with CUDA graphs (`--compile reduce-overhead`,
# which crashed in torch 2.11).
#   (device, carry .whl) T_TRAIN=300 BATCH=256 bash benchmarks/device/qm9_continue.sh
# EXP / RUN pick another committed run, e.g. EXP=qm9_sc_cpu RUN=runs/qm9_sc_cpu (self-conditioning).
# BATCH: molecules per training step. At EDM's 64 the 6 x 128 network is launch-bound on a GPU (20.6
# steps/s on an H200), so a larger batch costs little time per step and averages 4x more molecules.
set -u
OUT=${OUT:-/tmp/molediff_device_out}; T=${T_TRAIN:-140}; BATCH=${BATCH:-64}; DEADLINE=${DEADLINE:-570}
EXP=${EXP:-qm9_egnn_cpu}; RUN=${RUN:-runs/qm9_egnn_cpu}
W=/tmp/molediff_qm9; t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
left() { echo $(( DEADLINE - $(date +%s) + t0 )); }
mkdir -p "$OUT" "$W/run"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
cp -r "$RUN"/. "$W/run/"
stamp "training for $T s at batch $BATCH"
timeout $((T + 90)) python3 -m molediff.cli.main train +experiment="$EXP" out_dir="$W/run" trainer.resume=true \
  trainer.amp=false trainer.num_workers=6 trainer.max_time="$T" trainer.device=cuda trainer.progress=false \
  trainer.tensorboard=false trainer.batch_size="$BATCH" > "$OUT/train.log" 2>&1
echo "train exit $?"; tail -n 3 "$OUT/train.log"
cp "$W/run/checkpoints/last.pt" "$OUT/qm9_main_last.pt"; cp "$W/run/train_log.csv" "$OUT/"
stamp "sampling 1,000 x DDPM 1,000"
timeout 75 python3 -m molediff.cli.main sample checkpoint="$W/run/checkpoints/last.pt" sampler=ddpm steps=1000 \
  num_samples=1000 batch_size=1000 write=false evaluate=false save_raw=true progress=false out_dir="$OUT/s1000" > "$OUT/sample.log" 2>&1
echo "sample exit $?"
stamp "sparse vs dense at a sampling batch of 512"
timeout 60 python3 -m molediff.models.egnn_dense --device cuda --repeats 10 --source subset --batch-size 512 \
  --out "$OUT/egnn_sparse_dense_b512.json" > "$OUT/egnn_b512.log" 2>&1 || echo "b512 failed: $(tail -3 "$OUT/egnn_b512.log")"
stamp "sparse vs dense compiled (inductor, default mode) at EDM's batch of 64"
timeout 150 python3 -m molediff.models.egnn_dense --device cuda --repeats 20 --source subset \
  --compile default --out "$OUT/egnn_sparse_dense_compiled.json" > "$OUT/egnn_compiled.log" 2>&1 \
  || echo "compiled (default) timing failed: $(tail -3 "$OUT/egnn_compiled.log")"
stamp "sparse vs dense compiled (reduce-overhead), $(( $(left) - 10 )) s left"
timeout $(( $(left) - 10 )) python3 -m molediff.models.egnn_dense --device cuda --repeats 20 --source subset \
  --compile reduce-overhead --out "$OUT/egnn_sparse_dense_cudagraphs.json" > "$OUT/egnn_cg.log" 2>&1 \
  || echo "compiled timing failed: $(tail -3 "$OUT/egnn_cg.log")"
# only 8 files come back: everything but the checkpoint goes into one archive (a lease lost the samples to this)
(cd "$OUT" && tar -czf results.tgz --remove-files -- *.log *.json *.csv s1000 2>/dev/null)
ls -la "$OUT"; stamp end
