"""Build the network a Genesis checkpoint describes, with nnU-Net's own constructor.

A checkpoint's metadata carries the same architecture block nnU-Net writes into plans
(``network_class_name``, ``arch_kwargs``, ``_kw_requires_import``) under the names
``network_class``, ``network_kwargs`` and ``network_kwargs_requires_import``, plus the
channel counts. ``build_network`` hands them to
``nnunetv2.utilities.get_network_from_plans.get_network_from_plans`` so the network is
exactly the one ``nnUNetv2_train`` would build from the same plans.

Checkpoint metadata is untrusted: every dotted name is resolved and checked to be a
``torch.nn.Module`` subclass from a known package before anything is constructed.
"""

from __future__ import annotations

import copy
import pydoc
from typing import Any, Mapping

import torch

from nnunet_genesis.errors import GenesisUserError

PLAIN_CONV_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
RESIDUAL_ENCODER_UNET = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"

# Packages whose classes a checkpoint may name (the network class and the *_op/nonlin kwargs).
_TRUSTED_PACKAGES = ("dynamic_network_architectures.", "torch.nn.", "nnunetv2.", "nnunet_genesis.")

# The conv-block settings every nnU-Net 3D plan writes (bias, instance norm, no dropout, leaky ReLU),
# shared by the architectures this package names itself; the *_op entries are class names to import.
NNUNET_3D_BLOCK_KWARGS: dict[str, Any] = {
    "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
}
REQUIRES_IMPORT = ("conv_op", "norm_op", "dropout_op", "nonlin")

# The universal Genesis plan: the 6-stage 3D U-Net of the official Models Genesis nnU-Net
# (pools [2,2,2] x4 then [1,2,2], 3x3x3 kernels, 32..320 features), as nnU-Net v2 arch_kwargs.
_UNIVERSAL_KWARGS: dict[str, Any] = {
    "n_stages": 6,
    "features_per_stage": [32, 64, 128, 256, 320, 320],
    "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[3, 3, 3]] * 6,
    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
    "n_conv_per_stage": [2] * 6,
    "n_conv_per_stage_decoder": [2] * 5,
    **NNUNET_3D_BLOCK_KWARGS,
}


# The families weights transfer within (network_family), with what each is.
FAMILY_DESCRIPTIONS = {
    "PlainConvUNet": "a plain CNN U-Net, its stem the first encoder stage",
    "ResidualEncoderUNet": "a residual-encoder CNN U-Net with a stem of its own",
    "Primus": "a transformer",
}


def network_family(class_name: str) -> str:
    """``PlainConvUNet``, ``ResidualEncoderUNet`` or ``Primus`` for a dotted or short class name (nnssl's
    presets ``ResEncL``/``NoSkipResEncL`` included; names ending so count, as nnU-Net master reads them),
    else the short name itself."""
    short = str(class_name).rsplit(".", 1)[-1]
    if short.endswith("ResidualEncoderUNet") or short in ("ResEncL", "NoSkipResEncL"):
        return "ResidualEncoderUNet"
    if short.endswith("PlainConvUNet"):
        return "PlainConvUNet"
    return "Primus" if short.startswith("Primus") else short


