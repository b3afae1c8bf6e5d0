"""The plans of the pretraining dataset: transferred from the target dataset, or universal.

``--plans-from DATASET`` uses nnU-Net's documented pretraining route: the target dataset's
plans are moved onto the pretraining dataset with nnU-Net's ``move_plans_between_datasets``,
so spacing, normalisation (including a CT dataset's foreground intensity percentiles and
statistics), patch size and network are exactly those of the network that is fine-tuned later.

Without it, the built-in universal Genesis plan is used (see docs/pretraining.md):

* network: the 6-stage PlainConvUNet of the Genesis nnU-Net (``universal_genesis_arch``),
* spacing 1 x 1 x 1 mm by default (``--spacing``), patch 64 x 128 x 128 (``--patch-size``),
  batch size 2,
* CT channels: nnU-Net's ``CTNormalization`` with fixed parameters: clip to the Models Genesis
  window [-1000, 1000] HU, subtract 0, divide by 1000, i.e. HU -1000..1000 -> -1..1;
  other channels (MRI, ...): nnU-Net's per-image ``ZScoreNormalization``.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.network import total_strides, universal_genesis_arch
from nnunet_genesis.splits import seeded_chunks, write_splits

CONFIGURATION = "3d_fullres"
UNIVERSAL_PLANS = "genesisUniversalPlans"
TRANSFERRED_PLANS = "genesisPretrainPlans"
DEFAULT_UNIVERSAL_PATCH = (64, 128, 128)
DEFAULT_UNIVERSAL_SPACING = (1.0, 1.0, 1.0)
DEFAULT_UNIVERSAL_BATCH = 2
CT_WINDOW = (-1000.0, 1000.0)  # HU, as in Models Genesis
CT_PROPERTIES = {"mean": 0.0, "std": 1000.0, "percentile_00_5": CT_WINDOW[0], "percentile_99_5": CT_WINDOW[1],
                 "min": CT_WINDOW[0], "max": CT_WINDOW[1], "median": 0.0}

_RESAMPLING = {
    "resampling_fn_data": "resample_data_or_seg_to_shape",
    "resampling_fn_seg": "resample_data_or_seg_to_shape",
    "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
    "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
    "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
    "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
}


def is_ct(channel_name: str) -> bool:
    return channel_name.strip().upper() == "CT"


def check_patch_size(patch: Sequence[int], arch_kwargs: dict[str, Any]) -> None:
    strides = total_strides(arch_kwargs)
    if strides and len(strides) != len(patch):
        raise GenesisUserError(f"--patch-size {list(patch)} has {len(patch)} axes; the network has {len(strides)}.")
    bad = [i for i, (p, s) in enumerate(zip(patch, strides)) if p <= 0 or p % s]
    if bad:
        fixed = [max(s, int(round(p / s)) * s) for p, s in zip(patch, strides)]
        raise GenesisUserError(
            f"--patch-size {list(patch)}: each axis must be a positive multiple of the network's total "
            f"downsampling {strides} (Z Y X); e.g. {fixed}.")
    if strides and int(np.prod([p // s for p, s in zip(patch, strides)])) < 2:
        raise GenesisUserError(
            f"--patch-size {list(patch)} leaves a single voxel at the network's bottleneck (total "
            f"downsampling {strides}), which instance normalisation cannot train on; double one axis, "
            f"e.g. {[2 * strides[0]] + list(strides[1:])}.")


def check_universal_request(patch_size: Sequence[int] | None,
                            spacing: Sequence[float] | None) -> tuple[list[int], list[float]]:
    """The universal plan's patch size and spacing (defaults filled in), checked."""
    patch = [int(p) for p in (patch_size or DEFAULT_UNIVERSAL_PATCH)]
    check_patch_size(patch, universal_genesis_arch()["network_kwargs"])
    target = [float(s) for s in (spacing or DEFAULT_UNIVERSAL_SPACING)]
    if len(target) != 3 or not all(math.isfinite(s) and s > 0 for s in target):
        raise GenesisUserError(f"--spacing {list(target)}: give three positive numbers (Z Y X, mm).")
    return patch, target


