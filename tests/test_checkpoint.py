"""Untrusted files: a training state whose pickle would run code, and checkpoints that are not
dietsnn safetensors, are refused with a UserError (and the code never runs)."""

import json
import os

import pytest
import torch
from helpers import must_load_or_refuse, mutations
from safetensors.torch import save as st_save
from safetensors.torch import save_file

import dietsnn
from dietsnn import build_ann, save_model
from dietsnn.checkpoint import load_model, load_state, read_config, save_state
from dietsnn.errors import UserError


class _Touch:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))  # would create the marker when unpickled


def test_crafted_state_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "state.pt"
    torch.save({"epoch": 1, "payload": _Touch(marker)}, path)
    with pytest.raises(UserError, match="cannot load training state safely"):
        load_state(path)
    assert not marker.exists()


def test_genuine_state_still_loads(tmp_path):
    state = {"epoch": 3, "model": {"w": torch.arange(4.0)}, "best": 0.5, "optimizer": {},
             "scheduler": {}, "batch_rng": torch.zeros(2, dtype=torch.uint8),
             "torch_rng": torch.get_rng_state(), "step": 9, "history": []}
    save_state(tmp_path / "state.pt", state)
    got = load_state(tmp_path / "state.pt")
    assert got["epoch"] == 3 and torch.equal(got["model"]["w"], state["model"]["w"])
    del state["torch_rng"]  # a file that torch reads but that is no training state
    save_state(tmp_path / "state.pt", state)
    with pytest.raises(UserError, match="not a dietsnn training state \\(no torch_rng\\)"):
        load_state(tmp_path / "state.pt")


def test_safetensors_without_dietsnn_metadata(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"features.0.weight": torch.zeros(32, 1, 3, 3)}, str(path))
    with pytest.raises(UserError, match="without dietsnn metadata"):
        load_model(path)
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "other"})
    with pytest.raises(UserError, match="without dietsnn metadata"):
        load_model(tmp_path)  # the run directory form finds the same file


@pytest.mark.parametrize("raw", [os.urandom(4096), b"", b"\x05", b"\xff" * 8 + b"{}",
                                 (20).to_bytes(8, "little") + b'{"a": 1}' + b" " * 12])
def test_random_or_broken_bytes_are_refused(tmp_path, raw):
    path = tmp_path / "model.safetensors"
    path.write_bytes(raw)
    with pytest.raises(UserError, match="not a dietsnn safetensors checkpoint") as e:
        load_model(path)
    assert "\n" not in str(e.value)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    dietsnn.save_model(dietsnn.build_ann("vgg_small"), path)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    cfg = json.loads(header["__metadata__"]["config"])
    cfg["in_channels"] = 3  # first conv now expects [32, 3, 3, 3]
    header["__metadata__"]["config"] = json.dumps(cfg)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(len(new).to_bytes(8, "little") + new + raw[8 + n :])
    with pytest.raises(UserError, match="does not fit this architecture"):
        load_model(path)


@pytest.mark.parametrize("meta", [{"config": "{}"}, {"config": '{"arch": "nope"}'},
                                  {"config": "not json"},
                                  {"config": '{"arch": "vgg_small"}', "spiking": '{"timesteps": 0}'}])
def test_bad_dietsnn_metadata_is_a_user_error(tmp_path, meta):
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "dietsnn-1", **meta})
    with pytest.raises(UserError, match="invalid dietsnn metadata"):
        load_model(path)


@pytest.mark.parametrize("spiking", [False, True])
def test_load_model_returns_the_model_in_eval_mode(tmp_path, spiking):
    model = dietsnn.build_ann("vgg_small", dropout=0.5)
    if spiking:
        model = dietsnn.ann_to_snn(model, 2)
    model.train()
    path = tmp_path / "model.safetensors"
    dietsnn.save_model(model, path)
    loaded = load_model(path)
    assert not any(m.training for m in loaded.modules())
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():  # dropout off: two calls give the same output
        torch.testing.assert_close(loaded(x), loaded(x), rtol=0, atol=0)


# -- damaged files: truncations and seeded bit flips (tests/data/test_fuzz.py: the data readers)

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_model(build_ann("vgg_small"), path)
    return path


def test_checkpoints_damaged(checkpoint, tmp_path):
    raw = checkpoint.read_bytes()
    header = 8 + int.from_bytes(raw[:8], "little")
    target = tmp_path / "model.safetensors"
    for case, bad in mutations(raw, flips=30, truncations=6, hot=header):
        target.write_bytes(bad)
        for read in (load_model, read_config):
            got = must_load_or_refuse(lambda read=read: read(target), case)
            if got is not None and read is load_model:
                assert all(bool(p.isfinite().all()) for p in got.parameters()), case


def test_a_checkpoint_claiming_a_huge_tensor_is_refused(tmp_path):
    model = build_ann("vgg_small")
    meta = {"config": json.dumps(model.config), "spiking": "{}", "extra": "{}",
            "format": "dietsnn-1"}
    raw = bytearray(st_save({k: v.contiguous() for k, v in model.state_dict().items()}, meta))
    n = int.from_bytes(raw[:8], "little")
    head = json.loads(raw[8:8 + n])
    key = "classifier.4.weight"
    head[key]["shape"] = [10**6, 10**6]
    head[key]["data_offsets"][1] = head[key]["data_offsets"][0] + 4 * 10**12
    new = json.dumps(head).encode()
    path = tmp_path / "huge.safetensors"
    path.write_bytes(len(new).to_bytes(8, "little") + new + bytes(raw[8 + n:]))
    with pytest.raises(UserError, match="not a dietsnn safetensors checkpoint"):
        load_model(path)
    # and a header whose length field alone claims 2^60 bytes
    path.write_bytes((1 << 60).to_bytes(8, "little") + bytes(raw[8:]))
    for read in (load_model, read_config):
        with pytest.raises(UserError, match="header length"):
            read(path)
