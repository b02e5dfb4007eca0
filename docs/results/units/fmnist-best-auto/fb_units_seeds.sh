#!/bin/bash
# fmnist-best ANNs of seeds 1 and 2 (from docs/results/fmnist-best-xeon/fb_seeds.sh) converted with --scale auto, units chosen (auto) and scaled, each DIET-trained with the preset (56f4aeb's src)
set -x
while pgrep -f fb_seeds.sh >/dev/null; do sleep 10; done
O=/work/runs/s12
PY=/work/main/.venv/bin/python
run() { PYTHONPATH=/work/wt-units/src $PY -m dietsnn "$@"; }
for S in 1 2; do
  for U in auto scaled; do
    [ -f $O/u$S-$U-conv/metrics.json ] || run convert --preset fmnist-best --scale auto --units $U --seed $S $O/fb-s$S/ann --out $O/u$S-$U-conv -v 2>&1
    [ -f $O/u$S-$U-snn/metrics.json ] || run train-snn --preset fmnist-best --seed $S $O/u$S-$U-conv --out $O/u$S-$U-snn --quiet --resume 2>&1
  done
done
echo CHAIN DONE
