"""Using a trained model: `dietsnn predict` and `dietsnn export`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from ..checkpoint import load_model, resolve_model_path
from ..config import DATASET as DEFAULT_DATASET
from ..config import NIR_DT, NIR_NONLEAKY, NIR_POOLING
from ..data import DATASETS, dataset_info
from ..errors import UserError
from ..export import NONLEAKY, POOLING, export_nir
from ..files import dumps
from ..predict import predict_images
from ..rundir import check_output_file
from .options import float_in, no_compile


def run_dataset(run: str | Path) -> str:
    """The dataset a run was trained on: `dataset` in RUN/config.json or its parent's, else the
    default. A checkpoint file's folder counts as the run directory."""
    p = Path(run)
    start = p if p.is_dir() else p.parent
    for cfg in (start / "config.json", start.parent / "config.json"):
        if cfg.is_file():
            try:
                name = json.loads(cfg.read_text()).get("dataset")
            except (OSError, ValueError, AttributeError):
                raise UserError(f"{cfg}: not a readable JSON config; fix it or pass --dataset") from None
            if name:
                return str(name)
    return DEFAULT_DATASET


def cmd_predict(args: argparse.Namespace) -> list[dict]:
    model = load_model(args.run)
    info = dataset_info(args.dataset or run_dataset(args.run))
    results = predict_images(model, args.images, info)
    if args.json:
        print(dumps(results))
    else:
        for r in results:
            print(f"{r['path']}: {r['class']} (class {r['class_index']}) confidence "
                  f"{r['confidence']:.3f} spikes {r['spikes']}")
    return results


def cmd_export(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    check_output_file(out, args.overwrite, (resolve_model_path(args.run),))
    model = load_model(args.run)
    nonleaky, pooling = ("if", "avg") if args.exact else (args.nonleaky, args.pooling)
    graph = export_nir(model, out, dt=args.dt, integrator=args.integrator, nonleaky=nonleaky,
                       pooling=pooling)
    print(f"wrote {out} ({args.format}, {len(graph.nodes)} nodes, T={model.timesteps}, "
          f"{model.encoding} encoding; logits = "
          f"{'the integrator state' if args.integrator else 'output summed over the steps'})")
    return {"out": str(out), "nodes": len(graph.nodes)}


def add_commands(sub) -> dict[str, Callable]:
    """Add `predict` and `export` to the subparsers `sub`; return {name: function}."""
    p = sub.add_parser("predict", help="classify image files (PNG/JPEG) with a trained model")
    p.add_argument("run", metavar="RUN_DIR", help="run directory, model.safetensors or a NIR graph "
                   "(.nir) that records its timesteps")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    p.add_argument("--dataset", default=None, choices=sorted(DATASETS),
                   help="normalisation and class names (default: from RUN_DIR/config.json, "
                        f"else {DEFAULT_DATASET})")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    no_compile(p)

    e = sub.add_parser("export", help="export an SNN to NIR (neuromorphic intermediate representation)")
    e.add_argument("run", metavar="RUN_DIR", help="SNN run directory or model.safetensors")
    e.add_argument("--format", choices=["nir"], default="nir", help="output format")
    e.add_argument("out", metavar="OUT", help="file to write, e.g. model.nir")
    e.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    e.add_argument("--dt", type=float_in("--dt", 0, float("inf"), hi_open=True), default=NIR_DT,
                   help="the step written into the neurons' time constants, in seconds "
                        "(default: %(default)g)")
    e.add_argument("--integrator", action="store_true",
                   help="end with a nir.I node summing the output over time (default: the output "
                        "is the last layer's value at each step, to be summed)")
    e.add_argument("--nonleaky", choices=NONLEAKY, default=NIR_NONLEAKY,
                   help="write layers with leak 1 as nir.IF or as nir.LIF, the same spikes "
                        "(default: %(default)s)")
    e.add_argument("--pooling", choices=POOLING, default=NIR_POOLING,
                   help="write average pooling as nir.AvgPool2d (avg) or as a fixed nir.Conv2d "
                        "(conv) (default: %(default)s)")
    e.add_argument("--exact", action="store_true",
                   help="--nonleaky if --pooling avg: the form closest to the model, which "
                        "SpikingJelly and dietsnn import but snnTorch and Norse do not (default: "
                        "the form all of them import; docs/NIR.md)")
    e.add_argument("--portable", action="store_true", help=argparse.SUPPRESS)  # the default
    return {"predict": cmd_predict, "export": cmd_export}
