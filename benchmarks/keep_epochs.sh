#!/bin/bash
# Copy each epoch's last.safetensors of a run as it appears (for weight averaging later).
# usage: benchmarks/keep_epochs.sh RUN/DETECTOR &   (beside benchmarks/train_recipe.py --name RUN ...)
d=$1; seen=$(wc -l < $d/metrics.csv)
while true; do
  n=$(wc -l < $d/metrics.csv)
  if [ "$n" != "$seen" ]; then sleep 30; e=$((n-1)); cp $d/last.safetensors $d/epoch$e.safetensors; seen=$n; echo "kept epoch $e $(date)"; fi
  pgrep -f "train_recipe.py --name $(basename $(dirname $d)) " >/dev/null || exit 0
  sleep 15
done
