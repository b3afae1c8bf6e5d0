"""``nnunet-genesis export CKPT --format nnssl -o OUT.pth``: a Genesis checkpoint for nnU-Net master's nnssl route.

nnU-Net's development branch (master, not in the 2.8.1 release) fine-tunes from nnssl checkpoints
(``nnUNetv2_preprocess_like_nnssl`` / ``nnUNetv2_plan_like_dynamic``, then ``PretrainedTrainer`` /
``DynamicPretrainedTrainer``). Those read a ``.pth`` holding ``network_weights`` and an
``nnssl_adaptation_plan`` (architecture, pretraining patch and spacing, where the encoder, stem and
input projection sit in the state dict), plus an optional top-level ``citations`` list they print
in the training log. This module writes that file from any checkpoint this package reads, so a
Genesis pretraining can also be used through nnU-Net's own route (which keeps encoder and stem only;
``attach`` + ``nnUNetTrainerGenesis`` keeps the decoder too: docs/weight_transfer.md).

The file is written for nnU-Net master's readers (the fields and types they read, written from
their documented behaviour; no nnssl code is used): the architecture is the nnU-Net plans block
(dotted class name, ``arch_kwargs``), which nnssl's own ``AdaptationPlan.from_dict`` does not accept
for PlainConvUNet. Everything in it is a plain type (tensors, dicts, lists, str, numbers, None), so
it loads with ``torch.load(weights_only=True)`` and no allowlist; tensors are on the CPU (nnU-Net's
trainers load it without ``map_location``). The ``genesis`` metadata block rides along (nnU-Net ignores
it), so ``read_pretrained`` takes the file back with identical tensors and the pretraining record.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from nnunet_genesis import __version__
from nnunet_genesis.checkpoint import (GenesisCheckpoint, atomic_torch_save, safe_torch_load, sha256_of,
                                       verify_network_weights)
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.network import build_skeleton, network_family, total_strides
from nnunet_genesis.outputs import check_output_file
from nnunet_genesis.pretrained_sources import read_pretrained

FORMATS = ("nnssl",)
# The network classes nnU-Net master's PretrainedTrainer builds from arch_kwargs (it matches the end of the
# class name); every other name there is a fixed preset (Primus, ResEncL) or NotImplementedError.
BUILDABLE_FAMILIES = ("PlainConvUNet", "ResidualEncoderUNet")
DEFAULT_CONFIGURATION = "genesis"  # the pretraining configuration's name when the checkpoint records none
# metadata "source" of weights that Models Genesis pretraining made (read_pretrained's names)
GENESIS_SOURCES = ("pretrain", "import-v1", "models-genesis-v1")
READ_ONLY_METADATA = ("kind", "description")  # what read_pretrained adds on reading: not stored, it would go stale
EXPORT_INFO_KEY = "nnunet_genesis_export"  # top-level key: where the file came from (nnU-Net ignores it)

# Printed by nnU-Net master's PretrainedTrainer when training starts from the file: a list of
# {type, name, apa_citations} (the shape its print_citations reads; the references are the papers'
# own bibliographic data, written here).
MODELS_GENESIS_CITATIONS: list[dict[str, Any]] = [{
    "type": "Pretraining method",
    "name": "Models Genesis",
    "apa_citations": [
        "Zhou, Z., Sodha, V., Rahman Siddiquee, M. M., Feng, R., Tajbakhsh, N., Gotway, M. B., & Liang, J. "
        "(2019). Models Genesis: Generic autodidactic models for 3D medical image analysis. In Medical Image "
        "Computing and Computer Assisted Intervention - MICCAI 2019 (LNCS 11767, pp. 384-393). Springer. "
        "https://doi.org/10.1007/978-3-030-32251-9_42",
        "Zhou, Z., Sodha, V., Pang, J., Gotway, M. B., & Liang, J. (2021). Models Genesis. Medical Image "
        "Analysis, 67, 101840. https://doi.org/10.1016/j.media.2020.101840",
    ],
}]


@dataclass(frozen=True)
class ExportSettings:
    """What ``export`` writes besides the checkpoint's own content."""

    format: str = "nnssl"
    # nnU-Net master makes this the downstream patch size (preprocess_like_nnssl); None: the pretraining patch
    downstream_patch_size: tuple[int, ...] | None = None
    force: bool = False  # replace an existing OUT that an earlier export wrote
    source_plans: Path | None = None  # the plans.json of an nnU-Net checkpoint moved out of its results folder


