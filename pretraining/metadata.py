"""The ``genesis`` metadata block of a pretraining checkpoint.

It describes everything a later step needs to rebuild and trust the network: the network
(class and kwargs as in nnU-Net plans), the plans and configuration it came from, the patch
size, spacing and normalisation the data had, the corruptions, the data, the schedule, the
losses and the package versions. Only JSON-like values, so the file loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from nnunet_genesis.checkpoint import package_versions
from nnunet_genesis.pretraining.plans import UNIVERSAL_PLANS
from nnunet_genesis.pretraining.raw_dataset import SOURCES_FILE


def _plain(value: Any) -> Any:
    """Round-trip through JSON: numpy scalars and tuples become plain floats and lists."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def read_sources(preprocessed_base: Path, identifiers: Sequence[str]) -> dict[str, Any]:
    """The sources record written by ``nnunet-genesis pretrain``, or one built from the case ids."""

    f = Path(preprocessed_base) / SOURCES_FILE
    if f.is_file():
        return json.loads(f.read_text())
    return {"num_volumes": len(identifiers),
            "cases": {i: {"files": [], "origin": "nnU-Net preprocessed dataset"} for i in sorted(identifiers)},
            "skipped": []}


def pretraining_metadata(*, plans: Mapping[str, Any], configuration_name: str,
                         configuration: Mapping[str, Any], dataset_json: Mapping[str, Any],
                         input_channels: int, options: Mapping[str, Any], sources: Mapping[str, Any],
                         epochs_done: int, batch_size: int, train_losses: Sequence[float],
                         val_losses: Sequence[float], world_size: int, device: str,
                         val_baselines: Mapping[str, float] | None = None) -> dict[str, Any]:
    arch = configuration["architecture"]
    channel_names = dict(dataset_json.get("channel_names", {}))
    intensity = plans.get("foreground_intensity_properties_per_channel", {})
    return _plain({
        # required keys (nnunet_genesis.checkpoint.REQUIRED_METADATA)
        "network_class": arch["network_class_name"],
        "network_kwargs": copy.deepcopy(arch["arch_kwargs"]),
        "network_kwargs_requires_import": list(arch["_kw_requires_import"]),
        "input_channels": int(input_channels),
        "output_channels": int(input_channels),
        "source": "pretrain",
        # where the network and the data layout come from
        "dataset_name": plans.get("dataset_name"),
        "plans_name": plans.get("plans_name"),
        "configuration": configuration_name,
        "plans_from": options.get("plans_from") or None,
        "universal_plan": plans.get("plans_name") == UNIVERSAL_PLANS,
        "patch_size": list(configuration["patch_size"]),
        "spacing": list(configuration["spacing"]),
        "transpose_forward": list(plans.get("transpose_forward", [0, 1, 2])),
        "normalization": {
            "schemes": list(configuration["normalization_schemes"]),
            "use_mask_for_norm": list(configuration.get("use_mask_for_norm", [])),
            "intensity_properties": {c: intensity.get(c, {}) for c in sorted(intensity)},
        },
        "modality": [channel_names[k] for k in sorted(channel_names, key=int)],
        "channel_names": channel_names,
        # how it was trained
        "genesis_config": dict(options.get("genesis", {})),
        "num_volumes": int(sources.get("num_volumes", len(sources.get("cases", {})))),
        "sources": sorted({f for c in sources.get("cases", {}).values() for f in c.get("files", [])}),
        "source_origins": sorted({c.get("origin", "") for c in sources.get("cases", {}).values()}),
        "skipped_inputs": list(sources.get("skipped", [])),
        "epochs_done": int(epochs_done),
        "epochs_planned": int(options.get("epochs", epochs_done)),
        "iterations_per_epoch": int(options.get("iterations_per_epoch", 0)),
        "batch_size": int(batch_size),
        "seed": options.get("seed"),
        "world_size": int(world_size),
        "device": device,
        "final_train_loss": float(train_losses[-1]) if len(train_losses) else None,
        "final_val_loss": float(val_losses[-1]) if len(val_losses) else None,
        "train_losses": [float(x) for x in train_losses],
        "val_losses": [float(x) for x in val_losses],
        # MSE of predictors that learnt nothing on the same validation patches (see
        # FixedValidationSet.trivial_baselines): the final val loss should be below "mean"
        "val_baselines": dict(val_baselines or {}),
        "loss": "MSE between the restored and the uncorrupted patch",
        "versions": package_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
