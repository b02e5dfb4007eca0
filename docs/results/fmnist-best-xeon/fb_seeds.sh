#!/bin/bash
# fmnist-best seeds 1 and 2 on this machine (dietsnn run at 56f4aeb; the preset's fixed scale keeps scaled units, as before)
set -x
while pgrep -f fb_scaledauto.sh >/dev/null; do sleep 10; done
O=/work/runs/s12
PY=/work/main/.venv/bin/python
for S in 1 2; do
  [ -f $O/fb-s$S/metrics.json ] && grep -q '"snn"' $O/fb-s$S/metrics.json && continue
  PYTHONPATH=/work/wt-units/src /usr/bin/time -v $PY -m dietsnn run --preset fmnist-best --seed $S --out $O/fb-s$S --quiet --resume > $O/fb-s$S.log 2>&1
done
echo CHAIN DONE
