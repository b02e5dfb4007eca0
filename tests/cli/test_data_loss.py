"""No command destroys what it did not create: every refused case leaves the earlier files
byte-for-byte unchanged (docs/RELIABILITY.md lists these cases)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from helpers import write_idx

from dietsnn import ann_to_snn, build_ann, save_model
from dietsnn.cli import main
from dietsnn.files import write_json
from dietsnn.rundir import RunDir


def snapshot(folder) -> dict:
    """Every file and folder under `folder`, hidden ones included, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


def refused(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture
def run(tmp_path):
    """A finished run as the three steps leave it: RUN/ann, RUN/converted, RUN/snn."""
    write_idx(tmp_path / "data" / "fashion-mnist", n_train=60, n_test=20)
    r = tmp_path / "RUN"
    ann = build_ann("vgg_small")
    for step, model, cmd in (("ann", ann, "train-ann"), ("converted", ann_to_snn(ann, 2), "convert"),
                             ("snn", ann_to_snn(ann, 2), "train-snn")):
        save_model(model, r / step / "model.safetensors")
        write_json(r / step / "config.json", {"command": cmd})
        write_json(r / step / "metrics.json", {step: {"test_accuracy": 0.5}})
    (r / "ann" / "state.pt").write_bytes(b"earlier state")
    return tmp_path


def _data(run):
    return ["--data-dir", str(run / "data"), "--quiet", "--val-size", "10"]


def test_train_snn_never_writes_over_its_input(run, capsys):
    before = snapshot(run / "RUN")
    for extra in ([], ["--overwrite"], ["--resume"]):
        refused(capsys, ["train-snn", str(run / "RUN" / "converted"), "--out",
                         str(run / "RUN" / "converted"), *_data(run), *extra], "never modified")
    refused(capsys, ["train-snn", str(run / "RUN" / "converted" / "model.safetensors"),
                     "--out", str(run / "RUN" / "converted"), *_data(run)], "never modified")
    assert snapshot(run / "RUN") == before


def test_train_snn_into_the_ann_folder_is_refused(run, capsys):
    before = snapshot(run / "RUN")
    out = str(run / "RUN" / "ann")
    refused(capsys, ["train-snn", str(run / "RUN" / "converted"), "--out", out, *_data(run)],
            "holds a run of `dietsnn train-ann`")
    refused(capsys, ["train-snn", str(run / "RUN" / "converted"), "--out", out, "--resume",
                     *_data(run)], "--resume continues only runs of `dietsnn train-snn`")
    assert snapshot(run / "RUN") == before


def test_convert_into_the_parent_run_is_refused(run, capsys):
    before = snapshot(run / "RUN")
    for out in (run / "RUN", run / "RUN" / "ann"):
        refused(capsys, ["convert", str(run / "RUN" / "ann"), "--out", str(out), *_data(run),
                         "--overwrite"], "never modified")
    assert snapshot(run / "RUN") == before


def test_train_ann_into_an_existing_run_needs_resume_or_overwrite(run, capsys):
    before = snapshot(run / "RUN")
    refused(capsys, ["train-ann", "--out", str(run / "RUN" / "ann"), *_data(run)],
            "pass --resume to continue it, pass --overwrite to replace it")
    refused(capsys, ["run", "--out", str(run / "RUN" / "ann"), *_data(run)], "is not empty")
    (run / "other").mkdir()
    (run / "other" / "notes.txt").write_text("mine")
    refused(capsys, ["train-ann", "--out", str(run / "other"), *_data(run), "--overwrite"],
            "holds no dietsnn run")
    assert (run / "other" / "notes.txt").read_text() == "mine"
    assert snapshot(run / "RUN") == before


@pytest.mark.parametrize("flag,match", [("--overwrite", "wrong magic number"),
                                        ("--resume", "cannot load training state safely")])
def test_a_failing_command_writes_nothing(run, capsys, flag, match):
    """Corrupt data (and, with --resume, the damaged state.pt, checked before the data are
    read): refused before config.json (or anything else) is written or removed."""
    write_idx(run / "bad" / "fashion-mnist", corrupt="magic")
    before = snapshot(run / "RUN")
    refused(capsys, ["train-ann", "--out", str(run / "RUN" / "ann"), "--data-dir",
                     str(run / "bad"), "--quiet", flag], match)
    assert snapshot(run / "RUN") == before


def test_a_damaged_resume_state_writes_nothing(run, capsys):
    before = snapshot(run / "RUN")  # state.pt holds b"earlier state": not a torch file
    refused(capsys, ["train-ann", "--out", str(run / "RUN" / "ann"), "--arch", "vgg_small",
                     *_data(run), "--resume"], "cannot load training state safely")
    assert snapshot(run / "RUN") == before


def test_a_failed_first_attempt_leaves_no_folder(run, capsys):
    write_idx(run / "bad" / "fashion-mnist", corrupt="count")
    refused(capsys, ["train-ann", "--out", str(run / "new"), "--data-dir", str(run / "bad"),
                     "--quiet"], "do not match")
    assert not (run / "new").exists()


def test_export_never_replaces_what_it_did_not_create(run, capsys):
    snn = str(run / "RUN" / "snn")
    before = snapshot(run / "RUN")
    (run / "taken.nir").write_bytes(b"earlier export")
    os.mkfifo(run / "fifo")
    refused(capsys, ["export", snn, str(run / "taken.nir")], "pass --overwrite")
    refused(capsys, ["export", snn, str(run / "RUN")], "is a directory")
    refused(capsys, ["export", snn, str(run / "fifo"), "--overwrite"], "not a regular file")
    refused(capsys, ["export", snn, "/dev/null", "--overwrite"], "not a regular file")
    refused(capsys, ["export", snn, str(run / "RUN" / "snn" / "model.safetensors"),
                     "--overwrite"], "is the input")
    assert (run / "taken.nir").read_bytes() == b"earlier export"
    assert snapshot(run / "RUN") == before
    pytest.importorskip("nir")
    assert main(["export", snn, str(run / "taken.nir"), "--overwrite"]) == 0
    assert (run / "taken.nir").read_bytes() != b"earlier export"
    assert (run / "taken.nir").stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_a_locked_run_is_refused_naming_the_pid(run, capsys):
    out = run / "locked"
    with RunDir(out, "train-ann"):
        refused(capsys, ["train-ann", "--out", str(out), *_data(run)],
                f"in use by PID {os.getpid()}")
    assert not out.exists()  # created by the holder, left empty: removed again


def _train(run, out, *extra):
    return [sys.executable, "-m", "dietsnn", "train-ann", "--data-dir", str(run / "data"),
            "--out", str(out), "--arch", "vgg_small", "--epochs", "1", "--val-size", "10",
            "--threads", "1", *extra]


@pytest.mark.subprocess
def test_two_processes_one_out_exactly_one_runs(run):
    out = run / "shared"
    a = subprocess.Popen(_train(run, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    line = a.stdout.readline()  # event: A logs "loading ..." once it holds the lock
    assert line.startswith("loading"), line
    os.kill(a.pid, signal.SIGSTOP)  # A holds the lock, paused, for as long as B runs
    try:
        b = subprocess.run(_train(run, out, "--seed", "7"), capture_output=True, text=True,
                           timeout=120)
    finally:
        os.kill(a.pid, signal.SIGCONT)
    a_out, a_err = a.communicate(timeout=300)
    assert a.returncode == 0, a_err
    assert b.returncode == 2
    assert f"in use by PID {a.pid}" in b.stderr and b.stderr.count("\n") == 1
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seed"] != 7  # every file is A's
    # once A has finished, the folder is a finished run: B's retry is refused, not mixed in
    t0 = time.time()
    c = subprocess.run(_train(run, out, "--seed", "7"), capture_output=True, text=True,
                       timeout=120)
    assert c.returncode == 2 and "is not empty" in c.stderr, (c.stderr, time.time() - t0)


def test_a_run_folder_with_two_models_is_ambiguous(run, capsys):
    """A run damaged before folders were checked (a converted model written into RUN): evaluate
    and predict name the conflict instead of using the converted model."""
    save_model(ann_to_snn(build_ann("vgg_small"), 2), run / "RUN" / "model.safetensors")
    refused(capsys, ["evaluate", str(run / "RUN"), *_data(run)[:2]],
            "holds both model.safetensors and snn/model.safetensors")
    refused(capsys, ["predict", str(run / "RUN"), "x.png"], "name the checkpoint file")


@pytest.mark.parametrize("command", ["train-ann", "train-snn"])
@pytest.mark.parametrize("state", ["missing", "empty", "not a torch file"])
def test_resume_without_a_usable_state_changes_nothing(run, capsys, command, state):
    """--resume of a run whose state.pt is missing, empty or damaged would train from scratch
    and replace its model: refused naming the file, before anything is read or written."""
    out = run / "RUN" / ("ann" if command == "train-ann" else "snn")
    (out / "history.json").write_text("[]")  # a run that has trained
    if state == "missing":
        (out / "state.pt").unlink(missing_ok=True)
    else:
        (out / "state.pt").write_bytes(b"" if state == "empty" else b"earlier state")
    before = snapshot(run / "RUN")
    src = [str(run / "RUN" / "converted")] if command == "train-snn" else []
    match = "cannot load training state" if state == "not a torch file" else \
        f"{out / 'state.pt'}: no training state to resume from ({state})"
    refused(capsys, [command, *src, "--out", str(out), *_data(run), "--resume"], match)
    assert snapshot(run / "RUN") == before


def _replace(path, kind: str) -> None:
    """Put a folder, FIFO, symlink (to a file elsewhere, or dangling) at `path`."""
    if os.path.lexists(path):
        if path.is_dir() and not path.is_symlink():
            raise AssertionError(path)
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "dir":
        path.mkdir()
        (path / "inside").write_bytes(b"mine")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink":
        path.symlink_to(path.parent.parent / "elsewhere.txt")
    else:
        path.symlink_to(path.parent / "no-such-target")


def _outputs_cases():
    """(command line with {run}, run-relative folder that it writes, its outputs)."""
    from dietsnn.cli.options import OUTPUTS

    cfg = ["config.json", ".dietsnn-run.json"]
    return [
        (["train-ann", "--out", "{run}/RUN/ann", "--resume"], "RUN/ann",
         [*OUTPUTS["train-ann"], *cfg]),
        (["train-snn", "{run}/RUN/converted", "--out", "{run}/RUN/snn", "--resume"], "RUN/snn",
         [*OUTPUTS["train-snn"], *cfg]),
        (["run", "--out", "{run}/RUN", "--resume"], "RUN", [*OUTPUTS["run"], *cfg]),
        (["sweep", "{run}/RUN", "--timesteps", "1", "--overwrite"], "RUN",
         ["metrics.json", "sweep.json", "sweep.png"]),
        (["energy", "{run}/RUN", "--overwrite"], "RUN", ["metrics.json"]),
    ]


def test_every_output_that_is_not_a_regular_file_is_refused_before_work(run, capsys):
    """Each output of each command replaced in turn by a folder, a FIFO, a symlink to a file
    elsewhere and a dangling symlink: refused in one line (exit 2) before any work, every file
    byte-for-byte as it was (a sweep with a FIFO at sweep.png used to rewrite metrics.json
    first; a folder at metrics.json made sweep and energy store nothing)."""
    write_json(run / "RUN" / ".dietsnn-run.json", {"command": "run", "finished": True})
    write_json(run / "RUN" / "config.json", {"command": "run"})
    write_json(run / "RUN" / "metrics.json", {"ann": {"test_accuracy": 0.5}})
    (run / "elsewhere.txt").write_bytes(b"not dietsnn's")
    cases = 0
    for argv, folder, outputs in _outputs_cases():
        for name in outputs:
            for kind in ("dir", "fifo", "symlink", "dangling"):
                target = run / folder / name
                saved = target.read_bytes() if target.is_file() else None
                _replace(target, kind)
                before = snapshot(run)
                args = [a.replace("{run}", str(run)) for a in argv]
                refused(capsys, [*args, *_data(run)], "not a regular file")
                assert snapshot(run) == before, (argv, name, kind)
                if kind == "dir":
                    (target / "inside").unlink()
                    target.rmdir()
                else:
                    target.unlink()
                if saved is not None:
                    target.write_bytes(saved)
                cases += 1
    assert cases > 100


def test_an_output_folder_that_is_a_file_is_refused(run, capsys):
    write_json(run / "RUN" / ".dietsnn-run.json", {"command": "run", "finished": True})
    write_json(run / "RUN" / "config.json", {"command": "run"})
    shutil.rmtree(run / "RUN" / "snn")
    (run / "RUN" / "snn").write_bytes(b"a file where the step's folder goes")
    before = snapshot(run)
    refused(capsys, ["run", "--out", str(run / "RUN"), "--resume", *_data(run)],
            f"{run / 'RUN' / 'snn'} is not a folder")
    assert snapshot(run) == before


@pytest.mark.parametrize("kind", ["fifo", "dir", "device"])
def test_predict_refuses_inputs_that_are_not_regular_files(run, capsys, kind):
    """A FIFO would block forever: refused from the open descriptor, without reading."""
    img = run / "img.png"
    if kind == "fifo":
        os.mkfifo(img)
    elif kind == "dir":
        img.mkdir()
    else:
        img = "/dev/zero"
    refused(capsys, ["predict", str(run / "RUN" / "snn"), str(img)],
            f"{img} is not a regular file")
