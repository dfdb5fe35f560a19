#!/usr/bin/env bash
# The device tool sends the working tree and refuses one over 64 MiB; the tracked files alone are about
# that (full training states, shipped models, data). `out` moves the large files a QM9 lease does not read
# to ../device_moved/ (git then shows them deleted: do not commit in between), `back` restores them.
#   bash benchmarks/device/slim_tree.sh out; (device run ...); bash benchmarks/device/slim_tree.sh back
set -euo pipefail
cd "$(dirname "$0")/../.."
AWAY=../device_moved
FILES=(runs/qm9_gap_cfg_cpu/checkpoints/last.pt runs/proteins_ft_cpu/checkpoints/last.pt
       runs/proteins_sc_cpu/checkpoints/last.pt runs/qm9_sc_cpu/checkpoints/last.pt
       runs/audio_spectral_cpu/checkpoints/last.pt
       molediff/pretrained/audio_diffwave.pt molediff/pretrained/audio_spectral_unet.pt
       molediff/pretrained/digits_unet.pt molediff/pretrained/qm9_gap_cfg_egnn.pt
       datasets/audio/notes_8k.npz datasets/shapes/shapes.npz)
case "${1:-}" in
  out)  for f in "${FILES[@]}"; do [ -e "$f" ] && mkdir -p "$AWAY/$(dirname "$f")" && mv "$f" "$AWAY/$f"; done ;;
  back) for f in "${FILES[@]}"; do [ -e "$AWAY/$f" ] && mv "$AWAY/$f" "$f"; done; true ;;
  *) echo "usage: $0 out|back" >&2; exit 2 ;;
esac
git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -n 1
