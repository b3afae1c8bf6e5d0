"""FolderLock: one demo or recipe per folder; the lock goes with the process that held it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nnunet_genesis.workflows.demo.folder import folder_lock
from nnunet_genesis.errors import GenesisUserError


def test_a_second_holder_is_refused_and_the_lock_is_free_again_afterwards(tmp_path):
    with folder_lock(tmp_path):
        with pytest.raises(GenesisUserError, match="Another nnunet-genesis demo is running"):
            with folder_lock(tmp_path):
                pass
    with folder_lock(tmp_path):  # released by the first block
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    code = ("import os, sys; from pathlib import Path; from nnunet_genesis.workflows.demo.folder import folder_lock\n"
            "with folder_lock(Path(sys.argv[1])):\n    os._exit(9)\n")
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path)]).returncode == 9
    with folder_lock(tmp_path):
        pass
