"""Checkpoints: weights (leaks and thresholds included) as safetensors with the model config in
its metadata; training state for resume via `torch.save`, read back with `weights_only=True`.
Every write goes through `dietsnn.files` (atomic, regular files only)."""

from __future__ import annotations

import io
import json
import math
import os
import reprlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .config import MAX_TIMESTEPS
from .conversion import GraphSNN, ModuleSNN, convert
from .conversion.schema import is_int, is_real
from .conversion.store import graph_from_json, graph_json
from .errors import CheckpointError, UserError
from .files import atomic_write, open_regular
from .layers import lif_layers
from .models import Network, build_ann
from .nir_import import HDF5_SIGNATURE, from_nir, is_nir_file

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
# what a training state holds (training.fit writes it); a file without them is not one
STATE_KEYS = ("model", "optimizer", "scheduler", "batch_rng", "torch_rng", "epoch", "best",
              "step", "history")


def save_model(model: Network, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write `model` (from `build_ann`, `dietsnn.convert` or `load_model`) to the safetensors
    file `path`, in the argument order of `torch.save` and `safetensors.torch.save_model`;
    `extra`: JSON-serialisable notes stored in its metadata."""
    if isinstance(model, (str, os.PathLike)) and isinstance(path, torch.nn.Module):
        raise TypeError("save_model takes (model, path): the model first, as torch.save; "
                        "call save_model(model, path)")
    if not isinstance(model, Network):
        raise TypeError(f"save_model saves dietsnn models (from dietsnn.build_ann, "
                        f"dietsnn.convert or dietsnn.load_model), got {type(model).__name__}; "
                        "convert a plain nn.Module first with dietsnn.convert(model, timesteps), "
                        "or save it with torch.save(model.state_dict(), path)")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"save_model's path must be a str or os.PathLike, got "
                        f"{type(path).__name__}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"config": json.dumps(model.config), "spiking": json.dumps(model.spiking_config()),
            "extra": json.dumps(extra or {}), "format": "dietsnn-1"}
    if isinstance(model, GraphSNN) and model.config.get("arch") == "graph":
        meta["graph"] = json.dumps(graph_json(model))  # a custom model's graph, rebuilt on load
    elif isinstance(model, ModuleSNN):
        raise UserError("a model converted without a traced graph cannot be saved with "
                        "save_model; save its state_dict and convert the model again to load it")
    atomic_write(path, st_save(tensors, metadata=meta))


def resolve_model_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        if (p / MODEL_FILE).is_file() and (p / "snn" / MODEL_FILE).is_file():
            raise UserError(f"{p} holds both {MODEL_FILE} and snn/{MODEL_FILE}; name the "
                            "checkpoint file to use")
        for cand in (p / MODEL_FILE, p / "snn" / MODEL_FILE, p / "ann" / MODEL_FILE):
            if cand.is_file():
                return cand
        raise UserError(f"{p}: no {MODEL_FILE} in this run directory; train a model there first")
    if not os.path.lexists(p):
        raise UserError(f"{p}: no such checkpoint file or run directory")
    return p  # a FIFO, device or dangling link is refused when it is opened (open_regular)


def _metadata(header: bytes, size: int, p: Path) -> dict[str, str]:
    """The dietsnn metadata in a safetensors header (the 8-byte length and the JSON after it);
    a UserError for anything else. `size`: the file's length, which bounds the header's."""
    if header[:8] == HDF5_SIGNATURE:
        raise UserError(f"{p}: a NIR graph (HDF5), not a dietsnn safetensors checkpoint; load it "
                        "with dietsnn.from_nir(path, timesteps=T) (docs/NIR.md)")
    n = int.from_bytes(header[:8], "little") if len(header) >= 8 else -1
    if n < 2 or 8 + n > size:
        raise CheckpointError(f"{p}: not a dietsnn safetensors checkpoint (header length "
                        f"{n if n >= 0 else 'missing'} in a file of {size} bytes; truncated or "
                        "damaged)")
    try:
        head = json.loads(header[8 : 8 + n])
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise CheckpointError(f"{p}: not a dietsnn safetensors checkpoint ({e})") from None
    meta = head.get("__metadata__") if isinstance(head, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != "dietsnn-1" or not isinstance(
            meta.get("config"), str) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{p}: not a dietsnn safetensors checkpoint (a safetensors file "
                        "without dietsnn metadata); save models with dietsnn")
    return meta


def _json(text: str, source: str, field: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{source}: invalid dietsnn metadata ({field}: {e}); the file is "
                              "damaged or was written by an incompatible tool") from None


def _configs(meta: dict[str, str], source: str) -> tuple[dict, dict, Callable[[], Network],
                                                          dict[str, torch.Tensor]]:
    """(model config, spiking config, a function that builds the model, the model's state on
    the meta device) of a checkpoint's metadata, each validated: the model is built once on
    the meta device (shapes only, no memory), so every fault of the metadata shows here."""
    cfg = _json(meta["config"], source, "config")
    spiking = _json(meta.get("spiking", "{}"), source, "spiking")
    graph = "graph" in meta  # a converted custom model (docs/CONVERSION.md)
    check_metadata(cfg, spiking, source, graph)
    if graph:
        arch = _json(meta["graph"], source, "graph")

        def build() -> Network:
            snn = graph_from_json(arch, spiking["timesteps"], spiking.get("encoding", "direct"),
                                  source)
            snn.config.update({k: v for k, v in cfg.items() if k != "arch"})
            return snn
    else:
        def build() -> Network:
            try:
                model = build_ann(**cfg)
                return convert(model, **spiking) if spiking else model
            except (TypeError, ValueError) as e:
                raise CheckpointError(f"{source}: invalid dietsnn metadata ({e}); the file is "
                                      "damaged or was written by an incompatible tool") from None

    with torch.device("meta"):
        shapes = build().state_dict()
    return cfg, spiking, build, shapes


def read_config(path: str | os.PathLike) -> tuple[dict, dict]:
    """(model config, spiking config) of a checkpoint, validated, from its header alone (the
    tensors are not read)."""
    p = resolve_model_path(path)
    if is_nir_file(p):  # a NIR graph: its configs are those of the imported model
        model = from_nir(p)
        return model.config, model.spiking_config()
    with open_regular(p, "checkpoint file") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if 0 <= n <= size - 8:
            head += f.read(n)
    return _configs(_metadata(head, size, p), str(path))[:2]


def read_model_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    p = resolve_model_path(path)
    with open_regular(p, "checkpoint file") as f:
        raw = f.read()
    meta = _metadata(raw, len(raw), p)
    try:
        tensors = st_load(raw)
    except (SafetensorError, ValueError) as e:
        raise CheckpointError(f"{p}: not a dietsnn safetensors checkpoint ({e})") from None
    return tensors, meta


def load_model(path: str | os.PathLike) -> Network:
    """Rebuild the network described in the checkpoint and load its tensors strictly. The model
    is returned in evaluation mode (dropout off), ready for inference; call `.train()` to train.
    A NIR graph (`.nir`) that records its timesteps is imported with `dietsnn.from_nir`.
    A file that is damaged, not dietsnn's or outside its schema is a `ValueError`
    (`dietsnn.errors.CheckpointError`) with a one-line message; nothing in the file runs as
    code (docs/RELIABILITY.md)."""
    if is_nir_file(resolve_model_path(path)):
        return from_nir(resolve_model_path(path))
    tensors, meta = read_model_file(path)
    _, _, build, shapes = _configs(meta, str(path))
    tensors = upgrade_names(shapes, tensors)
    _check_keys(shapes, tensors, str(path))  # before any memory is allocated for the model
    check_finite_tensors(tensors, str(path))
    model = build()
    load_state_strict(model, tensors, str(path))
    check_neurons(model, str(path))
    return model.eval()


# bounds of the model metadata a checkpoint may carry (far beyond any real model)
MAX_CLASSES, MAX_CHANNELS, MAX_IMAGE_SIZE = 1_000_000, 1024, 8192
MAX_INPUT = 1 << 26  # values in one input sample (256 MB as float32)


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxstring = 2, 3, 8, 40


def check_metadata(cfg: Any, spiking: Any, source: str, graph: bool = False) -> None:
    """Validate the model metadata of a checkpoint field by field (type, range, known names);
    `graph`: of a converted custom model, whose graph is stored beside it. A CheckpointError
    names the first bad field."""
    from .functional.encoding import ENCODINGS
    from .functional.surrogate import SURROGATES
    from .models import ARCHS

    def need(ok: bool, field: str, value: Any, rule: str) -> None:
        if not ok:
            raise CheckpointError(f"{source}: invalid dietsnn metadata: {field} = "
                                  f"{_SHORT.repr(value)}, expected {rule}; the file is damaged "
                                  "or was written by an incompatible tool")

    def size(lo: int, hi: int) -> tuple[Callable[[Any], bool], str]:
        return (lambda v: is_int(v) and lo <= v <= hi), f"an integer in [{lo}, {hi}]"

    need(isinstance(cfg, dict), "config", cfg, "an object")
    need(isinstance(spiking, dict), "spiking", spiking, "an object")
    rules = {
        "arch": ((lambda v: v == "graph"), "graph") if graph else (
            (lambda v: isinstance(v, str) and v in ARCHS), f"one of {', '.join(ARCHS)}"),
        "num_classes": size(1, MAX_CLASSES),
        "in_channels": size(1, MAX_CHANNELS),
        "image_size": size(1, MAX_IMAGE_SIZE),
        **({"source": ((lambda v: isinstance(v, str) and len(v) <= 4096), "a string"),
            "input_shape": ((lambda v: isinstance(v, list) and 1 <= len(v) <= 8 and all(
                is_int(d) and 1 <= d <= MAX_INPUT for d in v) and math.prod(v) <= MAX_INPUT),
                f"a list of 1 to 8 sizes of at most {MAX_INPUT} values in all")}
           if graph else {"dropout": (lambda v: is_real(v) and 0 <= v < 1,
                                      "a number in [0, 1)")}),
    }
    srules = {
        "timesteps": size(1, MAX_TIMESTEPS),
        "encoding": ((lambda v: isinstance(v, str) and v in ENCODINGS),
                     f"one of {', '.join(ENCODINGS)}"),
        "gamma": (lambda v: is_real(v) and v > 0, "a finite number > 0"),
        "surrogate": ((lambda v: isinstance(v, str) and v in SURROGATES),
                      f"one of {', '.join(sorted(SURROGATES))}"),
    }
    for obj, table, name, required in ((cfg, rules, "config", ("arch",)),
                                       (spiking, srules, "spiking", ("timesteps",) if spiking
                                        or graph else ())):
        for k in obj:
            need(k in table, f"{name}.{k}", obj[k], f"only the fields {', '.join(table)}")
        for k in required:
            need(k in obj, f"{name}.{k}", None, "a value")
        for k, v in obj.items():
            ok, rule = table[k]
            need(ok(v), f"{name}.{k}", v, rule)
    pixels = cfg.get("in_channels", 1) * cfg.get("image_size", 1) ** 2
    need(pixels <= MAX_INPUT, "config.in_channels x image_size^2", pixels,
         f"at most {MAX_INPUT} values in one input")


def check_neurons(model: torch.nn.Module, source: str) -> None:
    """Refuse a loaded model whose LIF layers leave the neuron's range: a leak in (0, 1] and a
    finite threshold > 0 (what `convert` and training keep)."""
    for name, m in lif_layers(model):
        leak, th = m.leak.detach(), m.threshold.detach()
        if not (bool(((leak > 0) & (leak <= 1)).all()) and bool(
                (th.isfinite() & (th > 0)).all())):
            raise CheckpointError(f"{source}: layer {name} has leak {leak.flatten()[:1].item():g}"
                                  f" and threshold {th.flatten()[:1].item():g}; a checkpoint "
                                  "needs every leak in (0, 1] and every threshold > 0")


def check_finite_tensors(tensors: dict[str, torch.Tensor], source: str) -> None:
    """Refuse weights, leaks or thresholds that are NaN or infinite (a diverged training)."""
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(t.isfinite().all())]
    if bad:
        raise CheckpointError(f"{source}: non-finite values in {', '.join(bad[:6])}"
                        f"{' and more' if len(bad) > 6 else ''}; the checkpoint comes from a "
                        "diverged training and is not used")


def upgrade_names(own: dict[str, torch.Tensor],
                  state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` under the names of `own` (a model's state_dict) where it was saved by a dietsnn
    version that converted its own architectures by module replacement: the SNN's layers then
    sat at the top (`features.0.weight`, now `net.features.0.weight`) and it had no output or
    residual gains (all 1). Any other state is returned as it is."""
    if not any(k.startswith("net.") for k in own) or any(k.startswith("net.") for k in state):
        return state
    out = {f"net.{k}": v for k, v in state.items()}
    for k, v in own.items():
        if k not in out and (k == "output_gain" or k.endswith(".gains")):
            out[k] = torch.ones(v.shape)
    return out


def model_state(model: torch.nn.Module, state: dict[str, torch.Tensor],
                source: str) -> dict[str, torch.Tensor]:
    """A training state's model tensors (`upgrade_names`) for resuming `model`; a UserError if
    renaming would reorder the parameters, which the saved optimizer state is indexed by."""
    own = model.state_dict()
    new = upgrade_names(own, state)
    if new is not state:
        params = {n for n, _ in model.named_parameters()}
        if [k for k in new if k in params] != [n for n, _ in model.named_parameters()]:
            raise UserError(f"{source}: this training state was written by an earlier dietsnn "
                            "whose SNN ordered its layers differently; it cannot be resumed. "
                            "Start a new training from the run's model.safetensors, or pass "
                            "--overwrite to train again from the start")
    return new


def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model`; any missing, unexpected or mis-shaped key is a UserError that
    names the keys."""
    _check_keys(model.state_dict(), state, source)
    model.load_state_dict(state, strict=False)


def _check_keys(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: str) -> None:
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:6])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:6])}")
        if shape:
            parts.append(f"shape mismatch {', '.join(shape[:6])}")
        raise CheckpointError(f"{source} does not fit this architecture: {'; '.join(parts)}")


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write(path, buf.getvalue())


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """The training state in `path` (written by `training.fit`), read without running code; a
    UserError for anything else: a missing or empty file (no state to resume from), a folder,
    FIFO or device, a damaged file, a file that is not a training state."""
    missing = not os.path.lexists(path)
    if missing or (os.path.isfile(path) and os.path.getsize(path) == 0):
        raise UserError(f"{path}: no training state to resume from ({'missing' if missing else 'empty'}"
                        "); --resume continues only a run that saved one, pass --overwrite to "
                        "train again from the start or choose another --out")
    with open_regular(path) as f:
        try:
            st = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure to read is the same user problem
            raise UserError(f"{path}: cannot load training state safely ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    missing = [k for k in STATE_KEYS if k not in st] if isinstance(st, dict) else list(STATE_KEYS)
    if missing:
        raise UserError(f"{path}: not a dietsnn training state (no {', '.join(missing[:4])}); "
                        "pass --overwrite to train again from the start or choose another --out")
    return st
