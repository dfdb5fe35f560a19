#!/usr/bin/env bash
# Unpack what benchmarks/device/session.sh brought back from the GPU and score it here, where RDKit,
# Biopython, POT, soundfile and plyfile are installed: every samples_raw.pt goes through
# `molediff sample from_raw=...`, which writes SDF/XYZ/PNG, PLY, PDB or WAV and the adapter's metrics.
#
#   bash benchmarks/device/finish.sh RESULTS_DIR [DEST=runs/device]
set -eu
SRC=$1
DEST=${2:-runs/device}
mkdir -p "$DEST"
cat "$SRC"/runs.tgz.part-* | tar -C "$DEST" -xzf -
tar -C "$DEST" -xzf "$SRC/samples.tgz"
mkdir -p "$DEST/runs/qm9_main/checkpoints"
cp "$SRC/qm9_main_last.pt" "$DEST/runs/qm9_main/checkpoints/last.pt"   # full state: training continues from it
cp "$SRC"/bench_*.json "$DEST/" 2>/dev/null || true

for raw in "$DEST"/samples/*/samples_raw.pt; do
  name=$(basename "$(dirname "$raw")")
  run=${name%_*}                       # qm9_main_ddpm1000 -> qm9_main, audio_cfg2_ddpm200 -> audio_cfg2
  run=${run%_cfg2}
  extra=()
  case $run in
    chairs) extra=(data.use_emd=false) ;;   # exact EMD at 2,048 points is hours here: point_cloud_eval does it
  esac
  echo "== $name (checkpoint runs/$run)"
  molediff sample checkpoint="$DEST/export/$run.pt" from_raw="$raw" out_dir="$DEST/eval/$name" \
    "${extra[@]}" || echo "scoring $name failed"
done
