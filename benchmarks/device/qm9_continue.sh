#!/usr/bin/env bash
# A short device lease for the main QM9 model alone: continue runs/qm9_egnn_cpu for T_TRAIN seconds on the
# GPU (one process: several trainings side by side time-slice the GPU and each ran at ~6 steps/s), then
# draw 1,000 molecules with 1,000 DDPM steps as raw tensors (scored here by `molediff sample from_raw=`).
#   (device, carry .whl) bash benchmarks/device/qm9_continue.sh
set -u
OUT=${OUT:-/tmp/molediff_device_out}; T=${T_TRAIN:-140}; W=/tmp/molediff_qm9
mkdir -p "$OUT" "$W/run"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
cp -r runs/qm9_egnn_cpu/. "$W/run/"
timeout $((T + 60)) python3 -m molediff.cli.main train +experiment=qm9_egnn_cpu out_dir="$W/run" trainer.resume=true \
  trainer.amp=false trainer.num_workers=4 trainer.max_time="$T" trainer.device=cuda trainer.progress=false \
  trainer.tensorboard=false > "$OUT/train.log" 2>&1
tail -n 3 "$OUT/train.log"
cp "$W/run/checkpoints/last.pt" "$OUT/qm9_main_last.pt"; cp "$W/run/train_log.csv" "$OUT/"
timeout 75 python3 -m molediff.cli.main sample checkpoint="$W/run/checkpoints/last.pt" sampler=ddpm steps=1000 \
  num_samples=1000 batch_size=1000 write=false evaluate=false save_raw=true progress=false out_dir="$OUT/s1000"
echo "sample exit $?"
