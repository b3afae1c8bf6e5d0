"""Weight transfer: same plans, other plans (depth, kernels, strides, channels), errors, report."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from nnunet_genesis.checkpoint import load_checkpoint, save_checkpoint
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.network import build_network, universal_genesis_arch
from nnunet_genesis.weight_transfer import TransferReport, transfer_weights

from pretrained_files import resenc_arch

# Dataset004_Hippocampus 3d_fullres as nnUNetv2_plan_experiment 2.8.1 plans it (10-case subset,
# spacing 1x1x1 mm, patch 40x56x40).
HIPPOCAMPUS_KWARGS = {
    "n_stages": 4, "features_per_stage": [32, 64, 128, 256],
    "kernel_sizes": [[3, 3, 3]] * 4, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
    "n_conv_per_stage": [2, 2, 2, 2], "n_conv_per_stage_decoder": [2, 2, 2],
}
# An anisotropic variant (thick slices along axis 0): 1x3x3 kernels and a [1,2,2] stride at the top.
ANISOTROPIC_KWARGS = dict(HIPPOCAMPUS_KWARGS, kernel_sizes=[[1, 3, 3]] + [[3, 3, 3]] * 3,
                          strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2]])


def plan(input_channels=1, output_channels=3, **kwargs) -> dict:
    meta = universal_genesis_arch(input_channels, output_channels)
    meta["network_kwargs"].update(copy.deepcopy(kwargs))
    return meta


def randomise_norms(net: torch.nn.Module, seed: int) -> None:
    """He init leaves norm weights at 1 and biases at 0; make them informative."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".norm." in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5 if name.endswith("weight")
                        else torch.randn(p.shape, generator=g) * 0.1)


@pytest.fixture(scope="module")
def universal(tmp_path_factory):
    """A universal Genesis checkpoint on disk (restoration head: 1 output) and its network."""
    meta = universal_genesis_arch(1, 1)
    net = build_network(meta)
    randomise_norms(net, 0)
    path = tmp_path_factory.mktemp("ckpt") / "universal.pth"
    save_checkpoint(path, net.state_dict(), dict(meta, source="pretrain"))
    return load_checkpoint(path), net.eval()


class CompiledLike(torch.nn.Module):
    """Same structure as torch.compile's OptimizedModule (importing dynamo costs ~7 s)."""

    def __init__(self, module):
        super().__init__()
        self._orig_mod = module


