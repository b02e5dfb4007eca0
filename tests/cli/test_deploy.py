"""`predict_images` and the `dietsnn predict` / `dietsnn export` commands on a tiny saved model."""

import json
import sys

import numpy as np
import pytest
import torch

import dietsnn
from dietsnn.cli import main
from dietsnn.cli.deploy import run_dataset
from dietsnn.data import DATASETS, normalize
from dietsnn.errors import UserError
from dietsnn.layers import lif_layers
from dietsnn.predict import load_image, predict_images

Image = pytest.importorskip("PIL.Image")


def tiny(T=3, threshold=0.05):
    torch.manual_seed(0)
    snn = dietsnn.ann_to_snn(dietsnn.build_ann("vgg_small"), T)
    with torch.no_grad():
        for _, m in lif_layers(snn):
            m.threshold.fill_(threshold)
    return snn


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    dietsnn.save_model(tiny(), run / "snn" / "model.safetensors")
    (run / "config.json").write_text(json.dumps({"dataset": "fashion-mnist"}))
    return run


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    grey = tmp_path / "grey.png"
    Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L").save(grey)
    rgb = tmp_path / "photo.jpg"  # colour and another size: converted and resized
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), "RGB").save(rgb)
    return [grey, rgb]


def test_load_image_converts_and_resizes(images):
    assert load_image(images[0], 1, 28).shape == (1, 28, 28)
    x = load_image(images[1], 3, 32)
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8
    assert load_image(images[1], 1, 28).shape == (1, 28, 28)


def test_predict_matches_the_model(images):
    model, info = tiny(), DATASETS["fashion-mnist"]
    res = predict_images(model, images, info)
    x = normalize(torch.stack([load_image(p, 1, 28) for p in images]), info)
    with torch.no_grad():
        probs = torch.softmax(model.eval()(x), 1)
    for r, p, path in zip(res, probs, images):
        assert set(r) == {"path", "class_index", "class", "confidence", "spikes"}
        assert r["path"] == str(path) and r["class_index"] == int(p.argmax())
        assert r["class"] == info.classes[r["class_index"]]
        assert r["confidence"] == pytest.approx(float(p.max()), abs=1e-6)
        assert isinstance(r["spikes"], int) and r["spikes"] > 0


def test_spike_counts_are_per_image_totals(images):
    model, info = tiny(T=2), DATASETS["fashion-mnist"]
    both = predict_images(model, images, info)
    alone = [predict_images(model, [p], info)[0]["spikes"] for p in images]
    assert [r["spikes"] for r in both] == alone  # batching does not mix images
    x = normalize(load_image(images[0], 1, 28)[None], info)
    total = []
    hs = [m.register_forward_hook(lambda m, i, o: total.append(o.sum())) for _, m in lif_layers(model)]
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    assert alone[0] == int(sum(total))
    quiet = tiny(threshold=1e6)
    assert all(r["spikes"] == 0 for r in predict_images(quiet, images, info))
    ann = dietsnn.build_ann("vgg_small")
    assert all(r["spikes"] == 0 for r in predict_images(ann, images, info))


def test_predict_errors_name_the_file(tmp_path, images):
    model, info = tiny(), DATASETS["fashion-mnist"]
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(UserError, match="notes.png: not a readable image"):
        predict_images(model, [images[0], bad], info)
    with pytest.raises(UserError, match="missing.png: no such image file"):
        predict_images(model, [tmp_path / "missing.png"], info)
    with pytest.raises(UserError, match="1-channel images but cifar10 has 3"):
        predict_images(model, images, DATASETS["cifar10"])


def test_run_dataset_from_config(tmp_path, run_dir):
    assert run_dataset(run_dir) == "fashion-mnist"
    assert run_dataset(run_dir / "snn") == "fashion-mnist"  # the parent's config
    assert run_dataset(run_dir / "snn" / "model.safetensors") == "fashion-mnist"
    (run_dir / "snn" / "config.json").write_text(json.dumps({"dataset": "mnist"}))
    assert run_dataset(run_dir / "snn") == "mnist"
    assert run_dataset(tmp_path / "elsewhere") == "fashion-mnist"


