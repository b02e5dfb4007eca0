#!/bin/bash
# the output-gain variant: fmnist-best at 0.7 (former biases, gain from the calibrated thresholds)
set -x
B=/work/runs/s11/fb
PY=/work/main/.venv/bin/python
cd /work/main
[ -f $B/conv-gain/metrics.json ] || PYTHONPATH=/work/main/src $PY docs/results/units/gain_variant.py convert $B/ann $B/conv-gain 0.7 2>&1
[ -f $B/snn-gain/metrics.json ] || PYTHONPATH=/work/main/src $PY -m dietsnn train-snn --preset fmnist-best $B/conv-gain --out $B/snn-gain --quiet --resume 2>&1
PYTHONPATH=/work/main/src $PY docs/results/units/gain_variant.py example > /work/runs/s11/example_diet-gain.txt 2>&1
echo CHAIN4 DONE
