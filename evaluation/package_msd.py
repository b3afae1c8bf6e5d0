"""``nnunet-genesis package-msd``: a Medical Segmentation Decathlon submission zip.

Every test image must have exactly one prediction with the image's geometry and integer
labels from the task's label set; test images and predictions are read in full through the
verified reader (``nnunet_genesis.volumes``), so a truncated or NaN test image is refused like a
prediction, and names equal up to case (one file on a case-insensitive file system) are refused. All problems of all tasks are collected and reported in
one message; then nothing is written (exit 2). Otherwise each prediction is re-written as a
uint8 NIfTI with the test image's geometry and the zip (``TaskXX_Name/<case>.nii.gz``) is
written to a temp file and renamed into place.

Several tasks go into one zip by repeating the group ``--task T --pred DIR --images DIR``;
each ``--pred``/``--images`` belongs to the ``--task`` before it.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.evaluation.msd_tasks import MSDTask, get_task
from nnunet_genesis.outputs import check_output_file, written_then_renamed
from nnunet_genesis.evaluation.segmentations import (Geometry, image_case_name, read_geometry,
                                                     same_up_to_case, strip_ending)
from nnunet_genesis.volumes import read_label_map, read_volume

NIFTI = ".nii.gz"
# Files nnUNetv2_predict writes next to its predictions; they are not predictions.
NNUNET_SIDE_FILES = frozenset({"dataset.json", "plans.json", "predict_from_raw_data_args.json"})
NNUNET_PROBABILITY_ENDINGS = (".npz", ".pkl")
_ENTRY = re.compile(r"Task\d{2}_[^/]+/[^/]+" + re.escape(NIFTI))


def is_submission_zip(path: Path) -> bool:
    """Whether ``path`` is a zip this command wrote (only ``TaskXX_Name/<case>.nii.gz`` entries):
    the one kind of existing output ``--force`` replaces."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return bool(names) and all(_ENTRY.fullmatch(n) for n in names)


@dataclass
class TaskSubmission:
    """One task's part of a submission: where its predictions and test images are."""

    task: MSDTask
    pred_dir: Path
    images_dir: Path


@dataclass
class TestImage:
    case: str
    path: Path  # the file whose geometry the prediction must have (channel 0000 if several)
    channels: tuple[Path, ...] = ()  # every channel's file (read in full before packaging)


def find_test_images(sub: TaskSubmission, problems: list[str]) -> dict[str, TestImage]:
    """Test cases of ``images_dir`` in nnU-Net (case_0000.nii.gz) or MSD (case.nii.gz) naming."""
    task, folder = sub.task, sub.images_dir
    if not folder.is_dir():
        problems.append(f"{task.name}: test image folder {folder} does not exist or is not a folder")
        return {}
    channels: dict[str, dict[int, Path]] = {}
    files = [p for p in sorted(folder.iterdir()) if strip_ending(p.name, NIFTI) is not None and p.is_file()]
    for group in same_up_to_case(files, NIFTI):
        problems.append(f"{task.name}: test images {', '.join(p.name for p in group)} in {folder} have names equal "
                        f"up to case; a case-insensitive file system (and the challenge) takes them as one. "
                        f"Keep one.")
    for p in files:
        case, channel = image_case_name(strip_ending(p.name, NIFTI))
        channels.setdefault(case, {})[-1 if channel is None else channel] = p
    if not channels:
        problems.append(f"{task.name}: test image folder {folder} holds no '*{NIFTI}' images")
        return {}
    out = {}
    for case, files in sorted(channels.items()):
        if not case.startswith(task.prefix + "_"):
            problems.append(f"{task.name}: test image {files[min(files)].name} is not named like a "
                            f"{task.name} case ('{task.prefix}_N'); is --images the right folder?")
            continue
        out[case] = TestImage(case, files[min(files)], tuple(files[c] for c in sorted(files)))
    return out