def unwrap_network(network: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP/DataParallel and torch.compile wrappers (same parameter objects)."""
    while True:
        if isinstance(network, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            network = network.module
        elif isinstance(getattr(network, "_orig_mod", None), torch.nn.Module):
            network = network._orig_mod
        else:
            return network


def total_strides(arch_kwargs: Mapping[str, Any]) -> list[int]:
    """Per axis, how much the network downsamples (a patch size must be a multiple of it)."""
    strides = arch_kwargs.get("strides") or arch_kwargs.get("pool_op_kernel_sizes") or []
    if not strides:
        return []
    dims = len(strides[0]) if isinstance(strides[0], (list, tuple)) else 3
    out = [1] * dims
    for s in strides:
        s = s if isinstance(s, (list, tuple)) else [s] * dims
        out = [a * int(b) for a, b in zip(out, s)]
    return out


def universal_genesis_arch(input_channels: int = 1, output_channels: int = 1) -> dict[str, Any]:
    """Metadata network block of the universal Genesis plan (a fresh, JSON-able copy)."""
    return {
        "network_class": PLAIN_CONV_UNET,
        "network_kwargs": copy.deepcopy(_UNIVERSAL_KWARGS),
        "network_kwargs_requires_import": list(REQUIRES_IMPORT),
        "input_channels": int(input_channels),
        "output_channels": int(output_channels),
    }


def arch_from_plans(plans: Mapping[str, Any], configuration: str, input_channels: int,
                    output_channels: int) -> dict[str, Any]:
    """Metadata network block for one configuration of an nnU-Net v2 plans dict."""
    try:
        arch = plans["configurations"][configuration]["architecture"]
    except (KeyError, TypeError):
        raise GenesisUserError(
            f"The plans have no configuration {configuration!r} with an 'architecture' block "
            f"(nnU-Net v2 >= 2.4 plans format expected)."
        ) from None
    return {
        "network_class": arch["network_class_name"],
        "network_kwargs": copy.deepcopy(dict(arch["arch_kwargs"])),
        "network_kwargs_requires_import": list(arch["_kw_requires_import"]),
        "input_channels": int(input_channels),
        "output_channels": int(output_channels),
    }


def _locate_module_class(dotted: str, what: str) -> type:
    """Resolve a dotted class name from a trusted package and check it is an nn.Module class."""
    if not isinstance(dotted, str) or not dotted.startswith(_TRUSTED_PACKAGES):
        raise GenesisUserError(
            f"Checkpoint metadata names {what} {dotted!r}, which is not a class from "
            f"{', '.join(p.rstrip('.') for p in _TRUSTED_PACKAGES)}; refusing to build it."
        )
    obj = pydoc.locate(dotted)
    if not (isinstance(obj, type) and issubclass(obj, torch.nn.Module)):
        raise GenesisUserError(
            f"Checkpoint metadata names {what} {dotted!r}, which cannot be found as a "
            f"torch.nn.Module class in the installed packages (version mismatch?)."
        )
    return obj


def build_network(metadata: Mapping[str, Any], deep_supervision: bool | None = False,
                  allow_init: bool = True) -> torch.nn.Module:
    """Instantiate the network described by a checkpoint's metadata network block.

    ``deep_supervision`` is passed to nnU-Net's builder (False: one full-resolution output,
    as for inference and pretraining; None: keep what the kwargs say).
    """
    missing = [k for k in ("network_class", "network_kwargs", "network_kwargs_requires_import",
                           "input_channels", "output_channels") if k not in metadata]
    if missing:
        raise GenesisUserError(f"Checkpoint metadata lacks the network description keys {missing}.")
    kwargs = metadata["network_kwargs"]
    requires_import = list(metadata["network_kwargs_requires_import"])
    if not isinstance(kwargs, Mapping):
        raise GenesisUserError("Checkpoint metadata 'network_kwargs' is not a dict.")
    _locate_module_class(metadata["network_class"], "network class")
    for key in requires_import:
        if key not in kwargs:
            raise GenesisUserError(
                f"Checkpoint metadata lists {key!r} in network_kwargs_requires_import but "
                f"network_kwargs has no such key."
            )
        if kwargs[key] is not None:
            _locate_module_class(kwargs[key], f"network_kwargs[{key!r}]")
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    try:
        return get_network_from_plans(
            metadata["network_class"], dict(kwargs), requires_import,
            int(metadata["input_channels"]), int(metadata["output_channels"]),
            allow_init=allow_init, deep_supervision=deep_supervision,
        )
    except (TypeError, ValueError, AssertionError) as e:
        raise GenesisUserError(
            f"The network described by the checkpoint metadata ({metadata['network_class']}) "
            f"could not be built: {type(e).__name__}: {e}"
        ) from None


def build_skeleton(metadata: Mapping[str, Any]) -> torch.nn.Module:
    """``build_network`` on the meta device: names, shapes and the architecture's hooks (key_to_encoder,
    keys_to_in_proj, ...) without allocating or initialising weights, to check a file's weights against
    the network it claims (a ResEnc-L costs no memory)."""
    with torch.device("meta"):
        return build_network(metadata, deep_supervision=False, allow_init=False)
