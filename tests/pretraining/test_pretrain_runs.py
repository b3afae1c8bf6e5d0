"""End-to-end pretraining runs on real data (CPU, tiny schedules).

* universal Genesis plan on CT volumes (NIfTI, NRRD, DICOM series) -> complete checkpoint,
  readable by ``inspect``;
* plans transferred from the planned hippocampus dataset -> the fixed-patch restoration loss
  falls, and nnU-Net's own ``load_pretrained_weights`` (what ``-pretrained_weights`` runs)
  accepts the file for the dataset's network;
* a run killed after its first checkpoint resumes at the epoch it had reached;
* DDP with two CPU processes on gloo.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nnunet_genesis.checkpoint import REQUIRED_METADATA, load_checkpoint
from nnunet_genesis.cli import main

pytestmark = pytest.mark.slow

# Keys the pretraining issue requires in the metadata block (beyond REQUIRED_METADATA).
PRETRAIN_KEYS = ("plans_name", "configuration", "patch_size", "spacing", "normalization", "modality",
                 "genesis_config", "num_volumes", "sources", "epochs_done", "final_train_loss",
                 "final_val_loss", "versions", "plans_from")


def _hippo_env(monkeypatch, folders) -> dict[str, str]:
    env = {n: str(folders[n]) for n in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def _hippo_args(out: Path, *extra: str) -> list[str]:
    return ["pretrain", "-d", "4", "--plans-from", "4", "-o", str(out), "--device", "cpu", "--workers", "0",
            "--patch-size", "16", "16", "16", "--batch-size", "2", "--val-patches", "4", *extra]


def _assert_complete(meta: dict) -> None:
    missing = [k for k in REQUIRED_METADATA + PRETRAIN_KEYS if k not in meta]
    assert not missing, missing
    assert meta["source"] == "pretrain"
    assert meta["input_channels"] == meta["output_channels"] == 1
    assert set(meta["versions"]) >= {"nnunet_genesis", "nnunetv2", "torch"}


def test_universal_plan_on_ct_sources_writes_a_complete_checkpoint(ct_dir, tmp_path, monkeypatch, capsys):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "out"
    sources = [ct_dir / "totalseg_abdomen_ct_3mm.nii.gz", ct_dir / "pyradiomics_lung1_ct.nrrd",
               ct_dir / "totalseg_ct_dicom_series"]
    rc = main(["pretrain", "-i", *map(str, sources), "-o", str(out), "--device", "cpu", "--workers", "0",
               "--spacing", "8", "8", "8", "--patch-size", "32", "32", "32", "--epochs", "1",
               "--iters-per-epoch", "2", "--val-patches", "2"])
    assert rc == 0
    ckpt = load_checkpoint(out / "genesis_final.pth")
    meta = ckpt.metadata
    _assert_complete(meta)
    assert meta["universal_plan"] and meta["plans_from"] is None
    assert meta["network_kwargs"]["n_stages"] == 6 and meta["patch_size"] == [32, 32, 32]
    assert meta["spacing"] == [8.0, 8.0, 8.0] and meta["modality"] == ["CT"]
    assert meta["normalization"]["schemes"] == ["CTNormalization"]
    assert meta["normalization"]["intensity_properties"]["0"]["percentile_99_5"] == 1000.0
    assert meta["num_volumes"] == 3 and sorted(meta["sources"]) == sorted(map(str, sources))
    assert meta["epochs_done"] == 1 and len(meta["val_losses"]) == 1
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt.network_weights)
    for png in ("genesis_loss.png", "genesis_restoration_final.png", "restoration/epoch_0000.png"):
        assert (out / png).stat().st_size > 1000, png
    assert not (out / "genesis_latest.pth").exists()
    capsys.readouterr()

    assert main(["inspect", str(out / "genesis_final.pth")]) == 0
    text = capsys.readouterr().out
    assert "source: pretrain" in text and "encoder.stages.5" in text and "pyradiomics_lung1_ct.nrrd" in text
    assert main(["inspect", str(out / "genesis_final.pth"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["metadata"]["num_volumes"] == 3
    assert doc["parameters"]["unique_values"] == sum(
        t.numel() for t in {t.untyped_storage().data_ptr(): t for t in ckpt.network_weights.values()}.values())


def test_plans_from_hippocampus_loss_falls_and_nnunet_accepts_the_weights(hippocampus_preprocessed, tmp_path,
                                                                          monkeypatch):
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    _hippo_env(monkeypatch, hippocampus_preprocessed)
    out = tmp_path / "out"
    # 5 epochs x 10 iterations: validation after 10 and after 50 iterations on 8 fixed patches
    assert main(_hippo_args(out, "--epochs", "5", "--iters-per-epoch", "10", "--save-every", "100",
                            "--png-every", "100", "--val-patches", "8")) == 0
    meta = load_checkpoint(out / "genesis_final.pth").metadata
    _assert_complete(meta)
    plans = json.loads((hippocampus_preprocessed["nnUNet_preprocessed"] / "Dataset004_Hippocampus" /
                        "nnUNetPlans.json").read_text())
    config = plans["configurations"]["3d_fullres"]
    assert meta["plans_from"] == {"dataset": "Dataset004_Hippocampus", "plans": "nnUNetPlans",
                                  "configuration": "3d_fullres"}
    assert meta["network_kwargs"] == config["architecture"]["arch_kwargs"]
    assert meta["spacing"] == config["spacing"] and meta["patch_size"] == [16, 16, 16]
    assert meta["normalization"]["schemes"] == config["normalization_schemes"]
    assert meta["normalization"]["intensity_properties"] == plans["foreground_intensity_properties_per_channel"]
    assert meta["modality"] == ["MRI"] and meta["num_volumes"] == 13  # 10 imagesTr + 3 imagesTs
    # the restoration loss on the fixed validation patches falls over the 50 iterations
    assert meta["epochs_done"] == 5 and len(meta["val_losses"]) == 5
    assert meta["val_losses"][-1] < meta["val_losses"][0], meta["val_losses"]
    base = meta["val_baselines"]  # what the losses are compared with in the demo's summary
    assert set(base) == {"identity", "mean"} and 0 < base["mean"] and 0 < base["identity"]

    # what `nnUNetv2_train 4 3d_fullres 0 -pretrained_weights genesis_final.pth` does with the file
    arch = config["architecture"]
    network = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                     1, 3, deep_supervision=True)
    load_pretrained_weights(network, str(out / "genesis_final.pth"))
    saved = torch.load(out / "genesis_final.pth", weights_only=True)["network_weights"]
    loaded = {k: v for k, v in network.state_dict().items() if ".seg_layers." not in k}
    assert loaded and all(torch.equal(v, saved[k]) for k, v in loaded.items())


def test_killed_run_resumes_at_the_epoch_it_reached(hippocampus_preprocessed, tmp_path, monkeypatch, capsys):
    env = {**os.environ, **_hippo_env(monkeypatch, hippocampus_preprocessed)}
    out = tmp_path / "out"
    epochs = 3
    cmd = [sys.executable, "-m", "nnunet_genesis.cli", *_hippo_args(out, "--epochs", str(epochs),
                                                                     "--iters-per-epoch", "3", "--png-every", "100")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while not (out / "genesis_latest.pth").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint after 600 s"
            time.sleep(0.1)
        assert proc.poll() is None  # still training: this really is an interruption
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    state = json.loads((out / "pretrain_state.json").read_text())
    results = Path(state["folders"]["nnUNet_results"]) / state["dataset_name"]
    latest = next(results.glob("*/fold_0/checkpoint_latest.pth"))
    reached = torch.load(latest, map_location="cpu", weights_only=True)["current_epoch"]
    assert 1 <= reached < epochs
    # genesis_latest.pth is written right after checkpoint_latest.pth (the kill may fall in between)
    assert 1 <= load_checkpoint(out / "genesis_latest.pth").metadata["epochs_done"] <= reached
    assert not (out / "genesis_final.pth").exists()

    # what a kill while a checkpoint is written leaves (the writers' temp names), for --resume to clear
    fold = latest.parent
    for stale in (out / ".genesis_final.pth.k1ll3d.tmp", out / ".genesis_latest.pth.k1ll3d.tmp",
                  fold / "checkpoint_latest.pth.tmp"):
        stale.write_bytes(b"half a checkpoint")
    assert main(["pretrain", "-o", str(out), "--resume", "--device", "cpu", "--workers", "0"]) == 0
    assert f"Resuming Genesis pretraining at epoch {reached} (of {epochs})" in capsys.readouterr().out
    assert not [p for p in [*out.rglob("*.tmp"), *fold.rglob("*.tmp")]], "temp files left after --resume"
    meta = load_checkpoint(out / "genesis_final.pth").metadata
    assert meta["epochs_done"] == epochs and len(meta["train_losses"]) == epochs == len(meta["val_losses"])
    assert not (out / "genesis_latest.pth").exists()


def test_kill_during_preprocessing_then_a_rerun_leaves_no_orphan_dataset(hippocampus_preprocessed, tmp_path,
                                                                         monkeypatch, capsys):
    env = {**os.environ, **_hippo_env(monkeypatch, hippocampus_preprocessed)}
    out = tmp_path / "out"
    before = {base: sorted(p.name for p in Path(env[base]).iterdir())
              for base in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    cmd = [sys.executable, "-m", "nnunet_genesis.cli", *_hippo_args(out, "--prepare-only")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    pre = Path(env["nnUNet_preprocessed"])
    deadline = time.monotonic() + 300
    try:
        while not any(p.name.endswith("_GenesisPretrain") and p.name not in before["nnUNet_preprocessed"]
                      for p in pre.iterdir()):
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "preprocessing did not start within 300 s"
            time.sleep(0.02)
        assert not (out / "pretrain_state.json").exists()  # killed while preparing, not after
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    orphans = [p for base in before for p in Path(env[base]).iterdir()
               if p.name.endswith("_GenesisPretrain") and p.name not in before[base]]
    assert orphans  # the kill left a half-made dataset, as it would for a user

    assert main(_hippo_args(out, "--prepare-only")) == 0
    assert "Removed what an interrupted preparation" in capsys.readouterr().out
    state = json.loads((out / "pretrain_state.json").read_text())
    after = {base: sorted(p.name for p in Path(env[base]).iterdir()) for base in before}
    for base, names in after.items():
        extra = set(names) - set(before[base])
        assert extra <= {state["dataset_name"]}, (base, extra)  # only the finished run's own dataset
    assert not list(out.rglob("*.tmp")) and not (out / "pretrain_preparing.json").exists()


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_resume_refuses_a_checkpoint_that_needs_code(hippocampus_preprocessed, tmp_path, monkeypatch, capsys):
    _hippo_env(monkeypatch, hippocampus_preprocessed)
    out = tmp_path / "out"
    assert main(_hippo_args(out, "--prepare-only")) == 0
    state = json.loads((out / "pretrain_state.json").read_text())
    from nnunet_genesis.pretraining.launch import RunState

    fold = RunState.load(out).output_folder()
    fold.mkdir(parents=True, exist_ok=True)
    marker = tmp_path / "code_ran"
    torch.save({"network_weights": {}, "x": _RunsCode(marker)}, fold / "checkpoint_latest.pth")
    capsys.readouterr()
    assert main(["pretrain", "-o", str(out), "--resume", "--device", "cpu", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert not marker.exists() and "holds the global" in err and "checkpoint_latest.pth" in err
    assert state["dataset_name"] in str(fold)


def test_ddp_with_two_cpu_processes_on_gloo(hippocampus_preprocessed, tmp_path, monkeypatch):
    _hippo_env(monkeypatch, hippocampus_preprocessed)
    out = tmp_path / "out"
    # --corruption device exercises the GPU route (corrupt_batch in train_step) on the CPU ranks
    assert main(_hippo_args(out, "--num-gpus", "2", "--epochs", "1", "--iters-per-epoch", "2",
                            "--corruption", "device")) == 0
    meta = load_checkpoint(out / "genesis_final.pth").metadata
    _assert_complete(meta)
    assert meta["world_size"] == 2 and meta["epochs_done"] == 1 and meta["batch_size"] == 2
    state = json.loads((out / "pretrain_state.json").read_text())
    log = next((Path(state["folders"]["nnUNet_results"]) / state["dataset_name"]).glob("*/fold_0/training_log_*.txt"))
    text = log.read_text()
    assert "batch 1 per rank x 2 rank(s)" in text and "corruption on cpu in train_step" in text


def test_same_seed_without_workers_repeats_the_run_exactly(hippocampus_preprocessed, tmp_path, monkeypatch):
    """Patch sampling draws from nnU-Net's global generators: the trainer seeds them."""
    import torch

    _hippo_env(monkeypatch, hippocampus_preprocessed)
    runs = []
    for name in ("a", "b"):
        assert main(_hippo_args(tmp_path / name, "--epochs", "2", "--iters-per-epoch", "3", "--seed", "7")) == 0
        runs.append(load_checkpoint(tmp_path / name / "genesis_final.pth"))
    a, b = runs
    assert a.metadata["val_losses"] == b.metadata["val_losses"]
    assert a.metadata["train_losses"] == b.metadata["train_losses"]
    assert all(torch.equal(a.network_weights[k], b.network_weights[k]) for k in a.network_weights)
