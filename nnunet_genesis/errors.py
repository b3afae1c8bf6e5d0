"""User-facing errors: one clear paragraph and exit code 2, never a traceback."""

from __future__ import annotations

import errno
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping, TypeVar

T = TypeVar("T")


class GenesisUserError(Exception):
    """A problem with the user's input (files, options, checkpoints).

    The CLI prints ``str(error)`` as one paragraph and exits with ``exit_code``.
    Raise it with a message that names the file and the problem.
    """

    exit_code = 2

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


class TrainingRefused(GenesisUserError, SystemExit):
    """A Genesis trainer refuses to train, inside the stock ``nnUNetv2_train``.

    nnU-Net does not catch its trainers' errors, so an ordinary exception ends in a traceback
    and exit code 1. As a ``SystemExit`` (code 2) the command ends with the message only.
    """

    def __init__(self, message: str):
        GenesisUserError.__init__(self, message)
        self.code = 2


def refuse_training(message: str, state: str = "training not started") -> TrainingRefused:
    """Print the refusal to stderr (nnU-Net prints nothing for a SystemExit); returns the error.
    ``state``: what happened to the training ("training stopped" for a stop mid-run)."""
    import sys

    print(f"nnU-Net Genesis: {state}.\n{message}", file=sys.stderr, flush=True)
    return TrainingRefused(message)


def script_exit_code(prog: str, run: Callable[[], int], interrupted: str = "interrupted.") -> int:
    """A script's exit code for ``run()``: a user error prints one paragraph (``prog: error: ...``) and
    gives its exit code, Ctrl-C prints ``prog: interrupted`` and gives 130; never a traceback."""
    import sys

    try:
        return run()
    except GenesisUserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130


def read_trainer_block(reader: Callable[..., T], plans: Mapping[str, Any], trainer: object) -> T:
    """A plans block read in a trainer's ``__init__`` (``reader(plans, who=...)``); a user error
    there stops ``nnUNetv2_train`` with the message and exit 2 instead of a traceback."""
    try:
        return reader(plans, who=f"Trainer {type(trainer).__name__}")
    except GenesisUserError as e:
        raise refuse_training(str(e)) from None


FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


@contextmanager
def stopped_on_a_full_disk(output_folder, how_to_continue: str) -> Iterator[None]:
    """A full disk (or quota, or a read-only file system) while nnU-Net writes its own files (log,
    progress.png, validation outputs) stops a training with exit 2 and says how to continue,
    instead of a traceback; the trainers keep the last complete checkpoint (they write it to a
    temp file and rename it)."""
    try:
        yield
    except OSError as e:
        if e.errno not in FULL_DISK:
            raise
        raise refuse_training(f"Writing {e.filename or 'an output'} failed: {e.strerror}. The last complete "
                              f"checkpoint in {output_folder} is kept: free some space, then continue "
                              f"{how_to_continue}.", "training stopped") from None
