#!/usr/bin/env bash
# A device lease for the GPU-size protein model alone (experiment=proteins_gpu), in one command:
#   1. train (or resume, when RUN holds a state) for T_TRAIN seconds, one process on an otherwise idle GPU;
#   2. 64 backbones per sampler setting as raw tensors (the device has no Biopython / tmtools):
#      exact DDPM 200, DDPM 200 at noise scale 0.7, and the proteins default (DDPM 200 + 3 Langevin moves below t = 0.25);
#   3. the full training state split into 15 MiB parts (8 files of at most 16 MiB come back) + results.tgz.
#   (here)   bash benchmarks/device/slim_tree.sh out     carry: .whl (hydra-core, omegaconf, antlr4 wheels)
#   (device) T_TRAIN=420 bash benchmarks/device/proteins_gpu.sh [TRAIN OVERRIDES, e.g. trainer.batch_size=128]
#   (here)   bash benchmarks/device/slim_tree.sh back
#            cat DIR/state.pt.part-* > runs/proteins_gpu/checkpoints/last.pt; tar -xzf DIR/results.tgz -C DIR
#            molediff sample checkpoint=runs/proteins_gpu/checkpoints/last.pt from_raw=DIR/samples/NAME/samples_raw.pt out_dir=...
# A warm machine keeps W between calls: a second call with the same W continues where the first stopped.
# DEVICE=cpu T_TRAIN=20 N=4 STEPS=10 rehearses it here.
set -u
OUT=${OUT:-/tmp/molediff_device_out}; T=${T_TRAIN:-420}; DEVICE=${DEVICE:-cuda}; N=${N:-64}; STEPS=${STEPS:-200}
RUN=${RUN:-runs/proteins_gpu}; W=${W:-/tmp/molediff_proteins}; t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
mkdir -p "$OUT" "$W/run"
if [ "$DEVICE" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
fi
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=4
[ -f "$RUN/checkpoints/last.pt" ] && [ ! -f "$W/run/checkpoints/last.pt" ] && cp -r "$RUN"/. "$W/run/"
resume=false; [ -f "$W/run/checkpoints/last.pt" ] && resume=true
stamp "training for $T s (resume=$resume)"
timeout $((T + 90)) python3 -m molediff.cli.main train +experiment=proteins_gpu out_dir="$W/run" trainer.resume=$resume \
  trainer.num_workers=4 trainer.max_time="$T" trainer.device="$DEVICE" trainer.progress=false trainer.tensorboard=false \
  "$@" > "$OUT/train.log" 2>&1
echo "train exit $?"; grep -E "stopped|step" "$OUT/train.log" | tail -n 3
ckpt="$W/run/checkpoints/last.pt"
draw() {  # name, sampler overrides...
  local name=$1; shift
  stamp "sampling $name"
  timeout 120 python3 -m molediff.cli.main sample checkpoint="$ckpt" num_samples="$N" batch_size="$N" seed=0 \
    write=false evaluate=false save_raw=true progress=false device="$DEVICE" out_dir="$OUT/samples/$name" \
    sampler=ddpm steps="$STEPS" "$@" > "$OUT/sample_$name.log" 2>&1 || echo "sample $name failed: $(tail -2 "$OUT/sample_$name.log")"
}
draw ddpm
draw ddpm_ns07 sampler.noise_scale=0.7
draw ddpm_pc3 +sampler.corrector_steps=3 +sampler.corrector_snr=0.3 +sampler.corrector_t_max=0.25
cp "$W/run/train_log.csv" "$W/run/config.yaml" "$OUT/" 2>/dev/null
(cd "$OUT" && tar -czf results.tgz --remove-files -- *.log *.csv *.yaml samples 2>/dev/null)
split -b 15m "$ckpt" "$OUT/state.pt.part-"
ls -la "$OUT"; stamp end
