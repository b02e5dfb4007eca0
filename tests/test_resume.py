import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import write_idx


def _cmd(data, out, epochs, *extra):
    return [sys.executable, "-m", "dietsnn", "train-ann", "--data-dir", str(data), "--out", str(out),
            "--epochs", str(epochs), "--val-size", "40", "--batch-size", "16", "--threads", "1",
            "--quiet", *extra]


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigkill_mid_training_then_resume_matches_uninterrupted(tmp_path):
    data = tmp_path / "data"
    write_idx(data / "fashion-mnist", n_train=400, n_test=40)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ref = tmp_path / "ref"
    subprocess.run(_cmd(data, ref, 4), check=True, env=env, timeout=300)

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(data, out, 4), env=env)
    state, history = out / "state.pt", out / "history.json"
    deadline = time.time() + 120  # a bound on waiting, not an assertion on speed
    while time.time() < deadline and not (state.exists() and history.exists()):
        time.sleep(0.05)  # wait for the event: the first epoch's checkpoint is on disk
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists(), "no checkpoint was written before the kill"
    hist = json.loads((out / "history.json").read_text())
    assert len(hist) < 4, "the run finished before it could be killed"
    subprocess.run(_cmd(data, out, 4, "--resume"), check=True, env=env, timeout=300)

    a = json.loads((ref / "history.json").read_text())
    b = json.loads((out / "history.json").read_text())
    key = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
    assert [[r[k] for k in key] for r in a] == [[r[k] for k in key] for r in b]
    ma = json.loads((ref / "metrics.json").read_text())["ann"]
    mb = json.loads((out / "metrics.json").read_text())["ann"]
    assert ma["test_accuracy"] == mb["test_accuracy"]


def _snapshot(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("state", ["missing", "empty", "a folder"])
def test_resume_of_a_finished_run_without_its_state_changes_nothing(tmp_path, capsys, state):
    """A finished train-ann run whose state.pt is missing used to train again from scratch
    and replace the model (history 2 epochs -> 1); empty, it was a traceback; a folder, the
    model and config.json were rewritten before the command failed."""
    from dietsnn.cli import main

    write_idx(tmp_path / "data" / "fashion-mnist", n_train=60, n_test=10)
    out = tmp_path / "run"
    argv = ["train-ann", "--data-dir", str(tmp_path / "data"), "--out", str(out), "--val-size",
            "10", "--batch-size", "25", "--threads", "1", "--quiet"]
    assert main([*argv, "--epochs", "2"]) == 0
    (out / "state.pt").unlink()
    if state == "empty":
        (out / "state.pt").write_bytes(b"")
    elif state == "a folder":
        (out / "state.pt").mkdir()
    before = _snapshot(out)
    capsys.readouterr()
    assert main([*argv, "--epochs", "1", "--resume"]) == 2
    err = capsys.readouterr().err
    want = "exists and is not a regular file" if state == "a folder" else \
        f"{out / 'state.pt'}: no training state to resume from ({state})"
    assert want in err and err.count("\n") == 1, err
    assert _snapshot(out) == before
    assert len(json.loads((out / "history.json").read_text())) == 2