def snapshot(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_same_architecture_loads_everything_but_the_head(universal):
    ckpt, src = universal
    plain = build_network(universal_genesis_arch(1, 3))
    before = snapshot(plain)
    report = transfer_weights(torch.nn.DataParallel(CompiledLike(plain)), ckpt)  # wrappers unwrapped
    assert report.encoder_fraction == 1.0 and report.decoder_fraction == 1.0
    assert not report.unmatched_source_stages and not report.unmatched_target_stages
    after = plain.state_dict()
    src_sd = src.state_dict()
    for key, value in after.items():  # aliases (decoder.encoder.*, all_modules.*) included
        if key.startswith("decoder.seg_layers."):
            assert torch.equal(value, before[key]), key
        else:
            assert torch.equal(value, src_sd[key]), key
    statuses = {e.status for e in report.entries if e.part != "head"}
    assert statuses == {"loaded"}
    # every parameter counted exactly once despite the aliases
    unique = dict(plain.named_parameters())
    assert sorted(e.target_key for e in report.entries) == sorted(unique)
    assert sum(torch.Size(e.target_shape).numel() for e in report.entries) == \
        sum(p.numel() for p in unique.values())


def test_universal_on_real_hippocampus_plan(universal):
    ckpt, src = universal
    target = build_network(plan(**HIPPOCAMPUS_KWARGS))
    report = transfer_weights(target, ckpt)
    assert report.encoder_fraction == 1.0 and report.decoder_fraction == 1.0
    assert report.unmatched_source_stages == [
        "encoder.stages.4", "encoder.stages.5", "decoder.stages.0 (level 4)", "decoder.stages.1 (level 3)"]
    assert report.unmatched_target_stages == []
    # decoder aligned by skip level: target stage 0 outputs level 2 like source stage 2
    assert torch.equal(target.decoder.stages[0].convs[0].conv.weight, src.decoder.stages[2].convs[0].conv.weight)
    assert torch.equal(target.decoder.transpconvs[0].weight, src.decoder.transpconvs[2].weight)
    assert torch.equal(target.encoder.stages[3][0].convs[1].norm.bias, src.encoder.stages[3][0].convs[1].norm.bias)
    assert "encoder.stages.5" in report.summary_text()


def test_universal_on_anisotropic_plan_reduces_kernels_and_strides(universal):
    ckpt, src = universal
    target = build_network(plan(**ANISOTROPIC_KWARGS)).eval()
    report = transfer_weights(target, ckpt)
    adapted = {e.target_key: e for e in report.entries if e.status == "adapted"}
    assert set(adapted) == {
        "encoder.stages.0.0.convs.0.conv.weight", "encoder.stages.0.0.convs.1.conv.weight",
        "decoder.stages.2.convs.0.conv.weight", "decoder.stages.2.convs.1.conv.weight",
        "decoder.transpconvs.2.weight"}
    assert adapted["decoder.transpconvs.2.weight"].source_key == "decoder.transpconvs.4.weight"
    assert report.encoder_fraction == 1.0 and report.decoder_fraction == 1.0

    g = torch.Generator().manual_seed(1)
    # 3 -> 1 on axis 0 (summed taps): an input constant along axis 0 gives the pretrained
    # response away from the zero-padded border slices
    src_conv, tgt_conv = src.encoder.stages[0][0].convs[1].conv, target.encoder.stages[0][0].convs[1].conv
    x = torch.randn(1, 32, 1, 12, 12, generator=g).expand(1, 32, 6, 12, 12)
    with torch.no_grad():
        y_src = F.conv3d(x, src_conv.weight, src_conv.bias, padding=1)
        y_tgt = F.conv3d(x, tgt_conv.weight, tgt_conv.bias, padding=(0, 1, 1))
    torch.testing.assert_close(y_tgt[:, :, 1:-1], y_src[:, :, 1:-1], atol=1e-4, rtol=1e-4)
    assert (y_tgt - y_src).abs().max() > 1e-3  # the border slices differ: the check is not vacuous

    # transposed conv stride 2 -> 1 on axis 0 (averaged taps): the pretrained upsampling
    # followed by average pooling along axis 0
    s_tc, t_tc = src.decoder.transpconvs[4], target.decoder.transpconvs[2]
    z = torch.randn(1, 64, 3, 4, 4, generator=g)
    with torch.no_grad():
        up_src = s_tc(z)
        pooled = up_src.reshape(1, 32, 3, 2, 8, 8).mean(dim=3)
        up_tgt = t_tc(z)
    assert up_tgt.shape == (1, 32, 3, 8, 8)
    torch.testing.assert_close(up_tgt, pooled, atol=1e-5, rtol=1e-5)


def test_input_channels_adapted_identical_channels_give_pretrained_features(universal):
    ckpt, src = universal
    target = build_network(universal_genesis_arch(2, 3)).eval()
    report = transfer_weights(target, ckpt)
    (entry,) = [e for e in report.entries if e.status == "adapted"]
    assert entry.target_key == "encoder.stages.0.0.convs.0.conv.weight"
    assert entry.target_shape == [32, 2, 3, 3, 3] and entry.source_shape == [32, 1, 3, 3, 3]
    # float64: the deepest InstanceNorms see 2 voxels and would amplify float32 rounding
    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        skips_src = copy.deepcopy(src.encoder).double()(x)
        skips_tgt = target.encoder.double()(torch.cat([x, x], dim=1))
    for a, b in zip(skips_src, skips_tgt):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-6)


def test_feature_mismatch_names_first_key_and_shapes_and_copies_nothing(universal):
    ckpt, _ = universal
    target = build_network(plan(**dict(HIPPOCAMPUS_KWARGS, features_per_stage=[16, 32, 64, 128])))
    before = snapshot(target)
    with pytest.raises(GenesisUserError) as err:
        transfer_weights(target, ckpt)
    msg = str(err.value)
    assert "encoder.stages.0.0.convs.0.conv.weight" in msg
    assert "[16, 1, 3, 3, 3]" in msg and "[32, 1, 3, 3, 3]" in msg
    assert str(ckpt.path) in msg
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


def test_encoder_only_leaves_decoder_untouched(universal):
    ckpt, src = universal
    target = build_network(plan(**HIPPOCAMPUS_KWARGS))
    before = snapshot(target)
    report = transfer_weights(target, ckpt, include_decoder=False)
    assert report.encoder_fraction == 1.0 and report.decoder_fraction == 0.0
    for k, v in target.state_dict().items():
        if k.startswith("decoder.") and not k.startswith("decoder.encoder."):
            assert torch.equal(v, before[k]), k
    assert torch.equal(target.encoder.stages[0][0].convs[0].conv.weight,
                       src.encoder.stages[0][0].convs[0].conv.weight)


