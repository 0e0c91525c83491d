#!/bin/bash
# `make demo` before and after issue 10, on the same machine in one run (docs/results/demo_before_after.md):
#   old: unet-tiny trained from scratch with the velocity objective (the demo until 2026-12-02)
#   new: the shipped derainer fine-tuned on the demo set (configs/task/demo.yaml + the Makefile's init_from)
# Each: train.py task=demo (1000 steps) + sample.py on the 4 validation tiles, one torch thread.
#   bash benchmarks/demo_before_after.sh [data_root=/tmp/demodata] [out=/tmp]     (VARIANTS=new: only the new demo)
set -e
cd "$(dirname "$0")/.."
ROOT=${1:-/tmp/demodata}; OUT=${2:-/tmp}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1
for variant in ${VARIANTS:-old new}; do
  if [ $variant = old ]; then extra="network.name=unet-tiny network.overrides={} objective.prediction=velocity"
  else extra="init_from=checkpoints/mrlight-derain-rain100h-cpu.ckpt"; fi
  start=$(date +%s)
  $PY train.py task=demo data.root=$ROOT output_dir=$OUT/demo_$variant overwrite=true $extra > $OUT/demo_$variant.train.log 2>&1
  $PY sample.py ckpt=$OUT/demo_$variant/checkpoints/last.ckpt input=$ROOT/demo/val/LQ gt=$ROOT/demo/val/GT \
      output=$OUT/demo_$variant/restored lpips=false > $OUT/demo_$variant.sample.log 2>&1
  end=$(date +%s)
  echo "$variant: $((end-start)) s (train + sample), load $(cat /proc/loadavg)"
  tail -6 $OUT/demo_$variant.sample.log
done
