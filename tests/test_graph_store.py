"""A converted model's checkpoint carries its graph as JSON: a closed schema, rebuilt without
running anything it names. Crafted and mutated graphs never run code and are a model or one
line: `ValueError` from `dietsnn.load_model`, exit 2 from the CLI."""

import json

import pytest
import torch
from conversion_models import BiasNet
from safetensors.torch import load_file, save_file

import dietsnn
from dietsnn.checkpoint import read_config, read_model_file


def saved(tmp_path, model, x):
    """`model` converted, calibrated on `x` and saved: (path, metadata, tensors)."""
    torch.manual_seed(0)
    snn = dietsnn.convert(model.eval(), timesteps=2)
    dietsnn.calibrate_thresholds(snn, x, 99.0, 1.0, 2)
    path = tmp_path / "m.safetensors"
    dietsnn.save_model(path, snn)
    return path, read_model_file(path)[1], load_file(path)


def write(path, tensors, meta, graph=None):
    save_file(tensors, path, {**meta, **({"graph": json.dumps(graph)} if graph else {})})
    return path


def injections(marker) -> dict[str, str]:
    """Python that creates `marker` wherever a stored name reaches generated source."""
    touch = f"open({str(marker)!r}, 'w')"  # no dot: a layer name is split at dots
    return {"kwargs key": f"end_dim={touch} and -1, start_dim",
            "layer name": f'x", {touch}) and getattr(self, "x',
            "placeholder": f"x, y=({touch})"}


@pytest.mark.parametrize("where", ["kwargs key", "layer name", "placeholder"])
def test_python_in_a_stored_name_never_runs(tmp_path, where, capsys):
    x = torch.randn(4, 1, 28, 28)
    path, meta, tensors = saved(tmp_path, BiasNet(width=4), x)
    marker = tmp_path / "pwned"
    code = injections(marker)[where]
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
    bad = write(tmp_path / "bad.safetensors", tensors, meta, graph)
    if where == "placeholder":  # a node's name is only a key: the model loads and runs as saved
        with torch.no_grad():
            assert torch.equal(dietsnn.load_model(bad)(x), dietsnn.load_model(path)(x))
        assert not marker.exists()
        return
    with pytest.raises(ValueError, match="invalid dietsnn graph metadata") as e:
        dietsnn.load_model(bad)(x)
    assert "\n" not in str(e.value) and not marker.exists()
    with pytest.raises(ValueError, match="invalid dietsnn graph metadata"):
        read_config(bad)
    from dietsnn.cli import main
    assert main(["evaluate", str(bad)]) == 2 and not marker.exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
