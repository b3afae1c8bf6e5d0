"""User-facing errors: one clear paragraph and exit code 2, never a traceback."""

from __future__ import annotations


class GenesisUserError(Exception):
    """A problem with the user's input (files, options, checkpoints).

    The CLI prints ``str(error)`` as one paragraph and exits with ``exit_code``.
    Raise it with a message that names the file and the problem.
    """

    exit_code = 2

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
