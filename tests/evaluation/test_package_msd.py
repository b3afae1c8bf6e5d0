"""``package-msd`` on the real Task04_Hippocampus test images and the LiTS liver case."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_genesis.cli import main

TASK = "Task04_Hippocampus"


def threshold_labels(image: sitk.Image) -> np.ndarray:
    """An honest, simple prediction: intensity thresholds into labels {0, 1, 2}."""
    a = sitk.GetArrayFromImage(image)
    lo, hi = np.quantile(a, [0.6, 0.85])
    return ((a > lo).astype(np.uint8) + (a > hi).astype(np.uint8))


def write_like(array: np.ndarray, like: sitk.Image, path: Path) -> None:
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(like)
    sitk.WriteImage(out, str(path))


@pytest.fixture(scope="module")
def hippo_predictions(hippocampus_dir, tmp_path_factory) -> dict:
    """Threshold predictions for all 40 imagesTs, plus the JSON files nnUNetv2_predict adds."""
    images = hippocampus_dir / "imagesTs"
    pred = tmp_path_factory.mktemp("hippo_pred") / "pred"
    pred.mkdir()
    arrays = {}
    for f in sorted(images.glob("hippocampus_*.nii.gz")):
        image = sitk.ReadImage(str(f))
        arrays[f.name] = threshold_labels(image)
        write_like(arrays[f.name], image, pred / f.name)
    for side_file in ("dataset.json", "plans.json", "predict_from_raw_data_args.json"):
        (pred / side_file).write_text("{}")
    assert len(arrays) == 40
    return {"images": images, "pred": pred, "arrays": arrays}


def copy_predictions(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).symlink_to(f)
    return dst


def package(*args: str) -> int:
    return main(["package-msd", *args])


def test_valid_hippocampus_package(hippo_predictions, tmp_path):
    out = tmp_path / "submission.zip"
    rc = package("--task", TASK, "--pred", str(hippo_predictions["pred"]), "--images",
                 str(hippo_predictions["images"]), "-o", str(out))
    assert rc == 0
    with zipfile.ZipFile(out) as zf:
        names = sorted(zf.namelist())
        assert names == sorted(f"{TASK}/{n}" for n in hippo_predictions["arrays"])
        first = names[0]
        (tmp_path / "x.nii.gz").write_bytes(zf.read(first))
    written = sitk.ReadImage(str(tmp_path / "x.nii.gz"))
    image = sitk.ReadImage(str(hippo_predictions["images"] / Path(first).name))
    assert written.GetPixelID() == sitk.sitkUInt8
    assert written.GetSize() == image.GetSize()
    assert np.allclose(written.GetSpacing(), image.GetSpacing())
    assert np.allclose(written.GetOrigin(), image.GetOrigin())
    assert np.allclose(written.GetDirection(), image.GetDirection())
    assert np.array_equal(sitk.GetArrayFromImage(written), hippo_predictions["arrays"][Path(first).name])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_nnunet_image_names_and_existing_output(hippo_predictions, tmp_path):
    images = tmp_path / "imagesTs"
    images.mkdir()
    for f in sorted(hippo_predictions["images"].glob("*.nii.gz")):
        (images / f"{f.name[:-7]}_0000.nii.gz").symlink_to(f)
    out = tmp_path / "submission.zip"
    with zipfile.ZipFile(out, "w") as zf:  # an earlier submission of this command
        zf.writestr(f"{TASK}/hippocampus_001.nii.gz", b"previous")
    previous = out.read_bytes()
    args = ["--task", TASK, "--pred", str(hippo_predictions["pred"]), "--images", str(images), "-o", str(out)]
    assert package(*args) == 2
    assert out.read_bytes() == previous  # never overwritten without --force
    foreign = tmp_path / "notes.zip"
    foreign.write_bytes(b"previous")
    assert package(*args[:-1], str(foreign), "--force") == 2  # --force replaces only a submission zip
    assert foreign.read_bytes() == b"previous"
    assert package(*args, "--force") == 0
    with zipfile.ZipFile(out) as zf:
        assert len(zf.namelist()) == 40
        assert all(n.startswith(f"{TASK}/hippocampus_") and not n.endswith("_0000.nii.gz") for n in zf.namelist())


def test_liver_label_set_and_two_tasks_in_one_zip(liver_dir, hippo_predictions, tmp_path):
    images, pred = tmp_path / "liver_images", tmp_path / "liver_pred"
    images.mkdir()
    pred.mkdir()
    (images / "liver_117_0000.nii.gz").symlink_to(liver_dir / "liver_117_ct.nii.gz")
    label = sitk.ReadImage(str(liver_dir / "liver_117_label.nii.gz"))
    array = sitk.GetArrayFromImage(label)
    assert set(np.unique(array).tolist()) == {0, 1, 2}
    # stored as float32 holding whole numbers: accepted and written as uint8
    write_like(array.astype(np.float32), label, pred / "liver_117.nii.gz")
    out = tmp_path / "both.zip"
    rc = package("--task", "Task03_Liver", "--pred", str(pred), "--images", str(images),
                 "--task", TASK, "--pred", str(hippo_predictions["pred"]), "--images",
                 str(hippo_predictions["images"]), "-o", str(out))
    assert rc == 0
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert "Task03_Liver/liver_117.nii.gz" in names
        assert sum(n.startswith(f"{TASK}/") for n in names) == 40
        (tmp_path / "l.nii.gz").write_bytes(zf.read("Task03_Liver/liver_117.nii.gz"))
    written = sitk.ReadImage(str(tmp_path / "l.nii.gz"))
    assert written.GetPixelID() == sitk.sitkUInt8
    assert np.array_equal(sitk.GetArrayFromImage(written), array)

    # label 3 is outside Task03_Liver's {0, 1, 2}
    bad = array.copy()
    bad[bad == 2] = 3
    write_like(bad, label, pred / "liver_117.nii.gz")
    out2 = tmp_path / "bad.zip"
    assert package("--task", "Task03_Liver", "--pred", str(pred), "--images", str(images), "-o", str(out2)) == 2
    assert not out2.exists()


def _break_missing(d: Path, names: list[str]) -> str:
    (d / names[0]).unlink()
    return names[0][:-7]


def _break_extra(d: Path, names: list[str]) -> str:
    (d / "hippocampus_999.nii.gz").symlink_to((d / names[0]).resolve())
    return "hippocampus_999"


def _rewrite(d: Path, name: str, fn) -> None:
    image = sitk.ReadImage(str(d / name))
    (d / name).unlink()
    sitk.WriteImage(fn(image), str(d / name))


def _break_size(d: Path, names: list[str]) -> str:
    _rewrite(d, names[1], lambda im: im[:-1, :, :])
    return "size"


def _break_spacing(d: Path, names: list[str]) -> str:
    def respace(im):
        im.SetSpacing([s * 1.1 for s in im.GetSpacing()])
        return im
    _rewrite(d, names[2], respace)
    return "spacing"


def _break_label3(d: Path, names: list[str]) -> str:
    def add3(im):
        a = sitk.GetArrayFromImage(im)
        a[a.shape[0] // 2, a.shape[1] // 2, a.shape[2] // 2] = 3
        out = sitk.GetImageFromArray(a)
        out.CopyInformation(im)
        return out
    _rewrite(d, names[3], add3)
    return "label(s) 3"


def _break_float(d: Path, names: list[str]) -> str:
    def to_prob(im):
        a = sitk.GetArrayFromImage(im).astype(np.float32) * 0.5
        out = sitk.GetImageFromArray(a)
        out.CopyInformation(im)
        return out
    _rewrite(d, names[4], to_prob)
    return "non-integer"


def _break_not_nifti(d: Path, names: list[str]) -> str:
    (d / "notes.txt").write_text("not a prediction")
    return "notes.txt"


def _break_truncated(d: Path, names: list[str]) -> str:
    data = (d / names[5]).read_bytes()
    (d / names[5]).unlink()
    (d / names[5]).write_bytes(data[:len(data) * 6 // 10])  # SimpleITK alone would zero-fill the rest
    return f"{names[5]}: the file is damaged"


def _break_nan(d: Path, names: list[str]) -> str:
    def add_nan(im):
        a = sitk.GetArrayFromImage(im).astype(np.float32)
        a[0, 0, 0] = np.nan  # ITK's NIfTI reader alone would read it as background
        out = sitk.GetImageFromArray(a)
        out.CopyInformation(im)
        return out
    _rewrite(d, names[6], add_nan)
    return f"{names[6]}: contains 1 NaN/Inf"


BREAKERS = {"missing case": _break_missing, "extra case": _break_extra, "wrong size": _break_size,
            "wrong spacing": _break_spacing, "label 3": _break_label3, "float labels": _break_float,
            "non-NIfTI file": _break_not_nifti, "truncated file": _break_truncated, "NaN voxel": _break_nan}


@pytest.mark.parametrize("failure", list(BREAKERS))
def test_each_failure_gives_exit_2_and_no_zip(failure, hippo_predictions, tmp_path, capsys):
    pred = copy_predictions(hippo_predictions["pred"], tmp_path / "pred")
    expected = BREAKERS[failure](pred, sorted(hippo_predictions["arrays"]))
    out = tmp_path / "submission.zip"
    rc = package("--task", TASK, "--pred", str(pred), "--images", str(hippo_predictions["images"]), "-o", str(out))
    assert rc == 2
    assert not out.exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    err = capsys.readouterr().err
    assert expected in err
    assert "1 problem(s)" in err


def test_all_problems_are_listed_in_one_message(hippo_predictions, tmp_path, capsys):
    pred = copy_predictions(hippo_predictions["pred"], tmp_path / "pred")
    names = sorted(hippo_predictions["arrays"])
    expected = [breaker(pred, names) for breaker in BREAKERS.values()]
    out = tmp_path / "submission.zip"
    assert package("--task", TASK, "--pred", str(pred), "--images", str(hippo_predictions["images"]),
                   "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert f"{len(BREAKERS)} problem(s)" in err
    assert all(e in err for e in expected)
    assert not out.exists()


def test_task_groups_must_be_complete(hippo_predictions, tmp_path):
    out = tmp_path / "s.zip"
    with pytest.raises(SystemExit) as info:  # --pred before any --task: argparse usage error
        package("--pred", str(hippo_predictions["pred"]), "--task", TASK, "-o", str(out))
    assert info.value.code == 2
    assert package("--task", TASK, "--pred", str(hippo_predictions["pred"]), "-o", str(out)) == 2
    assert package("--task", "Task99_Nothing", "--pred", "x", "--images", "y", "-o", str(out)) == 2
    assert not out.exists()
