#!/bin/bash
# Cold and warm start of `dietsnn evaluate` and `dietsnn predict` in new processes: "cold" with
# empty caches (DIETSNN_CACHE_DIR: the native kernels are built; TORCHINDUCTOR_CACHE_DIR),
# "warm" a second process on the caches the first filled, "eager" with --no-compile (plain
# PyTorch ops, nothing built or loaded). Usage (docs/BENCHMARKS.md, warm starts):
#   bash benchmarks/warm_start.sh RUN_OR_MODEL IMAGE [IMAGE ...]
set -euo pipefail
run=${1:?run directory or model.safetensors}; shift
py=${PYTHON:-python}
cache=$(mktemp -d)
export DIETSNN_CACHE_DIR=$cache/dietsnn TORCHINDUCTOR_CACHE_DIR=$cache/inductor
t() { local s rc=0; s=$(date +%s.%N); "$@" > /dev/null 2>&1 || rc=$?
      python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f} s (exit {sys.argv[3]})')" "$s" "$(date +%s.%N)" "$rc"; }
for round in 1 2 3; do
  rm -rf "$cache"; mkdir -p "$cache"
  echo "round $round evaluate cold  $(t $py -m dietsnn evaluate "$run" --quiet)"
  echo "round $round evaluate warm  $(t $py -m dietsnn evaluate "$run" --quiet)"
  echo "round $round evaluate eager $(t $py -m dietsnn evaluate "$run" --quiet --no-compile)"
  rm -rf "$cache"; mkdir -p "$cache"
  echo "round $round predict cold   $(t $py -m dietsnn predict "$run" "$@")"
  echo "round $round predict warm   $(t $py -m dietsnn predict "$run" "$@")"
  echo "round $round predict eager  $(t $py -m dietsnn predict "$run" "$@" --no-compile)"
done
rm -rf "$cache"