def _label_problem(array: np.ndarray, task: MSDTask) -> str | None:
    """Why ``array`` is not a label map of ``task`` (None if it is)."""
    if np.issubdtype(array.dtype, np.floating):
        fractional = array[array != np.round(array)]
        if fractional.size:
            return (f"holds non-integer values (e.g. {float(fractional.flat[0]):g}); labels must be "
                    f"integers, not probabilities")
    elif not np.issubdtype(array.dtype, np.integer) and array.dtype != bool:
        return f"has voxel type {array.dtype}; labels must be integers"
    values = np.unique(array)
    outside = [v for v in values.tolist() if v not in task.labels]
    if outside:
        shown = ", ".join(f"{v:g}" for v in outside[:10]) + (" ..." if len(outside) > 10 else "")
        return (f"holds label(s) {shown} outside {task.name}'s label set "
                f"{{{', '.join(str(v) for v in sorted(task.labels))}}}")
    return None


def check_prediction(task: MSDTask, image: TestImage, pred_path: Path, out_path: Path) -> str | None:
    """Check one prediction against its test image; write it as uint8 NIfTI to ``out_path``.

    Returns the problem (None if none; then ``out_path`` exists).
    """
    import SimpleITK as sitk

    try:
        pred, array = read_label_map(pred_path)
    except GenesisUserError as e:
        return str(e)
    try:
        for channel in image.channels or (image.path,):
            read_volume(channel)  # the whole file: truncated streams, NaN voxels, a bad spacing
        image_geometry = read_geometry(image.path)
        for channel in image.channels[1:]:
            channel_diffs = read_geometry(channel).differences(image_geometry)
            if channel_diffs:
                return (f"test image {channel.name} does not have the geometry of {image.path.name} "
                        f"({'; '.join(channel_diffs)}); all channels of a case must share it")
    except GenesisUserError as e:
        return str(e)
    diffs = Geometry.of(pred).differences(image_geometry)
    if diffs:
        return (f"{pred_path.name} does not match test image {image.path.name} "
                f"(prediction vs image: {'; '.join(diffs)})")
    problem = _label_problem(array, task)
    if problem:
        return f"{pred_path.name} {problem}"
    out = sitk.GetImageFromArray(array.astype(np.uint8))
    out.SetSpacing(image_geometry.spacing)
    out.SetOrigin(image_geometry.origin)
    out.SetDirection(image_geometry.direction)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(out, str(out_path), useCompression=True)
    return None


def check_task(sub: TaskSubmission, workdir: Path, problems: list[str], progress: bool = True) -> list[tuple[str, Path]]:
    """Check one task's predictions; returns (zip entry name, converted file) pairs."""
    from tqdm import tqdm

    task = sub.task
    images = find_test_images(sub, problems)
    if not sub.pred_dir.is_dir():
        problems.append(f"{task.name}: prediction folder {sub.pred_dir} does not exist or is not a folder")
        return []
    predictions: dict[str, Path] = {}
    for group in same_up_to_case([p for p in sorted(sub.pred_dir.iterdir()) if p.is_file()], NIFTI):
        problems.append(f"{task.name}: predictions {', '.join(p.name for p in group)} in {sub.pred_dir} have names "
                        f"equal up to case; a case-insensitive file system (and the challenge) takes them as one. "
                        f"Keep one.")
    for p in sorted(sub.pred_dir.iterdir()):
        if p.name.startswith(".") or p.name in NNUNET_SIDE_FILES:
            continue
        stem = strip_ending(p.name, NIFTI)
        if p.is_dir():
            problems.append(f"{task.name}: {p} is a folder; the prediction folder must hold only "
                            f"'<case>{NIFTI}' files")
        elif stem is not None:
            predictions[stem] = p
        elif not (p.suffix in NNUNET_PROBABILITY_ENDINGS and p.name[: -len(p.suffix)] in images):
            problems.append(f"{task.name}: {p.name} in {sub.pred_dir} is not a NIfTI ('{NIFTI}') file")
    extra = sorted(set(predictions) - set(images))
    if extra:
        problems.append(f"{task.name}: {len(extra)} prediction(s) match no test image in {sub.images_dir}: "
                        + ", ".join(predictions[c].name for c in extra))
    missing = sorted(set(images) - set(predictions))
    if missing:
        problems.append(f"{task.name}: {len(missing)} test image(s) have no prediction '<case>{NIFTI}' "
                        f"in {sub.pred_dir}: " + ", ".join(missing))
    entries = []
    present = [c for c in sorted(images) if c in predictions]
    for case in tqdm(present, desc=f"check {task.name}", unit="case", disable=not progress):
        arcname = f"{task.name}/{case}{NIFTI}"
        out_path = workdir / arcname
        problem = check_prediction(task, images[case], predictions[case], out_path)
        if problem:
            problems.append(f"{task.name} {case}: {problem}")
        else:
            entries.append((arcname, out_path))
    return entries


