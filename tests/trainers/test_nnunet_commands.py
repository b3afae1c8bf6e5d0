"""The Genesis trainers through the real, unpatched nnU-Net console commands (CPU).

``nnUNetv2_train`` finds the trainers through ``nnUNet_extTrainer`` as printed by
``nnunet-genesis env``; ``nnUNetv2_predict`` runs on the trained model without the Genesis
checkpoint file.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from damage import bit_flipped
from stand_ins import timed_run
from nnunet_genesis.checkpoint import load_checkpoint, numpy_safe_globals, save_checkpoint, sha256_of
from nnunet_genesis.trainers.attach import attach

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
TRAINER = "nnUNetTrainerGenesis_smoke"  # the default start, the whole network: every tensor but the head


def _ext_trainer_from_env_command() -> str:
    r = subprocess.run([str(BIN / "nnunet-genesis"), "env"], capture_output=True, text=True, check=True)
    line = next(li for li in r.stdout.splitlines() if li.startswith("export nnUNet_extTrainer="))
    return shlex.split(line[len("export "):])[0].split("=", 1)[1]


@pytest.fixture(scope="module")
def cmd_env(hippocampus_preprocessed, tmp_path_factory) -> dict[str, str]:
    env = dict(os.environ)
    env["nnUNet_raw"] = str(hippocampus_preprocessed["nnUNet_raw"])
    env["nnUNet_preprocessed"] = str(hippocampus_preprocessed["nnUNet_preprocessed"])
    env["nnUNet_results"] = str(tmp_path_factory.mktemp("genesis_results"))
    env["nnUNet_extTrainer"] = _ext_trainer_from_env_command()
    # keep CPU runs short: no augmentation workers, no torch.compile, one export worker
    env.update(nnUNet_n_proc_DA="0", nnUNet_compile="false", nnUNet_def_n_proc="1")
    return env




def _train(plans: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return timed_run([str(BIN / "nnUNetv2_train"), "4", "3d_fullres", "0", "-tr", TRAINER, "-p", plans,
                 "-device", "cpu"], env)


def _output_folder(env: dict[str, str], plans: str) -> Path:
    return Path(env["nnUNet_results"]) / "Dataset004_Hippocampus" / f"{TRAINER}__{plans}__3d_fullres" / "fold_0"


def test_smoke_train_then_predict_with_stock_commands(cmd_env, make_genesis_checkpoint, tmp_path):
    plans = "nnUNetPlans_genesisCmdTest"
    ckpt = make_genesis_checkpoint(tmp_path / "genesis_final.pth")
    r = timed_run([str(BIN / "nnunet-genesis"), "attach", "-d", "4", "-c", str(ckpt), "-n", plans], cmd_env)
    assert r.returncode == 0, r.stderr

    r = _train(plans, cmd_env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"Using trainer '{TRAINER}' from: {cmd_env['nnUNet_extTrainer']}" in r.stdout
    assert "encoder: 100.0% of" in r.stdout and "decoder: 100.0% of" in r.stdout
    out = _output_folder(cmd_env, plans)
    report = json.loads((out / "genesis_transfer_report.json").read_text())
    assert report["encoder_fraction"] == 1.0 and report["decoder_fraction"] == 1.0
    assert (out / "checkpoint_final.pth").is_file()
    # the results folder records which weights the model started from
    recorded = json.loads((out.parent / "plans.json").read_text())["genesis"]
    assert recorded["sha256"] == sha256_of(ckpt) and recorded["checkpoint"] == str(ckpt.resolve())

    # the trainers' own checkpoints load without code (what --c and --val go through)
    with torch.serialization.safe_globals(numpy_safe_globals()):
        saved = torch.load(out / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    assert saved["trainer_name"] == TRAINER

    ckpt.unlink()  # prediction must not need the Genesis checkpoint
    images = Path(cmd_env["nnUNet_raw"]) / "Dataset004_Hippocampus" / "imagesTs"
    pred = tmp_path / "pred"
    r = timed_run([str(BIN / "nnUNetv2_predict"), "-i", str(images), "-o", str(pred), "-d", "4", "-c", "3d_fullres",
              "-f", "0", "-tr", TRAINER, "-p", plans, "-device", "cpu", "-npp", "1", "-nps", "1",
              "--disable_progress_bar"], cmd_env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    inputs = sorted(images.glob("*_0000.nii.gz"))
    assert len(inputs) == 3
    for image in inputs:
        seg_file = pred / image.name.replace("_0000.nii.gz", ".nii.gz")
        seg = sitk.ReadImage(str(seg_file))
        assert seg.GetSize() == sitk.ReadImage(str(image)).GetSize()
        assert set(np.unique(sitk.GetArrayFromImage(seg))) <= {0, 1, 2}


def _tamper(ckpt: Path) -> None:
    """Re-save the checkpoint with one tensor changed (still a valid checkpoint)."""
    loaded = load_checkpoint(ckpt)
    key = next(iter(loaded.network_weights))
    loaded.network_weights[key] = loaded.network_weights[key] + 1e-3
    save_checkpoint(ckpt, loaded.network_weights, loaded.metadata)


@pytest.mark.parametrize("case, expected", [
    ("missing", "does not exist"),
    ("tampered", "has changed since it was attached"),
    ("incompatible", "cannot be transferred into this network"),
])
def test_bad_checkpoint_stops_nnunetv2_train_before_training(case, expected, cmd_env, make_genesis_checkpoint,
                                                             tmp_path, monkeypatch):
    plans = f"nnUNetPlans_genesisCmdBad{case.capitalize()}"
    monkeypatch.setenv("nnUNet_preprocessed", cmd_env["nnUNet_preprocessed"])
    monkeypatch.setenv("nnUNet_raw", cmd_env["nnUNet_raw"])
    features = [16, 32, 64, 128] if case == "incompatible" else None
    ckpt = make_genesis_checkpoint(tmp_path / "genesis_final.pth", features=features)
    attach("4", ckpt, variant_name=plans, check=case != "incompatible")
    if case == "missing":
        ckpt.unlink()
    elif case == "tampered":
        _tamper(ckpt)

    r = _train(plans, cmd_env)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert expected in r.stderr and str(ckpt.resolve()) in r.stderr and "Traceback" not in r.stderr
    assert "nnU-Net Genesis: training not started." in r.stderr
    out = _output_folder(cmd_env, plans)
    assert not list(out.glob("checkpoint_*.pth"))
    logs = list(out.glob("training_log_*.txt"))
    assert logs and all("Epoch 0" not in log.read_text() for log in logs)
    assert expected in logs[0].read_text()


class _RunsCodeWhenUnpickled:
    """Unpickling it creates a file: evidence that the pickle's code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"network_weights": {}, "payload": _RunsCodeWhenUnpickled(marker)}, path)
    return path


