#!/bin/bash
# dietsnn convert of one ANN, glibc's tcache off (the command's own setting) and on (glibc's
# default, 7 blocks, set explicitly), alternating; /usr/bin/time's peak and wall time per run
# usage: convert_ab.sh RUN/ann [ROUNDS], with dietsnn on the PATH
ANN=$1; ROUNDS=${2:-6}
for i in $(seq 1 $ROUNDS); do
  for mode in off on; do
    rm -rf /tmp/cab
    if [ $mode = on ]; then export GLIBC_TUNABLES=glibc.malloc.tcache_count=7; else unset GLIBC_TUNABLES; fi
    /usr/bin/time -f "tcache $mode round $i: %M KB peak, %e s wall, %U s user" dietsnn convert $ANN --out /tmp/cab 2>&1 | grep -E "tcache|test accuracy"
  done
done
