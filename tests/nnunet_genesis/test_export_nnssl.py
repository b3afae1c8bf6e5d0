"""``nnunet-genesis export --format nnssl``: the file nnU-Net master's nnssl route reads.

The table below is what nnU-Net master (commit 0e495086) reads from such a file, written from its
behaviour (like_nnssl.py, PretrainedTrainer, DynamicPretrainedTrainer); ``_master_style_load`` does
what its PretrainedTrainer does with the weights (prefix selection, strict load into the encoder and
stem submodules of a freshly built network), so these tests need no unreleased nnU-Net.
"""

from __future__ import annotations

import copy

import pytest
import torch

from nnunet_genesis.checkpoint import load_checkpoint, save_checkpoint
from nnunet_genesis.cli import main
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.export_nnssl import ExportSettings, export_checkpoint
from nnunet_genesis.network import RESIDUAL_ENCODER_UNET, build_network, universal_genesis_arch
from nnunet_genesis.pretrained_sources import read_pretrained

PLAN = ("nnssl_adaptation_plan",)
FIRST_CONFIGURATION = "<first>"  # nnU-Net takes the first configuration, whatever its name
# (path, type) of every entry nnU-Net master reads; a tuple of types: any of them
MASTER_READS = [
    (("network_weights",), dict),
    (PLAN, dict),
    (PLAN + ("architecture_plans", "arch_class_name"), str),
    (PLAN + ("architecture_plans", "arch_kwargs"), dict),
    (PLAN + ("architecture_plans", "arch_kwargs_requiring_import"), list),
    (PLAN + ("pretrain_plan", "configurations"), dict),
    (PLAN + ("pretrain_plan", "configurations", FIRST_CONFIGURATION, "spacing"), (list, type(None))),
    (PLAN + ("pretrain_plan", "configurations", FIRST_CONFIGURATION, "patch_size"), list),
    (PLAN + ("key_to_encoder",), str),
    (PLAN + ("key_to_stem",), str),
    (PLAN + ("keys_to_in_proj",), list),
    (PLAN + ("key_to_lpe",), (str, type(None))),
    (PLAN + ("pretrain_num_input_channels",), int),
    (PLAN + ("recommended_downstream_patchsize",), list),
    (PLAN + ("architecture_kwargs",), dict),  # optional; DynamicPretrainedTrainer guesses without it
    (("citations",), list),
]
SMALL = dict(n_stages=3, features_per_stage=[4, 8, 16], kernel_sizes=[[3, 3, 3]] * 3,
             strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], n_conv_per_stage=[2, 2, 2], n_conv_per_stage_decoder=[1, 1])


def _plain(input_channels=1):
    meta = universal_genesis_arch(input_channels, input_channels)
    meta["network_kwargs"].update(copy.deepcopy(SMALL))
    return meta


def _resenc(input_channels=1):
    meta = _plain(input_channels)
    kwargs = meta["network_kwargs"]
    del kwargs["n_conv_per_stage"]
    kwargs.update(n_blocks_per_stage=[1, 2, 2])
    meta["network_class"] = RESIDUAL_ENCODER_UNET
    return meta


def _genesis_checkpoint(path, meta, **recorded):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_network(meta)
    save_checkpoint(path, net.state_dict(), dict(meta, source="pretrain", **recorded))
    return path


@pytest.fixture()
def plain_ckpt(tmp_path):
    return _genesis_checkpoint(tmp_path / "genesis_final.pth", _plain(), patch_size=[16, 32, 32],
                               spacing=[1.5, 0.8, 0.8], configuration="3d_fullres", plans_name="nnUNetPlans",
                               transpose_forward=[0, 1, 2])


def _at(obj, path):
    for key in path:
        obj = next(iter(obj.values())) if key == FIRST_CONFIGURATION else obj[key]
    return obj