def universal_plans(dataset_name: str, channel_names: list[str], shapes: list[tuple[int, ...]],
                    spacings: list[tuple[float, ...]], patch_size: Sequence[int] | None,
                    spacing: Sequence[float] | None, batch_size: int | None) -> dict[str, Any]:
    """An nnU-Net plans dict for the universal Genesis network (one ``3d_fullres`` configuration)."""
    arch = universal_genesis_arch(len(channel_names), len(channel_names))
    patch, target = check_universal_request(patch_size, spacing)
    median_spacing = np.median(np.array(spacings, dtype=float), 0).tolist()
    median_shape = np.median(np.array(shapes, dtype=float), 0).tolist()
    resampled = np.median([np.array(sh) * np.array(sp) / np.array(target) for sh, sp in zip(shapes, spacings)], 0)
    intensity = {str(i): (dict(CT_PROPERTIES) if is_ct(n) else {}) for i, n in enumerate(channel_names)}
    configuration = {
        "data_identifier": f"{UNIVERSAL_PLANS}_{CONFIGURATION}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": int(batch_size or DEFAULT_UNIVERSAL_BATCH),
        "patch_size": patch,
        "median_image_size_in_voxels": [float(x) for x in resampled],
        "spacing": target,
        "normalization_schemes": ["CTNormalization" if is_ct(n) else "ZScoreNormalization" for n in channel_names],
        "use_mask_for_norm": [False] * len(channel_names),
        **json.loads(json.dumps(_RESAMPLING)),
        "architecture": {
            "network_class_name": arch["network_class"],
            "arch_kwargs": arch["network_kwargs"],
            "_kw_requires_import": arch["network_kwargs_requires_import"],
        },
        "batch_dice": False,
    }
    return {
        "dataset_name": dataset_name,
        "plans_name": UNIVERSAL_PLANS,
        "original_median_spacing_after_transp": [float(x) for x in median_spacing],
        "original_median_shape_after_transp": [int(round(x)) for x in median_shape],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {CONFIGURATION: configuration},
        "experiment_planner_used": "nnunet-genesis universal Genesis plan",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": intensity,
    }


def source_plans_file(dataset: str, plans_identifier: str, configuration: str, preprocessed: Path) -> tuple[str, Path]:
    """The target dataset's name and plans file, checked (user errors name what is missing)."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    try:
        name = maybe_convert_to_dataset_name(dataset)
    except RuntimeError:
        raise GenesisUserError(
            f"--plans-from {dataset}: no such dataset in nnUNet_preprocessed={preprocessed} "
            f"(nor nnUNet_raw/nnUNet_results). Plan and preprocess it with nnUNetv2_plan_and_preprocess first."
        ) from None
    plans_file = preprocessed / name / f"{plans_identifier}.json"
    if not plans_file.is_file():
        raise GenesisUserError(
            f"--plans-from {dataset}: plans file {plans_file} does not exist; run "
            f"nnUNetv2_plan_and_preprocess -d {dataset} (or give the plans name with -p).")
    plans = json.loads(plans_file.read_text())
    if configuration not in plans.get("configurations", {}):
        raise GenesisUserError(
            f"--plans-from {dataset}: configuration {configuration!r} is not in {plans_file} "
            f"(it has {sorted(plans.get('configurations', {}))}).")
    return name, plans_file


def transfer_plans(source_dataset: str, source_plans: str, configuration: str, target_dataset: str,
                   preprocessed: Path) -> dict[str, Any]:
    """Move the target dataset's plans onto the pretraining dataset with nnU-Net's own function."""
    from nnunetv2.experiment_planning.plans_for_pretraining.move_plans_between_datasets import (
        move_plans_between_datasets)

    (preprocessed / target_dataset).mkdir(parents=True, exist_ok=True)
    move_plans_between_datasets(source_dataset, target_dataset, source_plans, TRANSFERRED_PLANS)
    return json.loads((preprocessed / target_dataset / f"{TRANSFERRED_PLANS}.json").read_text())


def single_configuration(plans: dict[str, Any], configuration: str, batch_size: int | None,
                         patch_size: Sequence[int] | None) -> dict[str, Any]:
    """Keep only ``configuration`` (inheritance resolved, cascade links removed), with overrides."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    resolved = copy.deepcopy(PlansManager(plans).get_configuration(configuration).configuration)
    for key in ("inherits_from", "previous_stage", "next_stage"):
        resolved.pop(key, None)
    if len(resolved["patch_size"]) != 3:
        raise GenesisUserError(
            f"Configuration {configuration!r} is {len(resolved['patch_size'])}D; Genesis pretraining "
            f"restores 3D patches, use a 3D configuration (3d_fullres or 3d_lowres).")
    if batch_size is not None:
        resolved["batch_size"] = int(batch_size)
    if patch_size is not None:
        check_patch_size(patch_size, resolved["architecture"]["arch_kwargs"])
        resolved["patch_size"] = [int(p) for p in patch_size]
    out = dict(plans)
    out["configurations"] = {configuration: resolved}
    return out


