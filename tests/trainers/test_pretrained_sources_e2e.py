"""Foreign checkpoints end to end on the real hippocampus subset (CPU): a real nnU-Net v2 training checkpoint
attached to other plans and fine-tuned with the stock ``nnUNetv2_train``; an nnssl checkpoint attached to the
ResEnc plan nnU-Net's own ResEnc planner makes, and ``inspect -d`` showing the dry run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from nnunet_genesis.checkpoint import safe_torch_load, sha256_of
from nnunet_genesis.cli import main
from nnunet_genesis.environment import environment_for_nnunet
from nnunet_genesis.network import arch_from_plans, build_network

from pretrained_files import nnssl_checkpoint, nnssl_plan
from stand_ins import timed_run

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
DATASET = "Dataset004_Hippocampus"


@pytest.fixture(scope="module")
def run_env(hippocampus_preprocessed, cpu_nnunet_env, tmp_path_factory) -> dict[str, str]:
    env = environment_for_nnunet(cpu_nnunet_env(tmp_path_factory.mktemp("sources")))
    env.update(nnUNet_raw=str(hippocampus_preprocessed["nnUNet_raw"]),
               nnUNet_preprocessed=str(hippocampus_preprocessed["nnUNet_preprocessed"]))
    return env




def _in_process_env(monkeypatch, env: dict[str, str]) -> None:
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, env[name])


def _other_plans(preprocessed: Path, name: str) -> None:
    """Plans of the same data (same data_identifier, so no second preprocessing) for another network: 3 stages
    instead of 4 and 1x3x3 kernels at the top, as nnU-Net plans thick-slice data."""
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    plans["plans_name"] = name
    kwargs = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    kwargs.update(n_stages=3, features_per_stage=kwargs["features_per_stage"][:3],
                  kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]], strides=kwargs["strides"][:3],
                  n_conv_per_stage=kwargs["n_conv_per_stage"][:3],
                  n_conv_per_stage_decoder=kwargs["n_conv_per_stage_decoder"][:2])
    (preprocessed / f"{name}.json").write_text(json.dumps(plans, indent=2))


def test_nnunet_checkpoint_of_one_plan_fine_tunes_another(run_env, hippocampus_preprocessed, tmp_path, monkeypatch,
                                                          capsys):
    # a real nnU-Net training checkpoint: nnU-Net's save_checkpoint after a smoke schedule
    r = timed_run([str(BIN / "nnUNetv2_train"), "4", "3d_fullres", "0", "-tr", "nnUNetTrainerScratch_smoke",
              "-device", "cpu"], run_env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    trained = Path(run_env["nnUNet_results"]) / DATASET / "nnUNetTrainerScratch_smoke__nnUNetPlans__3d_fullres"
    source = trained / "fold_0" / "checkpoint_final.pth"
    preprocessed = hippocampus_preprocessed["nnUNet_preprocessed"] / DATASET
    _other_plans(preprocessed, "nnUNetPlans_srcOther")
    _in_process_env(monkeypatch, run_env)

    # moved out of its results folder without the plans in init_args: refused until --source-plans names them
    moved = safe_torch_load(source)
    del moved["init_args"]["plans"]
    torch.save(moved, tmp_path / "supervised.pth")
    argv = ["attach", "-d", "4", "-c", str(tmp_path / "supervised.pth"), "-p", "nnUNetPlans_srcOther",
            "-n", "nnUNetPlans_srcOther_nnunet"]
    assert main(argv) == 2
    assert "--source-plans FILE" in capsys.readouterr().err
    assert not (preprocessed / "nnUNetPlans_srcOther_nnunet.json").exists()
    assert main(argv + ["--source-plans", str(trained / "plans.json")]) == 0
    out = capsys.readouterr().out
    assert "kind       nnunet: nnU-Net v2 training checkpoint of Dataset004_Hippocampus" in out
    block = json.loads((preprocessed / "nnUNetPlans_srcOther_nnunet.json").read_text())["genesis"]
    assert block["checkpoint_metadata"]["kind"] == "nnunet"
    assert block["checkpoint_plans"] == str((trained / "plans.json").resolve())
    assert block["checkpoint_plans_sha256"] == sha256_of(trained / "plans.json")
    assert block["transfer_check"] == {"3d_fullres": {"encoder_fraction": 1.0, "decoder_fraction": 1.0}}

    # the stock command fine-tunes from it; the trainer reads the checkpoint with the recorded plans
    r = timed_run([str(BIN / "nnUNetv2_train"), "4", "3d_fullres", "0", "-tr", "nnUNetTrainerGenesis_smoke",
              "-p", "nnUNetPlans_srcOther_nnunet", "-device", "cpu"], run_env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "kind: nnunet (nnU-Net v2 training checkpoint" in r.stdout
    report = json.loads((Path(run_env["nnUNet_results"]) / DATASET / "nnUNetTrainerGenesis_smoke__nnUNetPlans_"
                         "srcOther_nnunet__3d_fullres" / "fold_0" / "genesis_transfer_report.json").read_text())
    assert report["checkpoint_kind"] == "nnunet"
    assert report["encoder_fraction"] == 1.0 and report["decoder_fraction"] == 1.0
    assert report["unmatched_source_stages"] == ["encoder.stages.3", "decoder.stages.0 (level 2)"]
    entries = {e["target_key"]: e for e in report["entries"]}
    assert "kernel 3->1 on spatial axis 0" in entries["encoder.stages.0.0.convs.0.conv.weight"]["reason"]
    assert all(e["status"] == "skipped" for e in report["entries"] if e["part"] == "head")


def test_nnssl_checkpoint_attaches_to_the_resenc_plan(run_env, hippocampus_preprocessed, tmp_path, monkeypatch,
                                                      capsys):
    plans_name = "nnUNetResEncUNetMPlans_srcTest"
    # the planner's VRAM estimate sets torch's threads to nnUNet_n_proc_DA, which must not be 0 there
    r = timed_run([str(BIN / "nnUNetv2_plan_experiment"), "-d", "4", "-pl", "nnUNetPlannerResEncM",
              "-overwrite_plans_name", plans_name], dict(run_env, nnUNet_n_proc_DA="1"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    preprocessed = hippocampus_preprocessed["nnUNet_preprocessed"] / DATASET
    plans = json.loads((preprocessed / f"{plans_name}.json").read_text())
    arch = arch_from_plans(plans, "3d_fullres", input_channels=1, output_channels=1)
    network = build_network(arch)  # an MAE-style pretraining network: 1 channel in, 1 out
    ckpt = nnssl_checkpoint(tmp_path / "checkpoint_final.pth", network.state_dict(),
                            nnssl_plan("ResidualEncoderUNet", arch["network_kwargs"]))
    _in_process_env(monkeypatch, run_env)

    assert main(["attach", "-d", "4", "-c", str(ckpt), "-p", plans_name, "-n", f"{plans_name}_nnssl"]) == 0
    assert "kind       nnssl: nnssl checkpoint (ResidualEncoderUNet" in capsys.readouterr().out
    block = json.loads((preprocessed / f"{plans_name}_nnssl.json").read_text())["genesis"]
    assert block["checkpoint_metadata"]["kind"] == "nnssl"
    assert block["transfer_check"] == {"3d_fullres": {"encoder_fraction": 1.0, "decoder_fraction": 1.0}}

    assert main(["inspect", str(ckpt), "-d", "4", "-p", plans_name]) == 0
    text = capsys.readouterr().out
    assert "Kind: nnssl" in text and "Architecture: ResidualEncoderUNet" in text
    assert f"Dry run onto {DATASET}, plans {plans_name}, configuration 3d_fullres (nothing written)" in text
    assert "encoder: 100.0% of" in text and "decoder: 100.0% of" in text

    # the default plans build a PlainConvUNet: refused, naming both families and the planner that fits
    assert main(["inspect", str(ckpt), "-d", "4"]) == 2
    err = capsys.readouterr().err
    assert "ResidualEncoderUNet" in err and "PlainConvUNet" in err and "-pl nnUNetPlannerResEncL" in err
