#!/bin/bash
# dietsnn convert of the default ANN, BEFORE and AFTER trees interleaved, 5 runs each:
# wall seconds and peak resident memory (/usr/bin/time). Usage: interleave.sh BEFORE AFTER ANN
P=/work/main/.venv/bin/python
for i in 1 2 3 4 5; do
  for tree in "$1" "$2"; do
    rm -rf /tmp/cv-$i
    (cd "$tree" && PYTHONPATH="$tree/src" /usr/bin/time -f "$(git -C "$tree" rev-parse --short HEAD) run $i: %e s %M KB" \
      $P -m dietsnn convert "$3" --out /tmp/cv-$i --quiet 2>&1 | tail -1)
  done
done
