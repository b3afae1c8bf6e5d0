"""``compare`` on tiny nnU-Net results folders and evaluate JSONs built from real labels."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy.stats import wilcoxon

from nnunet_genesis.cli import main
from nnunet_genesis.evaluation.evaluate import EvaluationConfig, evaluate_folders, write_evaluation
from nnunet_genesis.evaluation.statistics import paired_comparison
from nnunet_genesis.evaluation.training_curves import curves_for_fold

DATASET = "Dataset004_Hippocampus"
FOLDS = {"fold_0": 4, "fold_1": 4}  # validation cases per fold


def shift(seg: np.ndarray, axis: int) -> np.ndarray:
    out = np.zeros_like(seg)
    src = [slice(None)] * 3
    dst = [slice(None)] * 3
    src[axis], dst[axis] = slice(None, -1), slice(1, None)
    out[tuple(dst)] = seg[tuple(src)]
    return out


def scratch_prediction(seg: np.ndarray, i: int) -> np.ndarray:
    return shift(seg, 0)


def genesis_prediction(seg: np.ndarray, i: int) -> np.ndarray:
    return seg.copy() if i % 2 == 0 else shift(seg, 2)


def dice(ref: np.ndarray, pred: np.ndarray, label: int) -> float:
    r, p = ref == label, pred == label
    return 2 * np.logical_and(r, p).sum() / (r.sum() + p.sum())


def write_like(array, like, path):
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(like)
    sitk.WriteImage(out, str(path))


def write_nnunet_summary(validation: Path, gt: Path, cases: list[str]) -> None:
    """summary.json exactly as nnU-Net writes it (its own per-case metrics and JSON export)."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics, save_summary_json
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.utilities.json_export import recursive_fix_for_json_export

    results = [compute_metrics(str(gt / f"{c}.nii.gz"), str(validation / f"{c}.nii.gz"), SimpleITKIO(), [1, 2])
               for c in cases]
    means = {r: {m: np.nanmean([x["metrics"][r][m] for x in results]) for m in results[0]["metrics"][r]}
             for r in (1, 2)}
    fg = {m: np.mean([means[r][m] for r in means]) for m in means[1]}
    for r in results:
        recursive_fix_for_json_export(r)
    recursive_fix_for_json_export(means)
    recursive_fix_for_json_export(fg)
    save_summary_json({"metric_per_case": results, "mean": means, "foreground_mean": fg}, str(validation / "summary.json"))


def logging_entry(n_epochs: int, offset: float) -> dict:
    """A checkpoint 'logging' entry with numpy scalars, as nnU-Net's logger holds it."""
    mean_fg = [np.float64(0.3 + offset + 0.05 * e) for e in range(n_epochs)]
    ema = []
    for v in mean_fg:
        ema.append(v if not ema else ema[-1] * 0.9 + 0.1 * v)
    return {
        "mean_fg_dice": mean_fg, "ema_fg_dice": ema,
        "dice_per_class_or_region": [[np.float64(v - 0.01), np.float64(v + 0.01)] for v in mean_fg],
        "train_losses": [np.float32(-0.1 * e - offset) for e in range(n_epochs)],
        "val_losses": [np.float32(-0.08 * e - offset) for e in range(n_epochs)],
        "lrs": [0.01 * (1 - e / n_epochs) for e in range(n_epochs)],
        "epoch_start_timestamps": [1000.0 + e for e in range(n_epochs)],
        "epoch_end_timestamps": [1000.5 + e for e in range(n_epochs)],
    }


def write_training_log(path: Path, logging: dict) -> None:
    """Lines in the form of nnUNetTrainer.print_to_log_file (timestamp, args joined by spaces)."""
    stamp = datetime.datetime(2024, 5, 1, 10, 0, 0, 123456)

    def line(*args):
        return " ".join([f"{stamp}:", *[str(a) for a in args]]) + " \n"

    text = "\n#######################################################################\n"
    text += line("Using splits from existing split file:", "splits_final.json")
    for e in range(len(logging["train_losses"])):
        text += line("") + line(f"Epoch {e}") + line("Current learning rate:", np.round(logging["lrs"][e], 5))
        text += line("train_loss", np.round(logging["train_losses"][e], decimals=4))
        text += line("val_loss", np.round(logging["val_losses"][e], decimals=4))
        text += line("Pseudo dice", [np.round(np.float32(i), decimals=4) for i in logging["dice_per_class_or_region"][e]])
        text += line("Epoch time: 12.34 s")
    path.write_text(text)


