#!/bin/bash
cd /work/wt-probe
export PYTHONPATH=/work/wt-probe/src
P=/work/main/.venv/bin/python
while [ ! -f /work/runs/probe/p0/metrics.json ]; do sleep 10; done
pkill -f "go.sh" ; sleep 2; pkill -f "spike-penalty 0.005"; sleep 2
for s in 0.5 0.7; do
  d=/work/runs/probe/s$s
  $P -m dietsnn train-snn /work/runs/probe/conv$s --preset fmnist-best --epochs 4 --threads 1 --quiet --out $d --overwrite > /work/runs/probe/s$s.log 2>&1 &
done
wait
