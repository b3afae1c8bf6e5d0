"""``nnunet-genesis import-v1``: official Models Genesis nnU-Net v1 weights -> Genesis checkpoint.

The official Models Genesis nnU-Net checkpoint (e.g. ``genesis_nnunet_luna16_006.model``) is an
nnU-Net v1 training checkpoint: a pickled dict whose ``state_dict`` holds the weights of a
``Generic_UNet`` (6 stages, pools [2,2,2] x4 then [1,2,2], 3x3x3 kernels, 32..320 features,
convolutional pooling and upsampling). nnU-Net v2 builds the same function as a
``PlainConvUNet``; only the module names differ, and v1's transposed convs and segmentation
outputs have no bias (v2's get zeros). Every tensor, the head included, is mapped.

The file is untrusted: it is read with ``torch.load(weights_only=True)``. nnU-Net v1 stores
numpy float scalars in its loss curves, so numpy's scalar/dtype reconstructors are allowed
through checked wrappers that accept numeric dtypes only; anything else that needs code to
unpickle is refused and nothing in the file runs. Its weights pass the same verification as every
checkpoint (``checkpoint.verify_network_weights``: finite floats, no zero-size dimension) before
anything is converted or written.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import torch

from nnunet_genesis.checkpoint import (package_versions, safe_torch_load, save_checkpoint, sha256_of,
                                       strip_prefixes, verify_network_weights)
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.outputs import check_output_file
from nnunet_genesis.network import build_network, universal_genesis_arch

_CONTEXT_RE = re.compile(r"^conv_blocks_context\.(\d+)\.blocks\.(\d+)\.(conv|instnorm)\.(weight|bias)$")
_BOTTLENECK_RE = re.compile(r"^conv_blocks_context\.(\d+)\.([01])\.blocks\.(\d+)\.(conv|instnorm)\.(weight|bias)$")
_LOCAL_RE = re.compile(r"^conv_blocks_localization\.(\d+)\.([01])\.blocks\.(\d+)\.(conv|instnorm)\.(weight|bias)$")
_TU_RE = re.compile(r"^tu\.(\d+)\.(weight|bias)$")
_SEG_RE = re.compile(r"^seg_outputs\.(\d+)\.(weight|bias)$")
_V2_LAYER = {"conv": "conv", "instnorm": "norm"}
_V1_FIRST_CONV = "conv_blocks_context.0.blocks.0.conv.weight"


def load_v1_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The ``state_dict`` of an nnU-Net v1 checkpoint, loaded safely, plus harmless extras."""
    path = Path(path)
    return v1_state_dict(safe_torch_load(path, "nnU-Net v1 checkpoint"), path)


def holds_v1_network(obj: Any) -> bool:
    """Whether a loaded torch object is an nnU-Net v1 checkpoint (or its bare state_dict), by its keys."""
    state = obj.get("state_dict") if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) else obj
    return isinstance(state, dict) and any(str(k).endswith(_V1_FIRST_CONV) for k in state)