def nnssl_checkpoint(ckpt: GenesisCheckpoint, downstream_patch_size: Sequence[int] | None = None) -> dict[str, Any]:
    """The nnssl-format dict of ``ckpt``: weights checked against the network its metadata describes."""
    where = f"Checkpoint {ckpt.path}"
    meta = ckpt.metadata
    _require_buildable(meta["network_class"], where)  # before building: the cheap refusal first
    network = build_skeleton(meta)  # names, shapes and hooks only (meta device)
    verify_network_weights(ckpt.network_weights, where, expected=network.state_dict(),
                           expected_name="the network its metadata describes")
    return {
        "network_weights": {k: v.detach().cpu() for k, v in ckpt.network_weights.items()},
        "nnssl_adaptation_plan": adaptation_plan(meta, network, downstream_patch_size, where),
        # only weights Models Genesis trained cite it (an exported nnU-Net or nnssl checkpoint does not)
        "citations": json.loads(json.dumps(MODELS_GENESIS_CITATIONS)) if meta.get("source") in GENESIS_SOURCES else [],
        "genesis": json.loads(json.dumps({k: v for k, v in meta.items() if k not in READ_ONLY_METADATA})),
    }


def adaptation_plan(meta: Mapping[str, Any], network: torch.nn.Module, downstream_patch_size: Sequence[int] | None,
                    where: str) -> dict[str, Any]:
    """Every field nnU-Net master reads from ``nnssl_adaptation_plan``, as plain JSON values (lists, not tuples)."""
    kwargs = meta["network_kwargs"]
    kernels = kwargs.get("kernel_sizes") or []
    if not kernels or any(not isinstance(k, list) or len(k) != 3 for k in kernels):
        raise GenesisUserError(f"{where} holds a 2D network (kernel sizes {kernels}); nnU-Net master's nnssl route "
                               f"fine-tunes 3d_fullres only, so only 3D checkpoints can be exported.")
    strides = total_strides(kwargs)
    recorded = "patch_size" if "patch_size" in meta else "pretrain_patch_size"  # (read_pretrained: an nnssl file's)
    patch = _patch(meta.get(recorded), strides, f"{where}: its recorded pretraining patch size")
    downstream = (_patch(downstream_patch_size, strides, "--patch-size") if downstream_patch_size else
                  _patch(meta.get("recommended_downstream_patchsize"), strides,
                         f"{where}: its recorded downstream patch size") or patch)
    if downstream is None:
        raise GenesisUserError(f"{where} records no pretraining patch size (a checkpoint from import-v1 or an "
                               f"nnU-Net training checkpoint), "
                               f"and nnU-Net master trains with the exported recommended patch size: give it with "
                               f"--patch-size Z Y X (a multiple of the network's total strides {strides}).")
    configuration = str(meta.get("configuration") or DEFAULT_CONFIGURATION)
    plans_name = str(meta.get("plans_name") or "unknown")
    transpose = _transpose(meta.get("transpose_forward"))
    normalization = meta.get("normalization") if isinstance(meta.get("normalization"), dict) else {}
    plan = {
        "architecture_plans": {
            "arch_class_name": meta["network_class"],
            "arch_kwargs": kwargs,
            "arch_kwargs_requiring_import": list(meta["network_kwargs_requires_import"]),
        },
        "pretrain_plan": {
            "dataset_name": str(meta.get("dataset_name") or "unknown"),
            "plans_name": plans_name,
            "transpose_forward": transpose,
            "transpose_backward": sorted(range(3), key=transpose.__getitem__),
            "experiment_planner_used": f"nnunet-genesis ({meta.get('source')})",
            "configurations": {configuration: {
                "data_identifier": f"{plans_name}_{configuration}",
                "preprocessor_name": "DefaultPreprocessor",
                "normalization_schemes": list(normalization.get("schemes") or []),
                "use_mask_for_norm": list(normalization.get("use_mask_for_norm") or []),
                "spacing": _spacing(meta.get("spacing", meta.get("pretrain_spacing")), where),
                "patch_size": patch or downstream,
            }},
        },
        "pretrain_num_input_channels": int(meta["input_channels"]),
        "recommended_downstream_patchsize": downstream,
        # module-path prefixes of the network's own hooks (dynamic-network-architectures), not guessed from names
        "key_to_encoder": str(network.key_to_encoder),
        "key_to_stem": str(network.key_to_stem),
        "keys_to_in_proj": [str(k) for k in network.keys_to_in_proj],
        "key_to_lpe": getattr(network, "key_to_lpe", None),  # learnt positional embedding: transformers only
        # read by DynamicPretrainedTrainer; without it, it guesses the depth from the keys and 3x3x3 kernels
        "architecture_kwargs": {"n_stages": int(kwargs["n_stages"]), "kernel_sizes": kernels},
    }
    return json.loads(json.dumps(plan))


def _require_buildable(network_class: str, where: str) -> None:
    if network_family(network_class) not in BUILDABLE_FAMILIES:
        raise GenesisUserError(f"{where} holds a {network_class}; nnU-Net master's PretrainedTrainer builds only "
                               f"{' and '.join(BUILDABLE_FAMILIES)} networks from a checkpoint's architecture, so "
                               f"this one cannot be exported for it (use 'nnunet-genesis attach' instead).")


