"""Fault injection for outputs and what each command packages (issue 31, items 3-5), table-driven.

Outputs never replace inputs: nnU-Net's files (dataset.json, the fingerprint, plans, splits), an
input of the same command and a file this package did not write are refused even with --force.
Every command reads what it packages (package-msd's test images in full, recipe's --images-ts and
--trainer), names equal up to case are refused, and writer-level OS faults (a name over the
file system's limit, a dangling symlink as the parent, a full disk) end in exit 2 with nothing
left behind. The check (``check_case``) also asserts that nothing in the case folder or the shared
inputs changed, so a refused overwrite is verified for free; the attach and recipe cases also
check nnU-Net's preprocessed folder. The real disk-full test mounts a 1 MiB tmpfs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from nnunet_genesis.cli import main

from fault_harness import (TASK, Case, World, _tree, a_file, check_case, folder_copy, registry, truncated,
                           with_pixdim, with_value)

CASES, case = registry()


def _nnunet_env(w: World) -> dict[str, str]:
    return {name: str(w.nnunet[name]) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}


# attach: -n never names nnU-Net's files -------------------------------------------------------

for _name, _variant in [("dataset", "dataset"), ("dataset-fingerprint", "dataset_fingerprint"),
                        ("splits-final", "splits_final"), ("plans", "plans")]:
    def _make_case(w, t, _variant=_variant):
        return Case(["attach", "-d", "4", "-c", str(w.ckpt), "-n", _variant, "--force"],
                    (f"{_variant}.json", "nnU-Net uses for its own files"), env=_nnunet_env(w))
    case(f"attach/variant-named-{_name}-with-force")(_make_case)


# evaluate -------------------------------------------------------------------------------------

def _evaluate(pred: Path, ref: Path, out: Path, *extra: str) -> list[str]:
    return ["evaluate", "--pred", str(pred), "--ref", str(ref), "-o", str(out), "--task", TASK, *extra]


@case("evaluate/output-is-dataset-json-beside-predictions")
def _(w, t):
    pred = folder_copy(w.pred, t / "pred")
    a_file(pred / "dataset.json", json.dumps({"file_ending": ".nii.gz", "labels": {"background": 0}}))
    return Case(_evaluate(pred, w.ref, pred / "dataset.json"), ("dataset.json", "nnU-Net uses"))


@case("evaluate/csv-sibling-is-the-users")
def _(w, t):
    a_file(t / "notes.csv", "my,own,notes\n")
    return Case(_evaluate(w.pred, w.ref, t / "notes.json"), (str(t / "notes.csv"), "not written by this command"))


@case("evaluate/json-is-the-users")
def _(w, t):
    a_file(t / "notes.json", json.dumps({"mine": 1}))
    return Case(_evaluate(w.pred, w.ref, t / "notes.json"), (str(t / "notes.json"), "not written by this command"))


@case("evaluate/label-the-task-lacks")
def _(w, t):
    return Case(_evaluate(w.pred, w.ref, t / "o.json", "--labels", "99"),
                ("--labels 99", TASK, "1 (Anterior), 2 (Posterior)"))


@case("evaluate/prediction-names-equal-up-to-case")
def _(w, t):
    pred = folder_copy(w.pred, t / "pred")
    first = sorted(pred.iterdir())[0]
    shutil.copy(first, pred / (first.name[:-7] + ".NII.GZ"))
    return Case(_evaluate(pred, w.ref, t / "o.json"), ("equal up to case", first.name))


@case("evaluate/output-name-too-long")
def _(w, t):
    return Case(_evaluate(w.pred, w.ref, t / ("e" * 300 + ".json")), ("bytes long", "at most"))


@case("evaluate/output-parent-is-a-dangling-symlink")
def _(w, t):
    (t / "link").symlink_to(t / "nowhere")
    return Case(_evaluate(w.pred, w.ref, t / "link" / "o.json"), (str(t / "link"), "does not exist"))


# compare --------------------------------------------------------------------------------------

def _evaluation_with(w: World, dst: Path, damage) -> Path:
    data = json.loads(w.evaluation.read_text())
    damage(data)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(data))  # NaN is written as the token NaN, as a careless editor would
    return dst


def _first_dice(value):
    def damage(data):
        data["cases"][0]["labels"]["1"]["dice"] = value
    return damage


for _name, _value, _shown in [("nan", float("nan"), "nan"), ("string", "0.9", "'0.9'"), ("five", 5.0, "5.0"),
                              ("negative", -0.1, "-0.1"), ("bool", True, "True")]:
    def _make_case(w, t, _value=_value, _shown=_shown):
        bad = _evaluation_with(w, t / "bad.json", _first_dice(_value))
        first_case = json.loads(w.evaluation.read_text())["cases"][0]["case"]
        return Case(["compare", str(w.evaluation), str(bad), "-o", str(t / "report")],
                    (str(bad), f"case {first_case}", f"dice is {_shown}", "[0, 1]"))
    case(f"compare/dice-{_name}")(_make_case)


@case("compare/two-different-tasks")
def _(w, t):
    other = _evaluation_with(w, t / "liver.json", lambda d: d.update(task="Task03_Liver"))
    return Case(["compare", str(w.evaluation), str(other), "-o", str(t / "report")],
                ("different tasks", "Task03_Liver", TASK))


@case("compare/report-md-is-the-users")
def _(w, t):
    a_file(t / "report" / "report.md", "# my notes\n")
    return Case(["compare", str(w.evaluation), str(w.evaluation), "-o", str(t / "report")],
                (str(t / "report" / "report.md"), "not written by this command"))


@case("compare/output-would-replace-an-input")
def _(w, t):
    result = t / "report" / "comparison.json"
    result.parent.mkdir()
    shutil.copy(w.evaluation, result)
    return Case(["compare", str(w.evaluation), str(result), "-o", str(t / "report")], ("is an input",))


# package-msd ----------------------------------------------------------------------------------

def _package(t: Path, pred: Path, images: Path, out: Path | None = None, *extra: str) -> list[str]:
    return ["package-msd", "--task", TASK, "--pred", str(pred), "--images", str(images),
            "-o", str(out or t / "submission.zip"), *extra]


def _damaged_test_image(damage, needle):
    def make(w, t):
        images = folder_copy(w.images, t / "images")
        victim = sorted(images.iterdir())[2]
        damage(w.images / victim.name, victim)
        return Case(_package(t, w.test_pred, images), (needle, victim.name))
    return make


for _name, _damage, _needle in [
    ("truncated", lambda s, d: truncated(s, d), "truncated"),
    ("nan", lambda s, d: with_value(s, d, np.nan), "NaN/Inf"),
    ("pixdim-zero", lambda s, d: with_pixdim(s, d, 0.0), "invalid voxel spacing"),
]:
    case(f"package-msd/test-image-{_name}")(_damaged_test_image(_damage, _needle))


@case("package-msd/prediction-names-equal-up-to-case")
def _(w, t):
    pred = folder_copy(w.test_pred, t / "pred")
    first = sorted(pred.iterdir())[0]
    shutil.copy(first, pred / (first.name[:-7] + ".NII.GZ"))
    return Case(_package(t, pred, w.images), ("equal up to case", first.name))


@case("package-msd/test-image-names-equal-up-to-case")
def _(w, t):
    images = folder_copy(w.images, t / "images")
    first = sorted(images.iterdir())[0]
    shutil.copy(first, images / (first.name[:-7] + ".Nii.Gz"))
    return Case(_package(t, w.test_pred, images), ("equal up to case", first.name))


@case("package-msd/force-over-the-users-file")
def _(w, t):
    a_file(t / "s.zip", "my own zip")
    return Case(_package(t, w.test_pred, w.images, t / "s.zip", "--force"), ("not written by this command",))


@case("package-msd/output-parent-is-a-dangling-symlink")
def _(w, t):
    (t / "link").symlink_to(t / "nowhere")
    return Case(_package(t, w.test_pred, w.images, t / "link" / "s.zip"), (str(t / "link"), "does not exist"))


@case("package-msd/output-name-too-long")
def _(w, t):
    return Case(_package(t, w.test_pred, w.images, t / ("s" * 300 + ".zip")), ("bytes long",))


# preview --------------------------------------------------------------------------------------

@case("preview/output-is-the-users-png")
def _(w, t):
    a_file(t / "mine.png", "not ours")
    return Case(["preview", str(w.ct), "-o", str(t / "mine.png")], (str(t / "mine.png"), "not written by"))


@case("preview/output-name-too-long")
def _(w, t):
    return Case(["preview", str(w.ct), "-o", str(t / ("p" * 300 + ".png"))], ("bytes long",))


@case("preview/output-parent-is-a-dangling-symlink")
def _(w, t):
    (t / "link").symlink_to(t / "nowhere")
    return Case(["preview", str(w.ct), "-o", str(t / "link" / "p.png")], (str(t / "link"), "does not exist"))


# recipe ---------------------------------------------------------------------------------------

def _recipe(w: World, *extra: str) -> list[str]:
    return ["recipe", "-d", "4", "-c", str(w.ckpt), "--configurations", "3d_fullres", "--device", "cpu",
            "--variant", "nnUNetPlans_faultsOutputs", *extra]


for _trainer in ("nnUNetTrainer", "nnUNetTrainerScratch", "nnUNetTrainerGenesisPretrain"):
    def _make_case(w, t, _trainer=_trainer):
        return Case(_recipe(w, "--trainer", _trainer, "--print-commands"),
                    (f"--trainer {_trainer}", "does not load the Genesis checkpoint", "--baseline"),
                    env=_nnunet_env(w))
    case(f"recipe/trainer-{_trainer}")(_make_case)


@case("recipe/images-ts-missing")
def _(w, t):
    return Case(_recipe(w, "--images-ts", str(t / "nope"), "--print-commands"), (str(t / "nope"), "does not exist"),
                env=_nnunet_env(w))


@case("recipe/images-ts-is-a-file")
def _(w, t):
    a_file(t / "imagesTs")
    return Case(_recipe(w, "--images-ts", str(t / "imagesTs"), "--print-commands"),
                (str(t / "imagesTs"), "is a file, not a folder"), env=_nnunet_env(w))


@case("recipe/images-ts-of-another-file-ending")
def _(w, t):
    a_file(t / "ts" / "hippocampus_001_0000.nii", "x")
    return Case(_recipe(w, "--images-ts", str(t / "ts"), "--print-commands"), ("no '*.nii.gz' images", ".nii"),
                env=_nnunet_env(w))


@case("recipe/sbatch-with-a-newline")
def _(w, t):
    return Case(_recipe(w, "--slurm", str(t / "jobs.sh"), "--sbatch", "--partition=gpu\ntouch ran"),
                ("--sbatch", "printable"), env=_nnunet_env(w))


@case("recipe/slurm-over-the-users-file")
def _(w, t):
    a_file(t / "jobs.sh", "#!/bin/bash\necho mine\n")
    return Case(_recipe(w, "--slurm", str(t / "jobs.sh")), (str(t / "jobs.sh"), "not written by"),
                env=_nnunet_env(w))


# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CASES))
def test_fault(name, world, tmp_path, capsys, monkeypatch):
    work = tmp_path / "case"
    work.mkdir()
    nnunet_before = _tree(world.nnunet["nnUNet_preprocessed"])
    check_case(CASES[name](world, work), world, work, capsys, monkeypatch)
    assert _tree(world.nnunet["nnUNet_preprocessed"]) == nnunet_before  # dataset.json, plans, fingerprint kept


# a real full disk -------------------------------------------------------------------------------

@pytest.fixture()
def full_disk(tmp_path):
    """A 1 MiB tmpfs, filled up; skipped where the machine cannot mount one (not root, no mount
    permission in the container). Always unmounted."""
    mount = shutil.which("mount")
    folder = tmp_path / "full"
    folder.mkdir()
    if mount is None:
        pytest.skip("no 'mount' command on this machine: cannot make a real full disk")
    r = subprocess.run([mount, "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({(r.stderr or r.stdout).strip()[:200]}): no real full disk")
    try:
        try:
            with open(folder / "filler", "wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        except OSError:  # ENOSPC: full
            pass
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_a_real_full_disk_is_exit_2_with_nothing_left(world, full_disk, capsys):
    """evaluate, compare and package-msd writing onto a full tmpfs: exit 2, the output and the
    error named, no traceback, no temp file left."""
    before = sorted(p.name for p in full_disk.iterdir())
    runs = {
        "evaluate": ["evaluate", "--pred", str(world.pred), "--ref", str(world.ref), "--task", TASK,
                     "-o", str(full_disk / "e.json")],
        "compare": ["compare", str(world.evaluation), str(world.evaluation), "-o", str(full_disk / "report")],
        "package-msd": ["package-msd", "--task", TASK, "--pred", str(world.test_pred), "--images", str(world.images),
                        "-o", str(full_disk / "s.zip")],
    }
    for command, argv in runs.items():
        rc = main(argv)
        out, err = capsys.readouterr()
        assert rc == 2, f"{command}: exit {rc}\n{err[-2000:]}"
        assert "Traceback" not in err and "file system is full" in err and str(full_disk) in err, err
        left = sorted(p.name for p in full_disk.rglob("*") if p.is_file())
        assert left == before, f"{command} left {left}"
    assert not (full_disk / "report").exists()  # compare removes the folder it created
