"""``nnunet-genesis demo --quick`` end to end through the real nnU-Net commands, and its re-run safety.

One quick demo (tiny synthetic dataset, a few iterations) runs once for the module: dataset ->
nnUNetv2_plan_and_preprocess -> pretrain -> attach -> nnUNetv2_train (Genesis and scratch) ->
nnUNetv2_predict -> evaluate -> compare -> package-msd. The scores of so short a run mean
nothing; the tests check that every step did its job and that re-running is safe.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

import pytest

pytestmark = pytest.mark.slow

STEPS = ("dataset", "preprocess", "pretrain", "attach", "train_genesis", "train_scratch", "predict_genesis",
         "predict_scratch", "evaluate", "compare", "package")


def clean_env() -> dict[str, str]:
    """The caller's environment without nnU-Net's variables: the demo must set its own."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def demo(out: Path, *extra: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnunet_genesis.cli", "demo", "-o", str(out), "--quick",
                           "--device", "cpu", *extra], env=clean_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    t0 = time.monotonic()
    result = demo(out)
    assert result.returncode == 0, f"demo failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return out, result, time.monotonic() - t0


def test_quick_demo_runs_every_step(quick_demo):
    out, result, seconds = quick_demo
    for step in STEPS:
        marker = json.loads((out / "state" / f"{step}.json").read_text())
        assert marker["seconds"] > 0 and Path(marker["log"]).is_file()
    # all nnU-Net folders are the demo's own
    assert sorted(p.name for p in (out / "nnUNet_raw").iterdir()) == ["Dataset990_GenesisDemo",
                                                                     "Dataset999_GenesisPretrain"]
    assert (out / "pretrain" / "genesis_final.pth").is_file()
    print(f"quick demo: {seconds:.0f} s")


def test_genesis_arm_started_from_the_checkpoint_and_scratch_did_not(quick_demo):
    out, _, _ = quick_demo
    from nnunet_genesis.checkpoint import sha256_of

    results = out / "nnUNet_results" / "Dataset990_GenesisDemo"
    genesis = results / "nnUNetTrainerGenesis_demo__nnUNetPlans_demo_genesis__3d_fullres"
    scratch = results / "nnUNetTrainerScratch_demo__nnUNetPlans_demo__3d_fullres"
    for run in (genesis, scratch):
        assert (run / "fold_0" / "checkpoint_final.pth").is_file()
    g_plans = json.loads((genesis / "plans.json").read_text())
    s_plans = json.loads((scratch / "plans.json").read_text())
    assert g_plans["genesis"]["sha256"] == sha256_of(out / "pretrain" / "genesis_final.pth")
    assert "genesis" not in s_plans
    report = json.loads((genesis / "fold_0" / "genesis_transfer_report.json").read_text())
    assert report, "the Genesis trainer wrote an empty transfer report"
    # the demo's default --transfer full (nnUNetTrainerGenesis's default start): encoder and decoder
    assert report["encoder_fraction"] == 1.0 and report["decoder_fraction"] == 1.0
    assert not (scratch / "fold_0" / "genesis_transfer_report.json").exists()
    # fairness: identical schedule, network, patch and batch for both arms
    assert g_plans["genesis_schedule"] == s_plans["genesis_schedule"]
    assert g_plans["configurations"]["3d_fullres"] == s_plans["configurations"]["3d_fullres"]
    # the same training cases for both (one split file, fold 0)
    splits = json.loads((out / "nnUNet_preprocessed" / "Dataset990_GenesisDemo" / "splits_final.json").read_text())
    assert len(splits) == 1 and len(splits[0]["train"]) == 3 and not set(splits[0]["train"]) & set(splits[0]["val"])


def test_predictions_evaluation_report_and_zip(quick_demo):
    out, result, _ = quick_demo
    test_images = sorted(p.name[: -len("_0000.nii.gz")]
                         for p in (out / "nnUNet_raw" / "Dataset990_GenesisDemo" / "imagesTs").iterdir())
    assert len(test_images) == 3
    for arm in ("genesis", "scratch"):
        preds = sorted(p.name[: -len(".nii.gz")] for p in (out / "predictions" / arm).glob("*.nii.gz"))
        assert preds == test_images
        evaluation = json.loads((out / "evaluation" / f"{arm}.json").read_text())
        assert evaluation["n_cases"] == 3 and evaluation["labels"] == [1, 2]
        assert {c["case"] for c in evaluation["cases"]} == set(test_images)
    report = (out / "report" / "report.md").read_text()
    assert "Did genesis beat scratch?" in report
    assert (out / "report" / "training_curves.png").is_file()  # nnU-Net's curves of both trainings
    with zipfile.ZipFile(out / "submission.zip") as z:
        assert sorted(z.namelist()) == [f"Task99_GenesisDemo/{c}.nii.gz" for c in test_images]
    # the one-screen summary
    assert "Dice scratch" in result.stdout and "ellipsoid" in result.stdout and "torus" in result.stdout
    assert str(out / "submission.zip") in result.stdout and str(out / "report" / "report.md") in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["genesis"]["summary"]) == {"1", "2"}
    # whether each arm learnt each label in training is read from its own curve (2 quick epochs)
    assert set(summary["final_pseudo_dice"]) == {"scratch", "Genesis"}
    assert all(len(v) == 2 and all(0 <= x <= 1 for x in v) for v in summary["final_pseudo_dice"].values())
    # what the pretraining learnt, against the constant predictor, is stated
    assert "restoration MSE on the fixed validation patches" in result.stdout
    assert isinstance(summary["pretraining"]["beats_constant_predictor"], bool)


