"""The run-directory mechanism (dietsnn.rundir) and atomic writes, without the CLI."""

import os
import signal
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dietsnn.errors import UserError
from dietsnn.files import TMP_TAG, atomic_write, transaction, write_json
from dietsnn.rundir import CONFIG_FILE, LOCK_FILE, MARKER_FILE, RunDir


def _mode(p) -> int:
    return p.stat().st_mode & 0o777


def test_atomic_write_gives_the_usual_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.bin", b"x")
        assert _mode(tmp_path / "a.bin") == 0o644
        os.umask(0o077)
        atomic_write(tmp_path / "b.bin", b"x")
        assert _mode(tmp_path / "b.bin") == 0o600
    finally:
        os.umask(old)


def test_atomic_write_never_replaces_a_non_regular_file(tmp_path):
    (tmp_path / "d").mkdir()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    for name in ("d", "fifo", "link"):
        with pytest.raises(UserError, match="not a regular file"):
            atomic_write(tmp_path / name, b"x")
    assert (tmp_path / "d").is_dir() and (tmp_path / "link").is_symlink()
    assert not (tmp_path / "target").exists()


def test_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_bytes(b"mine")
    with pytest.raises(UserError, match="not a directory"), RunDir(tmp_path / "f", "train-ann"):
        pass
    assert (tmp_path / "f").read_bytes() == b"mine"


def test_temporary_files_of_a_killed_write_are_removed_on_open(tmp_path):
    out = tmp_path / "run"
    (out / "ann").mkdir(parents=True)
    left = [out / f".model.safetensors{TMP_TAG}abc", out / "ann" / f".state.pt{TMP_TAG}xyz"]
    for p in left:
        p.write_bytes(b"partial")
    (out / ".hidden-but-mine").write_bytes(b"keep")
    with pytest.raises(UserError, match="is not empty"), RunDir(out, "train-ann"):
        pass
    assert not any(p.exists() for p in left)
    assert (out / ".hidden-but-mine").read_bytes() == b"keep"


def test_start_writes_config_and_marker_finish_marks_it(tmp_path):
    import json

    out = tmp_path / "run"
    with RunDir(out, "train-ann") as r:
        assert not (out / CONFIG_FILE).exists()  # nothing before the inputs are validated
        r.start({"command": "train-ann"})
        assert json.loads((out / MARKER_FILE).read_text())["finished"] is False
    assert json.loads((out / MARKER_FILE).read_text())["finished"] is True
    # an own unfinished run holding only its config may be started again without flags
    write_json(out / MARKER_FILE, {"command": "train-ann", "finished": False})
    with RunDir(out, "train-ann"):
        pass
    with pytest.raises(UserError, match="holds an unfinished run of `dietsnn train-ann`"), \
            RunDir(out, "convert"):
        pass


def test_overwrite_clears_only_after_start(tmp_path):
    out = tmp_path / "run"
    with RunDir(out, "train-ann") as r:
        r.start({"command": "train-ann"})
    (out / "model.safetensors").write_bytes(b"earlier")
    with pytest.raises(RuntimeError), RunDir(out, "train-ann", overwrite=True):
        raise RuntimeError("validation failed")
    assert (out / "model.safetensors").read_bytes() == b"earlier"
    with RunDir(out, "train-ann", overwrite=True) as r:
        r.start({"command": "train-ann", "seed": 1})
    assert sorted(p.name for p in out.iterdir()) == [MARKER_FILE, LOCK_FILE, CONFIG_FILE]


def test_resume_and_overwrite_exclude_each_other(tmp_path):
    with pytest.raises(UserError, match="exclude each other"):
        RunDir(tmp_path, "train-ann", resume=True, overwrite=True)


@pytest.mark.subprocess
def test_a_lock_of_a_killed_process_is_not_stale(tmp_path):
    out = tmp_path / "run"
    code = ("import sys; from dietsnn.rundir import RunDir\n"
            f"r = RunDir({str(out)!r}, 'train-ann').__enter__()\n"
            "print('locked', flush=True); sys.stdin.read()")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "locked\n"  # event: the child holds the lock
    with pytest.raises(UserError, match=f"in use by PID {p.pid}"), RunDir(out, "train-ann"):
        pass
    p.send_signal(signal.SIGKILL)
    p.wait()
    with RunDir(out, "train-ann") as r:  # the kernel released the dead process's lock
        r.start({"command": "train-ann"})


def test_a_folder_inside_a_running_run_is_in_use(tmp_path):
    with RunDir(tmp_path / "RUN", "run") as r:
        r.start({"command": "run"})
        with pytest.raises(UserError, match=rf"in use by PID {os.getpid()} \(through "), \
                RunDir(tmp_path / "RUN" / "snn", "train-snn", resume=True):
            pass
    with RunDir(tmp_path / "RUN" / "snn", "train-snn"):  # free once the run has finished
        pass


