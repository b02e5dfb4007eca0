#!/bin/bash
# after chain.sh: the new units at the scale the validation split picks (0.5), DIET-trained
set -x
B=/work/runs/s11/fb
PY=/work/main/.venv/bin/python
new() { PYTHONPATH=/work/wt-new/src $PY -m dietsnn "$@"; }
while pgrep -f "chain.sh" >/dev/null; do sleep 10; done
[ -f $B/conv-new05/metrics.json ] || new convert --preset fmnist-best --scale 0.5 $B/ann --out $B/conv-new05 -v 2>&1
[ -f $B/snn-new05/metrics.json ] || new train-snn --preset fmnist-best $B/conv-new05 --out $B/snn-new05 --quiet --resume 2>&1
echo CHAIN2 DONE
