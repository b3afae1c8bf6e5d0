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
* a cascade (``3d_cascade_fullres``, whose input is the image followed by the one-hot
  segmentation of the previous stage): with ``image_channels`` given, the image channels are
  adapted as above as if they were the only input, the segmentation channels start at zero;
* the segmentation/restoration head (``decoder.seg_layers``) is never transferred;
* anything else (feature counts, networks of another family) is a GenesisUserError naming
  the first key and both shapes. Nothing is copied unless the whole plan succeeds.

Where the encoder and its stem are comes from the architecture itself (dynamic-network-
architectures' ``key_to_encoder``, ``key_to_stem``, ``keys_to_in_proj``); the shape rules are
the table in ``transfer_rules``, the report is ``transfer_report``.
"""

from __future__ import annotations

import re

import torch

from nnunet_genesis.checkpoint import GenesisCheckpoint
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.safe_text import printable
from nnunet_genesis.network import FAMILY_DESCRIPTIONS, network_family, unwrap_network
from nnunet_genesis.transfer_report import TensorTransfer, TransferReport
from nnunet_genesis.transfer_rules import Unmappable, adapt_tensor, describe_extra, extra_input_rule

HEAD_PREFIX = "decoder.seg_layers."
_DEC_RE = re.compile(r"^decoder\.(stages|transpconvs)\.(\d+)\.(.*)$")


def _encoder_keys(net: torch.nn.Module) -> tuple[str, str]:
    """(key_to_encoder, key_to_stem) as the architecture declares them."""
    encoder, stem = getattr(net, "key_to_encoder", None), getattr(net, "key_to_stem", None)
    if not (isinstance(encoder, str) and isinstance(stem, str) and hasattr(net, "decoder")):
        raise GenesisUserError(
            f"Weight transfer supports the U-Nets of dynamic-network-architectures that name their encoder "
            f"and stem (key_to_encoder, key_to_stem), such as nnU-Net's PlainConvUNet (default plans) and "
            f"ResidualEncoderUNet (ResEnc presets); the plan builds {type(net).__name__}.")
    return encoder, stem


def _separate_stem(encoder: str, stem: str) -> bool:
    """Whether the stem is a module of its own (ResEnc) rather than the first encoder stage."""
    return stem != f"{encoder}.0"


def _n_encoder_stages(keys, encoder: str) -> int:
    stage = re.compile(rf"^{re.escape(encoder)}\.(\d+)\.")
    idx = [int(m.group(1)) for k in keys if (m := stage.match(k))]
    return max(idx) + 1 if idx else 0


def _target_tensors(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer once, under its first name (aliases such as
    ``decoder.encoder.*`` and ``*.all_modules.*`` share these tensors)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in net.named_parameters():
        out[k] = v
    for k, v in net.named_buffers():
        out.setdefault(k, v)
    return out


# The plans that build a network of the checkpoint's family, by family (the refusal of another family names it).
FITTING_PLANNER = {
    "ResidualEncoderUNet": "plan the dataset with a ResEnc planner (nnUNetv2_plan_and_preprocess -d DATASET -pl "
                           "nnUNetPlannerResEncL, or M / XL) and attach with -p nnUNetResEncUNetLPlans",
    "PlainConvUNet": "use nnU-Net's default plans (nnUNetv2_plan_and_preprocess -d DATASET, ExperimentPlanner, "
                     "plans nnUNetPlans; attach -p nnUNetPlans), or pretrain with this dataset's plans "
                     "(nnunet-genesis pretrain --plans-from ...)",
    "Primus": "no CNN plan fits a transformer's weights and nnU-Net 2.8.1 plans no Primus: fine-tune it with "
              "nnU-Net master's nnssl route (nnUNetv2_preprocess_like_nnssl, -tr PretrainedTrainer_Primusx)",
}


def _refuse_other_family(net: torch.nn.Module, encoder: str, stem: str, checkpoint: GenesisCheckpoint,
                         ckpt_name: str) -> None:
    """Weights transfer within a family only: a transformer's never into a U-Net; a ResEnc U-Net's (a stem of
    its own) never into a PlainConvUNet's (the first encoder stage as stem), nor the reverse."""
    named = checkpoint.metadata.get("network_class")
    source_stem = any(k.startswith("encoder.stem.") for k in checkpoint.network_weights)
    source = network_family(named) if isinstance(named, str) and named else \
        ("ResidualEncoderUNet" if source_stem else "PlainConvUNet")
    if source != "Primus" and source_stem == _separate_stem(encoder, stem):
        return
    target = type(net).__name__
    target_family = "ResidualEncoderUNet" if _separate_stem(encoder, stem) else "PlainConvUNet"
    source_family = source if source in FITTING_PLANNER else ("ResidualEncoderUNet" if source_stem
                                                              else "PlainConvUNet")
    raise GenesisUserError(
        f"Checkpoint {ckpt_name} holds a {source} ({FAMILY_DESCRIPTIONS.get(source_family, source)}) but the plan "
        f"builds a {target} ({FAMILY_DESCRIPTIONS[target_family]}); weights transfer only between networks of "
        f"the same family. To fine-tune from this checkpoint, {FITTING_PLANNER[source_family]}.")


def in_projection_key(net: torch.nn.Module, keys: list[str]) -> str | None:
    """The weight of the network's first conv (the one whose shape depends on the input channels)."""
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


def image_channel_count(dataset_json: dict) -> int:
    """The number of image channels of a dataset, counted as nnU-Net counts them."""
    return len(dataset_json["modality"] if "modality" in dataset_json else dataset_json["channel_names"])


def cascade_image_channels(dataset_json: dict, is_cascaded: bool) -> int | None:
    """``image_channels`` for ``transfer_weights``: the dataset's image channels for a cascaded
    configuration (its further input channels are the previous stage's segmentation), else None."""
    return image_channel_count(dataset_json) if is_cascaded else None


def transfer_weights(network: torch.nn.Module, checkpoint: GenesisCheckpoint,
                     include_decoder: bool = True, allow_partial: bool = False,
                     image_channels: int | None = None) -> TransferReport:
    """Copy the checkpoint's weights into ``network`` in place (head excluded) and report.

    ``image_channels``: how many of the network's input channels are image channels, the first
    ones (None: all). nnU-Net's cascade appends the previous stage's one-hot segmentation after
    them; those channels start at zero (``transfer_rules.EXTRA_INPUT_RULES``) and the image
    channels get the pretrained input projection as for a network with only the image channels.

    Raises GenesisUserError, before anything is copied, when a tensor cannot be mapped or the
    encoder would not transfer fully (``allow_partial``: any share above 0 is accepted and noted).
    """
    net = unwrap_network(network)
    encoder, stem = _encoder_keys(net)
    target_family = type(net).__name__
    source = checkpoint.network_weights
    source_family = str(checkpoint.metadata.get("network_class", "")).rsplit(".", 1)[-1] or "network"
    ckpt_name = str(checkpoint.path) if checkpoint.path is not None else "<in-memory checkpoint>"
    _refuse_other_family(net, encoder, stem, checkpoint, ckpt_name)
    targets = _target_tensors(net)
    keys = list(targets)
    n_tgt = _n_encoder_stages(keys, encoder)
    n_src = _n_encoder_stages(source, encoder)
    if n_src == 0:
        raise GenesisUserError(
            f"Checkpoint {ckpt_name} has no '{encoder}.*' tensors: it is not the weights "
            f"of an nnU-Net v2 {target_family}."
        )
    offset = n_src - n_tgt  # source decoder index = target decoder index + offset
    in_proj = in_projection_key(net, keys)

    entries: list[TensorTransfer] = []
    planned: list[tuple[torch.Tensor, torch.Tensor]] = []
    used_source: set[str] = set()
    used_targets: set[str] = set()
    for key in keys:
        tshape = list(targets[key].shape)
        part = "head" if key.startswith(HEAD_PREFIX) else \
            ("encoder" if key.startswith((f"{encoder}.", f"{stem}.")) else "decoder")
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
            value, reasons = adapt_tensor(src, tuple(tshape), transposed=key.startswith("decoder.transpconvs."),
                                          input_projection=(key == in_proj),
                                          image_channels=image_channels if key == in_proj else None)
        except Unmappable as e:
            raise GenesisUserError(
                f"Checkpoint {ckpt_name} cannot be transferred into this network: the first "
                f"tensor that does not fit is {key} with shape {tshape}, whose checkpoint "
                f"counterpart {printable(skey)} has shape {list(src.shape)} ({e}). Stages are aligned "
                f"from the top and by skip level; only kernel sizes, transposed-conv strides "
                f"and the number of input channels are adapted, so the feature counts per "
                f"stage must match. Pretrain with this dataset's plans "
                f"(nnunet-genesis pretrain --plans-from ...) or use a matching checkpoint."
            ) from None
        used_source.add(skey)
        used_targets.add(key)
        planned.append((targets[key], value))
        entries.append(TensorTransfer(key, skey, "adapted" if reasons else "loaded",
                                      "; ".join(reasons) if reasons else "same shape",
                                      tshape, list(src.shape), part))

    partial_note = _refuse_partial_encoder(entries, ckpt_name, allow_partial)
    with torch.no_grad():
        for dst, value in planned:
            dst.copy_(value.to(device=dst.device, dtype=dst.dtype))

    n_dec_src, n_dec_tgt = max(n_src - 1, 0), max(n_tgt - 1, 0)
    unmatched_source = [f"{encoder}.{s}" for s in range(n_tgt, n_src)]
    unmatched_source += [f"decoder.stages.{j} (level {n_src - 2 - j})" for j in range(0, offset)
                         if j < n_dec_src]
    unmatched_target = [f"{encoder}.{s}" for s in range(n_src, n_tgt)]
    unmatched_target += [f"decoder.stages.{j} (level {n_tgt - 2 - j})" for j in range(0, -offset)
                         if j < n_dec_tgt]
    notes = [f"checkpoint network: {source_family} with {n_src} stages; this network: "
             f"{target_family} with {n_tgt} stages"]
    matched_prefixes = (f"{stem}.",) + tuple(f"{encoder}.{s}." for s in range(min(n_src, n_tgt)))
    if include_decoder:
        matched_prefixes += tuple(f"decoder.{kind}.{j}." for kind in ("stages", "transpconvs")
                                  for j in range(max(offset, 0), n_dec_src))
    unused = [k for k in source if k.startswith(matched_prefixes) and k not in used_source
              and ".all_modules." not in k]
    if unused:
        notes.append(f"{len(unused)} checkpoint tensors in matched stages have no counterpart in "
                     f"this network (e.g. {unused[0]})")
    if image_channels is not None and in_proj in used_targets:
        c_tgt = targets[in_proj].shape[1]
        extra = extra_input_rule(image_channels, c_tgt)
        if extra is not None:
            image = "input channel 0" if image_channels == 1 else f"input channels 0-{image_channels - 1}"
            notes.append(f"{describe_extra(extra, image_channels, c_tgt)}; {image} (image) as for a "
                         f"{image_channels}-channel network")
    if partial_note:
        notes.append(partial_note)
    kind = checkpoint.metadata.get("kind")
    return TransferReport(entries, ckpt_name, unmatched_source, unmatched_target, notes,
                          kind if isinstance(kind, str) else None,
                          str(checkpoint.metadata.get("description") or "") or None)
