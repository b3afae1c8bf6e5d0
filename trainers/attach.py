"""``nnunet-genesis attach``: a plans variant that names the Genesis checkpoint to start from.

The variant is a copy of the source plans (default ``nnUNetPlans``) with ``plans_name``
changed and a ``genesis`` block added (see ``plans_block``). Every configuration keeps its
``data_identifier``, so the preprocessed data of the source plans is reused as it is: no
second preprocessing. Before writing, the checkpoint is loaded safely and, unless
``--skip-check``, dry-run transferred onto the network of every 3D configuration, so an
unusable checkpoint is refused here and not hours later in ``nnUNetv2_train``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from nnunet_genesis.blocks import read_json
from nnunet_genesis.checkpoint import GenesisCheckpoint, load_checkpoint, sha256_of
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.outputs import atomic_write_text, check_output_file, json_object_with
from nnunet_genesis.trainers.plans_block import PLANS_KEY
from nnunet_genesis.weight_transfer import cascade_image_channels, transfer_weights

DEFAULT_SOURCE_PLANS = "nnUNetPlans"
DEFAULT_VARIANT = "nnUNetPlans_genesis"
# A plans variant attach wrote carries the genesis block: the only existing file -n may replace
# (nnU-Net's dataset.json, fingerprint, splits and plans never, even with --force).
OUR_VARIANT = json_object_with(**{PLANS_KEY: dict})
# Metadata copied into the plans so the results folder says what the checkpoint was.
_SUMMARY_KEYS = ("format_version", "source", "network_class", "input_channels", "output_channels",
                 "created", "versions", "pretraining", "plans_name", "dataset_name", "configuration")


def resolve_dataset_folder(dataset: str) -> Path:
    """nnUNet_preprocessed/DatasetXXX_NAME for an id or a name, as a user error if absent."""
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw

    if not nnUNet_preprocessed:
        raise GenesisUserError("nnUNet_preprocessed is not set; attach writes the plans variant into "
                               "nnUNet_preprocessed/DATASET (see 'nnunet-genesis env').")
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        name = maybe_convert_to_dataset_name(dataset)
    except (RuntimeError, ValueError, AssertionError) as e:
        raise GenesisUserError(
            f"Dataset {dataset!r} was not found in nnUNet_raw={nnUNet_raw if nnUNet_raw else '(not set)'} or "
            f"nnUNet_preprocessed={nnUNet_preprocessed} ({str(e).splitlines()[0]})") from None
    folder = Path(nnUNet_preprocessed) / name
    if not folder.is_dir():
        raise GenesisUserError(f"{folder} does not exist: plan and preprocess dataset {name} first "
                               f"(nnUNetv2_plan_and_preprocess -d {dataset}).")
    return folder


def three_d_configurations(plans: Mapping[str, Any]) -> list[str]:
    """Names of the configurations with a 3D patch size (inheritance resolved by nnU-Net)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(copy.deepcopy(dict(plans)))
    return [name for name in plans.get("configurations", {})
            if len(manager.get_configuration(name).patch_size) == 3]


def plans_3d_configurations(plans: Mapping[str, Any], path: Path) -> list[str]:
    """``three_d_configurations`` of plans read from ``path``, refused (exit 2) when they are not
    the plans nnU-Net writes (``configurations`` a list, a configuration without its settings)."""
    configurations = plans.get("configurations")
    broken = (f"'configurations' is a {type(configurations).__name__}, not the mapping of configuration names to "
              f"settings that nnU-Net writes" if not isinstance(configurations, Mapping) else
              next((f"configuration {name!r} is a {type(c).__name__}, not its settings"
                    for name, c in configurations.items() if not isinstance(c, Mapping)), None))
    if broken:
        raise GenesisUserError(f"Source plans {path}: {broken}. Restore the file or plan again "
                               f"(nnUNetv2_plan_and_preprocess).")
    try:
        return three_d_configurations(plans)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise GenesisUserError(f"Source plans {path} cannot be read as nnU-Net plans ({type(e).__name__}: {e}). "
                               f"Restore the file or plan again (nnUNetv2_plan_and_preprocess).") from None


