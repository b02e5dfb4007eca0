"""The `dietsnn` command and `python -m dietsnn`: the command line (`cli.main`), in a process
started with dietsnn's malloc settings (`environment.tuned_environment`)."""

import os
import sys

from .environment import tuned_environment


def run() -> None:
    """Start the command line, as a program's entry point: where glibc's malloc is not yet set
    up as dietsnn's commands need, this process first starts again (the same program,
    arguments and process id) with it; otherwise `cli.main` runs and its exit code ends the
    process. Inside another program call `cli.main(argv)` instead."""
    env = tuned_environment()
    if env is not None and sys.executable:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
    from .cli import main

    sys.exit(main())


if __name__ == "__main__":
    run()
