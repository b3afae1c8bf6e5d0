"""Which nnU-Net folders a pretraining run uses, and which dataset id it takes.

nnU-Net reads ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` from the
environment each time it needs them. When the user has set them, the pretraining dataset and
its run live there, next to their other datasets. Otherwise they are kept under
``OUT/nnunet_work`` so that a run never writes outside the folders it was given.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from nnunet_genesis.environment import NNUNET_FOLDERS
from nnunet_genesis.errors import GenesisUserError

DATASET_SUFFIX = "GenesisPretrain"
# a dataset folder, a run's staging folder (.DatasetXXX_....staging) or its claim (.DatasetXXX_....claim.json)
_DATASET_RE = re.compile(r"^\.?Dataset(\d{3})_")
CLAIM_SUFFIX = ".claim.json"


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


def claim_path(folders: NnunetFolders, dataset_name: str) -> Path:
    """The file in ``nnUNet_raw`` that reserves a dataset id for one pretraining run."""
    return folders.raw / f".{dataset_name}{CLAIM_SUFFIX}"


def read_claim(folders: NnunetFolders, dataset_name: str) -> dict | None:
    """The run that reserved ``dataset_name`` (its ``run`` token and ``out``), or None."""
    try:
        claim = json.loads(claim_path(folders, dataset_name).read_text())
    except (OSError, ValueError):
        return None
    return claim if isinstance(claim, dict) else None


def reserve_dataset_name(folders: NnunetFolders, requested_id: int | None, run: str, out: Path) -> str:
    """``DatasetXXX_GenesisPretrain`` reserved for this run: the requested id, or the highest free
    one (999 down). The reservation is a claim file created exclusively (``O_EXCL``) in
    ``nnUNet_raw`` and naming the run, so two runs never share an id even while one of them holds
    it only by a hidden staging folder, and a clean-up can tell its own dataset from another's."""
    if requested_id is not None and not 1 <= requested_id <= 999:
        raise GenesisUserError(f"--dataset-id {requested_id} is not an nnU-Net dataset id (1..999).")
    folders.raw.mkdir(parents=True, exist_ok=True)
    used = folders.used_dataset_ids()
    for candidate in ([requested_id] if requested_id is not None else range(999, 0, -1)):
        name = f"Dataset{candidate:03d}_{DATASET_SUFFIX}"
        if candidate not in used:
            try:
                fd = os.open(claim_path(folders, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                fd = None  # another run took it since the folders were listed
            if fd is not None:
                with os.fdopen(fd, "w") as f:
                    json.dump({"run": run, "out": str(out), "pid": os.getpid()}, f)
                return name
        if requested_id is not None:
            raise GenesisUserError(
                f"--dataset-id {requested_id}: a dataset with this id already exists or is being prepared by "
                f"another run in {folders.raw}, {folders.preprocessed} or {folders.results}; choose a free id "
                f"or leave --dataset-id out to take the highest free one.")
    raise GenesisUserError(f"No free nnU-Net dataset id is left in {folders.raw}.")


def release_claim(folders: NnunetFolders, dataset_name: str, run: str) -> None:
    """Remove this run's reservation of ``dataset_name`` (never another run's)."""
    claim = read_claim(folders, dataset_name)
    if claim is not None and claim.get("run") == run:
        claim_path(folders, dataset_name).unlink(missing_ok=True)


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
