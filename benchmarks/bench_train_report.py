"""The report of `benchmarks/bench_train.py`: the machine, the rounds aggregated, the reference
points (fastest peer, dense limit, SpikingJelly's memory), the table and the targets."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import sys
from typing import Any

import torch
from contenders import DENSE, PEERS, SJ, split_name

import dietsnn
from dietsnn.functional import native

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def machine_info(device: str, threads: int) -> dict[str, Any]:
    model, flags = platform.processor() or "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                k = k.strip()
                if k == "model name" and model in ("?", "", "x86_64"):
                    model = v.strip()
                elif k in ("flags", "Features") and not flags:
                    flags = set(v.split())
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": model, "cpus": os.cpu_count(),
        "cpu_flags": {f: f in flags for f in CPU_FLAGS},
        "torch_cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")(),
        "torch": torch.__version__, "python": platform.python_version(),
        "libc": " ".join(platform.libc_ver()), "threads": threads, "device": device,
        "c_compiler": native.compiler(),
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
        "dietsnn": os.path.dirname(os.path.abspath(dietsnn.__file__)),
    }
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    with contextlib.suppress(OSError, subprocess.SubprocessError):  # dietsnn's checkout
        git = ["git", "-C", info["dietsnn"]]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "."], capture_output=True,
                               text=True).stdout.strip()
        info["commit"] = (head + ("+uncommitted changes" if dirty else "")) or None
    return info


def _median(vals: list[Any]) -> float | None:
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One contender's rounds: step times pooled (median), the rest median over rounds."""
    steps = [t for r in records for t in r.get("step_s", [])]
    out: dict[str, Any] = {
        "version": records[0].get("version"),
        "train_ms": statistics.median(steps) * 1000 if steps else None,
        "train_ms_rounds": [r.get("train_ms") for r in records],
        "first_step_s_rounds": [r.get("first_steps_s", [None])[0] for r in records],
    }
    for k in ("infer_ips", "peak_rss_mb", "peak_above_rest_mb", "rss_rest_mb", "held_mb",
              "cuda_peak_mb", "cuda_peak_above_rest_mb"):
        out[k] = _median([r.get(k) for r in records])
    for k in ("backend", "implementation", "allocator_tuned", "note", "triton_calls"):
        if k in records[0]:
            out[k] = records[0][k]
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarise(results: dict[str, dict[str, Any]], device: str) -> dict[str, Any]:
    """Reference points (fastest peer, dense limit, SpikingJelly's peak) and per-row ratios."""
    ran = {k: v for k, v in results.items() if v.get("train_ms") is not None}

    def fastest_of(names: list[str]) -> str | None:
        return min(names, key=lambda k: ran[k]["train_ms"]) if names else None

    peers = [k for k in ran if split_name(k)[0] in PEERS]
    fastest = fastest_of(peers)
    fastest_sj = fastest_of([k for k in peers if split_name(k)[0] in SJ])
    inf_peers = [k for k in peers if ran[k].get("infer_ips")]
    fastest_inf = max(inf_peers, key=lambda k: ran[k]["infer_ips"]) if inf_peers else None
    # the dense limit of each precision: the faster ANN form at that precision
    dense = {bf: fastest_of([k for k in ran if split_name(k)[0] in DENSE
                             and split_name(k)[1] == bf]) for bf in (False, True)}
    dense_name = dense[False]
    mem_key = "cuda_peak_mb" if device == "cuda" else "peak_rss_mb"
    above_key = "cuda_peak_above_rest_mb" if device == "cuda" else "peak_above_rest_mb"
    sj = [k for k in SJ if k in ran and ran[k].get(mem_key)]
    sj_ref = sj[0] if sj else None
    ref = {
        "fastest_peer": fastest, "fastest_peer_inference": fastest_inf,
        "dense_limit": dense_name, "dense_limit_bf16": dense[True],
        "fastest_spikingjelly": fastest_sj, "memory_reference": sj_ref, "memory_key": mem_key,
        "memory_above_key": above_key,
        "peers_ran": peers,
    }
    rows = []
    for k, v in ran.items():
        dn = dense[split_name(k)[1]] or dense_name  # the same precision's, where it ran
        rows.append({
            "contender": k, **v,
            "train_vs_fastest_peer": _ratio(v["train_ms"], fastest and ran[fastest]["train_ms"]),
            "train_vs_fastest_spikingjelly": _ratio(v["train_ms"],
                                                    fastest_sj and ran[fastest_sj]["train_ms"]),
            "train_vs_dense_limit": _ratio(v["train_ms"], dn and ran[dn]["train_ms"]),
            "infer_vs_fastest_peer": _ratio(v.get("infer_ips"),
                                            fastest_inf and ran[fastest_inf]["infer_ips"]),
            "peak_vs_spikingjelly": _ratio(v.get(mem_key), sj_ref and ran[sj_ref][mem_key]),
            "peak_above_rest_vs_spikingjelly": _ratio(v.get(above_key),
                                                      sj_ref and ran[sj_ref].get(above_key)),
        })
    return {"reference": ref, "rows": rows}


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_report(meta: dict[str, Any], summary: dict[str, Any],
                 skipped: dict[str, str], out: Any = sys.stdout) -> None:
    m, ref = meta["machine"], summary["reference"]
    flags = ", ".join(f"{f} {'yes' if ok else 'no'}" for f, ok in m["cpu_flags"].items())
    p = print
    p(f"\nCPU: {m['cpu']} ({m['cpus']} CPUs; {flags}; torch sees {m['torch_cpu_capability']})",
      file=out)
    dev = m["device"] + (f" ({m['gpu']}, CUDA {m['cuda']})" if m.get("gpu") else "")
    s = meta["settings"]
    p(f"torch {m['torch']}  threads={m['threads']}  device={dev}  arch={s['arch']}  "
      f"T={s['timesteps']}  B={s['batch']}  float32 (+bf16: autocast)  {s['steps']} timed steps "
      f"x {s['rounds']} rounds, fresh process per contender per round, interleaved  compile cache: "
      f"{s['compile_cache']}", file=out)
    p(f"dietsnn {m['dietsnn']} at commit {m.get('commit') or '? (not a git checkout)'}",
      file=out)
    if m["malloc_env"]:
        p(f"note: MALLOC_* set in the environment: {m['malloc_env']}", file=out)
    cuda = m["device"] == "cuda"
    mem = "GPU peak MB" if cuda else "peak RSS MB"
    head = (f"{'contender':<20}{'train ms':>10}{'/peer':>7}{'/dense':>8}{'infer img/s':>13}"
            f"{'/peer':>7}{mem:>13}{'/SJ':>6}{'above rest':>12}{'/SJ':>6}{'held MB':>9}"
            f"{'1st step s':>12}")
    p(head, file=out)
    for r in summary["rows"]:
        p(f"{r['contender']:<20}{_fmt(r['train_ms'], '.1f'):>10}"
          f"{_fmt(r['train_vs_fastest_peer'], '.2f'):>7}{_fmt(r['train_vs_dense_limit'], '.2f'):>8}"
          f"{_fmt(r.get('infer_ips'), '.0f'):>13}{_fmt(r['infer_vs_fastest_peer'], '.2f'):>7}"
          f"{_fmt(r.get(ref['memory_key']), '.0f'):>13}{_fmt(r['peak_vs_spikingjelly'], '.2f'):>6}"
          f"{_fmt(r.get(ref['memory_above_key']), '.0f'):>12}"
          f"{_fmt(r['peak_above_rest_vs_spikingjelly'], '.2f'):>6}"
          f"{_fmt(r.get('held_mb'), '.1f'):>9}"
          f"{_fmt(_median(r['first_step_s_rounds']), '.1f'):>12}", file=out)
    p(f"fastest peer (training): {ref['fastest_peer']}; fastest peer (inference): "
      f"{ref['fastest_peer_inference']}; dense limit: {ref['dense_limit']}"
      + (f" (bf16: {ref['dense_limit_bf16']})" if ref.get("dense_limit_bf16") else "")
      + "; memory ratio "
      f"against: {ref['memory_reference']}; peers that ran: {', '.join(ref['peers_ran']) or '-'}",
      file=out)
    for r in summary["rows"]:
        extra = [f"{k}={r[k]}" for k in ("version", "backend", "implementation", "triton_calls",
                                         "allocator_tuned", "note") if r.get(k) is not None]
        p(f"  {r['contender']}: {', '.join(extra)}", file=out)
    for k, why in skipped.items():
        p(f"  {k}: skipped: {why}", file=out)
    rows = {r["contender"]: r for r in summary["rows"]}
    if "dietsnn" in rows:
        d = rows["dietsnn"]
        p("library defaults (dietsnn) against the engine's targets:", file=out)
        for label, v, op, target in (
                ("train / fastest peer", d["train_vs_fastest_peer"], "<=", 0.8),
                ("train / dense limit", d["train_vs_dense_limit"], "<=", 1.0),
                ("peak memory / SpikingJelly", d["peak_vs_spikingjelly"], "<=", 0.5),
                ("  the same, above rest", d["peak_above_rest_vs_spikingjelly"], "<=", 0.5),
                ("inference / fastest peer", d["infer_vs_fastest_peer"], ">=", 2.0)):
            ok = "n/a" if v is None else ("met" if (v <= target if op == "<=" else v >= target)
                                          else "NOT met")
            p(f"  {label:<28}{_fmt(v, '.2f'):>6} {op} {target:.2f}  {ok}", file=out)
    for name in ("dietsnn-triton", "dietsnn-triton+bf16", "dietsnn-triton+graph"):
        if name not in rows:
            continue
        d = rows[name]
        p(f"{name} against the GPU engine's targets (dense limit of the same precision):",
          file=out)
        for label, v, target in (
                ("train / dense limit", d["train_vs_dense_limit"], 1.5),
                ("train / fastest SpikingJelly", d["train_vs_fastest_spikingjelly"], 0.5)):
            ok = "n/a" if v is None else ("met" if v <= target else "NOT met")
            p(f"  {label:<28}{_fmt(v, '.2f'):>6} <= {target:.2f}  {ok}", file=out)


def print_scaling(scal: dict[int, dict[str, Any]], out: Any = sys.stdout) -> None:
    ts = sorted(scal)
    print("\ndietsnn step time against T (fresh process per T, interleaved)", file=out)
    lo, hi = ts[0], ts[-1]
    slope = ((scal[hi]["train_ms"] - scal[lo]["train_ms"]) / (hi - lo)) if hi > lo else 0.0
    for t in ts:
        ms = scal[t]["train_ms"]
        line = scal[lo]["train_ms"] + slope * (t - lo)
        print(f"T={t:<3d} {ms:8.1f} ms/step  {ms / t:6.1f} ms per timestep  "
              f"(line through T={lo} and T={hi}: {line:6.1f})", file=out)
