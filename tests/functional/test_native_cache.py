"""The native kernel cache loads only what this user built. A library planted where another user
could have put it (its constructor appends to $DIETSNN_TEST_MARK when loaded) is never loaded:
the kernels then come from a private build, or the eager backend runs. A stand-in compiler copies
a prebuilt library, so that each layout costs a copy, not a compilation."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from helpers import on_engine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dietsnn.functional import native
from dietsnn.functional.neuron import lif

pytestmark = pytest.mark.skipif(not hasattr(os, "geteuid") or native.compiler() is None,
                                reason="needs a C compiler and POSIX owners")
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
OTHER = 65534  # "nobody": another user (files are given to it only where the tests run as root)
PLANTED_C = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void planted(void) {
    const char *mark = getenv("DIETSNN_TEST_MARK");
    FILE *f = mark ? fopen(mark, "a") : NULL;
    if (f) { fputs("loaded\n", f); fclose(f); }
}
"""


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    """good.so (the kernels), planted.so (the kernels plus the marking constructor), a stand-in
    compiler `cc` that "builds" good.so, and the library's file name under that compiler."""
    d = tmp_path_factory.mktemp("libs")
    (d / "planted.c").write_text(PLANTED_C)
    base = [native.compiler(), "-O0", "-fPIC", "-shared", *map(str, native.SOURCES)]
    subprocess.run([*base, "-o", str(d / "good.so"), "-lm"], check=True)
    subprocess.run([*base, str(d / "planted.c"), "-o", str(d / "planted.so"), "-lm"], check=True)
    (d / "cc").write_text("#!/bin/sh\nwhile [ $# -gt 0 ]; do\n"
                          f'  [ "$1" = -o ] && cp {d / "good.so"} "$2"\n  shift\ndone\nexit 0\n')
    (d / "cc").chmod(0o755)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CC", str(d / "cc"))
        mp.setenv("DIETSNN_CACHE_DIR", str(d / "probe"))
        mp.setattr(native, "_STATE", {})
        assert native.library() is not None
    (name,) = [p.name for p in (d / "probe").glob("dietsnn_native_*.so")]
    return d, name


class Env:
    """One process's view: a fresh `native` state, the stand-in compiler, a private temporary
    folder, and the mark the planted library would leave."""

    def __init__(self, mp: pytest.MonkeyPatch, libs, root: Path):
        self.dir, self.name, self.root = libs[0], libs[1], root
        self.mark, self.tmp = root / "mark", root / "tmp"
        self.tmp.mkdir(mode=0o700)
        mp.setenv("CC", str(self.dir / "cc"))
        mp.setenv("DIETSNN_TEST_MARK", str(self.mark))
        mp.setattr(native, "_STATE", {})
        mp.setattr(tempfile, "tempdir", str(self.tmp))

    def plant(self, path: Path, mode: int = 0o755, owner: int = -1) -> Path:
        shutil.copyfile(self.dir / "planted.so", path)  # a new file: never one loaded before
        path.chmod(mode)
        os.chown(path, owner, -1)
        return path

    def planted_loaded(self) -> bool:
        return self.mark.exists()

    def assert_kernels_work(self) -> None:
        assert native.library() is not None, native.why_not()
        x = torch.randn(4, 70)
        assert torch.equal(on_engine(lif, x, 0.9, 0.5, engine="native"),
                           on_engine(lif, x, 0.9, 0.5, engine="eager"))
        assert not list(self.tmp.iterdir())  # a private build's folder is removed again


@pytest.fixture
def env(monkeypatch, tmp_path, libs):
    return Env(monkeypatch, libs, tmp_path)


# A layout: the cache folder `root/parent/cache` and the library file in it. A folder is (mode,
# owner, link): link None (a real folder), "me" or "other" (a symbolic link of that owner to the
# real folder, which lies where the folder would: the cache's inside the parent). The file is
# (mode, owner, link); a linked file points into a folder everybody can write.
FOLDER_MODES = [0o700, 0o755, 0o750, 0o770, 0o775, 0o757, 0o777, 0o1777, 0o1770]
FILE_MODES = [0o755, 0o700, 0o644, 0o775, 0o757, 0o777, 0o666]
OWNERS = ["me", "other"] if ROOT else ["me"]


def _folder_ok(spec, leaf: bool) -> bool:
    """The rule, stated independently: this user's folder, no other user's link, nobody else
    can write it, unless (above the cache folder) it is sticky."""
    mode, owner, link = spec
    return (owner == "me" and link != "other"
            and (not mode & 0o022 or (not leaf and bool(mode & 0o1000))))