@pytest.fixture()
def nnunet_runs(hippocampus_dir, nnunet_env) -> dict:
    """Two results folders (scratch, genesis) with 2 folds and gt_segmentations in nnUNet_preprocessed."""
    files = sorted((hippocampus_dir / "labelsTr").glob("hippocampus_*.nii.gz"))[:sum(FOLDS.values())]
    gt = nnunet_env["nnUNet_preprocessed"] / DATASET / "gt_segmentations"
    gt.mkdir(parents=True)
    for f in files:
        (gt / f.name).symlink_to(f)
    cases = [f.name[:-7] for f in files]
    runs = {}
    for name, make in (("nnUNetTrainer", scratch_prediction), ("nnUNetTrainerGenesis", genesis_prediction)):
        run = nnunet_env["nnUNet_results"] / DATASET / f"{name}__nnUNetPlans__3d_fullres"
        run.mkdir(parents=True)
        (run / "dataset.json").write_text(json.dumps(
            {"labels": {"background": 0, "Anterior": 1, "Posterior": 2}, "file_ending": ".nii.gz"}))
        (run / "plans.json").write_text(json.dumps({"dataset_name": DATASET}))
        start = 0
        for fold, n in FOLDS.items():
            validation = run / fold / "validation"
            validation.mkdir(parents=True)
            for i in range(start, start + n):
                image = sitk.ReadImage(str(files[i]))
                write_like(make(sitk.GetArrayFromImage(image), i), image, validation / files[i].name)
            write_nnunet_summary(validation, gt, cases[start:start + n])
            start += n
        runs[name] = run
    # scratch: curves in checkpoint_final.pth; genesis: only the text log
    scratch_log = logging_entry(5, 0.0)
    for fold in FOLDS:
        torch.save({"network_weights": {"w": torch.zeros(3)}, "logging": scratch_log, "current_epoch": 5,
                    "init_args": {"device": torch.device("cpu"), "fold": 0}, "trainer_name": "nnUNetTrainer",
                    "inference_allowed_mirroring_axes": (0, 1, 2), "_best_ema": scratch_log["ema_fg_dice"][-1]},
                   runs["nnUNetTrainer"] / fold / "checkpoint_final.pth")
        write_training_log(runs["nnUNetTrainerGenesis"] / fold / "training_log_2024_5_1_10_00_00.txt",
                           logging_entry(6, 0.1))
    return {"runs": runs, "files": files, "cases": cases, "scratch_log": scratch_log}


