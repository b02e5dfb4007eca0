#!/bin/bash
# Cold and warm start of `dietsnn evaluate` and `dietsnn predict` in new processes: "cold" with
# an empty inductor cache (TORCHINDUCTOR_CACHE_DIR), "warm" a second process on the cache the
# first filled, "eager" with --no-compile. Usage (docs/BENCHMARKS.md, warm starts):
#   bash benchmarks/warm_start.sh RUN_OR_MODEL IMAGE [IMAGE ...]
set -euo pipefail
run=${1:?run directory or model.safetensors}; shift
py=${PYTHON:-python}
cache=$(mktemp -d)
t() { local s rc=0; s=$(date +%s.%N); "$@" > /dev/null 2>&1 || rc=$?
      python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f} s (exit {sys.argv[3]})')" "$s" "$(date +%s.%N)" "$rc"; }
for round in 1 2; do
  rm -rf "$cache"; mkdir -p "$cache"
  echo "round $round evaluate cold  $(TORCHINDUCTOR_CACHE_DIR=$cache t $py -m dietsnn evaluate "$run" --quiet)"
  echo "round $round evaluate warm  $(TORCHINDUCTOR_CACHE_DIR=$cache t $py -m dietsnn evaluate "$run" --quiet)"
  echo "round $round evaluate eager $(TORCHINDUCTOR_CACHE_DIR=$cache t $py -m dietsnn evaluate "$run" --quiet --no-compile)"
  rm -rf "$cache"; mkdir -p "$cache"
  echo "round $round predict cold   $(TORCHINDUCTOR_CACHE_DIR=$cache t $py -m dietsnn predict "$run" "$@")"
  echo "round $round predict warm   $(TORCHINDUCTOR_CACHE_DIR=$cache t $py -m dietsnn predict "$run" "$@")"
  echo "round $round predict eager  $(TORCHINDUCTOR_CACHE_DIR=$cache t $py -m dietsnn predict "$run" "$@" --no-compile)"
done
rm -rf "$cache"
