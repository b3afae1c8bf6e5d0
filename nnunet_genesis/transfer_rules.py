"""How a pretrained tensor is adapted to a target tensor of another shape: the rule table.

A checkpoint pretrained with one plan can initialise a network of another plan of the same
family (stages and feature counts per stage equal): kernel sizes, transposed-conv strides and
the number of input channels may differ. Each difference is handled by the first rule of its
table that applies; a new adaptation is one more ``AxisRule`` or ``ChannelRule`` entry here.
Why each rule keeps the pretrained function: docs/weight_transfer.md.
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


def adapt_tensor(src: torch.Tensor, target_shape: tuple[int, ...], transposed: bool,
                 input_projection: bool) -> tuple[torch.Tensor, list[str]]:
    """Map one source tensor onto the target shape; returns the tensor and the rules applied.

    Weights are (out, in, *kernel) for convs and (in, out, *kernel) for transposed convs; only
    dim 1 of the input projection and the spatial axes may differ.
    """
    if tuple(src.shape) == tuple(target_shape):
        return src, []
    if src.dim() != len(target_shape):
        raise Unmappable("the tensors have different ranks, e.g. a 2D and a 3D network")
    if src.dim() < 3 or src.shape[0] != target_shape[0]:
        raise Unmappable("the feature counts differ")
    w, reasons = src, []
    if w.shape[1] != target_shape[1]:
        c_src, c_tgt = w.shape[1], target_shape[1]
        rule = next((r for r in CHANNEL_RULES if r.applies(c_src, c_tgt)), None) if input_projection else None
        if rule is None:
            raise Unmappable("the feature counts differ")
        w = rule.adapt(w, c_src, c_tgt)
        reasons.append(rule.describe.format(c_src=c_src, c_tgt=c_tgt))
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
