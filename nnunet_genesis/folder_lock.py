"""One command at a time in a folder: an exclusive, non-blocking ``flock`` on a lock file.

The kernel drops the lock when the process ends, however it ends, so a killed run never leaves
a stale lock behind.
"""

from __future__ import annotations

from pathlib import Path

from nnunet_genesis.errors import GenesisUserError


class FolderLock:
    """Holds ``lock_file`` while the block runs; a second holder is refused with ``hint``."""

    def __init__(self, lock_file: Path, command: str, hint: str):
        self.path, self.command, self.hint = Path(lock_file), command, hint

    def __enter__(self) -> "FolderLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.close()
            raise GenesisUserError(f"Another nnunet-genesis {self.command} is running in {self.path.parent} "
                                   f"(it holds {self.path}); {self.hint}.") from None
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