def build_submission(submissions: list[TaskSubmission], output: Path, force: bool = False,
                     progress: bool = True) -> Path:
    """Check everything, then write the zip; raises GenesisUserError listing every problem."""
    output = check_output_file(output, "-o", overwrite=force,
                               inputs=[p for s in submissions for p in (s.pred_dir, s.images_dir)],
                               ours=is_submission_zip)
    names = [s.task.name for s in submissions]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise GenesisUserError(f"Task(s) {', '.join(duplicates)} given more than once; give each task once.")
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="package-msd-") as tmp:
        entries = []
        for sub in submissions:
            entries += check_task(sub, Path(tmp), problems, progress)
        if problems:
            raise GenesisUserError(
                f"No submission written: {len(problems)} problem(s) found.\n  - " + "\n  - ".join(problems)
                + f"\nNothing was written to {output}.")
        # NIfTI .gz is already compressed: store, don't deflate again.
        with written_then_renamed(output) as tmp_zip:
            with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_STORED) as zf:
                for arcname, path in sorted(entries):
                    zf.write(path, arcname)
    return output


class _TaskGroupAction(argparse.Action):
    """``--task`` opens a group; ``--pred``/``--images`` fill the group opened last."""

    def __call__(self, parser, namespace, values, option_string=None):
        groups = getattr(namespace, "task_groups", None)
        if groups is None:
            groups = []
            setattr(namespace, "task_groups", groups)
        if self.dest == "task":
            groups.append({"task": values, "pred": None, "images": None})
            return
        if not groups:
            parser.error(f"{option_string} must come after the --task it belongs to")
        if groups[-1][self.dest] is not None:
            parser.error(f"{option_string} given twice for --task {groups[-1]['task']}; "
                         f"repeat --task before each further --pred/--images")
        groups[-1][self.dest] = values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Build a Medical Segmentation Decathlon submission zip. Give one group "
        "'--task TaskXX_Name --pred DIR --images DIR' per task; repeat the group for several tasks. "
        "Each --pred/--images belongs to the --task before it.")
    parser.set_defaults(task_groups=None)
    parser.add_argument("--task", dest="task", action=_TaskGroupAction, metavar="TaskXX_Name",
                        help="Decathlon task, e.g. Task04_Hippocampus (starts a group; repeatable)")
    parser.add_argument("--pred", dest="pred", action=_TaskGroupAction, metavar="DIR",
                        help="this task's predictions, named <case>.nii.gz as nnUNetv2_predict writes them")
    parser.add_argument("--images", dest="images", action=_TaskGroupAction, metavar="DIR",
                        help="this task's test images (imagesTs), named <case>_0000.nii.gz or <case>.nii.gz")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="submission.zip",
                        help="zip to write")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")


def run(args: argparse.Namespace) -> int:
    groups = args.task_groups or []
    if not groups:
        raise GenesisUserError("Give at least one '--task TaskXX_Name --pred DIR --images DIR' group.")
    incomplete = [g["task"] for g in groups if g["pred"] is None or g["images"] is None]
    if incomplete:
        raise GenesisUserError(
            f"--task {', '.join(incomplete)}: each --task needs its own --pred DIR and --images DIR after it.")
    submissions = [TaskSubmission(get_task(g["task"]), Path(g["pred"]), Path(g["images"])) for g in groups]
    out = build_submission(submissions, args.output, force=args.force)
    with zipfile.ZipFile(out) as zf:
        n = len(zf.namelist())
    print(f"wrote {out}: {n} prediction(s) for {', '.join(s.task.name for s in submissions)}")
    return 0
