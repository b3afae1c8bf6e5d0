"""A schedule plans variant for CPUs: the short schedule block and, optionally, a network shrunk to
train in minutes (smaller batch, smaller patch, fewer feature maps).

The demo and ``benchmarks/transfer.py`` write one before training; the ``_demo`` trainers read
its schedule (``nnunet_genesis.trainers.short_schedule``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_genesis.network import total_strides
from nnunet_genesis.outputs import atomic_write_text
from nnunet_genesis.trainers.short_schedule import PLANS_KEY, ShortSchedule


def capped_patch_size(patch_size: Sequence[int], divisors: Sequence[int], max_voxels: int) -> list[int]:
    """Halve the largest axis (keeping each axis a multiple of its divisor) until the patch fits."""
    patch = [int(p) for p in patch_size]
    while int(np.prod(patch)) > max_voxels:
        order = np.argsort(patch)[::-1]
        for axis in order:
            smaller = (patch[axis] // 2) // divisors[axis] * divisors[axis]
            if smaller >= divisors[axis] and smaller >= 8:
                patch[axis] = smaller
                break
        else:
            break
    return patch


def write_schedule_plans(preprocessed_dataset: str | os.PathLike, variant_name: str, schedule: ShortSchedule,
                         source_plans: str = "nnUNetPlans", configuration: str = "3d_fullres",
                         batch_size: int | None = None, max_patch_voxels: int | None = None,
                         width: float = 1.0) -> Path:
    """Write ``<variant_name>.json`` next to the source plans: the schedule block and, for CPUs,
    optionally a smaller batch, a smaller patch and fewer feature maps per stage (``width``
    times nnU-Net's, at least 8). Topology, kernels, strides, spacing and normalisation stay
    nnU-Net's; ``data_identifier`` is kept, so the preprocessed data is reused. Pretraining
    with ``--plans-from`` this variant builds the same network. Returns the path; an identical
    existing file is left as it is."""
    folder = Path(preprocessed_dataset)
    plans = json.loads((folder / f"{source_plans}.json").read_text())
    plans["plans_name"] = variant_name
    plans[PLANS_KEY] = schedule.to_dict()
    config = plans["configurations"][configuration]
    if batch_size is not None:
        config["batch_size"] = int(min(batch_size, config["batch_size"]))
    if width != 1.0:
        if not 0 < width <= 1:
            raise ValueError(f"width must be in (0, 1], got {width}")
        arch = config["architecture"]["arch_kwargs"]
        arch["features_per_stage"] = [max(8, int(round(f * width))) for f in arch["features_per_stage"]]
    if max_patch_voxels is not None:
        divisors = total_strides(config["architecture"]["arch_kwargs"])
        config["patch_size"] = capped_patch_size(config["patch_size"], divisors, max_patch_voxels)
    target = folder / f"{variant_name}.json"
    text = json.dumps(plans, indent=4)
    if target.is_file() and target.read_text() == text:
        return target
    atomic_write_text(target, text)
    return target