def _master_style_load(network, exported):
    """Encoder and stem prefixes of the file, prefix stripped, strictly into the network's submodules."""
    plan, weights = exported["nnssl_adaptation_plan"], exported["network_weights"]
    for pt_key, target in ((plan["key_to_encoder"], network.key_to_encoder),
                           (plan["key_to_stem"], network.key_to_stem)):
        part = {k[len(pt_key):].lstrip("."): v for k, v in weights.items() if k.startswith(pt_key)}
        network.get_submodule(target).load_state_dict(part, strict=True)


def test_export_holds_every_field_nnunet_master_reads_as_plain_types(plain_ckpt, tmp_path):
    out = tmp_path / "nnssl.pth"
    assert main(["export", str(plain_ckpt), "--format", "nnssl", "-o", str(out)]) == 0
    assert torch.serialization.get_unsafe_globals_in_checkpoint(out) == []
    exported = torch.load(out, weights_only=True)  # as nnU-Net loads it: no allowlist, no map_location
    for path, kind in MASTER_READS:
        assert isinstance(_at(exported, path), kind), path
    plan = exported["nnssl_adaptation_plan"]
    config = _at(exported, PLAN + ("pretrain_plan", "configurations", FIRST_CONFIGURATION))
    assert config["patch_size"] == plan["recommended_downstream_patchsize"] == [16, 32, 32]
    assert config["spacing"] == [1.5, 0.8, 0.8]
    assert plan["pretrain_num_input_channels"] == 1 and plan["key_to_lpe"] is None
    assert (plan["key_to_encoder"], plan["key_to_stem"]) == ("encoder.stages", "encoder.stages.0")
    assert all(k + ".weight" in exported["network_weights"] for k in plan["keys_to_in_proj"])
    assert plan["architecture_kwargs"] == {"n_stages": 3, "kernel_sizes": [[3, 3, 3]] * 3}
    assert plan["architecture_plans"]["arch_class_name"].endswith("PlainConvUNet")
    assert all(t.device.type == "cpu" for t in exported["network_weights"].values())
    (citation,) = exported["citations"]
    assert citation["name"] == "Models Genesis" and isinstance(citation["type"], str)
    assert len(citation["apa_citations"]) == 2 and all(isinstance(c, str) for c in citation["apa_citations"])


@pytest.mark.parametrize("make_meta", [_plain, _resenc], ids=["PlainConvUNet", "ResidualEncoderUNet"])
def test_exported_weights_equal_the_source_and_load_as_nnunet_master_loads(make_meta, tmp_path):
    src = _genesis_checkpoint(tmp_path / "src.pth", make_meta(), patch_size=[16, 16, 16])
    out = tmp_path / "nnssl.pth"
    export_checkpoint(src, out)
    source, exported = load_checkpoint(src), torch.load(out, weights_only=True)
    assert exported["network_weights"].keys() == source.network_weights.keys()  # the decoder too
    assert all(torch.equal(exported["network_weights"][k], v) for k, v in source.network_weights.items())
    assert exported["genesis"] == source.metadata
    assert load_checkpoint(out).metadata == source.metadata  # the Genesis block rides along unchanged
    back = read_pretrained(out)  # attach, inspect and the trainers: read as an nnssl checkpoint
    assert back.metadata["kind"] == "nnssl" and "stem, encoder and decoder" in back.metadata["description"]
    assert back.network_weights.keys() == source.network_weights.keys()
    assert all(torch.equal(back.network_weights[k], v) for k, v in source.network_weights.items())
    downstream = build_network(dict(make_meta(), output_channels=3))  # another dataset: 3 output channels
    _master_style_load(downstream, exported)
    encoder = {k: v for k, v in downstream.state_dict().items() if k.startswith("encoder.")}
    assert encoder and all(torch.equal(v, source.network_weights[k]) for k, v in encoder.items())


def test_plain_conv_unet_with_more_input_channels_is_refused_by_masters_strict_load(plain_ckpt, tmp_path):
    """The documented limit of nnU-Net master's route: its encoder prefix holds the 1-channel stem."""
    out = tmp_path / "nnssl.pth"
    export_checkpoint(plain_ckpt, out)
    with pytest.raises(RuntimeError, match="size mismatch"):
        _master_style_load(build_network(_plain(input_channels=2)), torch.load(out, weights_only=True))