def dry_run_transfer(plans: Mapping[str, Any], dataset_json: Mapping[str, Any], configurations: list[str],
                     checkpoint: GenesisCheckpoint, allow_partial: bool = False) -> dict[str, dict[str, float]]:
    """Transfer the checkpoint onto a fresh network of each configuration; return the fractions.

    Raises GenesisUserError naming the configuration when the weights cannot be mapped.
    """
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(copy.deepcopy(dict(plans)))
    label_manager = manager.get_label_manager(dict(dataset_json))
    result = {}
    for name in configurations:
        cm = manager.get_configuration(name)
        # What nnUNetTrainer.build_network_architecture builds (the Genesis trainers keep it);
        # called directly to avoid importing the whole training stack.
        network = get_network_from_plans(
            cm.network_arch_class_name, cm.network_arch_init_kwargs, cm.network_arch_init_kwargs_req_import,
            determine_num_input_channels(manager, cm, dict(dataset_json)),
            label_manager.num_segmentation_heads, allow_init=True, deep_supervision=True)
        try:
            # as the trainer does: a cascade's segmentation input channels start at zero
            report = transfer_weights(network, checkpoint, include_decoder=True, allow_partial=allow_partial,
                                      image_channels=cascade_image_channels(
                                          dict(dataset_json), cm.previous_stage_name is not None))
        except GenesisUserError as e:
            raise GenesisUserError(
                f"Checkpoint {checkpoint.path} cannot be transferred onto configuration {name!r} of "
                f"plans '{plans.get('plans_name')}': {e} (Use --configurations to attach it for the "
                f"configurations it fits only.)"
            ) from None
        result[name] = {"encoder_fraction": float(report.encoder_fraction),
                        "decoder_fraction": float(report.decoder_fraction)}
    return result


def build_variant(source_plans: Mapping[str, Any], variant_name: str, source_name: str,
                  checkpoint_path: Path, sha256: str, metadata: Mapping[str, Any],
                  transfer_check: Mapping[str, Any] | None, allow_partial: bool = False) -> dict[str, Any]:
    """The variant dict: the source plans, renamed, with the genesis block (data_identifier kept)."""
    variant = copy.deepcopy(dict(source_plans))
    variant["plans_name"] = variant_name
    variant[PLANS_KEY] = {
        "checkpoint": str(checkpoint_path),
        "sha256": sha256,
        "source_plans": source_name,
        "attached": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint_metadata": {k: metadata[k] for k in _SUMMARY_KEYS if k in metadata},
        "transfer_check": dict(transfer_check) if transfer_check is not None else None,
    }
    if allow_partial:
        variant[PLANS_KEY]["allow_partial_transfer"] = True
    return variant