def write_fingerprint(path: Path, shapes: list[tuple[int, ...]], spacings: list[tuple[float, ...]],
                      intensity: dict[str, Any]) -> None:
    """A dataset_fingerprint.json (nnU-Net's trainer copies it into the results folder).

    Shapes are those of the converted volumes before nnU-Net's crop to the non-zero region;
    the intensity properties are the ones the plans normalise with.
    """
    path.write_text(json.dumps({
        "spacings": [list(s) for s in spacings],
        "shapes_after_crop": [list(s) for s in shapes],
        "foreground_intensity_properties_per_channel": intensity,
        "median_relative_size_after_cropping": 1.0,
    }, indent=2))


def write_split(preprocessed_dataset: Path, identifiers: list[str], val_fraction: float,
                seed: int) -> dict[str, list[str]]:
    """One seeded train/validation split as fold 0 of the dataset's ``splits_final.json``.

    The validation cases provide the fixed validation patches; with a single volume it is
    used for both.
    """

    ids = sorted(identifiers)
    if len(ids) < 2:
        train, val = ids, ids
    else:
        n_val = min(len(ids) - 1, max(1, int(round(len(ids) * val_fraction))))
        val, train = seeded_chunks(ids, [n_val], seed)
    write_splits(preprocessed_dataset, [(train, val)], shared_ok=len(ids) < 2)
    return {"train": sorted(train), "val": sorted(val)}


def run_preprocessing(dataset_name: str, plans_identifier: str, configuration: str, num_processes: int) -> None:
    """nnU-Net's preprocessing of one configuration (what nnUNetv2_preprocess runs): its preprocessor's
    ``run`` with ``num_processes`` > 1; with one, the same ``run_case_save`` calls in this process
    (``run`` would start a pool of one spawned process: seconds of imports for nothing)."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
    from tqdm import tqdm

    pre = Path(str(nnUNet_preprocessed)) / dataset_name
    plans_manager = PlansManager(str(pre / f"{plans_identifier}.json"))
    configuration_manager = plans_manager.get_configuration(configuration)
    preprocessor = configuration_manager.preprocessor_class(verbose=False)
    if num_processes > 1:
        preprocessor.run(dataset_name, configuration, plans_identifier, num_processes=num_processes)
        return
    dataset_json = load_json(str(pre / "dataset.json"))
    output = pre / configuration_manager.data_identifier
    if output.is_dir():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    dataset = get_filenames_of_train_images_and_targets(str(Path(str(nnUNet_raw)) / dataset_name), dataset_json)
    for key in tqdm(dataset, desc="Preprocessing cases"):
        preprocessor.run_case_save(str(output / key), dataset[key]["images"], dataset[key]["label"], plans_manager,
                                   configuration_manager, dataset_json)
