"""``nnunet-genesis recipe`` end to end on a real Task04_Hippocampus subset (CPU, smoke trainers):
attach -> nnUNetv2_train 3d_fullres folds 0 and 1 (--npz) -> nnUNetv2_find_best_configuration ->
nnUNetv2_predict of the test images -> nnUNetv2_apply_postprocessing -> package-msd; then the
same command again (everything skipped), an interrupted fold (the --c command, --finish
refused), a lost zip (only packaging runs again) and a checkpoint that does not attach.

Then ``--baseline`` in a second work folder over the same results, with one Genesis fold made
interrupted first, so that nnUNetv2_train --c really continues it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
DATASET = "Dataset004_Hippocampus"
TRAINER = "nnUNetTrainerGenesis_smoke"
MODEL = f"{TRAINER}__nnUNetPlans_genesis__3d_fullres"


@pytest.fixture(scope="module", autouse=True)
def _real_data_present():
    """The subset is copied from ../shared/data (or $NNUNET_GENESIS_DATA): missing data fails here."""
    root = Path(os.environ.get("NNUNET_GENESIS_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")
    if not (root / "Task04_Hippocampus" / "dataset.json").is_file():
        pytest.fail(f"real data {root / 'Task04_Hippocampus'} is missing: the recipe's end-to-end test needs the "
                    f"Decathlon hippocampus task there (or NNUNET_GENESIS_DATA pointing at its parent folder)")


def _private_copy(hippocampus_preprocessed: dict, root: Path) -> Path:
    for name in ("nnUNet_raw", "nnUNet_preprocessed"):
        shutil.copytree(hippocampus_preprocessed[name] / DATASET, root / name / DATASET,
                        ignore=lambda folder, names: [n for n in names if n.startswith("nnUNetPlans_")
                                                      and n.endswith(".json")])
    (root / "nnUNet_results").mkdir()
    return root


@pytest.fixture(scope="session")
def recipe(cpu_nnunet_env):
    """``recipe(root, *extra)``: the recipe command of these tests in a subprocess."""
    def run(root: Path, *extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "nnunet_genesis.cli", "recipe", "-d", "4", "-c", str(root / "genesis_final.pth"),
               "--configurations", "3d_fullres", "--folds", "0", "1", "--trainer", TRAINER, "--device", "cpu",
               "-o", str(root / "submission.zip"), *extra]
        return subprocess.run(cmd, env=cpu_nnunet_env(root), capture_output=True, text=True, timeout=1500, cwd=root)
    return run


@pytest.fixture(scope="module")
def recipe_run(hippocampus_preprocessed, make_genesis_checkpoint, tmp_path_factory, recipe):
    """A private copy of the preprocessed 10-case subset (other tests write plans variants into the
    shared one) and one full recipe run; returns (root, result, seconds)."""
    root = _private_copy(hippocampus_preprocessed, tmp_path_factory.mktemp("recipe"))
    make_genesis_checkpoint(root / "genesis_final.pth")
    t0 = time.monotonic()
    result = recipe(root)
    seconds = time.monotonic() - t0
    assert result.returncode == 0, f"recipe failed:\n{result.stdout[-5000:]}\n{result.stderr[-5000:]}"
    print(f"\nrecipe smoke run (attach, 2 folds, selection, prediction, packaging): {seconds:.0f} s\n{result.stdout}")
    return root, result, seconds


def test_every_phase_ran_and_the_zip_is_a_valid_submission(recipe_run, recipe):
    root, result, _ = recipe_run
    out = result.stdout
    for label in ("attach genesis_final.pth as nnUNetPlans_genesis", "train 3d_fullres fold 0", "train 3d_fullres fold 1",
                  "select the best model/ensemble (genesis)", f"predict the test images with {MODEL}",
                  "apply the selected post-processing", "package Task04_Hippocampus into submission.zip"):
        assert f"{label}" in out and out.count(f"{label}") >= 2, f"no progress lines for {label!r}:\n{out}"
    assert "done in" in out and "recipe finished in" in out

    results = root / "nnUNet_results" / DATASET
    for fold in (0, 1):
        folder = results / MODEL / f"fold_{fold}"
        assert (folder / "checkpoint_final.pth").is_file() and (folder / "validation" / "summary.json").is_file()
        assert list((folder / "validation").glob("*.npz")), "trained without --npz"
        assert json.loads((folder / "genesis_transfer_report.json").read_text())["encoder_fraction"] == 1.0

    work = results / "genesis_recipe"
    info = json.loads((work / "selection" / "genesis" / "inference_information.json").read_text())
    assert info["best_model_or_ensemble"]["selected_model_or_models"] == [
        {"configuration": "3d_fullres", "trainer": TRAINER, "plans_identifier": "nnUNetPlans_genesis"}]
    assert info["folds"] == [0, 1]

    state = json.loads((work / "recipe_state.json").read_text())
    assert state["identity"]["trainer"] == TRAINER and state["identity"]["folds"] == [0, 1]
    assert {"attach", f"train/{MODEL}/fold_0", f"train/{MODEL}/fold_1", "select/genesis", f"predict/{MODEL}",
            "postprocess", "package"} <= set(state["finished"])
    assert state["finished"][f"predict/{MODEL}"]["command"][0] == "nnUNetv2_predict"

    from nnunet_genesis.volumes import read_label_map

    images = sorted(p.name[: -len("_0000.nii.gz")] for p in (root / "nnUNet_raw" / DATASET / "imagesTs").iterdir())
    assert len(images) == 3
    with zipfile.ZipFile(root / "submission.zip") as zf:
        assert sorted(zf.namelist()) == [f"Task04_Hippocampus/{c}.nii.gz" for c in images]
        zf.extractall(root / "unzipped")
    for case in images:
        _, labels = read_label_map(root / "unzipped" / "Task04_Hippocampus" / f"{case}.nii.gz")
        assert set(np.unique(labels).tolist()) <= {0, 1, 2}
    assert sorted(p.name for p in (work / "predictions" / "final").glob("*.nii.gz")) == [f"{c}.nii.gz" for c in images]


def test_a_second_run_skips_everything_and_an_interrupted_fold_is_continued(recipe_run, recipe):
    root, _, _ = recipe_run
    zip_path = root / "submission.zip"
    mtime = zip_path.stat().st_mtime_ns
    again = recipe(root)
    assert again.returncode == 0, again.stderr[-3000:]
    assert ": running" not in again.stdout, again.stdout
    assert again.stdout.count(": skipped") == 6 and zip_path.stat().st_mtime_ns == mtime  # attach is not planned again
    assert "finished earlier: checkpoint_final.pth and validation/summary.json present" in again.stdout

    # --print-commands after the selection: the exact prediction commands of the chosen model
    printed = recipe(root, "--print-commands")
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert sum(li.startswith("# finished (") and "nnUNetv2_train" in li for li in lines) == 2
    assert any(li.startswith("nnUNetv2_predict ") and f"-tr {TRAINER}" in li for li in lines)
    assert any(li.startswith("nnUNetv2_apply_postprocessing ") for li in lines)

    # fold 1 as nnU-Net leaves an interrupted training (checkpoint_latest.pth, no final, no validation):
    # continued with --c, and --finish refuses to select before it is done
    fold = root / "nnUNet_results" / DATASET / MODEL / "fold_1"
    (fold / "checkpoint_final.pth").rename(fold / "checkpoint_latest.pth")
    (fold / "validation").rename(fold / "validation_aside")
    printed = recipe(root, "--print-commands")
    assert f"nnUNetv2_train {DATASET} 3d_fullres 1 -tr {TRAINER} -p nnUNetPlans_genesis --npz -device cpu --c  " \
           f"# interrupted (checkpoint_latest.pth present)" in printed.stdout
    finish = recipe(root, "--finish")
    assert finish.returncode == 2 and "unfinished" in finish.stderr and "fold 1" in finish.stderr
    (fold / "checkpoint_latest.pth").rename(fold / "checkpoint_final.pth")
    (fold / "validation_aside").rename(fold / "validation")

    # a lost output is made again, and only it
    zip_path.unlink()
    again = recipe(root)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count(": skipped") == 5 and "package Task04_Hippocampus into submission.zip: running" \
        in again.stdout and zip_path.is_file()


def test_baseline_and_a_real_continuation(recipe_run, recipe):
    """``--baseline`` in its own work folder over the same results: the Genesis folds are nnU-Net's
    finished ones (fold 1 made interrupted first, so nnUNetv2_train --c really runs), the scratch
    folds are trained, both arms selected, and the compare report gives nnU-Net's validation Dice
    of both per fold."""
    root, _, _ = recipe_run
    fold = root / "nnUNet_results" / DATASET / MODEL / "fold_1"
    (fold / "checkpoint_final.pth").rename(fold / "checkpoint_latest.pth")
    shutil.rmtree(fold / "validation")
    work = root / "with_baseline"
    r = recipe(root, "--baseline", "--work-dir", str(work), "-o", str(root / "submission_baseline.zip"))
    assert r.returncode == 0, f"{r.stdout[-5000:]}\n{r.stderr[-3000:]}"
    out = r.stdout
    assert f"nnUNetv2_train {DATASET} 3d_fullres 1 -tr {TRAINER} -p nnUNetPlans_genesis --npz -device cpu --c" in out
    assert (fold / "checkpoint_final.pth").is_file() and (fold / "validation" / "summary.json").is_file()
    state = json.loads((work / "recipe_state.json").read_text())
    assert state["finished"][f"train/{MODEL}/fold_1"]["started_as"] == "continue"
    assert f"train/{MODEL}/fold_0" not in state["finished"]  # finished in the first run: skipped
    scratch = "nnUNetTrainerScratch_smoke__nnUNetPlans__3d_fullres"
    for f in (0, 1):
        assert (root / "nnUNet_results" / DATASET / scratch / f"fold_{f}" / "validation" / "summary.json").is_file()
    for arm in ("genesis", "baseline"):
        assert (work / "selection" / arm / "inference_information.json").is_file()

    from nnunet_genesis.workflows.recipe.report import fold_dice

    table = json.loads((work / "compare" / "cross_validation.json").read_text())
    assert [(row["configuration"], row["fold"]) for row in table["rows"]] == [("3d_fullres", 0), ("3d_fullres", 1)]
    for row in table["rows"]:
        g = fold_dice(root / "nnUNet_results" / DATASET / MODEL / f"fold_{row['fold']}")
        b = fold_dice(root / "nnUNet_results" / DATASET / scratch / f"fold_{row['fold']}")
        assert row["genesis"] == g and row["baseline"] == b and row["difference"] == pytest.approx(g - b)
    assert set(table["selections"]) == {"genesis", "baseline"}
    assert (work / "compare" / "cross_validation.md").is_file() and list((work / "compare" / "3d_fullres").iterdir())
    assert (root / "submission_baseline.zip").is_file()


def test_a_checkpoint_that_does_not_attach_is_refused_before_anything_is_written(
        hippocampus_preprocessed, make_genesis_checkpoint, tmp_path, recipe):
    root = _private_copy(hippocampus_preprocessed, tmp_path)
    make_genesis_checkpoint(root / "genesis_final.pth", features=[16, 32, 64, 128])  # a narrower network
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    r = recipe(root)
    assert r.returncode == 2, r.stdout[-3000:] + r.stderr[-3000:]
    assert "cannot be transferred onto configuration '3d_fullres'" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # no variant, no work folder, no zip
