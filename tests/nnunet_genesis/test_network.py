"""build_network / universal_genesis_arch: nnU-Net's own builder, checked metadata."""

from __future__ import annotations

import json

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.network import arch_from_plans, build_network, universal_genesis_arch


def test_universal_arch_is_json_and_builds_the_documented_unet():
    meta = universal_genesis_arch(2, 3)
    assert json.loads(json.dumps(meta)) == meta  # storable in checkpoint metadata / plans
    assert set(meta) == {"network_class", "network_kwargs", "network_kwargs_requires_import",
                         "input_channels", "output_channels"}
    net = build_network(meta)
    assert isinstance(net, PlainConvUNet)
    assert len(net.encoder.stages) == 6
    assert list(net.encoder.output_channels) == [32, 64, 128, 256, 320, 320]
    assert [list(s) for s in net.encoder.strides] == [[1, 1, 1]] + [[2, 2, 2]] * 4 + [[1, 2, 2]]
    convs = [m for m in net.encoder.modules() if isinstance(m, torch.nn.Conv3d)]
    assert len(convs) == 12 and all(tuple(c.kernel_size) == (3, 3, 3) for c in convs)
    assert all(c.bias is not None for c in convs)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.InstanceNorm3d)]
    assert norms and all(n.affine and n.eps == 1e-5 for n in norms)
    assert convs[0].in_channels == 2 and net.decoder.seg_layers[-1].out_channels == 3
    # a fresh copy each call: editing one must not change the next
    meta["network_kwargs"]["features_per_stage"][0] = 1
    assert universal_genesis_arch()["network_kwargs"]["features_per_stage"][0] == 32


def test_deep_supervision_switch():
    meta = universal_genesis_arch(1, 2)
    x = torch.randn(1, 1, 32, 32, 32)  # bottleneck 2x1x1: InstanceNorm needs >1 voxel
    with torch.no_grad():
        single = build_network(meta, deep_supervision=False).eval()(x)
        multi = build_network(meta, deep_supervision=True).eval()(x)
    assert isinstance(single, torch.Tensor) and single.shape == (1, 2, 32, 32, 32)
    assert isinstance(multi, (list, tuple)) and len(multi) == 5 and multi[0].shape == single.shape


def test_arch_from_plans_matches_plans_format():
    u = universal_genesis_arch()
    plans = {"configurations": {"3d_fullres": {"architecture": {
        "network_class_name": u["network_class"], "arch_kwargs": u["network_kwargs"],
        "_kw_requires_import": u["network_kwargs_requires_import"]}}}}
    assert arch_from_plans(plans, "3d_fullres", 1, 1) == u
    with pytest.raises(GenesisUserError, match="2d"):
        arch_from_plans(plans, "2d", 1, 1)


@pytest.mark.parametrize("field, value", [
    ("network_class", "os.system"),
    ("network_class", "builtins.eval"),
    ("network_class", "torch.nn.functional.relu"),  # trusted package but not a Module class
    ("nonlin", "subprocess.Popen"),
])
def test_untrusted_metadata_names_are_refused(field, value):
    meta = universal_genesis_arch()
    if field == "network_class":
        meta["network_class"] = value
    else:
        meta["network_kwargs"][field] = value
    with pytest.raises(GenesisUserError, match="refusing|cannot be found"):
        build_network(meta)


def test_missing_metadata_keys_are_a_user_error():
    meta = universal_genesis_arch()
    del meta["network_kwargs"]
    with pytest.raises(GenesisUserError, match="network_kwargs"):
        build_network(meta)