def test_a_step_of_a_run_folder_resumes_as_that_step(tmp_path):
    with RunDir(tmp_path / "RUN", "run") as r:
        r.start({"command": "run"})
    (tmp_path / "RUN" / "snn").mkdir()
    (tmp_path / "RUN" / "snn" / "model.safetensors").write_bytes(b"trained")
    with RunDir(tmp_path / "RUN" / "snn", "train-snn", resume=True):
        pass
    with pytest.raises(UserError, match="is a run of `dietsnn train-snn`; --resume continues "
                                        "only runs of `dietsnn train-ann`"), \
            RunDir(tmp_path / "RUN" / "snn", "train-ann", resume=True):
        pass
    assert (tmp_path / "RUN" / "snn" / "model.safetensors").read_bytes() == b"trained"


@pytest.mark.slow
@pytest.mark.subprocess
def test_every_rank_stops_when_rank_0_refuses_the_folder(tmp_path):
    from helpers import write_idx

    write_idx(tmp_path / "data" / "fashion-mnist", n_train=40, n_test=10)
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", "2", "-m", "dietsnn", "train-ann", "--data-dir",
                        str(tmp_path / "data"), "--out", str(out), "--quiet", "--threads", "1"],
                       capture_output=True, text=True, timeout=240,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode != 0
    assert "is not empty" in r.stderr and "refused by rank 0" in r.stderr, r.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("how", ["refused", "update", "output not regular"])
def test_a_command_that_does_not_start_leaves_the_lock_file_as_it_was(tmp_path, how):
    """The PID in an existing lock file (of an earlier run) is put back when a command is
    refused or only adds to the run (sweep, energy)."""
    out = tmp_path / "run"
    with RunDir(out, "train-ann") as r:
        r.start({"command": "train-ann"})
    (out / "model.safetensors").write_bytes(b"trained")
    (out / LOCK_FILE).write_bytes(b"4242\n")
    if how == "output not regular":
        (out / "history.json").mkdir()
    with pytest.raises(UserError) if how != "update" else _no_error():
        with RunDir(out, "train-ann", resume=how != "refused", update=how == "update",
                    outputs=["history.json"]):
            assert (out / LOCK_FILE).read_text() == f"{os.getpid()}\n"  # while it runs
    assert (out / LOCK_FILE).read_bytes() == b"4242\n"


class _no_error:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5), fail_at=st.integers(0, 5))
def test_a_transaction_writes_all_files_or_none(tmp_path_factory, n, fail_at):
    """Several files written as one (`files.transaction`): a failure while any temporary file
    is written leaves every earlier file as it was and no temporary file behind; without a
    failure every file is replaced."""
    d = tmp_path_factory.mktemp("tx")
    paths = [d / f"f{i}.json" if i % 2 else d / "sub" / f"f{i}.bin" for i in range(n)]
    for i, p in enumerate(paths[::2]):
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"earlier %d" % i)
    before = {p: p.read_bytes() for p in d.rglob("*") if p.is_file()}
    calls = {"n": 0}
    real_fdopen = os.fdopen

    def fdopen(fd, mode):
        calls["n"] += 1
        if calls["n"] == fail_at + 1:
            os.close(fd)
            raise OSError(28, "No space left on device")
        return real_fdopen(fd, mode)

    failing = fail_at < n  # fail_at >= n: no failure
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "fdopen", fdopen)
        try:
            with transaction():
                for i, p in enumerate(paths):
                    atomic_write(p, b"new %d" % i)
                assert {p: p.read_bytes() for p in d.rglob("*") if p.is_file()} == before
        except UserError as e:
            assert failing and "No space left" in str(e)
        else:
            assert not failing
    after = {p: p.read_bytes() for p in d.rglob("*") if p.is_file()}
    if failing:
        assert after == before
    else:
        assert after == {p: b"new %d" % i for i, p in enumerate(paths)}
    assert not [p for p in d.rglob("*") if TMP_TAG in p.name]


def test_a_transaction_refuses_a_non_regular_output_before_writing_any(tmp_path):
    (tmp_path / "a.json").write_bytes(b"earlier")
    os.mkfifo(tmp_path / "b.png")
    with pytest.raises(UserError, match="b.png exists and is not a regular file"), transaction():
        atomic_write(tmp_path / "a.json", b"new")
        atomic_write(tmp_path / "b.png", b"new")
    assert (tmp_path / "a.json").read_bytes() == b"earlier"
