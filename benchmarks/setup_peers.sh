#!/usr/bin/env bash
# A separate environment for the peer libraries, sharing dietsnn's venv (and its torch) through a
# .pth file, so that the peers never enter the package's dependencies.
#
#   bash benchmarks/setup_peers.sh            # dietsnn's venv: ./.venv, else the main checkout's
#   DIETSNN_VENV=/path/to/.venv bash benchmarks/setup_peers.sh
#
# Norse is optional: installed with --no-deps too (with nir and nirtorch, which it imports at
# start), and left out (with a note) if it fails to install or to import. On a CUDA machine, SpikingJelly's CuPy backend needs `cupy-cuda12x` (or
# the build for the local CUDA): `.venv-bench/bin/pip install cupy-cuda12x`.
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
echo "$site" > "$bsite/dietsnn-venv.pth"
.venv-bench/bin/pip install -q --no-deps spikingjelly snntorch loguru
if .venv-bench/bin/pip install -q --no-deps norse nir nirtorch &&
        .venv-bench/bin/python -c "import norse" 2>/dev/null; then
    echo "norse installed"
else
    echo "norse not available (install or import failed): bench_train.py skips it"
fi
echo "peers installed: run .venv-bench/bin/python benchmarks/bench_train.py"