def _build_layout(env: Env, parent, cache, file) -> Path:
    uid = {"me": os.geteuid(), "other": OTHER}
    root = env.root / "layout"
    shared = root / "shared"
    shared.mkdir(parents=True)
    folders = []
    for spec, lexical, real in ((parent, root / "parent", root / "real-parent"),
                                (cache, root / "parent" / "cache", root / "parent" / "real-cache")):
        target = real if spec[2] else lexical
        target.mkdir(mode=0o700)
        if spec[2]:
            lexical.symlink_to(target)
            os.lchown(lexical, uid[spec[2]], -1)
        folders.append((target, spec))
    lib = root / "parent" / "cache" / env.name
    if file[2]:
        lib.symlink_to(env.plant(shared / env.name, file[0], uid[file[1]]))
        os.lchown(lib, uid[file[2]], -1)
    else:
        env.plant(lib, file[0], uid[file[1]])
    for target, (mode, owner, _) in reversed(folders):
        os.chmod(target, mode)
        os.chown(target, uid[owner], -1)
    shared.chmod(0o777)
    return root / "parent" / "cache"


def _check_layout(env: Env, mp: pytest.MonkeyPatch, parent, cache, file) -> None:
    """Loaded from the cache only where the layout is trusted; where only the file is not, it is
    replaced by a build of this user's; where a folder is not, a private copy is built, with one
    warning. The kernels work in every case."""
    folder = _build_layout(env, parent, cache, file)
    mp.setenv("DIETSNN_CACHE_DIR", str(folder))
    folders_ok = _folder_ok(parent, False) and _folder_ok(cache, True)
    file_ok = file[1] == "me" and file[2] is None and not file[0] & 0o022
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env.assert_kernels_work()
    warned = [str(w.message) for w in caught if "cache is not private" in str(w.message)]
    assert env.planted_loaded() == (folders_ok and file_ok)
    assert len(warned) == (0 if folders_ok else 1), warned
    if folders_ok and not file_ok:  # replaced by a build of this user's; a link not followed
        lib = os.lstat(folder / env.name)
        assert lib.st_uid == os.geteuid() and oct(lib.st_mode) == oct(0o100755)
    if file[2]:
        assert (env.root / "layout" / "shared" / env.name).exists()  # the link's target: kept


NAMED = {  # the cases reported, and their neighbours
    "file: link into a world-writable folder": ((0o755, "me", None), (0o700, "me", None),
                                                (0o755, "me", "me")),
    "file: link of another user": ((0o755, "me", None), (0o700, "me", None),
                                   (0o755, "me", "other")),
    "file: another user's": ((0o755, "me", None), (0o700, "me", None), (0o755, "other", None)),
    "file: writable by others": ((0o755, "me", None), (0o700, "me", None), (0o777, "me", None)),
    "file: group-writable": ((0o755, "me", None), (0o700, "me", None), (0o775, "me", None)),
    "parent: world-writable": ((0o777, "me", None), (0o700, "me", None), (0o755, "me", None)),
    "parent: group-writable": ((0o775, "me", None), (0o700, "me", None), (0o755, "me", None)),
    "parent: another user's": ((0o755, "other", None), (0o700, "me", None),
                               (0o755, "me", None)),
    "parent: link of another user": ((0o755, "me", "other"), (0o700, "me", None),
                                     (0o755, "me", None)),
    "cache: world-writable": ((0o755, "me", None), (0o777, "me", None), (0o755, "me", None)),
    "cache: sticky and world-writable": ((0o755, "me", None), (0o1777, "me", None),
                                         (0o755, "me", None)),
    "cache: another user's": ((0o755, "me", None), (0o700, "other", None),
                              (0o755, "me", None)),
    "cache: link into a world-writable parent": ((0o777, "me", None), (0o700, "me", "me"),
                                                 (0o755, "me", None)),
    "cache: link of another user": ((0o755, "me", None), (0o700, "me", "other"),
                                    (0o755, "me", None)),
    "trusted: private folders": ((0o755, "me", None), (0o700, "me", None), (0o755, "me", None)),
    "trusted: sticky parent, as /tmp": ((0o1777, "me", None), (0o700, "me", None),
                                        (0o700, "me", None)),
    "trusted: this user's links": ((0o755, "me", "me"), (0o755, "me", "me"),
                                   (0o644, "me", None)),
}


@pytest.mark.parametrize("case", NAMED)
def test_named_layouts(env, monkeypatch, case):
    layout = NAMED[case]
    if "other" in str(layout) and not ROOT:
        pytest.skip("giving a file to another user needs root")
    _check_layout(env, monkeypatch, *layout)


