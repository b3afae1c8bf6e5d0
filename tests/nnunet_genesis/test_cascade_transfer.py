"""The cascade's extra input channels: image channels as pretrained, segmentation channels zero.

nnU-Net's 3d_cascade_fullres appends the one-hot segmentation of 3d_lowres after the image
channels; ``transfer_weights(..., image_channels=N)`` adapts the pretrained input projection onto
the first N channels as for an N-channel network and starts the others at zero. The trainer and
attach side: tests/trainers/test_cascade_start.py.
"""

from __future__ import annotations

import copy

import pytest
import torch

from nnunet_genesis.checkpoint import load_checkpoint, save_checkpoint
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.network import build_network, universal_genesis_arch
from nnunet_genesis.transfer_rules import CHANNEL_RULES, adapt_tensor
from nnunet_genesis.weight_transfer import cascade_image_channels, image_channel_count, transfer_weights

IN_PROJ = "encoder.stages.0.0.convs.0.conv.weight"
SMALL = {"n_stages": 3, "features_per_stage": [8, 16, 32], "kernel_sizes": [[3, 3, 3]] * 3,
         "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]], "n_conv_per_stage": [2, 2, 2],
         "n_conv_per_stage_decoder": [2, 2]}
# thick slices along axis 0: the input projection is also adapted along a spatial axis
SMALL_ANISO = dict(SMALL, kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]])


def small(input_channels: int, output_channels: int = 3, **overrides) -> dict:
    meta = universal_genesis_arch(input_channels, output_channels)
    meta["network_kwargs"].update(copy.deepcopy(dict(SMALL, **overrides)))
    return meta


