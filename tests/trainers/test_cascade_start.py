"""A cascade configuration (3d_cascade_fullres) in the Genesis trainer and in ``attach``.

The hippocampus plans have no cascade (the dataset is small); the tests add one the way
nnU-Net's planner writes it (3d_lowres with next_stage, 3d_cascade_fullres inheriting from
3d_fullres with previous_stage). Hippocampus has 1 image channel and 2 foreground labels, so
the cascade's network has 3 input channels. The transfer rule itself:
tests/nnunet_genesis/test_cascade_transfer.py.
"""

from __future__ import annotations

import copy
import json

import torch

from nnunet_genesis.checkpoint import load_checkpoint, sha256_of
from nnunet_genesis.cli import main
from nnunet_genesis.trainers import variants
from nnunet_genesis.trainers.attach import dry_run_transfer, three_d_configurations
from nnunet_genesis.trainers.genesis import TRANSFER_REPORT_NAME

IN_PROJ = "encoder.stages.0.0.convs.0.conv.weight"


def with_cascade(plans: dict, name: str) -> dict:
    plans = copy.deepcopy(plans)
    plans["plans_name"] = name
    plans["configurations"]["3d_lowres"] = {
        "inherits_from": "3d_fullres", "data_identifier": f"{name}_3d_lowres", "next_stage": "3d_cascade_fullres"}
    plans["configurations"]["3d_cascade_fullres"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
    return plans


def test_genesis_trainer_starts_the_segmentation_channels_at_zero(env, hippocampus_plans,
                                                                  make_genesis_checkpoint, tmp_path):
    ckpt = make_genesis_checkpoint(tmp_path / "genesis.pth", seed=5)
    plans = with_cascade(hippocampus_plans, "nnUNetPlans_cascadeTrainerTest")
    plans["genesis"] = {"checkpoint": str(ckpt), "sha256": sha256_of(ckpt), "source_plans": "nnUNetPlans"}
    plans["continue_training"] = False
    trainer = variants.nnUNetTrainerGenesis_smoke(plans=plans, configuration="3d_cascade_fullres", fold=0,
                                                 dataset_json=env["dataset_json"], device=torch.device("cpu"))
    assert trainer.is_cascaded
    trainer.initialize()
    report = trainer.transfer_genesis_weights()
    w = trainer.network.state_dict()[IN_PROJ]
    pretrained = load_checkpoint(ckpt).network_weights[IN_PROJ]
    assert w.shape[1] == 3 and pretrained.shape[1] == 1
    assert torch.equal(w[:, :1], pretrained)
    assert torch.count_nonzero(w[:, 1:]) == 0
    assert report.encoder_fraction == 1.0 and report.decoder_fraction == 1.0
    assert any("input channels 1-2: previous-stage segmentation (cascade), zero start" in n for n in report.notes)
    saved = json.loads((env["results"] / "Dataset004_Hippocampus" /
                        "nnUNetTrainerGenesis_smoke__nnUNetPlans_cascadeTrainerTest__3d_cascade_fullres" /
                        "fold_0" / TRANSFER_REPORT_NAME).read_text())
    assert any("previous-stage segmentation (cascade)" in n for n in saved["notes"])


def test_attach_checks_the_cascade_with_its_image_channels(env, hippocampus_plans, make_genesis_checkpoint,
                                                           tmp_path, monkeypatch, capsys):
    from nnunet_genesis import transfer_check

    seen = {}
    real = transfer_check.transfer_weights

    def spy(network, checkpoint, **kwargs):
        report = real(network, checkpoint, **kwargs)
        seen[input_channels_of(network)] = (kwargs.get("image_channels"), report)
        return report

    monkeypatch.setattr(transfer_check, "transfer_weights", spy)  # the name attach's dry run calls
    ckpt = make_genesis_checkpoint(tmp_path / "genesis.pth", seed=6)
    source = with_cascade(hippocampus_plans, "nnUNetPlans_cascadeSource")
    (env["preprocessed"] / "nnUNetPlans_cascadeSource.json").write_text(json.dumps(source, indent=4))
    assert set(three_d_configurations(source)) == {"3d_fullres", "3d_lowres", "3d_cascade_fullres"}

    rc = main(["attach", "-d", "4", "-c", str(ckpt), "-p", "nnUNetPlans_cascadeSource",
               "-n", "nnUNetPlans_cascadeAttachTest"])
    out = capsys.readouterr().out
    assert rc == 0, out
    check = json.loads((env["preprocessed"] / "nnUNetPlans_cascadeAttachTest.json").read_text())["genesis"][
        "transfer_check"]
    assert check == {name: {"encoder_fraction": 1.0, "decoder_fraction": 1.0}
                     for name in ("3d_fullres", "3d_lowres", "3d_cascade_fullres")}
    assert "3d_cascade_fullres: 100.0% of encoder" in out
    # the 1-channel configurations transfer as before; the 3-channel cascade is told it has 1 image channel
    assert seen[1][0] is None
    image_channels, report = seen[3]
    assert image_channels == 1
    assert any("previous-stage segmentation (cascade), zero start" in n for n in report.notes)

    # the dry run alone, without the spy's bookkeeping: same fractions
    assert dry_run_transfer(source, env["dataset_json"], ["3d_cascade_fullres"], load_checkpoint(ckpt)) == \
        {"3d_cascade_fullres": {"encoder_fraction": 1.0, "decoder_fraction": 1.0}}


def input_channels_of(network: torch.nn.Module) -> int:
    return int(network.state_dict()[IN_PROJ].shape[1])