def test_rerun_skips_finished_steps_and_keeps_outputs(quick_demo):
    out, _, _ = quick_demo
    zip_mtime = (out / "submission.zip").stat().st_mtime_ns
    checkpoint_mtime = (out / "pretrain" / "genesis_final.pth").stat().st_mtime_ns
    result = demo(out, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("done earlier, skipped") == len(STEPS)
    assert (out / "submission.zip").stat().st_mtime_ns == zip_mtime
    assert (out / "pretrain" / "genesis_final.pth").stat().st_mtime_ns == checkpoint_mtime


def test_unfinished_step_is_redone_from_its_start(quick_demo):
    """A step without its marker (interrupted) removes its partial output and runs again."""
    out, _, _ = quick_demo
    (out / "state" / "package.json").unlink()
    (out / "submission.zip").write_bytes(b"half a zip")
    result = demo(out, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("done earlier, skipped") == len(STEPS) - 1
    with zipfile.ZipFile(out / "submission.zip") as z:
        assert len(z.namelist()) == 3
    assert (out / "state" / "package.json").is_file()


def test_other_settings_are_refused_without_force(quick_demo):
    out, _, _ = quick_demo
    before = (out / "demo_config.json").read_text()
    result = demo(out, "--seed", "1", timeout=120)
    assert result.returncode == 2
    assert "other settings" in result.stderr and "seed" in result.stderr and "Traceback" not in result.stderr
    assert (out / "demo_config.json").read_text() == before


def test_refuses_a_folder_that_is_not_a_demo(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    result = demo(tmp_path, timeout=120)
    assert result.returncode == 2
    assert "not empty" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]  # nothing written into it


def test_msd_task_must_be_a_decathlon_folder(tmp_path):
    bad = tmp_path / "Task04_Hippocampus"
    bad.mkdir()
    result = demo(tmp_path / "out", "--msd-task", str(bad), timeout=120)
    assert result.returncode == 2
    assert "MSD layout" in result.stderr and "imagesTr" in result.stderr


def test_summary_states_the_difference_with_ci_and_significance():
    from nnunet_genesis.workflows.demo.summary import difference_lines

    def result(values):
        return {"summary": {"1": {"dice": {"mean": float(np.mean(values))}}}, "label_names": {"1": "ellipsoid"},
                "cases": [{"case": f"c{i}", "labels": {"1": {"dice": v}}} for i, v in enumerate(values)]}

    learnt = {"Genesis": [0.7], "scratch": [0.6]}  # final_pseudo_dice per arm
    better = difference_lines(result([0.7 + 0.01 * i for i in range(8)]), result([0.6] * 8), learnt)
    assert "+0.135" in better[0] and "95 % CI" in better[0] and "significant (p < 0.05)" in better[0]
    assert "test cases" not in better[0]
    same = difference_lines(result([0.6, 0.7, 0.5]), result([0.6, 0.7, 0.5]), learnt)
    assert "not significant" in same[0]
    # scratch never learnt the label in training: a large, "significant" difference that says nothing
    # about pretraining
    unlearnt = {"Genesis": [0.7], "scratch": [0.0]}
    unfair = difference_lines(result([0.6 + 0.01 * i for i in range(8)]), result([0.0] * 8), unlearnt)
    assert "NOT A FAIR COMPARISON" in unfair[0] and "scratch 0.000" in unfair[0] and "significant (p" not in unfair[0]
    assert "Genesis" not in unfair[0].split("not learnt in training by")[1].split("(")[0]
    # scratch learnt the label in training but generalises worse: the difference keeps its verdict
    worse = difference_lines(result([0.6 + 0.01 * i for i in range(8)]), result([0.3] * 8), learnt)
    assert "significant (p < 0.05)" in worse[0] and "NOT A FAIR" not in worse[0]
    assert "scratch learnt it in training (validation pseudo Dice 0.600) but scores 0.300 on the test cases" in worse[0]
    # an unreadable training curve: no verdict rather than a guess
    unknown = difference_lines(result([0.7] * 8), result([0.6] * 8), {"Genesis": learnt["Genesis"], "scratch": None})
    assert "NO VERDICT" in unknown[0] and "scratch" in unknown[0] and "significant (p" not in unknown[0]


def test_final_pseudo_dice_uses_the_last_epochs_and_refuses_mismatched_labels():
    from nnunet_genesis.evaluation.label_efficiency import final_pseudo_dice

    curve = [[0.0, 0.0]] * 10 + [[0.6, 0.2], [0.8, 0.4], [0.7, 0.3], [0.7, 0.3], [0.7, 0.3]]
    assert final_pseudo_dice(curve, 2) == pytest.approx([0.7, 0.3])
    assert final_pseudo_dice(curve, 3) is None  # one value per label or no answer
    assert final_pseudo_dice([], 2) is None
    assert final_pseudo_dice([[0.9, 0.9]], 2) == pytest.approx([0.9, 0.9])  # a run shorter than the window