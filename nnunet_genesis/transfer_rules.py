"""How a pretrained tensor is adapted to a target tensor of another shape: the rule table.

A checkpoint pretrained with one plan can initialise a network of another plan of the same
family (stages and feature counts per stage equal): kernel sizes, transposed-conv strides and
the number of input channels may differ. Each difference is handled by the first rule of its
table that applies; a new adaptation is one more ``AxisRule``, ``ChannelRule`` or
``ExtraInputRule`` entry here. Why each rule keeps the pretrained function: docs/weight_transfer.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


class Unmappable(Exception):
    """A tensor pair no rule maps (the caller turns it into a GenesisUserError naming the tensors)."""


@dataclass(frozen=True)
class AxisRule:
    """Adapts one spatial axis of a conv (``transposed=False``) or transposed-conv weight."""

    transposed: bool
    applies: Callable[[int, int], bool]  # (k_src, k_tgt) -> whether this rule maps them
    adapt: Callable[[torch.Tensor, int, int, int], torch.Tensor]  # (w, axis, k_src, k_tgt) -> w
    describe: str  # formatted with k_src, k_tgt, axis (the spatial axis, 0-based)


def _zero_pad(w: torch.Tensor, axis: int, k_src: int, k_tgt: int) -> torch.Tensor:
    shape = list(w.shape)
    shape[axis] = (k_tgt - k_src) // 2
    z = w.new_zeros(shape)
    return torch.cat([z, w, z], dim=axis)


AXIS_RULES: tuple[AxisRule, ...] = (
    # nnU-Net master averages k -> 1 kernels; the sum keeps the response to inputs that are
    # constant along the axis (docs/weight_transfer.md).
    AxisRule(False, lambda ks, kt: kt == 1, lambda w, ax, ks, kt: w.sum(dim=ax, keepdim=True),
             "kernel {k_src}->1 on spatial axis {axis} (taps summed)"),
    AxisRule(False, lambda ks, kt: kt > ks and (kt - ks) % 2 == 0, _zero_pad,
             "kernel {k_src}->{k_tgt} on spatial axis {axis} (zero-padded)"),
    AxisRule(True, lambda ks, kt: kt == 1, lambda w, ax, ks, kt: w.mean(dim=ax, keepdim=True),
             "transposed-conv stride {k_src}->1 on spatial axis {axis} (taps averaged)"),
    AxisRule(True, lambda ks, kt: ks == 1, lambda w, ax, ks, kt: w.repeat_interleave(kt, dim=ax),
             "transposed-conv stride 1->{k_tgt} on spatial axis {axis} (tap replicated)"),
)


@dataclass(frozen=True)
class ChannelRule:
    """Adapts the input-channel dimension (dim 1) of the network's input projection."""

    applies: Callable[[int, int], bool]  # (c_src, c_tgt)
    adapt: Callable[[torch.Tensor, int, int], torch.Tensor]  # (w, c_src, c_tgt) -> w
    describe: str  # formatted with c_src, c_tgt


CHANNEL_RULES: tuple[ChannelRule, ...] = (
    # an input whose channels are identical gives the pretrained response
    ChannelRule(lambda cs, ct: True,
                lambda w, cs, ct: w.mean(dim=1, keepdim=True).repeat_interleave(ct, dim=1) * (cs / ct),
                "input channels {c_src}->{c_tgt} (mean over channels, replicated, scaled by {c_src}/{c_tgt})"),
)


@dataclass(frozen=True)
class ExtraInputRule:
    """Starts the input channels of the target that are not image channels (none of them was
    seen in pretraining); they come after the image channels, as nnU-Net appends them."""

    applies: Callable[[int, int], bool]  # (image_channels, c_tgt)
    adapt: Callable[[torch.Tensor, int], torch.Tensor]  # (w over the image channels, c_tgt) -> w
    describe: str  # formatted with channels ("channel 2" or "channels 2-3", 0-based), n_image, c_tgt


def _zero_fill(w: torch.Tensor, c_tgt: int) -> torch.Tensor:
    shape = list(w.shape)
    shape[1] = c_tgt - w.shape[1]
    return torch.cat([w, w.new_zeros(shape)], dim=1)


