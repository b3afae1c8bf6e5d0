"""Load a Genesis checkpoint into the network nnU-Net planned for a dataset.

The checkpoint may come from the same plans (every tensor but the head fits) or from
other plans, typically the universal 6-stage Genesis network on a dataset whose plan has
fewer stages, other kernel sizes, strides or input channels. The rules (docs/weight_transfer.md):

* encoder stages are aligned from the top (stage i -> stage i); decoder stages by the
  resolution level they output (skip level), transposed convs included;
* a conv kernel of size k on an axis becomes 1 by summing over that axis (keeps the response
  to inputs that are constant along it), 1 -> k by zero-padding (the same function);
* a transposed conv whose kernel (= stride) is 2 on an axis becomes 1 by averaging the taps
  (the pretrained upsampling followed by average pooling), 1 -> s by replicating the tap
  (the pretrained map followed by nearest-neighbour upsampling);
* a different number of input channels: the mean over the pretrained input channels,
  replicated and scaled by source/target channels (an input whose channels are identical
  gives the pretrained response);
* the segmentation/restoration head (``decoder.seg_layers``) is never transferred;
* anything else (feature counts, networks of another family) is a GenesisUserError naming
  the first key and both shapes. Nothing is copied unless the whole plan succeeds.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from nnunet_genesis.checkpoint import GenesisCheckpoint
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.outputs import atomic_write_text

HEAD_PREFIX = "decoder.seg_layers."
_FAMILIES = ("PlainConvUNet", "ResidualEncoderUNet")

_ENC_RE = re.compile(r"^encoder\.stages\.(\d+)\.")
_STEM_RE = re.compile(r"^encoder\.stem\.")
_DEC_RE = re.compile(r"^decoder\.(stages|transpconvs)\.(\d+)\.(.*)$")


@dataclass
class TensorTransfer:
    """What happened to one tensor of the target network."""

    target_key: str
    source_key: str | None
    status: str  # "loaded" | "adapted" | "skipped"
    reason: str
    target_shape: list[int]
    source_shape: list[int] | None
    part: str  # "encoder" | "decoder" | "head"


@dataclass
class TransferReport:
    """Per-tensor account of a transfer, printed at trainer start and saved as JSON."""

    entries: list[TensorTransfer]
    checkpoint: str
    unmatched_source_stages: list[str] = field(default_factory=list)
    unmatched_target_stages: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def _fraction(self, part: str) -> float:
        total = done = 0
        for e in self.entries:
            if e.part != part:
                continue
            n = _numel(e.target_shape)
            total += n
            if e.status in ("loaded", "adapted"):
                done += n
        return done / total if total else 0.0

    @property
    def encoder_fraction(self) -> float:
        """Share of the target encoder's parameters (numel) loaded or adapted."""
        return self._fraction("encoder")

    @property
    def decoder_fraction(self) -> float:
        """Share of the target decoder's parameters (numel, head excluded) loaded or adapted."""
        return self._fraction("decoder")

    def summary_text(self) -> str:
        """Human-readable report: shares per part, adapted tensors, skips grouped by reason."""
        lines = [f"Genesis weight transfer from {self.checkpoint}"]
        for part in ("encoder", "decoder"):
            es = [e for e in self.entries if e.part == part]
            total = sum(_numel(e.target_shape) for e in es)
            counts = {s: sum(e.status == s for e in es) for s in ("loaded", "adapted", "skipped")}
            lines.append(
                f"  {part}: {100 * self._fraction(part):5.1f}% of {total:,} parameters transferred "
                f"({counts['loaded']} tensors loaded, {counts['adapted']} adapted, "
                f"{counts['skipped']} skipped)"
            )
        head = [e for e in self.entries if e.part == "head"]
        lines.append(f"  head: {len(head)} tensors ({sum(_numel(e.target_shape) for e in head):,} "
                     f"parameters) kept as initialised, never transferred")
        lines.append("  pretrained stages without partner: "
                     + (", ".join(self.unmatched_source_stages) or "none"))
        lines.append("  network stages without partner: "
                     + (", ".join(self.unmatched_target_stages) or "none"))
        adapted = [e for e in self.entries if e.status == "adapted"]
        if adapted:
            lines.append("  adapted:")
            for e in adapted:
                lines.append(f"    {e.target_key} {e.target_shape} <- {e.source_key} "
                             f"{e.source_shape}: {e.reason}")
        by_reason: dict[str, list[TensorTransfer]] = {}
        for e in self.entries:
            if e.status == "skipped" and e.part != "head":
                by_reason.setdefault(e.reason, []).append(e)
        if by_reason:
            lines.append("  skipped:")
            for reason, es in by_reason.items():
                keys = ", ".join(e.target_key for e in es[:3]) + (", ..." if len(es) > 3 else "")
                lines.append(f"    {len(es)} tensors ({reason}): {keys}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "encoder_fraction": self.encoder_fraction,
            "decoder_fraction": self.decoder_fraction,
            "unmatched_source_stages": list(self.unmatched_source_stages),
            "unmatched_target_stages": list(self.unmatched_target_stages),
            "notes": list(self.notes),
            "entries": [asdict(e) for e in self.entries],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransferReport":
        """Inverse of to_dict (the fractions are derived, so they are not read back)."""
        return cls(
            entries=[TensorTransfer(**e) for e in d["entries"]],
            checkpoint=d["checkpoint"],
            unmatched_source_stages=list(d.get("unmatched_source_stages", [])),
            unmatched_target_stages=list(d.get("unmatched_target_stages", [])),
            notes=list(d.get("notes", [])),
        )

    def save_json(self, path: str | os.PathLike) -> None:
        """Write to_dict() as JSON via a temp file and rename (never half-written)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2))


def _numel(shape: list[int] | None) -> int:
    n = 1
    for s in shape or []:
        n *= int(s)
    return n


def unwrap_network(network: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP/DataParallel and torch.compile wrappers."""
    while True:
        if isinstance(network, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            network = network.module
        elif isinstance(getattr(network, "_orig_mod", None), torch.nn.Module):
            network = network._orig_mod
        else:
            return network


def _family_of_network(net: torch.nn.Module) -> str:
    for cls in type(net).__mro__:
        if cls.__name__ in _FAMILIES:
            return cls.__name__
    raise GenesisUserError(
        f"Weight transfer supports nnU-Net's PlainConvUNet (default plans) and "
        f"ResidualEncoderUNet (ResEnc presets); the plan builds {type(net).__name__}."
    )


def _family_of_source(ckpt: GenesisCheckpoint, weights: dict[str, torch.Tensor]) -> str:
    name = str(ckpt.metadata.get("network_class", "")).rsplit(".", 1)[-1]
    if name:
        if name not in _FAMILIES:
            raise GenesisUserError(
                f"Checkpoint {ckpt.path} holds a {name}; weight transfer supports only "
                f"PlainConvUNet and ResidualEncoderUNet checkpoints."
            )
        return name
    return "ResidualEncoderUNet" if any(_STEM_RE.match(k) for k in weights) else "PlainConvUNet"


def _n_encoder_stages(keys) -> int:
    idx = [int(m.group(1)) for k in keys if (m := _ENC_RE.match(k))]
    return max(idx) + 1 if idx else 0


class _Unmappable(Exception):
    """A tensor pair the rules cannot map (turned into a GenesisUserError by the caller)."""


def _reduce_conv_axis(w: torch.Tensor, axis: int, k_src: int, k_tgt: int) -> tuple[torch.Tensor, str]:
    if k_tgt == 1:
        return w.sum(dim=axis, keepdim=True), f"kernel {k_src}->1 on spatial axis {axis - 2} (taps summed)"
    if k_tgt > k_src and (k_tgt - k_src) % 2 == 0:
        pad = (k_tgt - k_src) // 2
        shape = list(w.shape)
        shape[axis] = pad
        z = w.new_zeros(shape)
        return torch.cat([z, w, z], dim=axis), f"kernel {k_src}->{k_tgt} on spatial axis {axis - 2} (zero-padded)"
    raise _Unmappable(f"a conv kernel size {k_src}->{k_tgt} on spatial axis {axis - 2} has no rule")


def _reduce_transp_axis(w: torch.Tensor, axis: int, k_src: int, k_tgt: int) -> tuple[torch.Tensor, str]:
    if k_tgt == 1:
        return w.mean(dim=axis, keepdim=True), \
            f"transposed-conv stride {k_src}->1 on spatial axis {axis - 2} (taps averaged)"
    if k_src == 1:
        return w.repeat_interleave(k_tgt, dim=axis), \
            f"transposed-conv stride 1->{k_tgt} on spatial axis {axis - 2} (tap replicated)"
    raise _Unmappable(f"a transposed-conv stride {k_src}->{k_tgt} on spatial axis {axis - 2} has no rule")


def _adapt_tensor(src: torch.Tensor, target_shape: tuple[int, ...], transposed: bool,
                  input_projection: bool) -> tuple[torch.Tensor, list[str]]:
    """Map one source tensor onto the target shape; returns the tensor and the rules applied."""
    if tuple(src.shape) == tuple(target_shape):
        return src, []
    if src.dim() != len(target_shape):
        raise _Unmappable("the tensors have different ranks, e.g. a 2D and a 3D network")
    if src.dim() < 3:
        raise _Unmappable("the feature counts differ")
    w = src
    reasons: list[str] = []
    # channel dims: conv weight (out, in, *k); transposed conv weight (in, out, *k)
    if w.shape[0] != target_shape[0]:
        raise _Unmappable("the feature counts differ")
    if w.shape[1] != target_shape[1]:
        if not input_projection:
            raise _Unmappable("the feature counts differ")
        c_src, c_tgt = w.shape[1], target_shape[1]
        w = w.mean(dim=1, keepdim=True).repeat_interleave(c_tgt, dim=1) * (c_src / c_tgt)
        reasons.append(f"input channels {c_src}->{c_tgt} (mean over channels, replicated, "
                       f"scaled by {c_src}/{c_tgt})")
    rule: Callable = _reduce_transp_axis if transposed else _reduce_conv_axis
    for axis in range(2, w.dim()):
        k_src, k_tgt = w.shape[axis], target_shape[axis]
        if k_src != k_tgt:
            w, why = rule(w, axis, k_src, k_tgt)
            reasons.append(why)
    return w, reasons


def _target_tensors(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer once, under its first name (aliases such as
    ``decoder.encoder.*`` and ``*.all_modules.*`` share these tensors)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in net.named_parameters():
        out[k] = v
    for k, v in net.named_buffers():
        out.setdefault(k, v)
    return out


def _in_projection_key(net: torch.nn.Module, keys: list[str]) -> str | None:
    for prefix in getattr(net, "keys_to_in_proj", ()) or ():
        if f"{prefix}.weight" in keys:
            return f"{prefix}.weight"
    return next((k for k in keys if k.startswith("encoder.") and k.endswith(".weight")), None)


def _refuse_partial_encoder(entries: list[TensorTransfer], ckpt_name: str, allow_partial: bool) -> str | None:
    """The encoder must transfer fully (else most of it would silently start random), unless
    ``allow_partial``; none of it is never enough. Returns the note for an allowed partial one."""
    report = TransferReport(entries, ckpt_name)
    share = report.encoder_fraction
    if share >= 1.0:
        return None
    first = next((e for e in entries if e.part == "encoder" and e.status == "skipped"), None)
    example = f" (e.g. {first.target_key}: {first.reason})" if first else ""
    if share > 0 and allow_partial:
        return f"partial transfer allowed: {100 * share:.1f}% of the encoder's parameters{example}"
    raise GenesisUserError(
        f"Checkpoint {ckpt_name} would transfer only {100 * share:.1f}% of this network's encoder "
        f"parameters{example}; the rest would start random while the model claims a Genesis start. "
        + ("Nothing of the encoder matches: this checkpoint does not belong to this kind of network."
           if share == 0 else
           "Pretrain with this dataset's plans (nnunet-genesis pretrain --plans-from ...), or accept a "
           "partial transfer explicitly with 'nnunet-genesis attach --allow-partial-transfer'."))


def transfer_weights(network: torch.nn.Module, checkpoint: GenesisCheckpoint,
                     include_decoder: bool = True, allow_partial: bool = False) -> TransferReport:
    """Copy the checkpoint's weights into ``network`` in place (head excluded) and report.

    Raises GenesisUserError, before anything is copied, when a tensor cannot be mapped or the
    encoder would not transfer fully (``allow_partial``: any share above 0 is accepted and noted).
    """
    net = unwrap_network(network)
    target_family = _family_of_network(net)
    source = checkpoint.network_weights
    source_family = _family_of_source(checkpoint, source)
    ckpt_name = str(checkpoint.path) if checkpoint.path is not None else "<in-memory checkpoint>"
    if source_family != target_family:
        raise GenesisUserError(
            f"Checkpoint {ckpt_name} holds a {source_family} but the plan builds a "
            f"{target_family}; weights transfer only between networks of the same family. "
            f"Pretrain with the same plans (nnunet-genesis pretrain --plans-from ...)."
        )
    targets = _target_tensors(net)
    keys = list(targets)
    n_tgt = len(net.encoder.stages)
    n_src = _n_encoder_stages(source)
    if n_src == 0:
        raise GenesisUserError(
            f"Checkpoint {ckpt_name} has no 'encoder.stages.*' tensors: it is not the weights "
            f"of an nnU-Net v2 {target_family}."
        )
    offset = n_src - n_tgt  # source decoder index = target decoder index + offset
    in_proj = _in_projection_key(net, keys)

    entries: list[TensorTransfer] = []
    planned: list[tuple[torch.Tensor, torch.Tensor]] = []
    used_source: set[str] = set()
    for key in keys:
        tshape = list(targets[key].shape)
        part = "head" if key.startswith(HEAD_PREFIX) else \
            ("encoder" if key.startswith("encoder.") else "decoder")
        if part == "head":
            entries.append(TensorTransfer(key, None, "skipped",
                                          "segmentation/restoration head, never transferred",
                                          tshape, None, part))
            continue
        if part == "decoder" and not include_decoder:
            entries.append(TensorTransfer(key, None, "skipped",
                                          "decoder not transferred (encoder-only fine-tuning)",
                                          tshape, None, part))
            continue
        skey: str | None = key
        m = _DEC_RE.match(key)
        if m:
            j_src = int(m.group(2)) + offset
            skey = f"decoder.{m.group(1)}.{j_src}.{m.group(3)}" if j_src >= 0 else None
        if skey is None or skey not in source:
            why = ("no pretrained stage at this resolution level" if skey is None
                   else "no counterpart in the checkpoint")
            entries.append(TensorTransfer(key, None, "skipped", why, tshape, None, part))
            continue
        src = source[skey]
        try:
            value, reasons = _adapt_tensor(src, tuple(tshape), transposed=key.startswith("decoder.transpconvs."),
                                           input_projection=(key == in_proj))
        except _Unmappable as e:
            raise GenesisUserError(
                f"Checkpoint {ckpt_name} cannot be transferred into this network: the first "
                f"tensor that does not fit is {key} with shape {tshape}, whose checkpoint "
                f"counterpart {skey} has shape {list(src.shape)} ({e}). Stages are aligned "
                f"from the top and by skip level; only kernel sizes, transposed-conv strides "
                f"and the number of input channels are adapted, so the feature counts per "
                f"stage must match. Pretrain with this dataset's plans "
                f"(nnunet-genesis pretrain --plans-from ...) or use a matching checkpoint."
            ) from None
        used_source.add(skey)
        planned.append((targets[key], value))
        entries.append(TensorTransfer(key, skey, "adapted" if reasons else "loaded",
                                      "; ".join(reasons) if reasons else "same shape",
                                      tshape, list(src.shape), part))

    partial_note = _refuse_partial_encoder(entries, ckpt_name, allow_partial)
    with torch.no_grad():
        for dst, value in planned:
            dst.copy_(value.to(device=dst.device, dtype=dst.dtype))

    n_dec_src, n_dec_tgt = max(n_src - 1, 0), max(n_tgt - 1, 0)
    unmatched_source = [f"encoder.stages.{s}" for s in range(n_tgt, n_src)]
    unmatched_source += [f"decoder.stages.{j} (level {n_src - 2 - j})" for j in range(0, offset)
                         if j < n_dec_src]
    unmatched_target = [f"encoder.stages.{s}" for s in range(n_src, n_tgt)]
    unmatched_target += [f"decoder.stages.{j} (level {n_tgt - 2 - j})" for j in range(0, -offset)
                         if j < n_dec_tgt]
    notes = [f"checkpoint network: {source_family} with {n_src} stages; this network: "
             f"{target_family} with {n_tgt} stages"]
    matched_prefixes = ("encoder.stem.",) + tuple(f"encoder.stages.{s}." for s in range(min(n_src, n_tgt)))
    if include_decoder:
        matched_prefixes += tuple(f"decoder.{kind}.{j}." for kind in ("stages", "transpconvs")
                                  for j in range(max(offset, 0), n_dec_src))
    unused = [k for k in source if k.startswith(matched_prefixes) and k not in used_source
              and ".all_modules." not in k]
    if unused:
        notes.append(f"{len(unused)} checkpoint tensors in matched stages have no counterpart in "
                     f"this network (e.g. {unused[0]})")
    if partial_note:
        notes.append(partial_note)
    return TransferReport(entries, ckpt_name, unmatched_source, unmatched_target, notes)