_folder = st.tuples(st.sampled_from(FOLDER_MODES), st.sampled_from(OWNERS),
                    st.sampled_from([None, "me", *OWNERS[1:]]))
_file = st.tuples(st.sampled_from(FILE_MODES), st.sampled_from(OWNERS),
                  st.sampled_from([None, "me", *OWNERS[1:]]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parent=_folder, cache=_folder, file=_file)
def test_any_layout_is_loaded_from_only_where_only_this_user_controls_it(tmp_path, libs, parent,
                                                                         cache, file):
    """Modes, owners and links at each level (parent folder, cache folder, file)."""
    with pytest.MonkeyPatch.context() as mp:
        _check_layout(Env(mp, libs, Path(tempfile.mkdtemp(dir=tmp_path))), mp, parent, cache,
                      file)


def test_a_file_swapped_between_build_and_load_is_never_loaded(env, monkeypatch):
    """The reported race: an empty cache folder everybody can write, and another user renaming
    a library of theirs over the one just built."""
    cache = env.root / "shared"
    cache.mkdir()
    cache.chmod(0o777)
    monkeypatch.setenv("DIETSNN_CACHE_DIR", str(cache))
    build = native._build

    def build_then_swap(cc, out):
        why = build(cc, out)
        os.replace(env.plant(cache / ".swap"), cache / env.name)
        return why

    monkeypatch.setattr(native, "_build", build_then_swap)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env.assert_kernels_work()
    assert not env.planted_loaded()
    assert [str(w.message) for w in caught] == [f"dietsnn: the native kernel cache is not private "
                                                f"(others can write {cache}); a private copy is "
                                                "built for this process"]


@pytest.mark.skipif(not os.path.isdir(native._FD_DIR), reason="no /proc/self/fd")
def test_the_checked_descriptor_is_what_is_loaded(env, monkeypatch):
    """A file renamed over the library after it was opened and checked, right before it is
    loaded, is not loaded: the descriptor is."""
    cache = env.root / "cache"
    monkeypatch.setenv("DIETSNN_CACHE_DIR", str(cache))
    real = native.ctypes.CDLL

    def swap_then_load(path, *a, **kw):
        os.replace(env.plant(cache / ".swap"), cache / env.name)
        return real(path, *a, **kw)

    monkeypatch.setattr(native.ctypes, "CDLL", swap_then_load)
    env.assert_kernels_work()
    assert not env.planted_loaded()


def test_without_proc_the_checked_path_is_loaded_from_a_private_folder(env, monkeypatch):
    monkeypatch.setattr(native, "_FD_DIR", str(env.root / "no-proc"))
    monkeypatch.setenv("DIETSNN_CACHE_DIR", str(env.root / "cache"))
    env.assert_kernels_work()


def test_missing_folders_and_the_library_are_private_whatever_the_umask(env, monkeypatch):
    """Folders created for the cache are 0700 and the library is writable by this user only
    even under umask 002, so the next process loads it without rebuilding or warning."""
    cache = env.root / "a" / "b" / "cache"
    monkeypatch.setenv("DIETSNN_CACHE_DIR", str(cache))
    old = os.umask(0o002)
    try:
        env.assert_kernels_work()
    finally:
        os.umask(old)
    assert [oct(p.stat().st_mode & 0o777) for p in (cache, cache.parent, cache.parent.parent)] \
        == ["0o700"] * 3
    assert not (cache / env.name).stat().st_mode & 0o022
    monkeypatch.setattr(native, "_STATE", {})
    monkeypatch.setattr(native, "_build", lambda *a: pytest.fail("rebuilt"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env.assert_kernels_work()


def test_without_a_private_folder_anywhere_the_eager_backend_runs(env, monkeypatch):
    """A cache folder others can write, and a temporary folder (`$TMPDIR`) others can write:
    nothing is loaded, one line says why, and the neurons run as PyTorch ops."""
    shared = env.root / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("DIETSNN_CACHE_DIR", str(shared))
    env.plant(shared / env.name)
    env.tmp.chmod(0o777)
    with pytest.warns(RuntimeWarning) as caught:
        assert native.library() is None
    assert any("loading the native kernels refused: others can write" in str(w.message)
               for w in caught)
    x = torch.randn(3, 10)
    assert torch.equal(on_engine(lif, x, 0.9, 0.5, engine="native"),
                       on_engine(lif, x, 0.9, 0.5, engine="eager"))
    assert not env.planted_loaded()