def test_residual_encoder_unet_supported_and_family_mismatch_refused(tmp_path, universal):
    meta = resenc_arch([8, 16, 32])
    src = build_network(meta)
    path = save_checkpoint(tmp_path / "resenc.pth", src.state_dict(), dict(meta, source="pretrain"))
    ckpt = load_checkpoint(path)
    target = build_network(resenc_arch([8, 16], input_channels=2))
    report = transfer_weights(target, ckpt)
    assert report.encoder_fraction == 1.0 and report.decoder_fraction == 1.0
    assert report.unmatched_source_stages == ["encoder.stages.2", "decoder.stages.0 (level 1)"]
    assert any(e.target_key == "encoder.stem.convs.0.conv.weight" and e.status == "adapted"
               for e in report.entries)
    with pytest.raises(GenesisUserError, match="PlainConvUNet.*ResidualEncoderUNet"):
        transfer_weights(target, universal[0])


def test_report_json_round_trips(tmp_path, universal):
    ckpt, _ = universal
    report = transfer_weights(build_network(plan(input_channels=2, **ANISOTROPIC_KWARGS)), ckpt)
    out = tmp_path / "out" / "genesis_transfer_report.json"
    report.save_json(out)
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp files left
    data = json.loads(out.read_text())
    assert data == report.to_dict()
    assert TransferReport.from_dict(data) == report
    assert data["encoder_fraction"] == report.encoder_fraction
    text = report.summary_text()
    assert "100.0%" in text and "input channels 1->2" in text and "taps summed" in text


def test_malicious_checkpoint_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "bad.pth"
    torch.save({"network_weights": {"w": torch.zeros(1)}, "genesis": Payload()}, bad)
    with pytest.raises(GenesisUserError, match="refused"):
        load_checkpoint(bad)
    assert not marker.exists()
    torch.load(bad, weights_only=False)  # the payload is live: loading it unsafely would run it
    assert marker.exists()


DEEPER_KWARGS = {  # one stage more than the universal network: its last encoder stage has no partner
    "n_stages": 7, "features_per_stage": [32, 64, 128, 256, 320, 320, 320],
    "kernel_sizes": [[3, 3, 3]] * 7, "strides": [[1, 1, 1]] + [[2, 2, 2]] * 4 + [[1, 2, 2], [1, 2, 2]],
    "n_conv_per_stage": [2] * 7, "n_conv_per_stage_decoder": [2] * 6,
}


def test_partial_encoder_transfer_is_refused_unless_allowed(universal):
    ckpt, _ = universal
    target = build_network(plan(**DEEPER_KWARGS))
    before = snapshot(target)
    with pytest.raises(GenesisUserError, match="would transfer only") as err:
        transfer_weights(target, ckpt)
    assert "--allow-partial-transfer" in str(err.value) and "encoder.stages.6" in str(err.value)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())  # nothing copied
    report = transfer_weights(target, ckpt, allow_partial=True)
    assert 0 < report.encoder_fraction < 1
    assert any(n.startswith("partial transfer allowed") for n in report.notes)
    assert f"{100 * report.encoder_fraction:.1f}%" in report.summary_text()


def test_a_checkpoint_that_matches_nothing_never_trains(universal, tmp_path):
    ckpt, net = universal
    renamed = {k.replace("encoder.stages.0.", "encoder.stages.0.other_"): v for k, v in net.state_dict().items()}
    renamed = {k: v for k, v in renamed.items() if not k.startswith("encoder.stages.") or ".other_" in k}
    path = save_checkpoint(tmp_path / "nothing.pth", renamed, dict(ckpt.metadata))
    target = build_network(plan(**HIPPOCAMPUS_KWARGS))
    for allow in (False, True):
        with pytest.raises(GenesisUserError, match="only 0.0%"):
            transfer_weights(target, load_checkpoint(path), allow_partial=allow)


@pytest.mark.parametrize("damage, needle", [
    (lambda obj: obj["network_weights"].update({"x.weight": torch.eye(3).to_sparse()}), "sparse"),
    (lambda obj: obj["network_weights"].update({7: torch.zeros(1)}), "key of type int"),
    (lambda obj: obj.update({"genesis": ["not", "a", "dict"]}), "is a list"),
    (lambda obj: obj.update({"genesis": "a string"}), "is a str"),
    (lambda obj: obj["genesis"].update({"t": torch.zeros(2)}), "a Tensor at genesis.t"),
    (lambda obj: obj["genesis"].update({"d": {(1, 2): 3}}), "a key of type tuple at genesis.d"),
    (lambda obj: obj.update({3: "mixed key types"}), None),
])
def test_malformed_but_loadable_checkpoints_are_clear_errors(universal, tmp_path, damage, needle):
    ckpt, net = universal
    obj = {"network_weights": dict(net.state_dict()), "genesis": dict(ckpt.metadata)}
    damage(obj)
    path = tmp_path / "bad.pth"
    torch.save(obj, path)
    if needle is None:  # harmless extra top-level keys of another type: still loads
        assert load_checkpoint(path).network_weights
        return
    with pytest.raises(GenesisUserError, match=needle) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