EXTRA_INPUT_RULES: tuple[ExtraInputRule, ...] = (
    # 3d_cascade_fullres: the one-hot segmentation of 3d_lowres, appended after the image
    # channels. Zero weights keep the response to the image exactly the pretrained one; the
    # gradient of those weights is not zero, so fine-tuning learns how to use the segmentation.
    ExtraInputRule(lambda ci, ct: ct > ci, _zero_fill,
                   "input {channels}: previous-stage segmentation (cascade), zero start"),
)


def describe_extra(rule: ExtraInputRule, n_image: int, c_tgt: int) -> str:
    """The rule's ``describe`` for the target channels n_image .. c_tgt - 1 (0-based)."""
    channels = f"channel {n_image}" if c_tgt - n_image == 1 else f"channels {n_image}-{c_tgt - 1}"
    return rule.describe.format(channels=channels, n_image=n_image, c_tgt=c_tgt)


def extra_input_rule(image_channels: int | None, c_tgt: int) -> ExtraInputRule | None:
    """The rule for the target's channels after ``image_channels``; None when there are none.

    Raises Unmappable when the target has fewer input channels than image channels.
    """
    if image_channels is None or image_channels == c_tgt:
        return None
    if image_channels < 1:
        raise ValueError(f"image_channels must be at least 1, got {image_channels}")
    if image_channels > c_tgt:
        raise Unmappable(f"the network has {c_tgt} input channels, fewer than the {image_channels} "
                         f"image channels of the dataset")
    rule = next((r for r in EXTRA_INPUT_RULES if r.applies(image_channels, c_tgt)), None)
    if rule is None:
        raise Unmappable(f"no rule starts input channels {image_channels}-{c_tgt - 1}")
    return rule


def adapt_tensor(src: torch.Tensor, target_shape: tuple[int, ...], transposed: bool,
                 input_projection: bool, image_channels: int | None = None) -> tuple[torch.Tensor, list[str]]:
    """Map one source tensor onto the target shape; returns the tensor and the rules applied.

    Weights are (out, in, *kernel) for convs and (in, out, *kernel) for transposed convs; only
    dim 1 of the input projection and the spatial axes may differ. ``image_channels``: how many
    of the input projection's target channels are image channels (None: all of them). The source
    channels are adapted onto those by ``CHANNEL_RULES``, as for a target with only the image
    channels; the channels after them by ``EXTRA_INPUT_RULES`` (a cascade's previous-stage
    segmentation).
    """
    extra = extra_input_rule(image_channels, target_shape[1]) if input_projection and len(target_shape) > 1 else None
    if extra is None and tuple(src.shape) == tuple(target_shape):
        return src, []
    if src.dim() != len(target_shape):
        raise Unmappable("the tensors have different ranks, e.g. a 2D and a 3D network")
    if src.dim() < 3 or src.shape[0] != target_shape[0]:
        raise Unmappable("the feature counts differ")
    w, reasons = src, []
    c_src, c_tgt = w.shape[1], target_shape[1]
    c_img = image_channels if extra is not None else c_tgt
    if c_src != c_img:
        rule = next((r for r in CHANNEL_RULES if r.applies(c_src, c_img)), None) if input_projection else None
        if rule is None:
            raise Unmappable("the feature counts differ")
        w = rule.adapt(w, c_src, c_img)
        reasons.append(rule.describe.format(c_src=c_src, c_tgt=c_img))
    if extra is not None:
        w = extra.adapt(w, c_tgt)
        reasons.append(describe_extra(extra, c_img, c_tgt))
    for axis in range(2, w.dim()):
        k_src, k_tgt = w.shape[axis], target_shape[axis]
        if k_src == k_tgt:
            continue
        rule = next((r for r in AXIS_RULES if r.transposed == transposed and r.applies(k_src, k_tgt)), None)
        if rule is None:
            kind = "transposed-conv stride" if transposed else "conv kernel size"
            raise Unmappable(f"a {kind} {k_src}->{k_tgt} on spatial axis {axis - 2} has no rule")
        w = rule.adapt(w, axis, k_src, k_tgt)
        reasons.append(rule.describe.format(k_src=k_src, k_tgt=k_tgt, axis=axis - 2))
    return w, reasons
