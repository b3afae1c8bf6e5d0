"""Fault injection for the commands that run others (demo, pretrain): options and task folders that
used to end in a traceback (nnU-Net's, relayed) or a MemoryError, and values that would become
shell commands in a SLURM script. The harness is fault_harness.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from fault_harness import Case, World, check_case, registry

CASES, case = registry()


def msd_task(w: World, tmp: Path, n: int = 3) -> Path:
    """A small copy of the real Task04_Hippocampus: ``n`` labelled cases."""
    source = w.images.parent
    task = tmp / "Task04_Hippocampus"
    meta = json.loads((source / "dataset.json").read_text())
    meta["training"] = meta["training"][:n]
    meta.update(numTraining=n, test=[], numTest=0)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (task / sub).mkdir(parents=True)
    for c in meta["training"]:
        for key in ("image", "label"):
            shutil.copy(source / c[key], task / c[key])
    (task / "dataset.json").write_text(json.dumps(meta))
    return task


def first_label(task: Path) -> Path:
    return task / json.loads((task / "dataset.json").read_text())["training"][0]["label"]


def rewrite_label(path: Path, change) -> None:
    image = sitk.ReadImage(str(path))
    out = change(image)
    sitk.WriteImage(out, str(path), True)


def _demo(tmp: Path, *extra: str) -> list[str]:
    return ["demo", "-o", str(tmp / "out"), *extra]


for _name, _argv, _needle in [
    ("seed-negative", ("--seed", "-1"), "--seed must be 0 or more"),
    ("synthetic-size-huge", ("--synthetic-size", "3000"), "--synthetic-size must be between 24 and 256"),
    ("max-cases-zero", ("--max-cases", "0"), "--max-cases must be at least 1"),
    ("max-test-images-zero", ("--max-test-images", "0"), "--max-test-images must be at least 1"),
    ("da-workers-negative", ("--da-workers", "-2"), "--da-workers must be 0 or more"),
]:
    case(f"demo/{_name}")(lambda w, t, a=_argv, n=_needle: Case(_demo(t, *a), (n,)))


@case("demo/msd-dataset-json-invalid")
def _(w, t):
    task = msd_task(w, t)
    (task / "dataset.json").write_text('{"training": 3')
    return Case(_demo(t, "--msd-task", str(task)), ("is not a Decathlon dataset.json", "dataset.json"))


@case("demo/msd-dataset-json-no-training")
def _(w, t):
    task = msd_task(w, t)
    meta = json.loads((task / "dataset.json").read_text())
    meta["training"] = [{"image": "imagesTr/x.nii.gz"}]
    (task / "dataset.json").write_text(json.dumps(meta))
    return Case(_demo(t, "--msd-task", str(task)), ("'training' must be a non-empty list",))


@case("demo/msd-image-missing")
def _(w, t):
    task = msd_task(w, t)
    image = task / json.loads((task / "dataset.json").read_text())["training"][1]["image"]
    image.unlink()
    return Case(_demo(t, "--msd-task", str(task)), (str(image), "is missing"))


@case("demo/msd-label-other-geometry")
def _(w, t):
    task = msd_task(w, t)
    label = first_label(task)

    def coarser(im):
        im.SetSpacing([2.0, 2.0, 2.0])
        return im
    rewrite_label(label, coarser)
    return Case(_demo(t, "--msd-task", str(task)), (str(label), "another spacing"))


@case("demo/msd-label-other-size")
def _(w, t):
    task = msd_task(w, t)
    label = first_label(task)
    rewrite_label(label, lambda im: im[:-2, :, :])
    return Case(_demo(t, "--msd-task", str(task)), (str(label), "another size"))


@case("demo/msd-label-nan")
def _(w, t):
    task = msd_task(w, t)
    label = first_label(task)

    def nan(im):
        a = sitk.GetArrayFromImage(im).astype(np.float32)
        a[0, 0, 0] = np.nan
        out = sitk.GetImageFromArray(a)
        out.CopyInformation(im)
        return out
    rewrite_label(label, nan)
    return Case(_demo(t, "--msd-task", str(task)), (str(label), "NaN"))


@case("demo/msd-label-unknown-value")
def _(w, t):
    task = msd_task(w, t)
    label = first_label(task)
    rewrite_label(label, lambda im: sitk.Cast(im, sitk.sitkUInt8) + 5)
    return Case(_demo(t, "--msd-task", str(task)), (str(label), "does not name"))


@case("pretrain/sbatch-newline")
def _(w, t):
    return Case(["pretrain", "-i", str(w.ct.parent), "-o", str(t / "run"), "--slurm", str(t / "job.sh"),
                 "--sbatch=--time=1:00:00\ntouch PWNED"], ("--sbatch", "control character", "one line of printable characters"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_fault(name, world, tmp_path, capsys, monkeypatch):
    work = tmp_path / "case"
    work.mkdir()
    check_case(CASES[name](world, work), world, work, capsys, monkeypatch)
