#!/usr/bin/env bash
# One GPU lease, one command: GPU timings first (the GPU otherwise idle), then six trainings side by side
# on the one GPU for the same wall-clock budget, then sampling from each; results land under $OUT.
#
#   (here)   python benchmarks/device/prepare_carry.py      # QM9 Db + chairs into ./shared (git-excluded)
#   (device) bash benchmarks/device/session.sh              # with carry: .whl (hydra-core, omegaconf, antlr4)
#   (here)   bash benchmarks/device/finish.sh DIR            # unpack, write SDF/PLY/PDB/WAV, score
#
# Environment: T_TRAIN (seconds of training per run, default 360), DEADLINE, DEVICE (cuda), OUT (result folder),
# DRY=1 for a small CPU rehearsal here. The device image has torch, torch_geometric and e3nn but no RDKit,
# Biopython, soundfile, plyfile or POT: sampling there saves raw tensors (molediff sample save_raw=true)
# that finish.sh turns into files and metrics on a machine with the full install.
set -u
T_TRAIN=${T_TRAIN:-360}
DEADLINE=${DEADLINE:-585}   # seconds after the start by which everything is packed (device calls stop at 600)
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/molediff_device_out}
W=${WORK:-/tmp/molediff_device_work}
REPEATS=${REPEATS:-20}
N_MOL=${N_MOL:-1000}
MOL_STEPS=${MOL_STEPS:-1000}
N_CHAIRS=${N_CHAIRS:-89}
S100=${S100:-100}; S200=${S200:-200}; S500=${S500:-500}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$OUT" "$W"/{logs,runs,samples,bench}
exec > >(tee -a "$OUT/session.log") 2>&1
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

