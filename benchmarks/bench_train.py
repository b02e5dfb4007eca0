r"""Training-step benchmark: dietsnn, as a user calls it, against its peers and the dense limit.

Every contender trains the same network (default `vgg_small`, `--arch vgg5` for the larger
size) from the same initial weights (`torch.manual_seed(0)`, then `dietsnn.build_ann`), T=5,
batch 64, float32 unless named otherwise, Adam(lr=1e-4), random inputs, a fixed thread count.

Contenders (`--contenders`, comma-separated):

- `dietsnn`: the library defaults, the documented user code: `snn =
  dietsnn.ann_to_snn(dietsnn.build_ann(arch), T)`, `torch.optim.Adam(snn.parameters(), 1e-4)`,
  forward / cross_entropy / backward / step inside `with dietsnn.use_engine():` (the default
  engine and dietsnn's process settings, among them glibc's keep-freed-memory tuning).
- `dietsnn-eager`: the same inside `dietsnn.use_engine("eager")` (the fallback without a C
  compiler).
- `dietsnn-compile`: the same inside `dietsnn.use_engine("compile")` (torch.compile's kernels;
  not in the default list).
- `dietsnn-notune`: the same loop without `use_engine` (the default engine, no allocator
  tuning): the allocator tuning measured both ways.
- `dietsnn-bf16`: the library defaults, the forward under `torch.autocast(bfloat16)` (the same
  as `dietsnn+bf16`).
- `dietsnn-triton` (CUDA only): the same with the neurons and the fused "LIF, dropout, pooling"
  blocks run by the Triton kernels (`dietsnn.functional.triton_lif`, the `[cuda]` extra),
  served where dietsnn looks up its native kernels; the record counts the kernel calls
  (`triton_calls`), and a dietsnn whose neurons do not reach them is skipped with a note.
- Any contender `NAME+bf16`: its forward under bf16 autocast (float32 master weights);
  `NAME+graph` (CUDA only): warm-up on a side stream, then the whole training step (forward,
  backward, `Adam(capturable=True)` step) captured once as a CUDA graph and replayed; a
  capture that fails is reported as skipped with the reason.
- `spikingjelly`: multi-step `ParametricLIFNode` (learned tau), soft reset, ATan surrogate, its
  PyTorch path. On CUDA also `spikingjelly-triton` (its Triton kernels), `spikingjelly-cupy`
  (the `backend="cupy"` of SpikingJelly < 2.0) and `spikingjelly-cuda` (the native CUDA kernels
  that replaced CuPy in 2.0, when built); each is skipped with a note where unavailable.
- `snntorch`: `Leaky(learn_beta, learn_threshold, subtract reset)`, the usual per-step loop.
- `norse`: `LIFBoxCell` (learned tau_mem_inv and threshold, subtract reset), per-step loop.
- `ann-TxB`: the same layers as an ANN (ReLU) on the T*B images; `ann-BxT`: the ANN on the B
  images, T times, outputs summed. The "dense limit" is the faster of the two.

Every contender runs in a fresh process of its own (`--worker NAME`, one JSON line) in every
round, and rounds are interleaved with the order rotated each round, so that no library's
allocator setting or compile cache in one process touches another, and machine noise hits all
alike. Each worker: build, 3 training steps (the first builds or loads dietsnn's native kernels,
or compiles) after which the peak memory is
read (VmHWM: the whole process's peak RSS, and its peak above the RSS just before the first
step; on CUDA `torch.cuda.max_memory_allocated`), more warm-up steps, `--steps` timed steps
(median), the memory held between forward and backward, then inference (no_grad, eval, batch
256) in images/s. By default every worker gets an empty inductor cache and an empty dietsnn
kernel cache of its own (`--compile-cache fresh`), so "compile included" is literal in every
round. The workers run
with the environment as it is (no MALLOC_* tuning of the benchmark's own: the allocator is what
each library leaves it); a MALLOC_* variable set by the caller is reported.

Printed: the CPU model and its flags (AVX2, AVX-512, AVX512-BF16, AMX), torch, threads, device,
arch, T, B; a table with, per contender, train ms/step and its ratio to the fastest peer and to
the dense limit (the ANN at the same precision), inference images/s and its ratio to the
fastest peer's, peak RSS (whole process, and above rest; on CUDA the peak GPU memory) and their
ratios to SpikingJelly's, the memory held for backward, the first step's seconds (compile);
each contender's version and engine (dietsnn's backend and whether the allocator tuning was
on; SpikingJelly's implementation); the skipped contenders and why; the library defaults
against the engine's targets (docs/BENCHMARKS.md), and on CUDA dietsnn-triton against the GPU
targets. `--json PATH` writes the same and every raw measurement.

Layout: this script is the harness: the command line, the rounds of fresh worker processes
(`spawn`, `main`; a worker is this script again, `--worker NAME`). Beside it,
`bench_train_worker.py` measures one contender inside its worker (`run_worker`: training steps,
memory, inference) and `bench_train_report.py` aggregates the rounds and prints the report and
the targets. The contenders, each framework's network and its forward, live in the package
`benchmarks/contenders/`: `__init__.py` (the names, `Contender`, `Skip`, `build`), `dietsnn.py`
(with `_triton_engine`, the Triton routing), `spikingjelly.py`, `snntorch.py`, `norse.py` and
`dense.py` (the ANN limits).

Commands (peers: `bash benchmarks/setup_peers.sh` first; missing peers are skipped):

    # CPU, the published run (quiet machine):
    PYTHONPATH=src .venv-bench/bin/python benchmarks/bench_train.py --steps 10 --rounds 5 \
        --threads 2 --json bench-cpu-vgg_small.json
    PYTHONPATH=src .venv-bench/bin/python benchmarks/bench_train.py --arch vgg5 --steps 10 \
        --rounds 5 --threads 2 --json bench-cpu-vgg5.json
    # step time against T (dietsnn, fresh process per T, interleaved):
    PYTHONPATH=src .venv-bench/bin/python benchmarks/bench_train.py --contenders dietsnn \
        --scaling --steps 10 --rounds 3
    # GPU (peers' GPU kernels as contenders; skipped, with a note, where there is no GPU), with
    # the machine's own CUDA build of torch and the peers beside it (pure Python, no deps; for
    # SpikingJelly < 2.0's CuPy backend also cupy-cuda12x/13x):
    python3 -m pip install --no-deps spikingjelly snntorch norse nir nirtorch loguru
    PYTHONPATH=src python3 benchmarks/bench_train.py --device cuda --steps 20 --rounds 5 \
        --json bench-cuda.json
    # GPU, the whole matrix (vgg5/vgg9/vgg16, batch 64 and 256, T = 2, 5, 10, fp32 and bf16,
    # every contender) time-boxed to about 8 minutes, raw output under docs/results/:
    bash benchmarks/gpu_bench.sh
    # a quick check that everything runs:
    PYTHONPATH=src .venv-bench/bin/python benchmarks/bench_train.py --steps 2 --rounds 1 \
        --batch 8 --infer-batch 16 --infer-batches 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
if not any(os.path.isdir(os.path.join(p, "dietsnn"))  # this checkout's dietsnn, unless
           for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p):  # PYTHONPATH has one
    sys.path.insert(0, os.path.join(HERE, "..", "src"))
if HERE not in sys.path:  # the modules beside this script (contenders/, the worker, the report),
    sys.path.insert(0, HERE)  # also when it is loaded by its path (the tests) rather than run
# the contenders, the worker and the report; re-exported here, for the tests and for users
from bench_train_report import (  # noqa: E402, F401
    CPU_FLAGS,
    _fmt,
    _median,
    aggregate,
    machine_info,
    print_report,
    print_scaling,
    summarise,
)
from bench_train_worker import WARMUP_MEMORY_STEPS, run_worker  # noqa: E402, F401
from contenders import (  # noqa: E402, F401
    DENSE,
    DIETSNN,
    KNOWN,
    MODIFIERS,
    PEERS,
    SJ,
    C,
    Contender,
    Skip,
    build,
    split_name,
)
from contenders.dietsnn import _triton_engine  # noqa: E402, F401

DEFAULT_CPU = ("dietsnn,dietsnn-eager,dietsnn-notune,dietsnn-bf16,spikingjelly,snntorch,norse,"
               "ann-TxB,ann-BxT")
DEFAULT_CUDA = ("dietsnn,dietsnn-triton,dietsnn-triton+bf16,dietsnn-triton+graph,dietsnn-eager,"
                "dietsnn-eager+bf16,spikingjelly,spikingjelly-triton,spikingjelly-cupy,"
                "spikingjelly-cuda,snntorch,norse,ann-TxB,ann-TxB+bf16,ann-BxT,ann-BxT+bf16")


# --------------------------------------------------------------------------------------------
# the parent: rounds of fresh processes


def spawn(name: str, args: argparse.Namespace, timesteps: int, infer: bool = True,
          held: bool = True) -> dict[str, Any]:
    """Run one contender in a fresh process; its record, or {"skipped"/"failed": why}."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--device", args.device,
           "--arch", args.arch, "--timesteps", str(timesteps), "--batch", str(args.batch),
           "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--infer-batch", str(args.infer_batch),
           "--infer-batches", str(args.infer_batches)]
    if not infer:
        cmd.append("--no-infer")
    if not held or args.no_held:
        cmd.append("--no-held")
    env = dict(os.environ)
    with contextlib.ExitStack() as stack:
        if args.compile_cache == "fresh":  # empty inductor, Triton and dietsnn caches of its own
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-inductor-"))
            env["TORCHINDUCTOR_CACHE_DIR"] = tmp
            env["TRITON_CACHE_DIR"] = os.path.join(tmp, "triton")
            env["DIETSNN_CACHE_DIR"] = os.path.join(tmp, "dietsnn")
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                 timeout=args.worker_timeout)
        except subprocess.TimeoutExpired:
            return {"worker": name, "failed": f"timed out after {args.worker_timeout} s"}
    for line in reversed(res.stdout.strip().splitlines()):
        if line.startswith('{"worker"'):
            return json.loads(line)
    tail = " | ".join(res.stderr.strip().splitlines()[-3:])
    return {"worker": name, "failed": f"exit {res.returncode}: {tail}"}


