#!/usr/bin/env bash
# A separate environment for the peer libraries, sharing dietsnn's venv (and its torch) through a
# .pth file, so that the peers never enter the package's dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-bench
site=$(.venv/bin/python -c "import site; print(site.getsitepackages()[0])")
bsite=$(.venv-bench/bin/python -c "import site; print(site.getsitepackages()[0])")
echo "$site" > "$bsite/dietsnn-venv.pth"
.venv-bench/bin/pip install -q --no-deps spikingjelly snntorch loguru
echo "peers installed: run .venv-bench/bin/python benchmarks/bench_train.py"