def _same_variant(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal apart from the attach time stamp."""
    def strip(p):
        p = copy.deepcopy(dict(p))
        if isinstance(p.get(PLANS_KEY), dict):
            p[PLANS_KEY].pop("attached", None)
        return p
    return strip(a) == strip(b)


def attach(dataset: str, checkpoint: str | os.PathLike, source_plans: str = DEFAULT_SOURCE_PLANS,
           variant_name: str = DEFAULT_VARIANT, configurations: list[str] | None = None,
           check: bool = True, force: bool = False, allow_partial: bool = False) -> Path:
    """Write nnUNet_preprocessed/DATASET/<variant_name>.json; returns its path."""
    if variant_name == source_plans:
        raise GenesisUserError(f"The variant name {variant_name!r} equals the source plans name; "
                               f"attach never overwrites the source plans. Choose another -n.")
    if not variant_name or os.sep in variant_name or variant_name.endswith(".json"):
        raise GenesisUserError(f"Invalid plans variant name {variant_name!r} (give a bare name such "
                               f"as {DEFAULT_VARIANT}).")
    folder = resolve_dataset_folder(dataset)
    target = check_output_file(folder / f"{variant_name}.json", "-n", inputs=(folder / f"{source_plans}.json",
                                                                              checkpoint), ours=OUR_VARIANT)
    source = read_json(folder / f"{source_plans}.json", "Source plans")
    dataset_json = read_json(folder / "dataset.json", "dataset.json")
    ckpt_path = Path(checkpoint).expanduser().resolve()
    loaded = load_checkpoint(ckpt_path)
    sha256 = sha256_of(ckpt_path)

    available = plans_3d_configurations(source, folder / f"{source_plans}.json")
    if configurations:
        unknown = [c for c in configurations if c not in available]
        if unknown:
            raise GenesisUserError(f"Plans {folder / (source_plans + '.json')} have no 3D configuration "
                                   f"{unknown}; 3D configurations: {available}.")
    else:
        configurations = available
    if not configurations:
        raise GenesisUserError(f"Plans {folder / (source_plans + '.json')} have no 3D configuration; "
                               f"Genesis checkpoints are 3D networks.")
    transfer_check = dry_run_transfer(source, dataset_json, configurations, loaded, allow_partial) if check else None

    variant = build_variant(source, variant_name, source_plans, ckpt_path, sha256, loaded.metadata,
                            transfer_check, allow_partial)
    if target.exists() and not force:
        existing = read_json(target, "Existing plans variant")
        if not _same_variant(existing, variant):
            old = existing.get(PLANS_KEY, {}) if isinstance(existing.get(PLANS_KEY), dict) else {}
            raise GenesisUserError(
                f"{target} already exists and differs (it names checkpoint "
                f"{old.get('checkpoint', 'none')}); models trained with it would no longer say which "
                f"weights they started from. Use another -n, or --force to replace it."
            )
    atomic_write_text(target, json.dumps(variant, indent=4))
    return target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write a plans variant nnUNet_preprocessed/DATASET/NAME.json that reuses the preprocessed "
        "data of the source plans and names a Genesis checkpoint (path and sha256). Train with "
        "nnUNetv2_train DATASET CONFIG FOLD -tr nnUNetTrainerGenesis -p NAME.")
    parser.add_argument("-d", "--dataset", required=True, help="dataset id or name (e.g. 4 or Dataset004_Hippocampus)")
    parser.add_argument("-c", "--checkpoint", required=True, help="Genesis checkpoint (.pth) to start from")
    parser.add_argument("-p", "--plans", default=DEFAULT_SOURCE_PLANS,
                        help=f"source plans name (default: {DEFAULT_SOURCE_PLANS})")
    parser.add_argument("-n", "--name", default=DEFAULT_VARIANT,
                        help=f"name of the plans variant to write (default: {DEFAULT_VARIANT})")
    parser.add_argument("--configurations", nargs="+", default=None, metavar="CONFIG",
                        help="3D configurations to check the transfer for (default: all 3D ones)")
    parser.add_argument("--skip-check", action="store_true",
                        help="do not dry-run the weight transfer (only load and hash the checkpoint)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing, different variant of the same name")
    parser.add_argument("--allow-partial-transfer", action="store_true",
                        help="accept a checkpoint that fits only part of the encoder (recorded in the plans; "
                             "the trainers print the share). By default the encoder must transfer fully")


def run(args: argparse.Namespace) -> int:
    target = attach(args.dataset, args.checkpoint, args.plans, args.name, args.configurations,
                    check=not args.skip_check, force=args.force, allow_partial=args.allow_partial_transfer)
    variant = json.loads(target.read_text())
    block = variant[PLANS_KEY]
    print(f"Wrote {target}")
    print(f"  checkpoint {block['checkpoint']}")
    print(f"  sha256     {block['sha256']}")
    for name, fractions in (block["transfer_check"] or {}).items():
        print(f"  {name}: {fractions['encoder_fraction']:.1%} of encoder and "
              f"{fractions['decoder_fraction']:.1%} of decoder parameters transfer")
    print(f"Train with: nnUNetv2_train {args.dataset} CONFIG FOLD -tr nnUNetTrainerGenesis -p {args.name}")
    return 0
