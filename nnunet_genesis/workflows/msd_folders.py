"""Decathlon task folders (MSD layout) as the demo and the benchmark use them.

Checked before anything runs, subsetted by symbolic links, and their held-out labelled cases
copied out in nnU-Net's naming, so ``nnUNetv2_predict`` and ``evaluate`` can read them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.outputs import write_json_atomic
from nnunet_genesis.evaluation.msd_tasks import task_number


def msd_task_number(folder: Path) -> int:
    """The task number of an MSD folder, from its name (a user error if it is not TaskXX_Name)."""

    try:
        return task_number(folder.name)
    except ValueError:
        raise GenesisUserError(f"--msd-task {folder}: the folder must be named like a Decathlon task "
                               f"(TaskXX_Name, e.g. Task04_Hippocampus), as nnUNetv2_convert_MSD_dataset "
                               f"expects.") from None


def check_msd_folder(folder: Path) -> None:
    problems = [f"{folder / sub} is missing" for sub in ("imagesTr", "labelsTr", "dataset.json")
                if not (folder / sub).exists()]
    if problems:
        raise GenesisUserError(f"--msd-task {folder} is not a Decathlon task folder in the MSD layout: "
                               + "; ".join(problems) + ".")
    msd_task_number(folder)


def make_msd_subset(msd: Path, out: Path, n_train: int | None, n_test: int | None) -> Path:
    """The first cases of an MSD task as a new MSD folder (symbolic links, not copies)."""
    meta = json.loads((msd / "dataset.json").read_text())
    dst = out / msd.name
    training = meta["training"][:n_train] if n_train is not None else meta["training"]
    test = meta.get("test", [])[:n_test] if n_test is not None else meta.get("test", [])
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    for rel in [c[k] for c in training for k in ("image", "label")] + list(test):
        link = dst / rel
        if not link.exists():
            link.symlink_to((msd / rel).resolve())
    meta.update(training=training, test=test, numTraining=len(training), numTest=len(test))
    write_json_atomic(meta, dst / "dataset.json")
    return dst


def _file_ending(raw_dataset: Path) -> str:
    return json.loads((raw_dataset / "dataset.json").read_text()).get("file_ending", ".nii.gz")


def labelled_cases(raw_dataset: Path) -> list[str]:
    """The case names of an nnU-Net raw dataset's ``labelsTr``, sorted."""
    ending = _file_ending(raw_dataset)
    return sorted(p.name[: -len(ending)] for p in (raw_dataset / "labelsTr").iterdir() if p.name.endswith(ending))


def copy_heldout(raw: Path, cases: list[str], out: Path) -> tuple[Path, Path]:
    """Copy held-out labelled cases (images in nnU-Net naming, labels) into OUT/images, OUT/labels."""
    ending = _file_ending(raw)
    images, labels = out / "images", out / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for case in cases:
        for img in sorted((raw / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9]{ending}")):
            shutil.copy2(img, images / img.name)
        shutil.copy2(raw / "labelsTr" / f"{case}{ending}", labels / f"{case}{ending}")
    return images, labels
