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
