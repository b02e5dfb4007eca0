"""benchmarks/bench_train.py: the summary's reference points, the report, a tiny worker, skips."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_train", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_train"] = mod  # dataclasses look the module up
    spec.loader.exec_module(mod)
    return mod


def _rec(ms: float, ips: float | None, peak: float) -> dict:
    return {"train_ms": ms, "train_ms_rounds": [ms], "first_step_s_rounds": [1.0],
            "infer_ips": ips, "peak_rss_mb": peak, "peak_above_rest_mb": peak / 2,
            "held_mb": 1.0, "version": "x"}


def test_summary_names_fastest_peer_and_dense_limit(bench: ModuleType) -> None:
    results = {"dietsnn": _rec(80, 900, 100), "spikingjelly": _rec(120, 400, 400),
               "snntorch": _rec(100, 450, 300), "ann-TxB": _rec(110, 500, 200),
               "ann-BxT": _rec(90, 600, 150)}
    s = bench.summarise(results, "cpu")
    ref = s["reference"]
    assert ref["fastest_peer"] == "snntorch"
    assert ref["fastest_peer_inference"] == "snntorch"
    assert ref["dense_limit"] == "ann-BxT"  # the faster of the two ANN forms
    assert ref["memory_reference"] == "spikingjelly"
    assert sorted(ref["peers_ran"]) == ["snntorch", "spikingjelly"]
    row = {r["contender"]: r for r in s["rows"]}["dietsnn"]
    assert row["train_vs_fastest_peer"] == pytest.approx(0.8)
    assert row["train_vs_dense_limit"] == pytest.approx(80 / 90)
    assert row["infer_vs_fastest_peer"] == pytest.approx(2.0)
    assert row["peak_vs_spikingjelly"] == pytest.approx(0.25)

    meta = {"machine": bench.machine_info("cpu", 2),
            "settings": {"arch": "vgg_small", "timesteps": 5, "batch": 64, "steps": 1,
                         "rounds": 1, "compile_cache": "fresh"}}
    out = io.StringIO()
    bench.print_report(meta, s, {"norse": "norse not importable"}, out)
    text = out.getvalue()
    for name in ("dietsnn", "spikingjelly", "snntorch", "ann-TxB", "ann-BxT", "CPU:", "avx2",
                 "fastest peer (training): snntorch", "dense limit: ann-BxT",
                 "norse: skipped"):
        assert name in text
    assert "train / fastest peer" in text and "NOT met" not in text  # every target met here


def test_summary_without_peers_or_dense(bench: ModuleType) -> None:
    s = bench.summarise({"dietsnn": _rec(80, 900, 100)}, "cpu")
    assert s["reference"]["fastest_peer"] is None and s["reference"]["dense_limit"] is None
    assert s["rows"][0]["train_vs_fastest_peer"] is None


def test_tiny_worker_and_skip(bench: ModuleType) -> None:
    threads = torch.get_num_threads()
    try:
        args = bench.parse_args(["--worker", "ann-BxT", "--timesteps", "2", "--batch", "2",
                                 "--steps", "1", "--infer-batch", "2", "--infer-batches", "1",
                                 "--threads", "1"])
        rec = bench.run_worker(args)
        assert rec["train_ms"] > 0 and rec["infer_ips"] > 0 and len(rec["first_steps_s"]) == 3
        json.dumps(rec)
        args.worker = "spikingjelly-triton"  # a GPU backend: skipped on the CPU
        with pytest.raises(bench.Skip):
            bench.run_worker(args)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_cuda_mode_without_gpu_is_skipped(bench: ModuleType, capsys: pytest.CaptureFixture,
                                          tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert bench.main(["--device", "cuda", "--contenders", "dietsnn", "--json", str(out)]) == 0
    assert "no CUDA device" in capsys.readouterr().out
    assert "skipped_run" in json.loads(out.read_text())


def test_contender_names_and_modifiers(bench: ModuleType) -> None:
    assert bench.split_name("dietsnn-triton+bf16+graph") == ("dietsnn-triton", True, True)
    assert bench.split_name("dietsnn-bf16") == ("dietsnn", True, False)  # the older name
    assert bench.split_name("ann-TxB") == ("ann-TxB", False, False)
    for bad in ("dietsnn+fp8", "nope", "ann-TxB+bf16+bf16"):
        with pytest.raises(ValueError):
            bench.split_name(bad)
    for default in (bench.DEFAULT_CPU, bench.DEFAULT_CUDA):
        assert all(bench._valid(n) for n in default.split(","))
    cuda = bench.DEFAULT_CUDA.split(",")  # the GPU matrix: ours, eager, the peers, dense
    for name in ("dietsnn-triton", "dietsnn-triton+bf16", "dietsnn-triton+graph",
                 "dietsnn-eager", "spikingjelly-triton", "spikingjelly-cuda", "snntorch",
                 "ann-TxB", "ann-TxB+bf16", "ann-BxT", "ann-BxT+bf16"):
        assert name in cuda
    assert bench.main(["--contenders", "dietsnn,dietsnn+fp8"]) == 2


def test_gpu_contenders_skip_on_the_cpu(bench: ModuleType) -> None:
    threads = torch.get_num_threads()
    try:
        for name in ("dietsnn-triton", "ann-TxB+graph"):
            args = bench.parse_args(["--worker", name, "--timesteps", "2", "--batch", "2",
                                     "--steps", "1", "--threads", "1"])
            with pytest.raises(bench.Skip, match="--device cuda"):
                bench.run_worker(args)
    finally:
        torch.set_num_threads(threads)


def test_dense_limit_per_precision(bench: ModuleType) -> None:
    """bf16 rows are held against the bf16 ANN, fp32 rows against the fp32 one; the GPU
    targets of dietsnn-triton are printed."""
    results = {"dietsnn-triton": _rec(30, None, 100), "dietsnn-triton+bf16": _rec(20, None, 80),
               "spikingjelly-triton": _rec(60, None, 300), "ann-TxB": _rec(25, None, 50),
               "ann-TxB+bf16": _rec(10, None, 40), "ann-BxT": _rec(40, None, 50)}
    s = bench.summarise(results, "cuda")
    ref, rows = s["reference"], {r["contender"]: r for r in s["rows"]}
    assert ref["dense_limit"] == "ann-TxB" and ref["dense_limit_bf16"] == "ann-TxB+bf16"
    assert ref["fastest_spikingjelly"] == "spikingjelly-triton"
    assert rows["dietsnn-triton"]["train_vs_dense_limit"] == pytest.approx(30 / 25)
    assert rows["dietsnn-triton+bf16"]["train_vs_dense_limit"] == pytest.approx(20 / 10)
    assert rows["dietsnn-triton"]["train_vs_fastest_spikingjelly"] == pytest.approx(0.5)
    meta = {"machine": {**bench.machine_info("cpu", 2), "device": "cuda"},
            "settings": {"arch": "vgg9", "timesteps": 5, "batch": 256, "steps": 1,
                         "rounds": 1, "compile_cache": "shared"}}
    out = io.StringIO()
    bench.print_report(meta, s, {}, out)
    text = out.getvalue()
    assert "dietsnn-triton against the GPU engine's targets" in text
    assert "(bf16: ann-TxB+bf16)" in text and "NOT met" in text  # 1.2 > 1.5 is met, 2.0 not


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_gpu_bench_script_without_gpu(tmp_path: Path) -> None:
    """benchmarks/gpu_bench.sh: the machine file, the goal configuration's report (here: no
    CUDA device, nothing run), and the grid configurations the time box left out, listed."""
    import os
    import subprocess

    script = SCRIPT.parent / "gpu_bench.sh"
    env = {**os.environ, "BUDGET": "1", "PY": sys.executable}
    res = subprocess.run(["bash", str(script), str(tmp_path)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "torch" in (tmp_path / "machine.txt").read_text()
    assert "skipped_run" in json.loads((tmp_path / "vgg9-b256-t5.json").read_text())
    left = (tmp_path / "skipped.txt").read_text().splitlines()
    assert len(left) == 17 and left[0].startswith("vgg16-b256-t5: left out")