def test_patch_size_option_and_checkpoints_without_one(tmp_path):
    src = _genesis_checkpoint(tmp_path / "v1.pth", _plain())  # no patch size recorded (as import-v1 writes)
    with pytest.raises(GenesisUserError, match="--patch-size"):
        export_checkpoint(src, tmp_path / "a.pth")
    with pytest.raises(GenesisUserError, match=r"not a multiple of the network's total strides \[4, 4, 4\]"):
        export_checkpoint(src, tmp_path / "a.pth", ExportSettings(downstream_patch_size=(16, 30, 32)))
    assert not (tmp_path / "a.pth").exists()
    export_checkpoint(src, tmp_path / "a.pth", ExportSettings(downstream_patch_size=(16, 32, 32)))
    plan = torch.load(tmp_path / "a.pth", weights_only=True)["nnssl_adaptation_plan"]
    assert plan["recommended_downstream_patchsize"] == [16, 32, 32]
    assert _at(plan, ("pretrain_plan", "configurations", FIRST_CONFIGURATION, "spacing")) is None


def _2d(meta, weights):
    meta["network_kwargs"].update(kernel_sizes=[[3, 3]] * 3, strides=[[1, 1], [2, 2], [2, 2]],
                                  conv_op="torch.nn.modules.conv.Conv2d",
                                  norm_op="torch.nn.modules.instancenorm.InstanceNorm2d")
    weights.clear()
    weights.update(build_network(meta).state_dict())


@pytest.mark.parametrize("damage, needle", [
    (lambda m, w: m.update(network_class="dynamic_network_architectures.architectures.unet.ResidualUNet"),
     "builds only PlainConvUNet and ResidualEncoderUNet"),
    (_2d, "2D network"),
    (lambda m, w: w.pop("decoder.seg_layers.0.weight"), "lacks 'decoder.seg_layers.0.weight'"),
    (lambda m, w: m.update(patch_size=[16, 32]), "not a 3D patch size"),
    (lambda m, w: m.update(spacing=["a", 1, 1]), "not three positive numbers"),
])
def test_bad_checkpoints_are_user_errors_naming_the_file_and_write_nothing(tmp_path, damage, needle):
    meta = dict(_plain(), source="pretrain", patch_size=[16, 32, 32])
    weights = dict(build_network(_plain()).state_dict())
    damage(meta, weights)
    src = save_checkpoint(tmp_path / "bad.pth", weights, meta)
    with pytest.raises(GenesisUserError, match=needle) as e:
        export_checkpoint(src, tmp_path / "out.pth")
    assert str(src) in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pth"]


def test_cli_errors_and_no_overwrite(plain_ckpt, tmp_path, capsys):
    out = tmp_path / "nnssl.pth"
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    assert main(["export", str(junk), "--format", "nnssl", "-o", str(out)]) == 2
    assert "junk.pth" in capsys.readouterr().err and not out.exists()
    assert main(["export", str(plain_ckpt), "--format", "nnssl", "-o", str(out)]) == 0
    assert "PretrainedTrainer" in capsys.readouterr().out
    assert main(["export", str(plain_ckpt), "--format", "nnssl", "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["export", str(plain_ckpt), "--format", "nnssl", "-o", str(out), "--force"]) == 0  # its own file
    theirs = tmp_path / "theirs.pth"
    for content in (b"the user's file", plain_ckpt.read_bytes()):  # not written by export: kept even with --force
        theirs.write_bytes(content)
        assert main(["export", str(plain_ckpt), "--format", "nnssl", "-o", str(theirs), "--force"]) == 2
        assert "not written by this command" in capsys.readouterr().err and theirs.read_bytes() == content
    before = plain_ckpt.read_bytes()
    assert main(["export", str(plain_ckpt), "--format", "nnssl", "-o", str(plain_ckpt), "--force"]) == 2
    assert "input of this command" in capsys.readouterr().err and plain_ckpt.read_bytes() == before