def test_pretrained_weights_option_never_unpickles_the_file(cmd_env, make_genesis_checkpoint, tmp_path,
                                                            monkeypatch):
    """nnU-Net loads -pretrained_weights with weights_only=False; a Genesis trainer refuses first."""
    plans = "nnUNetPlans_genesisCmdEvilPretrained"
    monkeypatch.setenv("nnUNet_preprocessed", cmd_env["nnUNet_preprocessed"])
    monkeypatch.setenv("nnUNet_raw", cmd_env["nnUNet_raw"])
    attach("4", make_genesis_checkpoint(tmp_path / "genesis_final.pth"), variant_name=plans)
    marker = tmp_path / "code_ran"
    evil = _evil_checkpoint(tmp_path / "evil.pth", marker)
    r = timed_run([str(BIN / "nnUNetv2_train"), "4", "3d_fullres", "0", "-tr", TRAINER, "-p", plans, "-device", "cpu",
              "-pretrained_weights", str(evil)], cmd_env)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert not marker.exists()
    assert "-pretrained_weights" in r.stderr and "Traceback" not in r.stderr
    assert not list(_output_folder(cmd_env, plans).glob("checkpoint_*.pth"))


@pytest.mark.parametrize("damage, needle", [("code", "holds the global"), ("bitflip", "fails its CRC check")])
def test_continue_refuses_a_training_checkpoint_that_needs_code(damage, needle, cmd_env, make_genesis_checkpoint,
                                                                 tmp_path, monkeypatch):
    """--c loads checkpoint_latest.pth with nnU-Net's weights_only=False; the trainers load and verify it
    first (a code-carrying pickle, a flipped bit: refused, exit 2, no traceback). Missing keys, other
    architectures, NaN and integer weights: test_genesis_trainer.py, in-process."""
    plans = f"nnUNetPlans_genesisCmdContinue{damage.capitalize()}"
    monkeypatch.setenv("nnUNet_preprocessed", cmd_env["nnUNet_preprocessed"])
    monkeypatch.setenv("nnUNet_raw", cmd_env["nnUNet_raw"])
    attach("4", make_genesis_checkpoint(tmp_path / "genesis_final.pth"), variant_name=plans)
    out = _output_folder(cmd_env, plans)
    out.mkdir(parents=True)
    marker = tmp_path / "code_ran"
    if damage == "code":
        _evil_checkpoint(out / "checkpoint_latest.pth", marker)
    else:
        ckpt = make_genesis_checkpoint(out / "checkpoint_latest.pth")
        bit_flipped(ckpt, ckpt)
    r = timed_run([str(BIN / "nnUNetv2_train"), "4", "3d_fullres", "0", "-tr", TRAINER, "-p", plans, "-device", "cpu",
              "--c"], cmd_env)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert not marker.exists()
    assert "checkpoint_latest.pth" in r.stderr and needle in r.stderr and "Traceback" not in r.stderr
    assert "weights_only=False" not in r.stderr  # torch's advice is never passed on