def test_cli_predict_json_and_text(run_dir, images, capsys):
    assert main(["predict", str(run_dir), *map(str, images), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in res] == [str(p) for p in images]
    assert all(0.0 <= r["confidence"] <= 1.0 and r["class"] in DATASETS["fashion-mnist"].classes
               for r in res)
    assert main(["predict", str(run_dir / "snn"), str(images[0]), "--dataset", "mnist"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"{images[0]}: ") and "confidence" in out[0]
    assert "spikes" in out[0]


@pytest.mark.parametrize("case,msg", [
    ("missing_image", "nope.png: no such image file"),
    ("text_image", "bad.png: not a readable image"),
    ("no_model", "no such checkpoint"),
    ("channels", "1-channel images but cifar10 has 3"),
    ("bad_config", "not a readable JSON config"),
])
def test_cli_predict_errors_are_one_line(tmp_path, run_dir, images, capsys, case, msg):
    args = ["predict", str(run_dir), str(images[0])]
    if case == "missing_image":
        args[-1] = str(tmp_path / "nope.png")
    elif case == "text_image":
        (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
        args[-1] = str(tmp_path / "bad.png")
    elif case == "no_model":
        args[1] = str(tmp_path / "nothing")
    elif case == "channels":
        (run_dir / "config.json").write_text(json.dumps({"dataset": "cifar10"}))
    else:
        (run_dir / "config.json").write_text("{oops")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_export_nir(tmp_path, run_dir, capsys):
    nir = pytest.importorskip("nir")
    out = tmp_path / "model.nir"
    assert main(["export", str(run_dir), "--format", "nir", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    g = nir.read(out)
    assert g.metadata["timesteps"] == 3 and "input" in g.nodes and "output" in g.nodes
    assert not any(isinstance(n, nir.I) for n in g.nodes.values())  # the default: no integrator


def test_cli_export_options(tmp_path, run_dir):
    nir = pytest.importorskip("nir")
    out = tmp_path / "model.nir"
    assert main(["export", str(run_dir), str(out), "--integrator", "--dt", "0.001"]) == 0
    g = nir.read(out)
    kinds = {type(n).__name__ for n in g.nodes.values()}
    assert "I" in kinds and not kinds & {"IF", "AvgPool2d"}
    md = g.metadata
    assert (md["dt"], md["nonleaky"], md["pooling"]) == (0.001, "lif", "conv")
    assert main(["export", str(run_dir), str(out), "--overwrite", "--nonleaky", "if"]) == 0
    assert (nir.read(out).metadata["nonleaky"], nir.read(out).metadata["pooling"]) == ("if", "conv")
    assert main(["export", str(run_dir), str(out), "--overwrite", "--exact"]) == 0
    kinds = {type(n).__name__ for n in nir.read(out).nodes.values()}
    assert {"IF", "AvgPool2d"} <= kinds


def test_cli_export_errors(tmp_path, run_dir, capsys):
    ann = tmp_path / "ann" / "model.safetensors"
    dietsnn.save_model(dietsnn.build_ann("vgg_small"), ann)
    cases = [(["export", str(tmp_path / "ann"), str(tmp_path / "a.nir")], "ANN"),
             (["export", str(run_dir), str(tmp_path / "no" / "dir" / "a.nir")], "no such directory"),
             (["export", str(run_dir), str(tmp_path)], "is a directory"),
             (["export", str(tmp_path / "missing"), str(tmp_path / "a.nir")], "no such checkpoint")]
    pytest.importorskip("nir")
    for args, msg in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err


def test_missing_nir_tells_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "nir", None)
    from dietsnn.export import to_nir

    with pytest.raises(UserError, match="pip install nir"):
        to_nir(tiny())


def test_a_16_bit_png_is_scaled_from_65535(tmp_path):
    a = np.array([[0, 257, 32768, 65535]] * 4, dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(a).save(path)
    assert Image.open(path).mode == "I;16"
    x = load_image(path, 1, 4)
    assert x[0, 0].tolist() == [0, 1, 128, 255]  # not clipped at 255 as an 8-bit conversion is
    assert load_image(path, 3, 4).shape == (3, 4, 4)


def test_a_floating_point_image_is_refused_in_one_line(tmp_path):
    path = tmp_path / "depth.tiff"
    Image.fromarray(np.ones((28, 28), dtype=np.float32)).save(path)
    with pytest.raises(UserError, match="floating-point images are not supported") as e:
        load_image(path, 1, 28)
    assert "\n" not in str(e.value)
