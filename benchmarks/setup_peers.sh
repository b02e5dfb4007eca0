#!/usr/bin/env bash
# A separate environment for the peer libraries, sharing dietsnn's venv (and its torch) through a
# .pth file, so that the peers never enter the package's dependencies. Used by the benchmarks
# (bench_train.py, bench_convert.py) and by the NIR import tests (tests/test_nir_peers.py,
# marked `peers`):
#   .venv-bench/bin/python -m pytest -m peers
# The peers are pure-Python wheels installed without their dependencies (torch comes from
# dietsnn's venv; torchvision is not installed: it does not import beside a CPU-only torch).
#
#   bash benchmarks/setup_peers.sh            # dietsnn's venv: ./.venv, else the main checkout's
#   DIETSNN_VENV=/path/to/.venv bash benchmarks/setup_peers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${DIETSNN_VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then  # a git worktree: use the main checkout's venv
    main=$(dirname "$(git rev-parse --path-format=absolute --git-common-dir)")
    venv="$main/.venv"
fi
python3 -m venv .venv-bench
site=$("$venv/bin/python" -c "import site; print(site.getsitepackages()[0])")
bsite=$(.venv-bench/bin/python -c "import site; print(site.getsitepackages()[0])")
# addsitedir, not a plain path line: it also runs dietsnn's venv's own .pth files (the
# editable install of dietsnn among them)
echo "import site; site.addsitedir('$site')" > "$bsite/dietsnn-venv.pth"
# the versions the NIR tests and benchmarks were written against; nir comes from the test extra
.venv-bench/bin/pip install -q --disable-pip-version-check --no-deps \
  snntorch==1.0.0 spikingjelly==2.0.0 norse==1.1.0 nirtorch==2.6 loguru==0.7.3
echo "peers installed: run .venv-bench/bin/python benchmarks/bench_train.py"
echo "or the NIR import tests: .venv-bench/bin/python -m pytest -m peers"
