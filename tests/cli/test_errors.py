"""Every user mistake: one line naming the problem and the fix, exit code 2, no traceback,
nothing already written lost (docs/ERRORS.md lists the same cases)."""


import pytest
import torch
from helpers import one_line_error, simulate_full_disk, write_idx

from dietsnn import build_ann, save_model
from dietsnn.cli import main
from dietsnn.config import TrainConfig
from dietsnn.errors import UserError
from dietsnn.files import atomic_write
from dietsnn.training import fit


@pytest.fixture
def tiny(tmp_path):
    write_idx(tmp_path / "data" / "fashion-mnist", n_train=60, n_test=20)
    return tmp_path


@pytest.mark.parametrize("corrupt,match", [("truncated", "truncated or corrupt"),
                                           ("magic", "wrong magic number"),
                                           ("count", "do not match")])
def test_corrupt_dataset_files(tiny, capsys, corrupt, match):
    d = tiny / "bad"
    write_idx(d / "fashion-mnist", corrupt=corrupt)
    one_line_error(capsys, ["train-ann", "--data-dir", str(d), "--out", str(tiny / "o"),
                            "--quiet"], match)


def test_missing_dataset_offline(tiny, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tiny / "cache"))
    import urllib.request

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.delenv("DIETSNN_DATA", raising=False)
    one_line_error(capsys, ["train-ann", "--dataset", "mnist", "--out", str(tiny / "o"),
                            "--quiet"], "not found locally and the download of")


@pytest.mark.parametrize("dataset,files,match", [
    ("fashion-mnist", None, "no such directory"),
    ("fashion-mnist", ["train-images-idx3-ubyte.gz"], "lacks train-labels-idx1-ubyte.gz or "
                                                      "train-labels-idx1-ubyte, t10k-images"),
    ("cifar10", [], "lacks cifar-10-python.tar.gz or cifar-10-batches-py"),
    ("cifar10", ["cifar-10-batches-py/data_batch_1"], "lacks cifar-10-batches-py/data_batch_2"),
    ("imagenet", ["train/"], "lacks val"),
])
def test_an_explicit_data_dir_is_the_only_place_looked_in(tiny, capsys, monkeypatch, dataset,
                                                          files, match):
    """The data exists elsewhere ($DIETSNN_DATA holds a complete copy): an explicit --data-dir
    that lacks it is still an error naming what is missing, and nothing is downloaded."""
    monkeypatch.setenv("DIETSNN_DATA", str(tiny / "data"))
    import urllib.request

    def no_download(*a, **k):
        raise AssertionError("downloaded although --data-dir was given")

    monkeypatch.setattr(urllib.request, "urlopen", no_download)
    d = tiny / "given"
    if files is not None:
        d.mkdir()
        for f in files:
            (d / f).parent.mkdir(parents=True, exist_ok=True)
            if f.endswith("/"):
                (d / f).mkdir(exist_ok=True)
            else:
                (d / f).write_bytes(b"x")
    err = one_line_error(capsys, ["train-ann", "--dataset", dataset, "--data-dir", str(d),
                                  "--out", str(tiny / "o"), "--quiet"], match)
    assert f"--data-dir {d}" in err
    assert not (tiny / "o").exists()


def test_model_of_another_image_size_or_channels(tiny, capsys):
    save_model(build_ann("vgg_small", 10, 3, 32), tiny / "c10" / "model.safetensors")
    one_line_error(capsys, ["evaluate", str(tiny / "c10"), "--data-dir", str(tiny / "data")],
                   "expects 3x32x32 images")


@pytest.mark.parametrize("argv,match", [
    (["convert", "X", "--leak", "1.5"], "--leak must be in (0, 1]"),
    (["convert", "X", "--leak", "0"], "--leak must be in (0, 1]"),
    (["run", "--timesteps", "-3"], "--timesteps must be >= 1"),
    (["run", "--percentile", "0"], "--percentile must be in (1, 100]"),
    (["run", "--percentile", "0.997"], "--percentile must be in (1, 100]"),
    (["run", "--scale", "0"], "--scale must be in (0, inf]"),
    (["run", "--dataset", "imagenet-x"], "choose from"),
    (["run", "--arch", "resnet1000"], "choose from"),
    (["convert", "X", "--units", "spikes"], "invalid choice: 'spikes' (choose from 'auto'"),
])
def test_invalid_options(capsys, argv, match):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err


def test_non_finite_loss_stops_naming_step_and_thresholds(tiny):
    from dietsnn import ann_to_snn
    from dietsnn.data import load

    data = load("fashion-mnist", tiny / "data", val_size=10)
    snn = ann_to_snn(build_ann("vgg_small"), 2)
    with torch.no_grad():
        snn.get_submodule("net.classifier.4").weight.fill_(float("nan"))
    with pytest.raises(UserError, match=r"loss became nan at step 0.*thresholds: net\.features\.1="):
        fit(snn, data, TrainConfig(epochs=1, batch_size=16), tiny / "nan", progress=False,
            log=lambda *a: None)


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    atomic_write(path, b"good")
    simulate_full_disk(monkeypatch)
    with pytest.raises(UserError, match="No space left on device; the previous file is intact"):
        atomic_write(path, b"new")
    assert path.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_convert_refuses_to_write_into_the_ann_folder(tiny, capsys):
    save_model(build_ann("vgg_small"), tiny / "ann" / "model.safetensors")
    one_line_error(capsys, ["convert", str(tiny / "ann"), "--out", str(tiny / "ann"),
                            "--data-dir", str(tiny / "data")], "never modified")


def test_ann_given_to_train_snn_and_missing_cuda(tiny, capsys):
    save_model(build_ann("vgg_small"), tiny / "ann" / "model.safetensors")
    one_line_error(capsys, ["train-snn", str(tiny / "ann"), "--data-dir", str(tiny / "data"),
                            "--val-size", "10", "--out", str(tiny / "s"), "--quiet"],
                   "run `dietsnn convert` first")
    if not torch.cuda.is_available():
        one_line_error(capsys, ["evaluate", str(tiny / "ann"), "--device", "cuda"],
                       "no CUDA device here")


def test_option_errors_are_one_line(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--timesteps", "0"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage" not in err