def net(meta: dict, seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_network(meta).eval()


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 1-channel Genesis checkpoint of the small network (restoration head) and its network."""
    meta = small(1, 1)
    src = net(meta, 0)
    with torch.no_grad():  # non-trivial conv biases and norm affines
        for name, p in src.named_parameters():
            if name.endswith(".bias") or ".norm." in name:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.1)
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "genesis.pth", src.state_dict(),
                           dict(meta, source="pretrain"))
    return load_checkpoint(path), src


def test_cascade_image_channel_as_pretrained_segmentation_channels_zero(pretrained):
    ckpt, src = pretrained
    plain = net(small(1), 1)  # the same task without the cascade: 1 input channel
    cascade = net(small(3), 1)  # 1 image channel + 2 foreground labels of the previous stage
    report_plain = transfer_weights(plain, ckpt)
    report = transfer_weights(cascade, ckpt, image_channels=1)

    w = cascade.state_dict()[IN_PROJ]
    assert w.shape == (8, 3, 3, 3, 3)
    assert torch.equal(w[:, :1], src.state_dict()[IN_PROJ])
    assert torch.equal(w[:, :1], plain.state_dict()[IN_PROJ])  # as for a non-cascaded target
    assert torch.count_nonzero(w[:, 1:]) == 0
    # everything else, the first conv's bias and norm included, as without the cascade
    cascade_params = dict(cascade.named_parameters())
    for key, value in plain.named_parameters():  # each tensor once (no aliases)
        if key == IN_PROJ or ".seg_layers." in key:
            continue
        assert torch.equal(cascade_params[key], value), key
    assert report.encoder_fraction == report_plain.encoder_fraction == 1.0
    assert report.decoder_fraction == report_plain.decoder_fraction == 1.0

    (entry,) = [e for e in report.entries if e.status == "adapted"]
    assert entry.target_key == IN_PROJ and entry.target_shape == [8, 3, 3, 3, 3]
    assert entry.source_shape == [8, 1, 3, 3, 3]
    assert entry.reason == "input channels 1-2: previous-stage segmentation (cascade), zero start"
    assert any("input channels 1-2: previous-stage segmentation (cascade), zero start" in n
               and "input channel 0 (image) as for a 1-channel network" in n for n in report.notes)
    text = report.summary_text()
    assert "previous-stage segmentation (cascade), zero start" in text
    assert "mean over channels" not in text  # the image filters are not spread


def test_cascade_first_conv_responds_to_the_image_as_pretrained(pretrained):
    ckpt, src = pretrained
    cascade = net(small(3), 2)
    transfer_weights(cascade, ckpt, image_channels=1)
    g = torch.Generator().manual_seed(3)
    image = torch.randn(2, 1, 12, 16, 16, generator=g)
    labels = torch.randint(0, 3, (2, 12, 16, 16), generator=g)
    seg = torch.stack([labels == 1, labels == 2], dim=1).float()  # one-hot foreground, as nnU-Net
    src_conv, tgt_conv = src.encoder.stages[0][0].convs[0].conv, cascade.encoder.stages[0][0].convs[0].conv
    with torch.no_grad():
        y_src = src_conv(image)
        y_tgt = tgt_conv(torch.cat([image, seg], dim=1))
        y_other = tgt_conv(torch.cat([image, torch.rand_like(seg)], dim=1))  # any segmentation
    torch.testing.assert_close(y_tgt, y_src, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(y_other, y_src, atol=1e-6, rtol=1e-6)
    # the whole encoder, too (float64: the deepest norms see few voxels)
    with torch.no_grad():
        skips_src = copy.deepcopy(src.encoder).double()(image.double())
        skips_tgt = copy.deepcopy(cascade.encoder).double()(torch.cat([image, seg], dim=1).double())
    for a, b in zip(skips_src, skips_tgt):
        torch.testing.assert_close(b, a, atol=1e-9, rtol=1e-9)


def test_cascade_with_several_image_channels_and_a_kernel_change(pretrained):
    """2 image channels (rule 10: 1 -> 2), 2 segmentation channels, kernel 3 -> 1 on axis 0."""
    ckpt, _ = pretrained
    plain = net(small(2, **SMALL_ANISO), 4)
    cascade = net(small(4, **SMALL_ANISO), 4)
    transfer_weights(plain, ckpt)
    report = transfer_weights(cascade, ckpt, image_channels=2)
    w = cascade.state_dict()[IN_PROJ]
    assert w.shape == (8, 4, 1, 3, 3)
    assert torch.equal(w[:, :2], plain.state_dict()[IN_PROJ])
    assert torch.count_nonzero(w[:, 2:]) == 0
    entry = next(e for e in report.entries if e.target_key == IN_PROJ)
    assert entry.reason == ("input channels 1->2 (mean over channels, replicated, scaled by 1/2); "
                            "input channels 2-3: previous-stage segmentation (cascade), zero start; "
                            "kernel 3->1 on spatial axis 0 (taps summed)")
    assert any(n.startswith("input channels 2-3: previous-stage") and "input channels 0-1 (image)" in n
               for n in report.notes)


def test_a_checkpoint_with_as_many_channels_as_the_cascade_is_not_loaded_as_is(tmp_path):
    """A 3-channel checkpoint on a 1-image + 2-segmentation cascade: same shape, but the image
    channel gets the 3 -> 1 adaptation and the segmentation channels zero."""
    meta = small(3, 1)
    src = net(meta, 5)
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "three.pth", src.state_dict(), dict(meta, source="pretrain")))
    cascade = net(small(3), 6)
    report = transfer_weights(cascade, ckpt, image_channels=1)
    w = cascade.state_dict()[IN_PROJ]
    torch.testing.assert_close(w[:, :1], src.state_dict()[IN_PROJ].sum(dim=1, keepdim=True))
    assert torch.count_nonzero(w[:, 1:]) == 0
    entry = next(e for e in report.entries if e.target_key == IN_PROJ)
    assert entry.status == "adapted" and "input channels 3->1" in entry.reason
    assert "input channels 1-2: previous-stage segmentation" in entry.reason


def test_non_cascaded_targets_are_unchanged(pretrained):
    """image_channels None (or equal to the input channels) is the transfer of before: rule 10."""
    ckpt, src = pretrained
    expected = src.state_dict()[IN_PROJ].mean(dim=1, keepdim=True).repeat_interleave(3, dim=1) / 3
    results = []
    for image_channels in (None, 3):
        target = net(small(3), 7)
        report = transfer_weights(target, ckpt, image_channels=image_channels)
        results.append((target.state_dict(), report))
        torch.testing.assert_close(target.state_dict()[IN_PROJ], expected)
        entry = next(e for e in report.entries if e.target_key == IN_PROJ)
        assert entry.reason == "input channels 1->3 (mean over channels, replicated, scaled by 1/3)"
        assert not any("cascade" in n for n in report.notes)
    (sd_a, rep_a), (sd_b, rep_b) = results
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert rep_a.to_dict() == rep_b.to_dict()
    # the table itself: only the input projection takes image_channels into account
    w = torch.randn(8, 4, 3, 3, 3)
    assert adapt_tensor(w, (8, 4, 3, 3, 3), transposed=False, input_projection=False, image_channels=1) == (w, [])
    assert len(CHANNEL_RULES) == 1


def test_more_image_channels_than_inputs_is_refused_before_copying(pretrained):
    ckpt, _ = pretrained
    target = net(small(2), 8)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(GenesisUserError, match=r"2 input channels, fewer than the 3 image channels"):
        transfer_weights(target, ckpt, image_channels=3)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    with pytest.raises(ValueError):
        transfer_weights(target, ckpt, image_channels=0)


def test_image_channel_count_as_nnunet_counts_it():
    assert image_channel_count({"channel_names": {"0": "T2", "1": "ADC"}, "labels": {}}) == 2
    assert image_channel_count({"modality": {"0": "CT"}}) == 1  # older dataset.json files
    assert cascade_image_channels({"channel_names": {"0": "MRI"}}, is_cascaded=True) == 1
    assert cascade_image_channels({"channel_names": {"0": "MRI"}}, is_cascaded=False) is None
