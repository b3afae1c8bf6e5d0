"""``pretrained_sources.read_pretrained``: each kind recognised by content and read into the Genesis schema, on
small networks (the real nnU-Net training and the real ResEnc plans: tests/trainers/test_pretrained_sources_e2e.py;
the refusals through the command line: tests/faults/test_faults_sources.py)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from nnunet_genesis.checkpoint import save_checkpoint
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.network import RESIDUAL_ENCODER_UNET, build_network, build_skeleton, universal_genesis_arch
from nnunet_genesis.pretrained_sources import RESENC_L_KWARGS, checkpoint_kind, read_pretrained
from nnunet_genesis.weight_transfer import transfer_weights

from pretrained_files import (PRIMUS_KEYS, nnssl_checkpoint, nnssl_plan, nnunet_training_checkpoint,
                              primus_like_weights, resenc_arch)

SMALL = dict(n_stages=3, features_per_stage=[4, 8, 16], kernel_sizes=[[3, 3, 3]] * 3,
             strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], n_conv_per_stage=[1, 1, 1], n_conv_per_stage_decoder=[1, 1])


def _plain(input_channels=1, output_channels=3):
    meta = universal_genesis_arch(input_channels, output_channels)
    meta["network_kwargs"].update(copy.deepcopy(SMALL))
    return meta


def _plans(meta) -> dict:
    """nnU-Net plans whose 3d_fullres builds ``meta``'s network; 3d_cascade_fullres inherits it."""
    arch = {"network_class_name": meta["network_class"], "arch_kwargs": meta["network_kwargs"],
            "_kw_requires_import": meta["network_kwargs_requires_import"]}
    return {"dataset_name": "Dataset001_Source", "plans_name": "nnUNetPlans",
            "configurations": {"3d_fullres": {"patch_size": [32, 32, 32], "architecture": arch},
                               "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}}}


@pytest.fixture(scope="module")
def plain():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _plain(), build_network(_plain(), deep_supervision=False)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_nnunet_checkpoint_architecture_from_its_plans_inheritance_resolved(plain, tmp_path):
    meta, net = plain
    path = nnunet_training_checkpoint(tmp_path / "checkpoint_final.pth", net.state_dict(), _plans(meta),
                                      "3d_cascade_fullres")
    ckpt = read_pretrained(path)
    assert ckpt.metadata["kind"] == "nnunet" and ckpt.metadata["configuration"] == "3d_cascade_fullres"
    assert ckpt.metadata["network_kwargs"]["features_per_stage"] == [4, 8, 16]
    assert (ckpt.metadata["input_channels"], ckpt.metadata["output_channels"]) == (1, 3)
    assert "nnU-Net v2 training checkpoint of Dataset001_Source" in ckpt.metadata["description"]
    assert _same(ckpt.network_weights, net.state_dict())
    # the head never transfers; the rest does, and the report says which kind it came from
    report = transfer_weights(build_network(_plain(2, 5)), ckpt)
    assert report.encoder_fraction == 1.0 and report.decoder_fraction == 1.0
    assert report.checkpoint_kind == "nnunet" and "kind: nnunet" in report.summary_text()
    assert all(e.status == "skipped" for e in report.entries if e.part == "head")


def test_nnunet_checkpoint_plans_beside_it_or_given_and_refused_without(plain, tmp_path):
    meta, net = plain
    fold = tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "fold_0"
    path = nnunet_training_checkpoint(fold / "checkpoint_final.pth", net.state_dict(), None)
    with pytest.raises(GenesisUserError, match=r"carries no plans.*--source-plans FILE"):
        read_pretrained(path)
    elsewhere = tmp_path / "my_plans.json"
    elsewhere.write_text(json.dumps(_plans(meta)))
    assert read_pretrained(path, elsewhere).metadata["architecture_from"] == str(elsewhere)
    (fold.parent / "plans.json").write_text(elsewhere.read_text())  # the results folder's layout
    assert read_pretrained(path).metadata["architecture_from"] == str(fold.parent / "plans.json")


def test_nnunet_checkpoint_whose_weights_are_not_its_plans_network_is_refused(plain, tmp_path):
    meta, net = plain
    other = _plain()
    other["network_kwargs"]["features_per_stage"] = [4, 8, 32]
    path = nnunet_training_checkpoint(tmp_path / "c.pth", net.state_dict(), _plans(other))
    with pytest.raises(GenesisUserError, match=r"has shape .* not the network its plans describe"):
        read_pretrained(path)


def test_nnssl_resenc_checkpoint_transfers_stem_encoder_and_decoder(tmp_path):
    arch = resenc_arch([8, 16, 32])
    net = build_network(arch)
    path = nnssl_checkpoint(tmp_path / "checkpoint_final.pth", net.state_dict(),
                            nnssl_plan("ResidualEncoderUNet", arch["network_kwargs"]))
    assert checkpoint_kind(torch.load(path, weights_only=True)) == "nnssl"
    ckpt = read_pretrained(path)
    assert ckpt.metadata["kind"] == "nnssl" and ckpt.metadata["network_class"] == RESIDUAL_ENCODER_UNET
    assert ckpt.metadata["pretrain_patch_size"] == [160, 160, 160] and ckpt.metadata["input_channels"] == 1
    assert "stem, encoder and decoder" in ckpt.metadata["description"]
    assert _same(ckpt.network_weights, net.state_dict())
    report = transfer_weights(build_network(resenc_arch([8, 16], input_channels=2)), ckpt)
    assert report.encoder_fraction == 1.0 and report.decoder_fraction == 1.0 and report.checkpoint_kind == "nnssl"


def test_nnssl_prefixes_renamed_and_a_decoder_that_does_not_fit_dropped(tmp_path):
    """A pretraining network that wraps the U-Net (its keys under 'backbone.') with a decoder of its own: the
    plan's prefixes find stem and encoder, the decoder starts random."""
    arch = resenc_arch([8, 16, 32])
    net = build_network(arch)
    wrapped = {f"backbone.{k}": v for k, v in net.state_dict().items() if not k.startswith("decoder.")}
    wrapped["backbone.decoder.stages.0.convs.0.conv.weight"] = torch.zeros(3, 3, 3, 3, 3)
    keys = ("backbone.encoder.stages", "backbone.encoder.stem",
            ("backbone.encoder.stem.convs.0.conv", "backbone.encoder.stem.convs.0.all_modules.0"))
    ckpt = read_pretrained(nnssl_checkpoint(tmp_path / "c.pth", wrapped,
                                            nnssl_plan("ResidualEncoderUNet", arch["network_kwargs"], keys)))
    assert "the decoder starts random" in ckpt.metadata["description"]
    assert not any(k.startswith("decoder.") for k in ckpt.network_weights)
    assert torch.equal(ckpt.network_weights["encoder.stem.convs.0.conv.weight"],
                       net.state_dict()["encoder.stem.convs.0.conv.weight"])
    report = transfer_weights(build_network(resenc_arch([8, 16, 32])), ckpt)
    assert report.encoder_fraction == 1.0 and report.decoder_fraction == 0.0


def test_nnssl_resencl_preset_is_the_network_nnunet_master_builds():
    skeleton = build_skeleton({"network_class": RESIDUAL_ENCODER_UNET, "network_kwargs": RESENC_L_KWARGS,
                               "network_kwargs_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                               "input_channels": 1, "output_channels": 1})
    assert (skeleton.key_to_encoder, skeleton.key_to_stem) == ("encoder.stages", "encoder.stem")
    assert [len(s.blocks) for s in skeleton.encoder.stages] == [1, 3, 4, 6, 6, 6]
    assert skeleton.encoder.stem.convs[0].conv.weight.shape == (32, 1, 3, 3, 3)
    assert next(skeleton.parameters()).device.type == "meta"  # nothing allocated


@pytest.mark.parametrize("family_of_source, needles", [
    ("resenc", ("ResidualEncoderUNet", "PlainConvUNet", "-pl nnUNetPlannerResEncL")),
    ("primus", ("Primus", "transformer", "PlainConvUNet", "PretrainedTrainer_Primusx")),
    ("plain", ("PlainConvUNet", "ResidualEncoderUNet", "nnUNetv2_plan_and_preprocess -d DATASET")),
])
def test_another_family_is_refused_naming_both_and_the_planner_that_fits(family_of_source, needles, plain,
                                                                         tmp_path):
    if family_of_source == "primus":
        path = nnssl_checkpoint(tmp_path / "p.pth", primus_like_weights(), nnssl_plan("PrimusM", None, PRIMUS_KEYS))
        target = build_network(_plain())
    elif family_of_source == "resenc":
        arch = resenc_arch([8, 16, 32])
        path = nnssl_checkpoint(tmp_path / "r.pth", build_network(arch).state_dict(),
                                nnssl_plan("ResidualEncoderUNet", arch["network_kwargs"]))
        target = build_network(_plain())
    else:
        path = save_checkpoint(tmp_path / "g.pth", plain[1].state_dict(), dict(plain[0], source="pretrain"))
        target = build_network(resenc_arch([8, 16, 32]))
    ckpt = read_pretrained(path)
    with pytest.raises(GenesisUserError) as refused:
        transfer_weights(target, ckpt)
    for needle in needles:
        assert needle in str(refused.value)


def test_genesis_and_bare_weights(plain, tmp_path):
    meta, net = plain
    ckpt = read_pretrained(save_checkpoint(tmp_path / "g.pth", net.state_dict(), dict(meta, source="pretrain")))
    assert ckpt.metadata["kind"] == "genesis" and ckpt.metadata["source"] == "pretrain"
    bare = tmp_path / "bare.pth"
    torch.save({"network_weights": net.state_dict()}, bare)
    with pytest.raises(GenesisUserError, match="no 'genesis' metadata block"):
        read_pretrained(bare)
    assert read_pretrained(bare, require_description=False).metadata == {}
