#!/bin/bash
# Deep-net DIET ablation on one GPU, and the default run in fp32 and bf16.
# Usage: DATA=folder-with-the-fashion-mnist-gz-files benchmarks/gpu_ablation.sh OUTDIR [smoke]
# (docs/RESULTS.md sections 4.2 and 8; the GPU step timings come from benchmarks/gpu_steps.py)
# The vgg9 ANN first; then side by side: the grid in 4 processes (seeds 0, 1, 2 of (b)-(d), and
# (a)), each in its own folder (a folder is locked to one process), merged afterwards; and
# `dietsnn run` in fp32 and bf16. Each stage is time-boxed so the results are always packed.
OUT=${1:?}; SMOKE=${2:-}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
PY=${PY:-python3}; DEV=${DEV:-cuda}
D=${DATA:-$PWD/.gpu/fashion-mnist}; R=${R:-/tmp/r}; L=$R/logs; mkdir -p $R $L $OUT
LOG=$OUT/log.txt
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 ))s] $*" | tee -a $LOG; }
if [ -n "$SMOKE" ]; then
  LIM="--limit-train 1200 --limit-test 300 --val-size 300"; EP="--epochs 1"; RT="--rate-timesteps 3"
  AB="--timesteps 1,2 --train-subset 256 --calib-size 64 --calib-timesteps 10 --scales 0.5,1.0"
  RUN="--ann-epochs 1 --sweep-timesteps 1,2 --calib-timesteps 10"; TA=600; TB=900; TD=5
else
  LIM=""; EP="--epochs 10"; AB=""; RT=""; RUN=""; TA=${TA:-150}; TB=${TB:-330}; TD=${TD:-45}
fi
el "start"; { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $PY -c "import torch,sys;print(sys.version, torch.__version__, torch.cuda.is_available())"; lscpu | grep -E "Model name"; } >> $LOG 2>&1
el "ann"; timeout $TA $PY -m dietsnn train-ann --arch vgg9 --optimizer adam --lr 1e-3 --weight-decay 0 $EP --device $DEV --data-dir $D $LIM --out $R/ann9 --quiet > $L/ann9.log 2>&1; el "ann rc=$?"
ab() { timeout $TB $PY -m dietsnn ablation $R/ann9 --device $DEV --no-compile --data-dir $D $LIM $AB --quiet "$@"; }
el "ablation and runs"
ab --out $R/abl9-s0 --variants bcd --seeds 0 > $L/s0.log 2>&1 &
ab --out $R/abl9-s1 --variants bcd --seeds 1 > $L/s1.log 2>&1 &
ab --out $R/abl9-s2 --variants bcd --seeds 2 > $L/s2.log 2>&1 &
ab --out $R/abl9-a --variants a $RT > $L/a.log 2>&1 &
for p in fp32 bf16; do
  timeout $TB $PY -m dietsnn run --device $DEV --no-compile --precision $p --data-dir $D $LIM $RUN --out $R/run-$p --quiet > $L/run-$p.log 2>&1 &
done
wait; el "ablation and runs done"
tar czf $OUT/results.tgz --exclude=runs --exclude='*.safetensors' --exclude='*.pt' -C $R logs ann9 abl9-s0 abl9-s1 abl9-s2 abl9-a run-fp32 run-bf16 2>>$LOG; el "packed"
if [ -f benchmarks/gpu_steps.py ]; then el "bench"; timeout $TD $PY benchmarks/gpu_steps.py $DEV > $OUT/bench.txt 2>&1; el "bench rc=$?"; fi
el "done"
