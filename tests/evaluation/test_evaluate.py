"""``evaluate`` on real Task04_Hippocampus labels, with answers computed independently here."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.distance import cdist

from nnunet_genesis.cli import main
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.evaluation.evaluate import EvaluationConfig, evaluate_folders

N_CASES = 6


def write_like(array: np.ndarray, like: sitk.Image, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(like)
    sitk.WriteImage(image, str(path))


def shift_down(seg: np.ndarray) -> np.ndarray:
    """Move every label one voxel along numpy axis 0 (zero-filled, no wrap-around)."""
    out = np.zeros_like(seg)
    out[1:] = seg[:-1]
    return out


def surface(mask: np.ndarray) -> np.ndarray:
    p = np.pad(mask, 1)
    all_in = np.ones_like(mask)
    for axis in range(3):
        for step in (-1, 1):
            all_in &= np.roll(p, step, axis=axis)[1:-1, 1:-1, 1:-1]
    return mask & ~all_in


def brute_force_nsd(ref: np.ndarray, pred: np.ndarray, spacing, tol: float) -> float:
    sr = np.argwhere(surface(ref)) * np.asarray(spacing)
    sp = np.argwhere(surface(pred)) * np.asarray(spacing)
    d = cdist(sp, sr)
    return ((d.min(1) <= tol + 1e-9).sum() + (d.min(0) <= tol + 1e-9).sum()) / (len(sp) + len(sr))


@pytest.fixture(scope="module")
def hippo_cases(hippocampus_dir, tmp_path_factory) -> dict:
    """References (links to real labels) and an identical and a shifted prediction folder."""
    root = tmp_path_factory.mktemp("hippo_eval")
    ref, same, shifted = root / "ref", root / "same", root / "shifted"
    for d in (ref, same, shifted):
        d.mkdir()
    files = sorted((hippocampus_dir / "labelsTr").glob("hippocampus_*.nii.gz"))[:N_CASES]
    for f in files:
        (ref / f.name).symlink_to(f)
        (same / f.name).symlink_to(f)
        image = sitk.ReadImage(str(f))
        write_like(shift_down(sitk.GetArrayFromImage(image)), image, shifted / f.name)
    return {"ref": ref, "same": same, "shifted": shifted, "files": files, "root": root}


def test_labels_against_themselves_score_one(hippo_cases, tmp_path):
    out = tmp_path / "same.json"
    rc = main(["evaluate", "--pred", str(hippo_cases["same"]), "--ref", str(hippo_cases["ref"]),
               "--task", "Task04_Hippocampus", "-o", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["labels"] == [1, 2] and result["nsd_tolerance_mm"] == 1.0
    assert result["n_cases"] == N_CASES
    for case in result["cases"]:
        for label in ("1", "2"):
            assert case["labels"][label]["dice"] == 1.0
            assert case["labels"][label]["nsd"] == 1.0
            assert case["labels"][label]["status"] == "ok"
    for label in ("1", "2"):
        assert result["summary"][label]["dice"]["mean"] == 1.0
        assert result["summary"][label]["nsd"]["n"] == N_CASES
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert len(rows) == 2 * N_CASES + 3 * 2
    assert {r["case"] for r in rows[-6:]} == {"(mean)", "(median)", "(std)"}


@pytest.mark.parametrize("tolerance", [0.5, 1.0])
def test_shifted_labels_match_independent_computation(hippo_cases, tolerance):
    result = evaluate_folders(EvaluationConfig(pred_dir=hippo_cases["shifted"], ref_dir=hippo_cases["ref"],
                                               labels=[1, 2], nsd_tolerance_mm=tolerance, progress=False))
    dice_means = {1: [], 2: []}
    for case, f in zip(result["cases"], hippo_cases["files"]):
        image = sitk.ReadImage(str(f))
        ref = sitk.GetArrayFromImage(image)
        pred = shift_down(ref)
        spacing = image.GetSpacing()[::-1]
        for label in (1, 2):
            r, p = ref == label, pred == label
            dice = 2 * np.logical_and(r, p).sum() / (r.sum() + p.sum())
            dice_means[label].append(dice)
            got = case["labels"][str(label)]
            assert got["dice"] == pytest.approx(dice)
            assert got["nsd"] == pytest.approx(brute_force_nsd(r, p, spacing, tolerance))
            if tolerance >= 1.0:  # a one-voxel (1 mm) shift is within 1 mm everywhere
                assert got["nsd"] == pytest.approx(1.0)
            else:
                assert got["nsd"] < 1.0
    for label in (1, 2):
        assert result["summary"][str(label)]["dice"]["mean"] == pytest.approx(np.mean(dice_means[label]))
        assert result["summary"][str(label)]["dice"]["std"] == pytest.approx(np.std(dice_means[label], ddof=1))


def test_empty_labels_are_counted_not_averaged(hippo_cases, tmp_path):
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    pred_dir.mkdir()
    first, second, third = hippo_cases["files"][:3]
    for f in (first, second, third):
        image = sitk.ReadImage(str(f))
        seg = sitk.GetArrayFromImage(image)
        ref, pred = seg.copy(), seg.copy()
        if f == first:  # label 2 in neither: both empty
            ref[ref == 2] = 0
            pred[pred == 2] = 0
        if f == second:  # label 2 missed by the prediction
            pred[pred == 2] = 0
        write_like(ref, image, ref_dir / f.name)
        write_like(pred, image, pred_dir / f.name)
    result = evaluate_folders(EvaluationConfig(pred_dir=pred_dir, ref_dir=ref_dir, task="Task04_Hippocampus",
                                               progress=False))
    s2 = result["summary"]["2"]
    assert (s2["n_both_empty"], s2["n_pred_empty"], s2["n_ref_empty"]) == (1, 1, 0)
    assert s2["dice"]["n"] == 2  # the both-empty case is left out
    assert s2["dice"]["mean"] == pytest.approx(0.5)  # 0 (missed) and 1 (perfect)
    by_case = {c["case"]: c["labels"]["2"] for c in result["cases"]}
    assert by_case[first.name[:-7]] == {"dice": None, "nsd": None, "status": "both_empty", "n_ref": 0, "n_pred": 0}
    assert by_case[second.name[:-7]]["status"] == "pred_empty"
    assert by_case[second.name[:-7]]["dice"] == 0.0


def test_missing_prediction_is_an_error_listing_it(hippo_cases, tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    for f in hippo_cases["files"][2:]:
        (pred / f.name).symlink_to(f)
    missing = sorted(f.name[:-7] for f in hippo_cases["files"][:2])
    rc = main(["evaluate", "--pred", str(pred), "--ref", str(hippo_cases["ref"]), "--task", "Task04_Hippocampus",
               "-o", str(tmp_path / "out.json")])
    assert rc == 2
    err = capsys.readouterr().err
    assert all(m in err for m in missing)
    assert not (tmp_path / "out.json").exists()
    # --only-predicted scores just the predicted cases
    result = evaluate_folders(EvaluationConfig(pred_dir=pred, ref_dir=hippo_cases["ref"], task="Task04_Hippocampus",
                                               only_predicted=True, progress=False))
    assert result["n_cases"] == N_CASES - 2


def test_mismatched_geometry_names_the_case(hippo_cases, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    for f in hippo_cases["files"]:
        (pred / f.name).symlink_to(f)
    victim = hippo_cases["files"][3]
    (pred / victim.name).unlink()
    image = sitk.ReadImage(str(victim))
    image.SetSpacing([s * 1.5 for s in image.GetSpacing()])
    sitk.WriteImage(image, str(pred / victim.name))
    with pytest.raises(GenesisUserError, match=victim.name[:-7]) as info:
        evaluate_folders(EvaluationConfig(pred_dir=pred, ref_dir=hippo_cases["ref"], task="Task04_Hippocampus",
                                          progress=False))
    assert "spacing" in str(info.value)


def test_no_tolerance_is_an_error(hippo_cases, tmp_path):
    rc = main(["evaluate", "--pred", str(hippo_cases["same"]), "--ref", str(hippo_cases["ref"]),
               "-o", str(tmp_path / "x.json")])
    assert rc == 2
    assert not (tmp_path / "x.json").exists()


def _truncated(image: sitk.Image, path: Path) -> str:
    sitk.WriteImage(image, str(path), useCompression=True)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) * 6 // 10])  # SimpleITK alone scores the zero-filled rest
    return "the file is damaged"


def _with_value(value):
    def damage(image: sitk.Image, path: Path) -> str:
        a = sitk.GetArrayFromImage(image).astype(np.float32)
        a[a.shape[0] // 2, a.shape[1] // 2, a.shape[2] // 2] = value
        write_like(a, image, path)
        return "NaN/Inf" if not np.isfinite(value) else f"label(s) {value:g} outside"
    return damage


@pytest.mark.parametrize("damage", [_truncated, _with_value(np.nan), _with_value(np.inf), _with_value(5),
                                    _with_value(-1)], ids=["truncated", "nan", "inf", "label5", "label-1"])
def test_damaged_prediction_is_refused_with_exit_2(damage, hippo_cases, tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    for f in hippo_cases["files"]:
        (pred / f.name).symlink_to(f)
    victim = hippo_cases["files"][2]
    (pred / victim.name).unlink()
    needle = damage(sitk.ReadImage(str(victim)), pred / victim.name)
    out = tmp_path / "out.json"
    rc = main(["evaluate", "--pred", str(pred), "--ref", str(hippo_cases["ref"]), "--task", "Task04_Hippocampus",
               "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert needle in err and str(pred / victim.name) in err and "Traceback" not in err
    assert list(tmp_path.glob("out*")) == [] and [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []
