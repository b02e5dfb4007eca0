"""The command starts itself once more with dietsnn's malloc settings (`dietsnn.__main__`,
`environment.tuned_environment`), and leaves a user's own setting alone."""

import os
import subprocess
import sys

import pytest

from dietsnn import __version__, environment

TUNABLES = environment.MALLOC_TUNABLES


def test_the_tunable_is_added_once_beside_the_users_own(monkeypatch):
    monkeypatch.setattr(environment, "_is_glibc", lambda: True)
    assert environment.tuned_environment({"A": "1"}) == {
        "A": "1", "GLIBC_TUNABLES": TUNABLES, environment.RELAUNCHED: "1"}
    assert environment.tuned_environment({environment.RELAUNCHED: "1"}) is None  # never twice
    other = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    assert environment.tuned_environment(other)["GLIBC_TUNABLES"] == (
        f"glibc.malloc.arena_max=2:{TUNABLES}")
    for done in (TUNABLES, "glibc.malloc.tcache_count=7", f"glibc.malloc.arena_max=2:{TUNABLES}"):
        assert environment.tuned_environment({"GLIBC_TUNABLES": done}) is None
    monkeypatch.setattr(environment, "_is_glibc", lambda: False)
    assert environment.tuned_environment({}) is None


# prints the variable as this process sees it, then runs the command line's entry point
PROBE = ("import os, sys; print(os.environ.get('GLIBC_TUNABLES'), os.getpid(), flush=True); "
         "sys.argv[1:] = ['--version']; from dietsnn.__main__ import run; run()")


def _probe(env: dict) -> list[list[str]]:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env=env, check=True, timeout=120)
    return [line.split() for line in out.stdout.splitlines()]


@pytest.mark.subprocess
@pytest.mark.skipif(not environment._is_glibc(), reason="glibc's malloc only")
def test_the_command_runs_again_in_the_same_process_with_the_tunable():
    env = {k: v for k, v in os.environ.items()
           if k not in ("GLIBC_TUNABLES", environment.RELAUNCHED)}
    first, again, version = _probe(env)
    assert first[0] == "None" and again[0] == TUNABLES
    assert first[1] == again[1]  # exec: the same process
    assert version == ["dietsnn", __version__]


@pytest.mark.subprocess
def test_a_users_setting_is_kept_and_the_command_runs_once():
    env = {k: v for k, v in os.environ.items() if k != environment.RELAUNCHED}
    env["GLIBC_TUNABLES"] = "glibc.malloc.tcache_count=7"
    (seen, _pid), version = _probe(env)
    assert seen == "glibc.malloc.tcache_count=7" and version == ["dietsnn", __version__]
