"""Errors that are the user's to fix: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """A mistake in input, options or files; the message names the problem and the fix."""

    exit_code = 2


class TrainingDiverged(UserError):
    """Training stopped on a non-finite loss or parameters, or a loss far above chance; the
    message names the step and the last good checkpoint. The CLI exits with code 3."""

    exit_code = 3


class CheckpointError(UserError, ValueError):
    """A checkpoint file that is damaged, not dietsnn's or outside its schema: a ValueError for
    Python callers of `dietsnn.load_model`, exit 2 in the CLI."""