def test_scratch_trainer_refuses_pretrained_weights(cmd_env, tmp_path):
    """The package's scratch (and stock) trainers refuse -pretrained_weights as the Genesis ones do:
    nnU-Net would unpickle the file with weights_only=False."""
    marker = tmp_path / "code_ran"
    evil = _evil_checkpoint(tmp_path / "evil.pth", marker)
    r = timed_run([str(BIN / "nnUNetv2_train"), "4", "3d_fullres", "0", "-tr", "nnUNetTrainerScratch_smoke", "-p",
              "nnUNetPlans", "-device", "cpu", "-pretrained_weights", str(evil)], cmd_env)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert not marker.exists()
    assert "-pretrained_weights" in r.stderr and "Traceback" not in r.stderr


def test_pretraining_trainer_continue_refuses_a_hostile_checkpoint(cmd_env, tmp_path):
    """nnUNetv2_train -tr nnUNetTrainerGenesisPretrain --c: the refusal is a message and exit 2, no traceback."""
    from nnunet_genesis.pretraining.launch import RunState

    out = tmp_path / "pretrain"
    r = timed_run([str(BIN / "nnunet-genesis"), "pretrain", "-d", "4", "--plans-from", "4", "-o", str(out), "--device",
              "cpu", "--workers", "0", "--patch-size", "16", "16", "16", "--batch-size", "2", "--val-patches", "2",
              "--prepare-only"], cmd_env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    state = RunState.load(out)
    fold = Path(state.output_folder())
    fold.mkdir(parents=True, exist_ok=True)
    marker = tmp_path / "code_ran"
    _evil_checkpoint(fold / "checkpoint_latest.pth", marker)
    env = dict(cmd_env, nnUNet_raw=str(state.nnunet_folders.raw),
               nnUNet_preprocessed=str(state.nnunet_folders.preprocessed),
               nnUNet_results=str(state.nnunet_folders.results))
    r = timed_run([str(BIN / "nnUNetv2_train"), state.dataset_name, state.configuration, str(state.fold), "-tr",
              "nnUNetTrainerGenesisPretrain", "-p", state.plans_identifier, "-device", "cpu", "--c"], env)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert not marker.exists()
    assert "Pretraining checkpoint" in r.stderr and "holds the global" in r.stderr and "Traceback" not in r.stderr

