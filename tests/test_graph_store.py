"""A converted model's checkpoint carries its graph as JSON: a closed schema, rebuilt without
running anything it names. Crafted graphs never run code and are a model or one line:
`ValueError` from `dietsnn.load_model`, exit 2 from the CLI (the structured fuzz of mutated
graphs: tests/test_graph_fuzz.py)."""

import builtins
import functools
import json
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conversion_models import BiasNet, ResNetLike
from helpers import one_line_error
from safetensors.torch import load_file, save_file
from torch import nn

import dietsnn
from dietsnn.checkpoint import read_config, read_model_file

X = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))


class Mixed(nn.Module):
    """A concatenation, max pooling, and the functions and tensor methods a graph keeps."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        y = torch.cat([F.relu(self.a(x)), torch.relu(self.b(x))], 1)
        y = F.adaptive_avg_pool2d(self.pool(y), 3)
        n, c = y.shape[0], y.size(1)
        y = y.reshape(n, c, -1).mean(dim=2, keepdim=False) + y.flatten(2).mean(2)
        return self.fc(y[:, :6].contiguous())


SEEDS = {"chain-maxpool": lambda: BiasNet("max", width=4), "residual": lambda: ResNetLike(
    width=4), "cat-methods": Mixed}


def saved(folder, model):
    """`model` converted, calibrated on `X` and saved: (path, metadata, tensors)."""
    torch.manual_seed(0)
    snn = dietsnn.convert(model.eval(), timesteps=2)
    dietsnn.calibrate_thresholds(snn, X, 99.0, 1.0, 2)
    path = Path(folder) / "m.safetensors"
    dietsnn.save_model(snn, path)
    return path, read_model_file(path)[1], load_file(path)


@functools.cache
def seed(kind):
    """(metadata, tensors, output on X) of a saved seed model, made once per session."""
    if kind == "vgg_small":  # one of dietsnn's own architectures
        path = Path(tempfile.mkdtemp()) / "m.safetensors"
        dietsnn.save_model(dietsnn.convert(dietsnn.build_ann(kind).eval(), 2), path)
        meta, tensors = read_model_file(path)[1], load_file(path)
    else:
        torch.manual_seed(0)  # the same weights whatever ran before
        path, meta, tensors = saved(tempfile.mkdtemp(), SEEDS[kind]())
    with torch.no_grad():
        return meta, tensors, dietsnn.load_model(path)(X)


def write(path, tensors, meta, **fields):
    save_file(tensors, path, {**meta, **{k: v if isinstance(v, str) else json.dumps(v)
                                         for k, v in fields.items()}})
    return path


def payloads(marker) -> list[str]:
    """Python that creates `marker` (or sets a builtin) wherever a stored string reaches
    generated source: as a keyword, a layer name, an argument name, a statement."""
    touch = f"open({str(marker)!r}, 'w')"  # no dot: a layer name is split at dots
    return [f"end_dim={touch} and -1, start_dim", f'x", {touch}) and getattr(self, "x',
            f"x, y=({touch})", f"x; {touch}", f"{touch}",
            "__import__('builtins').__dict__.setdefault('DIETSNN_HIT', 1)"]


def untouched(marker) -> bool:
    return not marker.exists() and not hasattr(builtins, "DIETSNN_HIT")


@pytest.mark.parametrize("where", ["kwargs key", "layer name", "placeholder"])
def test_python_in_a_stored_name_never_runs(tmp_path, where, capsys):
    meta, tensors, want = seed("chain-maxpool")
    marker = tmp_path / "pwned"
    code = payloads(marker)[("kwargs key", "layer name", "placeholder").index(where)]
    graph = json.loads(meta["graph"])
    nodes = graph["nodes"]
    if where == "kwargs key":  # one more node: x.flatten(...) on the flattened features
        flat = next(n for n in nodes if n["target"] == "classifier.0")
        nodes.insert(nodes.index(flat) + 1, {
            "name": "again", "op": "call_method", "target": "flatten",
            "args": {"tuple": [{"node": flat["name"]}]}, "kwargs": {code: 1}})
        nodes[nodes.index(flat) + 2]["args"] = {"tuple": [{"node": "again"}]}
    elif where == "layer name":
        graph["layers"][code] = graph["layers"].pop("features.0")
        nodes[1]["target"] = code
        tensors = {k.replace("net.features.0.", f"net.{code}."): v for k, v in tensors.items()}
    else:
        nodes[0]["name"] = nodes[0]["target"] = code
        nodes[1]["args"] = {"tuple": [{"node": code}]}
    bad = write(tmp_path / "bad.safetensors", tensors, meta, graph=graph)
    if where == "placeholder":  # a node's name is only a key: the model loads and runs as saved
        with torch.no_grad():
            assert torch.equal(dietsnn.load_model(bad)(X), want)
        assert untouched(marker)
        return
    with pytest.raises(ValueError, match="invalid dietsnn graph metadata") as e:
        dietsnn.load_model(bad)(X)
    assert "\n" not in str(e.value) and untouched(marker)
    with pytest.raises(ValueError, match="invalid dietsnn graph metadata"):
        read_config(bad)
    one_line_error(capsys, ["evaluate", str(bad)], "invalid dietsnn graph metadata")
    assert untouched(marker)


@pytest.mark.parametrize("kind", sorted(SEEDS))
def test_every_seed_round_trips_with_generated_node_names(kind, tmp_path):
    meta, tensors, want = seed(kind)
    back = dietsnn.load_model(write(tmp_path / "m.safetensors", tensors, meta))
    with torch.no_grad():
        assert torch.equal(back(X), want)
    names = [n.name for n in back.net.graph.nodes]
    assert names == ["x", *(f"n{i}" for i in range(1, len(names) - 1)), "output"]


def test_layer_names_and_methods():
    from dietsnn.conversion.build import KEPT_METHODS
    from dietsnn.conversion.schema import METHODS, RESERVED, is_name

    assert all(is_name(n) for n in ("conv1", "features.0", "down.0.conv", "_private", "relu_1"))
    assert not any(is_name(n) for n in (
        "", "forward", "training", "__class__", "a.__dict__", "class", "a..b", ".a", "a.",
        "state_dict", "_modules", "graph", "code", "a b", "a-b", "é", "a\nb", 1, None,
        "a." * 17 + "a", "x" * 600))
    assert {"forward", "training", "graph", "code", "_modules"} <= RESERVED
    assert set(METHODS) == KEPT_METHODS


def _edit(graph, cfg, spiking, case):  # noqa: C901 - one branch per malformed header
    nodes, layers = graph["nodes"], graph["layers"]
    first = next(k for k, v in layers.items() if v["type"] == "Conv2d")
    call = next(n for n in nodes if n["op"] == "call_module")
    deep = "[" * 100_000 + "]" * 100_000
    raw = {"graph not an object": "[1, 2]", "graph not JSON": "{nodes",
           "graph nested 100000 deep": deep}
    if case in raw or case == "config nested 100000 deep":
        return (raw[case], cfg, spiking) if case in raw else (graph, deep, spiking)
    if case == "argument nested 50 deep":
        nodes[-1]["args"] = {"tuple": [json.loads("[" * 50 + "]" * 50)]}
    elif case == "nodes missing":
        del graph["nodes"]
    elif case == "nodes an object":
        graph["nodes"] = {}
    elif case == "node without op":
        del call["op"]
    elif case == "node not an object":
        nodes[1] = "conv1"
    elif case == "node name a number":
        call["name"] = 7
    elif case == "duplicate node name":
        nodes[2]["name"] = nodes[1]["name"]
    elif case == "unknown field":
        call["code"] = "print(1)"
    elif case == "format 2":
        graph["format"] = 2
    elif case == "layers a list":
        graph["layers"] = []
    elif case == "output without arguments":
        nodes[-1]["args"] = {"tuple": []}
    elif case == "output returns a tuple":
        nodes[-1]["args"] = {"tuple": [{"tuple": [{"node": call["name"]}]}]}
    elif case == "output not last":
        nodes.insert(1, nodes.pop())
    elif case == "two inputs":
        nodes.insert(1, dict(nodes[0], name="y"))
    elif case == "reference to a later node":
        call["args"] = {"tuple": [{"node": nodes[-2]["name"]}]}
    elif case == "reference to no node":
        call["args"] = {"tuple": [{"node": "nowhere"}]}
    elif case in ("forward", "__class__", "", "training", "class", "a..b"):
        layers[case] = layers.pop(first)
        next(n for n in nodes if n.get("target") == first)["target"] = case
    elif case == "layer inside a layer":
        layers[f"{first}.weight"] = layers.pop(next(k for k in layers if k != first))
    elif case == "layer used by no node":
        layers["spare"] = {"type": "Flatten", "args": {}}
    elif case == "unknown layer type":
        layers[first]["type"] = "Sequential"
    elif case == "negative channels":
        layers[first]["args"]["out_channels"] = -4
    elif case == "2^40 channels":
        layers[first]["args"]["out_channels"] = 1 << 40
    elif case == "channels as a string":
        layers[first]["args"]["out_channels"] = "4"
    elif case == "bias as 1":
        layers[first]["args"]["bias"] = 1
    elif case == "padding mode as code":
        layers[first]["args"]["padding_mode"] = "__import__('os')"
    elif case == "unknown layer argument":
        layers[first]["args"]["device"] = "cuda"
    elif case == "kernel nested":
        layers[first]["args"]["kernel_size"] = {"tuple": [{"tuple": [3]}, 3]}
    elif case == "merge of 10^9 inputs":
        layers["spare"] = {"type": "Merge", "args": {"kind": "add", "n": 10**9, "dim": 1}}
    elif case == "keyword on a layer call":
        call["kwargs"] = {"start_dim": 1}
    elif case == "unknown function":
        call.update(op="call_function", target="builtins.eval")
    elif case == "unknown method":
        call.update(op="call_method", target="__reduce__")
    elif case == "getattr of __class__":
        call.update(op="call_function", target="getattr",
                    args={"tuple": [{"node": "x"}, "__class__"]})
    elif case in ("a shape into a layer", "a tensor as a size", "a shape as the output"):
        shape = {"name": "s", "op": "call_function", "target": "getattr",
                 "args": {"tuple": [{"node": "x"}, "shape"]}}
        nodes.insert(1, shape)
        if case == "a shape into a layer":
            call["args"] = {"tuple": [{"node": "s"}]}
        elif case == "a tensor as a size":
            nodes.insert(2, {"name": "v", "op": "call_method", "target": "view",
                             "args": {"tuple": [{"node": "x"}, {"node": "x"}, -1]}})
        else:
            nodes[-1]["args"] = {"tuple": [{"node": "s"}]}
    elif case == "get_attr node":
        call.update(op="get_attr", target="training")
    elif case == "input_dims 99":
        graph["input_dims"] = 99
    elif case == "class name as code":
        graph["name"] = "A(nn.Module): pass\nimport os"
    elif case == "timesteps a string":
        spiking["timesteps"] = "2"
    elif case == "timesteps missing":
        del spiking["timesteps"]
    elif case == "image_size 10^6":
        cfg["image_size"] = 10**6
    elif case == "input_shape of terabytes":
        cfg["input_shape"] = [3, 1 << 20, 1 << 20]
    elif case == "input_shape negative":
        cfg["input_shape"] = [1, -28, 28]
    elif case == "arch not graph":
        cfg["arch"] = "vgg_small"
    else:
        raise AssertionError(case)
    return graph, cfg, spiking


MALFORMED = [
    "graph not an object", "graph not JSON", "graph nested 100000 deep",
    "config nested 100000 deep", "argument nested 50 deep", "nodes missing", "nodes an object",
    "node without op", "node not an object", "node name a number", "duplicate node name",
    "unknown field", "format 2", "layers a list", "output without arguments",
    "output returns a tuple", "output not last", "two inputs", "reference to a later node",
    "reference to no node", "forward", "__class__", "", "training", "class", "a..b",
    "layer inside a layer", "layer used by no node", "unknown layer type", "negative channels",
    "2^40 channels", "channels as a string", "bias as 1", "padding mode as code",
    "unknown layer argument", "kernel nested", "merge of 10^9 inputs",
    "keyword on a layer call", "unknown function", "unknown method", "getattr of __class__",
    "a shape into a layer", "a tensor as a size", "a shape as the output",
    "get_attr node", "input_dims 99", "class name as code", "timesteps a string",
    "timesteps missing", "image_size 10^6", "input_shape of terabytes", "input_shape negative",
    "arch not graph"]


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_header_is_one_line(case, tmp_path, capsys):
    meta, tensors, _ = seed("residual")
    graph, cfg, spiking = _edit(json.loads(meta["graph"]), json.loads(meta["config"]),
                                json.loads(meta["spiking"]), case)
    bad = write(tmp_path / "bad.safetensors", tensors, meta, graph=graph, config=cfg,
                spiking=spiking)
    for read in (dietsnn.load_model, read_config):
        with pytest.raises(ValueError, match="invalid dietsnn") as e:
            read(bad)
        assert "\n" not in str(e.value) and len(str(e.value)) < 600, str(e.value)
    one_line_error(capsys, ["evaluate", str(bad)], "invalid dietsnn")


@pytest.mark.parametrize("arch", ["vgg_small", "graph"])
@pytest.mark.parametrize("field,value", [("leak", 0.0), ("leak", -0.5), ("leak", 1.0001),
                                         ("leak", 7.0), ("threshold", 0.0),
                                         ("threshold", -1.0), ("threshold", float("inf")),
                                         ("leak", float("nan"))])
def test_a_neuron_out_of_range_is_refused(arch, field, value, tmp_path, capsys):
    meta, tensors, _ = seed("chain-maxpool" if arch == "graph" else arch)
    assert dietsnn.load_model(write(tmp_path / "ok.safetensors", tensors, meta)) is not None
    key = sorted(k for k in tensors if k.endswith(f".{field}"))[-1]
    bad = write(tmp_path / "bad.safetensors", {**tensors, key: torch.tensor(value)}, meta)
    with pytest.raises(ValueError, match="leak|threshold|non-finite") as e:
        dietsnn.load_model(bad)
    assert "\n" not in str(e.value) and key.rsplit(".", 1)[0] in str(e.value)
    one_line_error(capsys, ["evaluate", str(bad)], key.rsplit(".", 1)[0])
