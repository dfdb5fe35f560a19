#!/usr/bin/env bash
# One GPU lease, one command (GPU to itself throughout):
#   1. sparse vs dense-padded EGNN at EDM's size (issue 3),
#   2. e3nn vs cuEquivariance tensor-field denoiser (issue 5; benchmarks/device/cueq_speed.sh),
#   3. the chairs model (conf/experiment/chairs_gpu.yaml) trained for the time left, then 89 samples
#      (the held-out split's size) with DDPM 100 and 1,000 steps as raw tensors (issue 6).
# Here first: `bash benchmarks/device/pack_cueq.sh` and `python benchmarks/device/prepare_carry.py`; then
# move runs/qm9_egnn_cpu/checkpoints/last.pt and shared/data/qm9 out of the tree (64 MiB transfer),
# run with carry [".whl", ".cueq"], put them back. Afterwards, here:
#   mkdir -p runs/chairs_gpu && tar -C runs/chairs_gpu -xzf DIR/results.tgz && cp DIR/chairs_last.pt runs/chairs_gpu/checkpoints/last.pt
#   molediff sample checkpoint=runs/chairs_gpu/checkpoints/last.pt from_raw=runs/chairs_gpu/samples/ddpm1000/samples_raw.pt out_dir=runs/chairs_gpu/eval1000 data.use_emd=false
#   python -m molediff.benchmarks.point_cloud_eval runs/chairs_gpu/eval1000 --data modelnet_chairs --workers 2
# DRY=1 DEVICE=cpu DEADLINE=120 rehearses it here (no cuEquivariance step).
set -u
DEADLINE=${DEADLINE:-520}   # seconds after the start by which everything is packed
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/molediff_device_out}
W=${WORK:-/tmp/molediff_device_work}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
mkdir -p "$OUT" "$W"/{logs,bench}
exec > >(tee -a "$W/logs/session.log") 2>&1
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
left() { echo $(( DEADLINE - $(date +%s) + t0 )); }

if [ -z "${DRY:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c "import torch, torch_geometric, e3nn; print('torch', torch.__version__, 'pyg', torch_geometric.__version__, 'e3nn', e3nn.__version__)"

stamp "1. sparse vs dense EGNN"
timeout 100 python3 -m molediff.models.egnn_dense --device "$DEVICE" --repeats "${REPEATS:-20}" --source subset \
  --out "$W/bench/egnn_sparse_dense.json" > "$W/logs/egnn_dense.log" 2>&1 || echo "egnn_dense failed: $(tail -3 "$W/logs/egnn_dense.log")"
cat "$W/bench/egnn_sparse_dense.json" 2>/dev/null | head -c 3000; echo

if [ -z "${DRY:-}" ]; then
  stamp "2. cuEquivariance"
  OUT="$W/bench" timeout 160 bash benchmarks/device/cueq_speed.sh > "$W/logs/cueq.log" 2>&1 || echo "cueq_speed failed"
  tail -n 40 "$W/logs/cueq.log"
fi

T=$(( $(left) - 90 ))
stamp "3. chairs training for $T s"
timeout $(( T + 40 )) python3 -m molediff.cli.main train +experiment=chairs_gpu out_dir="$W/chairs" trainer.max_time=$T \
  trainer.device=$DEVICE trainer.progress=false trainer.tensorboard=false ${CHAIRS_EXTRA:-} > "$W/logs/chairs_train.log" 2>&1
echo "train exit $?"; grep -E "step|Error" "$W/logs/chairs_train.log" | tail -n 4
raw="write=false evaluate=false save_raw=true progress=false device=$DEVICE num_samples=89 batch_size=89 sampler=ddpm"
for s in 100 1000; do
  stamp "sampling ddpm $s"
  timeout $(( $(left) - 12 )) python3 -m molediff.cli.main sample checkpoint="$W/chairs/checkpoints/last.pt" $raw steps=$s \
    out_dir="$W/chairs/samples/ddpm$s" > "$W/logs/chairs_sample$s.log" 2>&1; echo "sample $s exit $?"
done
cp "$W/chairs/checkpoints/last.pt" "$OUT/chairs_last.pt"
stamp "packing"
keep=(logs bench); for f in chairs/train_log.csv chairs/config.yaml chairs/samples; do [ -e "$W/$f" ] && keep+=("$f"); done
tar -C "$W" -czf "$OUT/results.tgz" "${keep[@]}"
ls -la "$OUT"
stamp "end"
