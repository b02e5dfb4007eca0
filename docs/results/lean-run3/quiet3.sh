#!/bin/bash
# sequential, nothing else running: before ($1 tree) and after ($2 tree), interleaved
B=$1; A=$2; R=/work/runs/q3; cd $R
PY=/work/main/.venv/bin/python
lscpu > lscpu.txt
for pass in 1 2; do
for tag in before after; do
  [ $tag = before ] && d=$B || d=$A
  (cd $d && git log --oneline -1 && PYTHONPATH=$d/src $PY benchmarks/bench_steps.py --threads 2 --steps 30 --only snn) > bench_snn-$tag-$pass.txt 2>&1
done
done
for tag in before after; do
  [ $tag = before ] && d=$B || d=$A
  rm -rf $R/conv-$tag
  (cd $d && git log --oneline -1 && PYTHONPATH=$d/src /usr/bin/time -v $PY -m dietsnn convert /work/runs/ann --out $R/conv-$tag) > convert-$tag.txt 2>&1
done
for tag in after before; do
  [ $tag = before ] && d=$B || d=$A
  [ -f $R/run-$tag/report.md ] && continue
  (cd $d && git log --oneline -1 && PYTHONPATH=$d/src /usr/bin/time -v $PY -m dietsnn run --out $R/run-$tag --resume) > run-$tag.txt 2>&1
done
echo done > DONE
