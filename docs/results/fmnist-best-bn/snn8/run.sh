#!/bin/bash
# DIET training 8 epochs (preset: 4) from each seed's converted fmnist-best checkpoint
cd /work/wt-ep8
export PYTHONPATH=/work/wt-ep8/src
for s in 0 1 2; do
  case $s in 0) src=/work/runs/best/run;; 1) src=/work/runs/seed1/run;; 2) src=/work/runs/seed2/run;; esac
  out=/work/runs/ep8/s$s
  [ -f $out/metrics.json ] && continue
  res=""; [ -d $out ] && res="--resume"
  /work/main/.venv/bin/dietsnn train-snn --preset fmnist-best --seed $s --epochs 8 --quiet --out $out $res $src/converted > /work/runs/ep8/s$s.log 2>&1
done
