#!/bin/bash
# fmnist-best seed 0's ANN converted with --scale auto --units scaled (the choice before 56f4aeb) at 56f4aeb, then DIET-trained
set -x
B=/work/runs/s11/fb; O=/work/runs/s12
PY=/work/main/.venv/bin/python
run() { PYTHONPATH=/work/wt-units/src $PY -m dietsnn "$@"; }
[ -f $O/conv-sauto/metrics.json ] || run convert --preset fmnist-best --scale auto --units scaled $B/ann --out $O/conv-sauto -v 2>&1
[ -f $O/snn-sauto/metrics.json ] || run train-snn --preset fmnist-best $O/conv-sauto --out $O/snn-sauto --quiet --resume 2>&1
echo CHAIN DONE
