#!/usr/bin/env bash
# The GPU training-step benchmark in one command, time-boxed (default 480 s: about 8 minutes on
# one H200), raw output kept under docs/results/:
#
#   bash benchmarks/gpu_bench.sh [OUTDIR]        # default docs/results/gpu-bench-<UTC date-time>
#   BUDGET=1500 bash benchmarks/gpu_bench.sh     # the whole grid
#   FIRST_MIN=0 BUDGET=300 bash ...              # a hard box (the goal configuration too)
#
# Needs a CUDA build of torch with triton (the [cuda] extra); the peers (SpikingJelly, snnTorch,
# Norse) where installed (PEERS=1 tries `pip install --no-deps` first), each skipped with a note
# where missing. Runs benchmarks/bench_train.py --device cuda:
#   1. the goal configuration, vgg9, batch 256, T=5, every contender of the CUDA default list
#      (dietsnn with the Triton kernels in fp32, bf16 and as a CUDA graph; dietsnn eager in fp32
#      and bf16; SpikingJelly's torch, Triton and CUDA neurons; snnTorch; Norse; the ANN on T x B
#      images and on B images T times, fp32 and bf16);
#   2. the grid vgg5/vgg9/vgg16 x batch 256/64 x T=5/2/10, most telling first, with the
#      contenders that set the targets (dietsnn-triton fp32 and bf16, SpikingJelly's Triton
#      neuron, the ANN on T x B images fp32 and bf16), until the time box is spent; the
#      configurations left out are listed in skipped.txt.
# Each configuration writes NAME.txt (the report), NAME.json (every raw measurement), NAME.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/results/gpu-bench-$(date -u +%Y%m%d-%H%M)}
PY=${PY:-python3}; BUDGET=${BUDGET:-480}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-${TMPDIR:-/tmp}/dietsnn-gpu-bench-triton}
t0=$(date +%s)
FIRST=1
left() { echo $(( BUDGET - ($(date +%s) - t0) )); }
if [ "${PEERS:-0}" = 1 ]; then
  $PY -m pip install -q --no-deps spikingjelly snntorch norse nir nirtorch loguru \
    >> "$OUT/log.txt" 2>&1 || echo "peers not installed (no index reachable?)" >> "$OUT/log.txt"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  lscpu | grep -E "Model name"
  echo "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src benchmarks || echo '+uncommitted changes')"
  $PY -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
  $PY -c "import triton; print('triton', triton.__version__)"
} > "$OUT/machine.txt" 2>&1

run() {  # NAME, then bench_train.py arguments; the first configuration runs whatever the box
  local name=$1 l
  shift
  l=$(left)
  if [ "$FIRST" = 1 ]; then
    FIRST=0; l=$(( l > ${FIRST_MIN:-600} ? l : ${FIRST_MIN:-600} ))
  elif [ "$l" -lt 30 ]; then
    echo "$name: left out (time box of $BUDGET s spent)" >> "$OUT/skipped.txt"; return
  fi
  timeout "$l" $PY benchmarks/bench_train.py --device cuda --compile-cache shared --threads 4 \
    --json "$OUT/$name.json" "$@" > "$OUT/$name.txt" 2> "$OUT/$name.log"
  echo "[$(( $(date +%s) - t0 )) s] $name: exit $?" | tee -a "$OUT/log.txt"
}

run vgg9-b256-t5 --arch vgg9 --batch 256 --timesteps 5 --steps 20 --rounds 1
GRID=dietsnn-triton,dietsnn-triton+bf16,spikingjelly-triton,ann-TxB,ann-TxB+bf16
for B in 256 64; do
  for T in 5 2 10; do
    for arch in vgg9 vgg16 vgg5; do
      [ "$arch-b$B-t$T" = vgg9-b256-t5 ] && continue
      run "$arch-b$B-t$T" --arch $arch --batch $B --timesteps $T --steps 10 --rounds 1 \
        --contenders $GRID --no-held --infer-batches 1
    done
  done
done
echo "[$(( $(date +%s) - t0 )) s] done: $OUT" | tee -a "$OUT/log.txt"
