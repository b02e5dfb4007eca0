#!/bin/bash
# fmnist-best at seed 0: one ANN, converted by the old (7d35797) and new units, DIET-trained each
set -x
B=/work/runs/s11/fb
PY=/work/main/.venv/bin/python
new() { PYTHONPATH=/work/wt-new/src $PY -m dietsnn "$@"; }
old() { PYTHONPATH=/work/wt-old/src $PY -m dietsnn "$@"; }
[ -f $B/ann/metrics.json ] || new train-ann --preset fmnist-best --out $B/ann --quiet --resume 2>&1
[ -f $B/conv-new/metrics.json ] || new convert --preset fmnist-best $B/ann --out $B/conv-new -v 2>&1
[ -f $B/conv-old/metrics.json ] || old convert --preset fmnist-best $B/ann --out $B/conv-old -v 2>&1
[ -f $B/snn-new/metrics.json ] || new train-snn --preset fmnist-best $B/conv-new --out $B/snn-new --quiet --resume 2>&1
[ -f $B/snn-old/metrics.json ] || new train-snn --preset fmnist-best $B/conv-old --out $B/snn-old --quiet --resume 2>&1
echo CHAIN DONE
