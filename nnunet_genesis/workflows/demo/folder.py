"""The demo's output folder: one demo at a time, and only a new folder or an earlier demo's."""

from __future__ import annotations

import json
from pathlib import Path

from nnunet_genesis.workflows.demo.settings import DemoSettings
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.folder_lock import FolderLock
from nnunet_genesis.outputs import write_json_atomic
from nnunet_genesis.run_identity import refuse_other_identity
from nnunet_genesis.workflows.pipeline import remove

CONFIG_FILE = "demo_config.json"
LOCK_FILE = ".demo.lock"
# What the demo creates inside its output folder (and what --force may remove).
OWNED = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "logs", "state", "source", "heldout",
         "pretrain", "predictions", "evaluation", "report", "submission.zip", "summary.json", CONFIG_FILE)


def folder_lock(folder: Path) -> FolderLock:
    """An exclusive lock on the output folder, so two demos never write into the same one."""
    return FolderLock(folder / LOCK_FILE, "demo", "wait for it or choose another -o folder")


def refuse_foreign_folder(out: Path) -> None:
    """The demo writes only into a new or empty folder, or one holding an earlier demo."""
    if out.exists() and not out.is_dir():
        raise GenesisUserError(f"-o {out} exists and is not a folder.")
    entries = [p.name for p in out.iterdir() if p.name != LOCK_FILE] if out.is_dir() else []
    if entries and not (out / CONFIG_FILE).is_file():
        raise GenesisUserError(f"-o {out} is not empty and holds no earlier demo ({CONFIG_FILE} is missing); "
                               f"the demo does not write into other folders. Choose a new or empty folder.")


def prepare_output(out: Path, settings: DemoSettings, force: bool) -> None:
    """Check that OUT is new, empty, or an earlier demo with the same settings (or --force)."""
    config = out / CONFIG_FILE
    wanted = settings.to_dict()
    refuse_foreign_folder(out)
    if config.is_file():
        if not force:
            refuse_other_identity(json.loads(config.read_text()), wanted, out, "a demo run",
                                  "Re-run with the same options to continue or reuse it, choose another -o folder, "
                                  "or add --force to delete that run and start again.")
        else:
            remove(out / name for name in OWNED)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(wanted, config)
