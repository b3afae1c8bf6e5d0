"""Decathlon task folders (MSD layout) as the demo and the benchmark use them.

Checked before anything runs, subsetted by symbolic links, and their held-out labelled cases
copied out in nnU-Net's naming, so ``nnUNetv2_predict`` and ``evaluate`` can read them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.outputs import write_json_atomic
from nnunet_genesis.volumes import read_image, read_label_map
from nnunet_genesis.evaluation.msd_tasks import task_number


def msd_task_number(folder: Path) -> int:
    """The task number of an MSD folder, from its name (a user error if it is not TaskXX_Name)."""

    try:
        return task_number(folder.name)
    except ValueError:
        raise GenesisUserError(f"--msd-task {folder}: the folder must be named like a Decathlon task "
                               f"(TaskXX_Name, e.g. Task04_Hippocampus), as nnUNetv2_convert_MSD_dataset "
                               f"expects.") from None


def check_msd_folder(folder: Path, n_cases: int | None = None) -> None:
    """Refuse (exit 2, before anything runs) a Decathlon task folder nnU-Net's conversion would fail
    on with a traceback or, worse, convert wrongly: its layout and dataset.json, and for the first
    ``n_cases`` training cases (all: None) an image and a label that exist, read (``volumes``:
    truncated files, NaN voxels or labels, broken headers), share their geometry and hold only the
    labels dataset.json names."""
    problems = [f"{folder / sub} is missing" for sub in ("imagesTr", "labelsTr", "dataset.json")
                if not (folder / sub).exists()]
    if problems:
        raise GenesisUserError(f"--msd-task {folder} is not a Decathlon task folder in the MSD layout: "
                               + "; ".join(problems) + ".")
    msd_task_number(folder)
    meta_file = folder / "dataset.json"
    try:
        meta = json.loads(meta_file.read_text())
        training = meta["training"]
        labels = {int(value) for value in meta["labels"]}
        if not isinstance(training, list) or not training or not all(
                isinstance(c, dict) and isinstance(c.get("image"), str) and isinstance(c.get("label"), str)
                for c in training):
            raise ValueError("'training' must be a non-empty list of {\"image\": ..., \"label\": ...}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise GenesisUserError(f"--msd-task: {meta_file} is not a Decathlon dataset.json ({e}); nnU-Net's "
                               f"conversion needs its 'training' list and 'labels'.") from None
    for case in training[:n_cases]:
        _check_case(folder, folder / case["image"], folder / case["label"], labels)


def _check_case(folder: Path, image_file: Path, label_file: Path, labels: set[int]) -> None:
    for path in (image_file, label_file):
        if not path.is_file():
            raise GenesisUserError(f"--msd-task: {path}, listed in {folder / 'dataset.json'}, is missing.")
    image = read_image(image_file)
    label, array = read_label_map(label_file)
    spatial = image.GetDimension() if image.GetDimension() == 3 else 3  # a 4D image holds the channels last
    geometry = {"size": (image.GetSize()[:spatial], label.GetSize()),
                "spacing": (image.GetSpacing()[:spatial], label.GetSpacing()),
                "origin": (image.GetOrigin()[:spatial], label.GetOrigin())}
    for field, (a, b) in geometry.items():
        if not np.allclose(a, b, rtol=1e-4, atol=1e-4):
            raise GenesisUserError(f"--msd-task: {label_file} has another {field} ({tuple(b)}) than its image "
                                   f"{image_file} ({tuple(a)}); a label map must lie on its image's grid.")
    unknown = sorted(set(np.unique(array).astype(int).tolist()) - labels)
    if unknown:
        raise GenesisUserError(f"--msd-task: {label_file} holds label value(s) {unknown} that "
                               f"{folder / 'dataset.json'} does not name (its labels: {sorted(labels)}).")


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
