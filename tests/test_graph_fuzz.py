"""Structured fuzz of the graph a converted model's checkpoint stores: the saved graphs of
three converted models, mutated (names, targets, keywords and values replaced by payloads,
keywords, dunders and values of every JSON type; keys deleted, added and renamed; values nested
deep; layers renamed with their tensors). No payload ever runs; each file loads or is refused
in one line (docs/RELIABILITY.md, "Checkpoints")."""

import copy
import json
import tempfile
from pathlib import Path

import torch
from helpers import must_load_or_refuse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_graph_store import SEEDS, X, payloads, seed, untouched, write

import dietsnn

NAMES = ["", "forward", "training", "__class__", "__init__", "class", "lambda", "state_dict",
         "_modules", "graph", "code", "a.b", "a..b", ".a", "0", "n1", "x", "output", "self",
         "é", "a b", "a-b", "torch", "getattr", "node", "tuple", "slice", "ellipsis", "shape",
         "start_dim", "dim", "call_module", "call_function", "call_method", "placeholder",
         "get_attr", "Conv2d", "Merge", "LIF", "kind", "n", "add", "cat", "operator.getitem",
         "torch.flatten", "view", "mean", "zeros", "linear"]
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70),
                   st.sampled_from([0, 1, -1, 2, 3, 1 << 31, 1 << 40]),
                   st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(NAMES),
                   st.just("PAYLOAD"))
VALUES = st.recursive(LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(["node", "tuple", "slice", "ellipsis", "type", "args"]),
                    inner, max_size=2)), max_leaves=8)
OPS = ["replace", *["tweak"] * 3, "delete", "add key", "rename key", "nest", "duplicate"]


def _places(obj, path=()):
    """Every (container, key) in a JSON value, depth first."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(
        obj, list) else ()
    for k, v in items:
        yield obj, k
        yield from _places(v, (*path, k))


def _fill(v, payload):
    if v == "PAYLOAD":
        return payload
    if isinstance(v, list):
        return [_fill(a, payload) for a in v]
    if isinstance(v, dict):
        return {k: _fill(a, payload) for k, a in v.items()}
    return v


def _rename_layer(data, graph, tensors, payload):
    """A layer renamed consistently: in the layers, the nodes that call it and its tensors."""
    old = data.draw(st.sampled_from(sorted(graph["layers"])))
    new = data.draw(st.one_of(st.sampled_from(NAMES), st.just(payload)))
    if new in graph["layers"]:
        return tensors
    graph["layers"][new] = graph["layers"].pop(old)
    for n in graph["nodes"]:
        if n.get("target") == old:
            n["target"] = new
    return {(f"net.{new}." + k[len(f"net.{old}."):] if k.startswith(f"net.{old}.") else k): v
            for k, v in tensors.items()}


def _mutate(data, doc, payload):
    """One mutation of `doc` ({"graph", "config", "spiking"}) drawn from `data`."""
    op = data.draw(st.sampled_from(OPS))
    places = [p for part in doc.values() for p in _places(part)]
    obj, key = places[data.draw(st.integers(0, len(places) - 1))]
    value = _fill(data.draw(VALUES), payload)
    if op == "replace":
        obj[key] = value
    elif op == "tweak" and isinstance(obj[key], (bool, int, float)):  # a near value
        v = obj[key]
        obj[key] = (not v if isinstance(v, bool) else v + data.draw(st.sampled_from(
            [-2, -1, 1, 2])) if isinstance(v, int) else v * data.draw(st.sampled_from(
                [-1.0, 0.0, 0.5, 2.0, 1e300])))
    elif op == "delete":
        del obj[key]
    elif op == "add key" and isinstance(obj, dict):
        obj[data.draw(st.one_of(st.sampled_from(NAMES), st.just(payload)))] = value
    elif op == "add key":
        obj.insert(key, value)
    elif op == "rename key" and isinstance(obj, dict):
        obj[data.draw(st.one_of(st.sampled_from(NAMES), st.just(payload)))] = obj.pop(key)
    elif op == "nest":
        for _ in range(data.draw(st.integers(1, 60))):
            obj[key] = data.draw(st.sampled_from([[obj[key]], {"tuple": [obj[key]]}]))
    elif op == "duplicate" and isinstance(obj, list):
        obj.insert(key, copy.deepcopy(obj[key]))


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_mutated_graphs_never_run_code_and_load_or_fail_in_one_line(data):
    kind = data.draw(st.sampled_from(sorted(SEEDS)))
    meta, tensors, want = seed(kind)
    folder = Path(tempfile.mkdtemp(prefix="fuzz"))
    assert "." not in str(folder)
    marker = folder / "hit"
    payload = data.draw(st.sampled_from(payloads(marker)))
    doc = {k: json.loads(meta[k]) for k in ("graph", "config", "spiking")}
    renamed = data.draw(st.booleans())
    if renamed:
        tensors = _rename_layer(data, doc["graph"], tensors, payload)
    for _ in range(data.draw(st.integers(0 if renamed else 1, 3))):
        _mutate(data, doc, payload)
    path = write(folder / "m.safetensors", tensors, meta, **doc)
    case = json.dumps(doc)[:300]
    model = must_load_or_refuse(lambda: dietsnn.load_model(path), case)
    assert untouched(marker) and (model is None or payload not in model.net.code), case
    if model is not None:
        try:
            with torch.no_grad():
                out = model(X[:1])
            assert out.shape == want[:1].shape, case
        except (RuntimeError, IndexError):  # shapes that do not fit: torch's own error
            pass
        assert untouched(marker), case