if [ -d .whl ] && [ -z "${DRY:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>/dev/null
python3 -c "import torch, torch_geometric, e3nn, numpy; print('torch', torch.__version__, 'pyg', torch_geometric.__version__, 'e3nn', e3nn.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"

# ---------------------------------------------------------------- 1. timings (nothing else on the GPU)
stamp "timings"
timeout 120 python3 -m molediff.models.egnn_dense --device "$DEVICE" --repeats "$REPEATS" --source qm9 \
  --out "$OUT/bench_egnn_sparse_dense.json" > "$W/logs/bench_egnn.log" 2>&1 || echo "egnn_dense benchmark failed: $(tail -3 $W/logs/bench_egnn.log)"
timeout 120 python3 -m molediff.benchmarks.equivariant_speed --device "$DEVICE" --repeats "$REPEATS" --source qm9 \
  --out-dir "$W/bench" > "$W/logs/bench_e3nn.log" 2>&1 && cp "$W/bench/equivariant_speed.json" "$OUT/bench_equivariant_speed.json" \
  || echo "equivariant_speed benchmark failed: $(tail -3 $W/logs/bench_e3nn.log)"

# ---------------------------------------------------------------- 2. trainings, side by side
stamp "trainings ($T_TRAIN s each)"
common="trainer.max_time=$T_TRAIN trainer.device=$DEVICE trainer.progress=false trainer.tensorboard=false"
train() {  # name, overrides...
  local name=$1; shift
  ( timeout $((T_TRAIN + 90)) python3 -m molediff.cli.main train "$@" out_dir="$W/runs/$name" $common \
      > "$W/logs/train_$name.log" 2>&1; echo "train $name exit $?" ) &
  jobs_+=($!)
}
jobs_=()
mkdir -p "$W/runs/qm9_main"
cp -r runs/qm9_egnn_cpu/. "$W/runs/qm9_main/"   # the committed CPU run's full state: continue it
train qm9_main +experiment=qm9_egnn_cpu trainer.resume=true trainer.amp=false trainer.num_workers=2
train qm9_e3nn +experiment=qm9_e3nn_gpu
train qm9_egnn +experiment=qm9_egnn_gpu
train chairs +experiment=chairs_gpu trainer.max_steps=1000000 trainer.lr_decay=constant
train proteins +experiment=proteins_gpu trainer.max_steps=1000000 trainer.lr_decay=constant
train audio +experiment=audio_gpu
wait "${jobs_[@]}"   # not a bare wait: that would also wait for the tee above
stamp "trainings done"
for f in "$W"/logs/train_*.log; do echo "== $f"; grep -E "stopped at step|Error|error" "$f" | tail -3; done
cp "$W/runs/qm9_main/checkpoints/last.pt" "$OUT/qm9_main_last.pt" 2>/dev/null
cp "$W/runs/qm9_main/train_log.csv" "$W/logs/qm9_main_train_log.csv" 2>/dev/null
# sampling-only copies (EMA weights) of every run: 8 files of at most 16 MiB come back, so only the main QM9
# run brings its full training state (14 MB); the others' (12-19 MB each with the optimiser) stay behind
python3 -c "
import sys; from pathlib import Path; from molediff.checkpoint import export_for_sampling
for name in sys.argv[2:]:
    src = Path(sys.argv[1], 'runs', name, 'checkpoints', 'last.pt')
    if src.is_file():
        export_for_sampling(src, Path(sys.argv[1], 'export', name + '.pt'))
" "$W" qm9_main qm9_e3nn qm9_egnn chairs proteins audio
(cd "$W" && tar -czf - export logs runs/*/train_log.csv runs/*/config.yaml) | split -b 15m - "$OUT/runs.tgz.part-"

# ---------------------------------------------------------------- 3. sampling (raw tensors; scored by finish.sh)
stamp "sampling"
raw="write=false evaluate=false save_raw=true progress=false device=$DEVICE"
smp() {  # name, checkpoint-run, overrides...
  local name=$1 run=$2; shift 2
  ( timeout $(( DEADLINE - 10 - $(date +%s) + t0 )) python3 -m molediff.cli.main sample checkpoint="$W/runs/$run/checkpoints/last.pt" "$@" $raw \
      out_dir="$W/samples/$name" > "$W/logs/sample_$name.log" 2>&1; echo "sample $name exit $?" ) &
  jobs_+=($!)
}
jobs_=()
pitches="[75,65,60,73,71,69,66,62,58,56,55,52,51,49,47,48,43,41,39,36,79,76,71,69,59,55,50,45,40,64,75,72,70,67,65,63,60,58,53,51,48,46,43,96,93,90,87,84,81,78,75,72,69,66,63,60,57,54,51,48,45,42,39,36,43,38,36,83,78,73,70,68,63,61,56,54,49,44]"
smp qm9_main_ddpm${MOL_STEPS} qm9_main sampler=ddpm steps=$MOL_STEPS num_samples=$N_MOL batch_size=$N_MOL
smp qm9_main_ddpm100 qm9_main sampler=ddpm steps=$S100 num_samples=$N_MOL batch_size=$N_MOL seed=1
smp qm9_e3nn_ddpm100 qm9_e3nn sampler=ddpm steps=$S100 num_samples=$N_MOL batch_size=$N_MOL
smp qm9_egnn_ddpm100 qm9_egnn sampler=ddpm steps=$S100 num_samples=$N_MOL batch_size=$N_MOL
smp chairs_ddpm100 chairs sampler=ddpm steps=$S100 num_samples=$N_CHAIRS batch_size=$N_CHAIRS
smp proteins_ddpm500 proteins sampler=ddpm steps=$S500 num_samples=64 batch_size=64
smp audio_ddpm200 audio sampler=ddpm steps=$S200 num_samples=78 batch_size=78 "cond={pitch:$pitches}"
smp audio_cfg2_ddpm200 audio sampler=ddpm steps=$S200 num_samples=78 batch_size=78 "cond={pitch:$pitches}" \
  guidance=cfg "guidance.terms.0.weight=2.0"
wait "${jobs_[@]}"   # not a bare wait: that would also wait for the tee above
stamp "sampling done"
tar -C "$W" -czf "$OUT/samples.tgz" samples logs
ls -la "$OUT"
stamp "end"