def v1_state_dict(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``load_v1_state_dict`` on an object already loaded by ``safe_torch_load``."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        state = obj["state_dict"]
        extras = {"v1_epoch": obj["epoch"]} if isinstance(obj.get("epoch"), int) else {}
    elif isinstance(obj, dict) and any(str(k).endswith(_V1_FIRST_CONV) for k in obj):
        state, extras = obj, {}
    else:
        keys = sorted(map(str, obj))[:8] if isinstance(obj, dict) else "-"
        raise GenesisUserError(
            f"{path} is not an nnU-Net v1 checkpoint: expected a dict with a 'state_dict' "
            f"entry, found {type(obj).__name__} with keys {keys}."
        )
    verify_network_weights(state, f"nnU-Net v1 checkpoint {path}", "'state_dict'")  # NaN, 0-size, ints: refused
    return strip_prefixes(state), extras


def _first_part_lengths(state: dict[str, torch.Tensor]) -> dict[tuple[str, int], int]:
    """Convs in the first half of each two-part v1 stage (bottleneck and decoder stages)."""
    out: dict[tuple[str, int], int] = {}
    for key in state:
        for kind, regex in (("context", _BOTTLENECK_RE), ("localization", _LOCAL_RE)):
            m = regex.match(key)
            if m and m.group(2) == "0":
                idx = (kind, int(m.group(1)))
                out[idx] = max(out.get(idx, 0), int(m.group(3)) + 1)
    return out


def v1_key_to_v2(key: str, first_part: dict[tuple[str, int], int]) -> str | None:
    """The PlainConvUNet name of a Generic_UNet tensor (None: not a Generic_UNet key).

    v1 splits the bottleneck and each decoder stage into two StackedConvLayers (``.0`` with
    n-1 convs, ``.1`` with the last one); v2 numbers the convs of a stage consecutively.
    """
    if m := _CONTEXT_RE.match(key):
        s, i, layer, p = m.groups()
        return f"encoder.stages.{s}.0.convs.{i}.{_V2_LAYER[layer]}.{p}"
    for kind, regex, prefix in (("context", _BOTTLENECK_RE, "encoder.stages.{}.0"),
                                ("localization", _LOCAL_RE, "decoder.stages.{}")):
        if m := regex.match(key):
            s, sub, i, layer, p = m.groups()
            conv = int(i) + (first_part.get((kind, int(s)), 0) if sub == "1" else 0)
            return f"{prefix.format(s)}.convs.{conv}.{_V2_LAYER[layer]}.{p}"
    if m := _TU_RE.match(key):
        return f"decoder.transpconvs.{m.group(1)}.{m.group(2)}"
    if m := _SEG_RE.match(key):
        return f"decoder.seg_layers.{m.group(1)}.{m.group(2)}"
    return None


def convert_v1_state_dict(state: dict[str, torch.Tensor], name: str = "the v1 checkpoint"
                          ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Map a Generic_UNet state_dict onto the universal PlainConvUNet.

    Returns the v2 state_dict (aliases included, as ``network.state_dict()`` writes it) and
    the metadata network block. Raises GenesisUserError naming the first key that does not fit.
    """
    first_key = _V1_FIRST_CONV
    if first_key not in state or not any(_SEG_RE.match(k) for k in state):
        raise GenesisUserError(
            f"{name} does not hold an nnU-Net v1 Generic_UNet: its state_dict lacks "
            f"{first_key!r} or 'seg_outputs.*' (found e.g. {sorted(state)[:4]})."
        )
    in_ch = int(state[first_key].shape[1])
    out_ch = int(state[min(k for k in state if _SEG_RE.match(k) and k.endswith("weight"))].shape[0])
    arch = universal_genesis_arch(in_ch, out_ch)
    first_part = _first_part_lengths(state)
    network = build_network(arch, deep_supervision=False, allow_init=False)
    targets = dict(network.named_parameters())
    expected = "the Models Genesis v1 layout (6 stages, pools [2,2,2] x4 then [1,2,2], 3x3x3, 32..320 features)"
    mapped: dict[str, str] = {}  # v2 name -> v1 name
    for key, value in state.items():
        v2 = v1_key_to_v2(key, first_part)
        if v2 is None or v2 not in targets:
            raise GenesisUserError(
                f"{name}: state_dict key {key!r} (shape {list(value.shape)}) has no place in "
                f"{expected}."
            )
        mapped[v2] = key
    filled: dict[str, torch.Tensor] = {}
    for key, param in targets.items():  # v2 order: encoder from the top, then decoder
        if key in mapped:
            value = state[mapped[key]]
            if tuple(value.shape) != tuple(param.shape):
                raise GenesisUserError(
                    f"{name}: {mapped[key]} has shape {list(value.shape)} but {expected} needs "
                    f"{list(param.shape)} for it ({key})."
                )
            filled[key] = value
        elif re.match(r"^decoder\.(transpconvs|seg_layers)\.\d+\.bias$", key):
            filled[key] = torch.zeros_like(param)  # v1 built these layers without bias
        else:
            raise GenesisUserError(f"{name}: the state_dict has no tensor for {key} "
                                   f"(shape {list(param.shape)}) of {expected}.")
    with torch.no_grad():
        for key, param in targets.items():
            param.copy_(filled[key])
    return network.state_dict(), arch


def convert_v1_checkpoint(v1_path: str | Path, out_path: str | Path, force: bool = False) -> Path:
    """Convert an official v1 checkpoint file into a Genesis checkpoint at ``out_path``."""
    v1_path, out_path = Path(v1_path), Path(out_path)
    check_output_file(out_path, "OUT", overwrite=force, inputs=(v1_path,))  # never over its own input
    state, extras = load_v1_state_dict(v1_path)
    weights, arch = convert_v1_state_dict(state, str(v1_path))
    metadata = dict(arch)
    metadata.update(
        source="import-v1",
        imported_from=v1_path.name,
        imported_sha256=sha256_of(v1_path),
        notes=("Official Models Genesis nnU-Net v1 Generic_UNet converted to nnU-Net v2 "
               "PlainConvUNet; all tensors mapped including the head (v1 seg_outputs -> "
               "decoder.seg_layers); v1 transposed convs and seg outputs have no bias, "
               "so those biases are zero."),
        versions=package_versions(),
        **extras,
    )
    return save_checkpoint(out_path, weights, metadata)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("v1_checkpoint", type=Path,
                        help="official Models Genesis nnU-Net v1 checkpoint (e.g. genesis_nnunet_luna16_006.model)")
    parser.add_argument("out", type=Path, help="Genesis checkpoint to write (.pth)")
    parser.add_argument("--force", action="store_true", help="overwrite OUT if it exists")


def run(args: argparse.Namespace) -> int:
    out = convert_v1_checkpoint(args.v1_checkpoint, args.out, force=args.force)
    print(f"wrote {out}: universal Genesis PlainConvUNet converted from {args.v1_checkpoint}")
    return 0