def run_scaling(args: argparse.Namespace, ts: list[int]) -> dict[int, dict[str, Any]]:
    """dietsnn's step time against T: a fresh process per T, the T values interleaved."""
    recs: dict[int, list[dict[str, Any]]] = {t: [] for t in ts}
    for r in range(args.rounds):
        k = r % len(ts)
        for t in ts[k:] + ts[:k]:
            rec = spawn("dietsnn", args, t, infer=False, held=False)
            if "step_s" in rec:
                recs[t].append(rec)
            print(f"scaling round {r + 1}/{args.rounds}: T={t} "
                  f"{_fmt(rec.get('train_ms'), '.1f')} ms/step {rec.get('failed', '')}",
                  file=sys.stderr)
    return {t: aggregate(v) for t, v in recs.items() if v}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="vgg_small", help="vgg_small (default) or vgg5, ...")
    p.add_argument("--timesteps", type=int, default=5)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="timed training steps per worker")
    p.add_argument("--warmup", type=int, default=WARMUP_MEMORY_STEPS,
                   help=f"warm-up steps before timing (at least {WARMUP_MEMORY_STEPS}: the "
                        "memory is read after those; the first compiles)")
    p.add_argument("--rounds", type=int, default=5,
                   help="each contender once per round, in a fresh process, order rotated")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--contenders", default=None,
                   help=f"comma-separated from {', '.join(KNOWN)}; default on CPU: "
                        f"{DEFAULT_CPU}; on CUDA: {DEFAULT_CUDA}")
    p.add_argument("--infer-batch", type=int, default=256)
    p.add_argument("--infer-batches", type=int, default=3, help="timed inference batches")
    p.add_argument("--compile-cache", choices=("fresh", "shared"), default="fresh",
                   help="fresh: every worker starts with empty inductor and dietsnn caches (compile "
                        "included in every round); shared: the user's cache (warm starts)")
    p.add_argument("--scaling", action="store_true",
                   help="also dietsnn's step time against T (see --scaling-timesteps)")
    p.add_argument("--scaling-timesteps", default="1,2,5,10,20")
    p.add_argument("--json", help="write the machine, settings, raw and summarised results here")
    p.add_argument("--worker-timeout", type=int, default=3600, help="seconds per worker")
    p.add_argument("--no-held", action="store_true", help="skip the held-for-backward measure")
    p.add_argument("--no-infer", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker", help=argparse.SUPPRESS)  # child mode: one contender, one JSON line
    args = p.parse_args(argv)
    if args.warmup < WARMUP_MEMORY_STEPS:
        p.error(f"--warmup must be at least {WARMUP_MEMORY_STEPS}")
    if args.steps < 1 or args.rounds < 1 or args.infer_batches < 1:
        p.error("--steps, --rounds and --infer-batches must be at least 1")
    return args


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Libraries' prints go to stderr, so the worker's stdout is its one JSON line."""
    saved = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = saved


def _valid(name: str) -> bool:
    try:
        split_name(name)
    except ValueError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        try:
            with _stdout_to_stderr():
                rec = run_worker(args)
        except Skip as e:
            rec = {"worker": args.worker, "skipped": str(e)}
        print(json.dumps(rec))
        return 0

    names = (args.contenders or (DEFAULT_CUDA if args.device == "cuda" else DEFAULT_CPU))
    names_l = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names_l if not _valid(n)]
    if unknown:
        print(f"unknown contenders: {', '.join(unknown)} (known: {', '.join(KNOWN)}, each "
              f"optionally +{' +'.join(MODIFIERS)})", file=sys.stderr)
        return 2
    meta: dict[str, Any] = {"machine": machine_info(args.device, args.threads),
                            "settings": {k: v for k, v in vars(args).items()
                                         if k not in ("worker", "no_infer", "json")}}
    meta["settings"]["contenders"] = names_l
    if args.device == "cuda" and not torch.cuda.is_available():
        why = (f"--device cuda: no CUDA device here (torch {torch.__version__}, built with CUDA "
               f"{torch.version.cuda}); nothing run")
        print(why)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({**meta, "skipped_run": why}, f, indent=1)
        return 0

    raw: dict[str, list[dict[str, Any]]] = {n: [] for n in names_l}
    skipped: dict[str, str] = {}
    t_start = time.perf_counter()
    for r in range(args.rounds):
        k = r % len(names_l)
        for name in names_l[k:] + names_l[:k]:
            if name in skipped:
                continue
            rec = spawn(name, args, args.timesteps)
            if "skipped" in rec or "failed" in rec:
                skipped[name] = rec.get("skipped") or f"failed: {rec['failed']}"
                print(f"round {r + 1}/{args.rounds}: {name}: {skipped[name]}", file=sys.stderr)
                continue
            raw[name].append(rec)
            print(f"round {r + 1}/{args.rounds}: {name:<20} {rec['train_ms']:8.1f} ms/step  "
                  f"first step {rec['first_steps_s'][0]:.1f} s  "
                  f"({time.perf_counter() - t_start:.0f} s so far)", file=sys.stderr)
    results = {n: aggregate(v) for n, v in raw.items() if v and n not in skipped}
    summary = summarise(results, args.device)
    print_report(meta, summary, skipped)
    scal = None
    if args.scaling:
        ts = [int(t) for t in args.scaling_timesteps.split(",")]
        scal = run_scaling(args, ts)
        if scal:
            print_scaling(scal)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**meta, **summary, "skipped": skipped, "raw": raw,
                       "scaling": scal}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
