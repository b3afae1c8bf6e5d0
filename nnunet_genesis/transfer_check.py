"""A dry run of the weight transfer onto a dataset's plans, before anything is trained or written.

``attach`` runs it before it writes a plans variant and ``inspect CKPT -d DATASET`` prints its reports,
so both live here, in the core, below the trainers. The network of each configuration is built as
``nnUNetTrainer.build_network_architecture`` builds it (nnU-Net's ``get_network_from_plans``), and the
checkpoint is transferred onto it exactly as the Genesis trainers transfer it at train start.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

from nnunet_genesis.checkpoint import GenesisCheckpoint
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.transfer_report import TransferReport
from nnunet_genesis.weight_transfer import cascade_image_channels, transfer_weights


def resolve_dataset_folder(dataset: str) -> Path:
    """nnUNet_preprocessed/DatasetXXX_NAME for an id or a name, as a user error if absent."""
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw

    if not nnUNet_preprocessed:
        raise GenesisUserError("nnUNet_preprocessed is not set; the dataset's plans are read from "
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


def select_configurations(plans: Mapping[str, Any], path: Path, requested: list[str] | None) -> list[str]:
    """The requested 3D configurations (default: all of them), each checked to exist."""
    available = plans_3d_configurations(plans, path)
    if requested:
        unknown = [c for c in requested if c not in available]
        if unknown:
            raise GenesisUserError(f"Plans {path} have no 3D configuration {unknown}; 3D configurations: "
                                   f"{available}.")
        return list(requested)
    if not available:
        raise GenesisUserError(f"Plans {path} have no 3D configuration; Genesis checkpoints are 3D networks.")
    return available


def dry_run_reports(plans: Mapping[str, Any], dataset_json: Mapping[str, Any], configurations: list[str],
                    checkpoint: GenesisCheckpoint, allow_partial: bool = False,
                    hint: str = "") -> dict[str, TransferReport]:
    """Transfer the checkpoint onto a fresh network of each configuration; the report of each.

    Raises GenesisUserError naming the configuration (and ``hint``) when the weights cannot be mapped.
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
            result[name] = transfer_weights(network, checkpoint, include_decoder=True, allow_partial=allow_partial,
                                            image_channels=cascade_image_channels(
                                                dict(dataset_json), cm.previous_stage_name is not None))
        except GenesisUserError as e:
            raise GenesisUserError(
                f"Checkpoint {checkpoint.path} cannot be transferred onto configuration {name!r} of "
                f"plans '{plans.get('plans_name')}': {e}" + (f" ({hint})" if hint else "")
            ) from None
    return result


def dry_run_transfer(plans: Mapping[str, Any], dataset_json: Mapping[str, Any], configurations: list[str],
                     checkpoint: GenesisCheckpoint, allow_partial: bool = False,
                     hint: str = "") -> dict[str, dict[str, float]]:
    """``dry_run_reports`` reduced to the shares of encoder and decoder each configuration would get."""
    return {name: {"encoder_fraction": float(report.encoder_fraction),
                   "decoder_fraction": float(report.decoder_fraction)}
            for name, report in dry_run_reports(plans, dataset_json, configurations, checkpoint, allow_partial,
                                                hint).items()}
