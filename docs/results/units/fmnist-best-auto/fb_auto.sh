#!/bin/bash
# fmnist-best seed 0's ANN converted with --scale auto (units chosen on validation) at 56f4aeb, then DIET-trained
set -x
while pgrep -f units_seeds.py >/dev/null; do sleep 10; done
B=/work/runs/s11/fb; O=/work/runs/s12
PY=/work/main/.venv/bin/python
run() { PYTHONPATH=/work/wt-units/src $PY -m dietsnn "$@"; }
[ -f $O/conv-auto/metrics.json ] || run convert --preset fmnist-best --scale auto $B/ann --out $O/conv-auto -v 2>&1
[ -f $O/snn-auto/metrics.json ] || run train-snn --preset fmnist-best $O/conv-auto --out $O/snn-auto --quiet --resume 2>&1
echo CHAIN DONE