def _patch(value: Any, strides: Sequence[int], what: str) -> list[int] | None:
    """A 3D patch size that the network's total strides divide, as a list of ints (None: none given)."""
    if value is None:
        return None
    ok = isinstance(value, (list, tuple)) and len(value) == 3 and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    if not ok:
        raise GenesisUserError(f"{what} {value!r:.80} is not a 3D patch size (three positive integers).")
    if strides and any(v % s for v, s in zip(value, strides)):
        raise GenesisUserError(f"{what} {list(value)} is not a multiple of the network's total strides {strides} "
                               f"on every axis; nnU-Net would train with it, so choose one that is.")
    return [int(v) for v in value]


def _spacing(value: Any, where: str) -> list[float] | None:
    """The pretraining spacing (nnU-Net's axis order of the pretraining plans); None when not recorded."""
    if value is None:
        return None
    if not (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value)):
        raise GenesisUserError(f"{where}: its recorded pretraining spacing {value!r:.80} is not three positive "
                               f"numbers.")
    return [float(v) for v in value]


def _transpose(value: Any) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (list, tuple)) and sorted(value) == [0, 1, 2] else [0, 1, 2]


def written_by_export(path: Path) -> bool:
    """Whether ``path`` is a file this command wrote (its ``nnunet_genesis_export`` key), the only kind
    ``--force`` replaces; read safely, with the tensors mapped rather than read."""
    try:
        obj = safe_torch_load(path, "Existing output", mmap=True)
    except GenesisUserError:
        return False
    return isinstance(obj, dict) and isinstance(obj.get(EXPORT_INFO_KEY), dict)


def export_checkpoint(src: str | Path, out: str | Path, settings: ExportSettings = ExportSettings()) -> dict[str, Any]:
    """Write ``src`` as an nnssl checkpoint at ``out`` (atomically; an existing OUT only with ``force`` and
    only when an earlier export wrote it); returns the adaptation plan written."""
    src, out = Path(src), Path(out)
    if settings.format not in FORMATS:
        raise GenesisUserError(f"--format {settings.format}: unknown; choose from {', '.join(FORMATS)}.")
    check_output_file(out, "-o", overwrite=settings.force, inputs=(src,), ours=written_by_export)
    ckpt = read_pretrained(src, settings.source_plans)  # any accepted kind, read safely (weights_only=True)
    obj = nnssl_checkpoint(ckpt, settings.downstream_patch_size)
    obj[EXPORT_INFO_KEY] = {"format": settings.format, "exported_from": src.name, "sha256": sha256_of(src),
                            "nnunet_genesis": __version__}
    atomic_torch_save(obj, out)
    return obj["nnssl_adaptation_plan"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, metavar="CKPT",
                        help="checkpoint to export: Genesis, or any kind attach accepts (.pth)")
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="nnssl: for nnU-Net master's nnUNetv2_preprocess_like_nnssl / PretrainedTrainer")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.pth", help="file to write")
    parser.add_argument("--patch-size", type=int, nargs=3, metavar=("Z", "Y", "X"), default=None,
                        help="recommended downstream patch size (nnU-Net master trains with it); default: the "
                             "pretraining patch size the checkpoint records")
    parser.add_argument("--source-plans", type=Path, default=None, metavar="FILE",
                        help="for an nnU-Net training checkpoint moved out of its results folder: its plans.json")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists and an earlier export wrote it")


def run(args: argparse.Namespace) -> int:
    settings = ExportSettings(format=args.format, force=args.force, source_plans=args.source_plans,
                              downstream_patch_size=tuple(args.patch_size) if args.patch_size else None)
    out = args.output
    plan = export_checkpoint(args.checkpoint, out, settings)
    name = plan["architecture_plans"]["arch_class_name"].rsplit(".", 1)[-1]
    print(f"wrote {out}: nnssl checkpoint of a {name} ({plan['pretrain_num_input_channels']} input channel(s), "
          f"recommended patch {plan['recommended_downstream_patchsize']}) for nnU-Net master's "
          f"'nnUNetv2_preprocess_like_nnssl -d DATASET -n NAME -pc {out} -am like_pretrained' and PretrainedTrainer, "
          f"which load encoder and stem only (the decoder stays in the file for 'nnunet-genesis attach').")
    if name == "PlainConvUNet":
        print(f"note: nnU-Net master loads a PlainConvUNet only into a dataset with "
              f"{plan['pretrain_num_input_channels']} input channel(s) (its strict encoder load; "
              f"docs/weight_transfer.md); 'attach' adapts the channels.")
    return 0