def test_compare_nnunet_results_folders(nnunet_runs, tmp_path):
    out = tmp_path / "report"
    rc = main(["compare", str(nnunet_runs["runs"]["nnUNetTrainer"]), str(nnunet_runs["runs"]["nnUNetTrainerGenesis"]),
               "--names", "scratch", "genesis", "-o", str(out)])
    assert rc == 0
    data = json.loads((out / "comparison.json").read_text())
    comps = {(c["metric"], c["label"]): c for c in data["comparisons"]["genesis"]}
    # independent answer: per-case Dice from the prediction files, Wilcoxon by SciPy
    for label in (1, 2):
        a, b = [], []
        for i, f in enumerate(nnunet_runs["files"]):
            ref = sitk.GetArrayFromImage(sitk.ReadImage(str(f)))
            a.append(dice(ref, scratch_prediction(ref, i), label))
            b.append(dice(ref, genesis_prediction(ref, i), label))
        c = comps[("dice", str(label))]
        assert c["n_pairs"] == len(nnunet_runs["files"])
        assert c["mean_difference"] == pytest.approx(np.mean(np.subtract(b, a)))
        assert c["mean_difference"] > 0
        assert c["p_value"] == pytest.approx(wilcoxon(b, a).pvalue)
    # NSD found gt_segmentations via nnUNet_preprocessed and the tolerance via the dataset name
    assert ("nsd", "1") in comps
    assert data["runs"][0]["nsd_tolerance_mm"] == 1.0
    report = (out / "report.md").read_text()
    head = report.split("\n\n")[1]
    assert head.startswith("**Did genesis beat scratch? Yes**")
    d1 = comps[("dice", "1")]
    assert f"{d1['mean_difference']:+.4f}" in report.split("## ")[0]
    assert f"p={d1['p_value']:.3g}" in report.split("## ")[0]
    for png in ("scores_dice.png", "scores_nsd.png", "differences_genesis_vs_scratch.png", "training_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<table>" in (out / "report.html").read_text()
    # training curves: scratch from the checkpoint (weights_only), genesis from the text log
    scratch_curves = data["runs"][0]["training_curves"]["fold_0"]
    assert "checkpoint" in scratch_curves["source"]
    assert scratch_curves["train_losses"] == pytest.approx([float(v) for v in nnunet_runs["scratch_log"]["train_losses"]])
    assert scratch_curves["ema_fg_dice"] == pytest.approx([float(v) for v in nnunet_runs["scratch_log"]["ema_fg_dice"]])
    genesis_curves = data["runs"][1]["training_curves"]["fold_1"]
    assert "training log" in genesis_curves["source"]
    expected = logging_entry(6, 0.1)
    assert genesis_curves["val_losses"] == pytest.approx([round(float(v), 4) for v in expected["val_losses"]])
    assert genesis_curves["mean_fg_dice"] == pytest.approx([float(v) for v in expected["mean_fg_dice"]], abs=1e-4)


def test_nnunet_folder_without_references_reports_dice_only(nnunet_runs, tmp_path, monkeypatch):
    monkeypatch.delenv("nnUNet_preprocessed")
    out = tmp_path / "report"
    assert main(["compare", str(nnunet_runs["runs"]["nnUNetTrainer"]),
                 str(nnunet_runs["runs"]["nnUNetTrainerGenesis"]), "-o", str(out)]) == 0
    data = json.loads((out / "comparison.json").read_text())
    assert {c["metric"] for c in data["comparisons"]["nnUNetTrainerGenesis"]} == {"dice"}
    report = (out / "report.md").read_text()
    assert "NSD not computed: no reference segmentations" in report
    assert not (out / "scores_nsd.png").exists()


def test_unsafe_checkpoint_is_not_loaded_and_log_is_used(tmp_path):
    fold = tmp_path / "fold_0"
    fold.mkdir()
    log = logging_entry(3, 0.0)
    # a datetime is not an allowed global under weights_only=True: the checkpoint must be refused
    torch.save({"logging": log, "when": datetime.datetime(2024, 1, 1)}, fold / "checkpoint_final.pth")
    write_training_log(fold / "training_log_2024_5_1_10_00_00.txt", log)
    curves, note = curves_for_fold(fold)
    assert "could not be read with weights_only=True" in note
    assert curves is not None and curves.source.startswith("training log")
    assert curves.train_losses == pytest.approx([round(float(v), 4) for v in log["train_losses"]])


def test_compare_evaluate_jsons(hippocampus_dir, tmp_path):
    """Evaluate JSONs: the better run is found; an all-zero difference gives no p-value."""
    files = sorted((hippocampus_dir / "labelsTr").glob("hippocampus_*.nii.gz"))[:6]
    ref, same, shifted = (tmp_path / n for n in ("ref", "same", "shifted"))
    for d in (ref, same, shifted):
        d.mkdir()
    for f in files:
        (ref / f.name).symlink_to(f)
        (same / f.name).symlink_to(f)
        image = sitk.ReadImage(str(f))
        write_like(shift(sitk.GetArrayFromImage(image), 1), image, shifted / f.name)
    paths = {}
    for name, pred in (("shifted", shifted), ("same", same), ("same_again", same)):
        result = evaluate_folders(EvaluationConfig(pred_dir=pred, ref_dir=ref, task="Task04_Hippocampus", progress=False))
        paths[name] = write_evaluation(result, tmp_path / f"{name}.json")[0]
    out = tmp_path / "report"
    assert main(["compare", str(paths["shifted"]), str(paths["same"]), str(paths["same_again"]), "-o", str(out)]) == 0
    data = json.loads((out / "comparison.json").read_text())
    better = {(c["metric"], c["label"]): c for c in data["comparisons"]["same"]}
    assert better[("dice", "1")]["mean_difference"] > 0
    assert better[("dice", "1")]["n_b_better"] == 6
    assert better[("dice", "1")]["p_value"] == pytest.approx(0.03125)  # exact: all 6 positive, 2/2**6
    report = (out / "report.md").read_text()
    assert "**Did same beat shifted? Yes**" in report
    assert "**Did same_again beat shifted? Yes**" in report
    assert "training_curves.png" not in report and "No run has training curves" in report


def test_paired_comparison_edge_cases():
    a = {"c1": 0.5, "c2": 0.6, "c3": None, "c4": 0.7}
    same = paired_comparison("dice", "1", a, dict(a))
    assert same.p_value is None and same.n_pairs == 3 and "exactly zero" in same.test_note
    few = paired_comparison("dice", "1", a, {"c1": 0.6, "c2": 0.7, "c4": 0.8, "c5": 0.9})
    assert few.n_pairs == 3 and few.mean_difference == pytest.approx(0.1)
    assert few.p_value == pytest.approx(wilcoxon([0.6, 0.7, 0.8], [0.5, 0.6, 0.7]).pvalue)
    assert "too few" in few.test_note and not few.significant
    none = paired_comparison("dice", "1", {"x": 1.0}, {"y": 1.0})
    assert none.n_pairs == 0 and none.p_value is None and none.mean_difference is None
