#!/bin/bash
# SNN-step probes from the vgg_small_bn ANN/converted of docs/results/fmnist-bn2 (commit 1d4877c)
cd /work/wt-probe
export PYTHONPATH=/work/wt-probe/src
P=/work/main/.venv/bin/python
for w in 0 0.005; do
  d=/work/runs/probe/p$w
  [ -f $d/snn/metrics.json ] || [ -f $d/metrics.json ] && continue
  /usr/bin/time -v $P -m dietsnn train-snn /work/runs/bnbest/run/converted --preset fmnist-best --spike-penalty $w --epochs 4 --threads 1 --quiet --out $d --overwrite > /work/runs/probe/p$w.log 2>&1
done
