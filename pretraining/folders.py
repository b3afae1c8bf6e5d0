"""Which nnU-Net folders a pretraining run uses, and which dataset id it takes.

nnU-Net reads ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` from the
environment each time it needs them. When the user has set them, the pretraining dataset and
its run live there, next to their other datasets. Otherwise they are kept under
``OUT/nnunet_work`` so that a run never writes outside the folders it was given.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from nnunet_genesis.environment import NNUNET_FOLDERS
from nnunet_genesis.errors import GenesisUserError

DATASET_SUFFIX = "GenesisPretrain"
_DATASET_RE = re.compile(r"^Dataset(\d{3})_")


@dataclass(frozen=True)
class NnunetFolders:
    raw: Path
    preprocessed: Path
    results: Path

    @classmethod
    def resolve(cls, out: Path) -> "NnunetFolders":
        """Each folder from its environment variable when set, else ``OUT/nnunet_work/<name>``."""
        work = Path(out).resolve() / "nnunet_work"
        from nnunetv2 import paths as nnunet_paths

        paths = [Path(getattr(nnunet_paths, n)).resolve() if getattr(nnunet_paths, n) else work / n
                 for n in NNUNET_FOLDERS]
        return cls(*paths)

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> "NnunetFolders":
        return cls(*(Path(d[n]) for n in NNUNET_FOLDERS))

    def to_dict(self) -> dict[str, str]:
        return dict(zip(NNUNET_FOLDERS, (str(self.raw), str(self.preprocessed), str(self.results))))

    def make(self) -> None:
        for p in (self.raw, self.preprocessed, self.results):
            p.mkdir(parents=True, exist_ok=True)

    def used_dataset_ids(self) -> set[int]:
        ids = set()
        for base in (self.raw, self.preprocessed, self.results):
            if base.is_dir():
                for entry in base.iterdir():
                    m = _DATASET_RE.match(entry.name)
                    if m:
                        ids.add(int(m.group(1)))
        return ids


def choose_dataset_name(folders: NnunetFolders, requested_id: int | None) -> str:
    """``DatasetXXX_GenesisPretrain``: the requested id, or the highest free id (999 down)."""
    used = folders.used_dataset_ids()
    if requested_id is not None:
        if not 1 <= requested_id <= 999:
            raise GenesisUserError(f"--dataset-id {requested_id} is not an nnU-Net dataset id (1..999).")
        if requested_id in used:
            raise GenesisUserError(
                f"--dataset-id {requested_id}: a dataset with this id already exists in "
                f"{folders.raw}, {folders.preprocessed} or {folders.results}; choose a free id "
                f"or leave --dataset-id out to take the highest free one.")
        return f"Dataset{requested_id:03d}_{DATASET_SUFFIX}"
    for candidate in range(999, 0, -1):
        if candidate not in used:
            return f"Dataset{candidate:03d}_{DATASET_SUFFIX}"
    raise GenesisUserError(f"No free nnU-Net dataset id is left in {folders.raw}.")


@contextmanager
def nnunet_environment(folders: NnunetFolders, extra: dict[str, str] | None = None) -> Iterator[None]:
    """Set the nnU-Net folder variables (and ``extra``) for the duration of the block.

    nnU-Net reads them when it needs them, and processes started inside the block (data
    workers, DDP ranks) inherit them; the caller's environment is restored afterwards. Only the
    entry points (``nnunet-genesis pretrain``, the torchrun launcher) enter it: library
    functions read the environment and never change it.
    """
    values = {**folders.to_dict(), **(extra or {})}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
