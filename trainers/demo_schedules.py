"""Short, seeded schedules carried in the plans: the fair Genesis-vs-scratch pair of the demo.

``nnunet-genesis demo`` and ``benchmarks/transfer.py`` train two models that must differ in
one thing only, their initial weights:

- ``nnUNetTrainerGenesis_demo``: starts from the Genesis checkpoint named in the plans
  (``nnunet-genesis attach``), with ``nnUNetTrainerGenesis``'s linear warm-up + poly schedule;
- ``nnUNetTrainerScratch_demo``: nnU-Net's random initialisation with exactly the same
  warm-up + poly schedule (``nnUNetTrainerScratch``).

Same epochs, iterations per epoch, learning rate, warm-up, batch, patch, augmentation,
training cases and seed. The warm-up is given to both on purpose: it exists to protect
pretrained features from the first large gradients, but giving it to one arm only would
make the schedule a second difference between the arms.

nnU-Net trainers are chosen by class name, so the schedule cannot be a command-line option.
It is a block in the plans instead (``plans["genesis_schedule"]``, written by
``write_schedule_plans``); ``attach`` copies it into the Genesis variant, and nnU-Net copies
the plans into every results folder, so a trained model records the schedule it ran.

Seeding: nnU-Net's network initialisation, patch sampling and augmentation draw from the
process-global ``random``/``numpy``/``torch`` generators of the ``nnUNetv2_train`` process.
These trainers seed them (in that process only) from the schedule's seed and the fold before
the network is built and again before the data loaders start, so all arms of one fold start
from the same random head/decoder initialisation and, with ``nnUNet_n_proc_DA=0``
(augmentation in the main process), see the same sequence of training patches, while each
fold (``benchmarks/transfer.py``: one per K and seed) gets its own. With background augmentation workers nnU-Net reseeds
the workers from the OS, so the patch sequences differ between runs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from nnunet_genesis.blocks import check_known_keys
from nnunet_genesis.errors import GenesisUserError, read_trainer_block
from nnunet_genesis.network import total_strides
from nnunet_genesis.outputs import atomic_write_text
from nnunet_genesis.seeding import seed_nnunet_process
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_genesis.trainers.genesis import nnUNetTrainerGenesis, nnUNetTrainerScratch
from nnunet_genesis.trainers.starts import (nnUNetTrainerGenesis_asPretrained, nnUNetTrainerGenesis_encoderOnly,
                                            nnUNetTrainerGenesis_headWarmup, nnUNetTrainerGenesis_lowLR,
                                            nnUNetTrainerGenesis_nnUNetRecipe, nnUNetTrainerGenesis_reinitLastStage,
                                            nnUNetTrainerGenesis_resetAllNorm, nnUNetTrainerGenesis_resetDecoderNorm,
                                            nnUNetTrainerGenesis_resetLastNorm)

PLANS_KEY = "genesis_schedule"


@dataclass(frozen=True)
class ShortSchedule:
    """One training schedule, identical for the Genesis and the scratch arm."""

    epochs: int = 10
    iterations_per_epoch: int = 50
    val_iterations_per_epoch: int = 2
    warmup_epochs: int = 1
    seed: int = 12345
    test_time_mirroring: bool = False  # 8 flipped passes per patch: slow on a CPU
    # Mirroring augmentation swaps where left/right or front/back structures lie in a patch, so
    # labels that differ mainly by position (hippocampus anterior/posterior) must be told apart
    # by shape alone: short schedules then flip between the labels (docs/benchmark_transfer.md)
    training_mirroring: bool = True
    # CPU only: the network's forward pass under bfloat16 autocast (nnU-Net autocasts on CUDA only);
    # weights, gradients and the loss stay float32. Fast only on CPUs with bfloat16 instructions.
    cpu_bf16: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "iterations_per_epoch", "val_iterations_per_epoch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs} of {self.epochs}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_plans(cls, plans: Mapping[str, Any], who: str) -> "ShortSchedule":
        block = plans.get(PLANS_KEY)
        where = f"plans '{plans.get('plans_name', '?')}' of dataset {plans.get('dataset_name', '?')}"
        if not isinstance(block, Mapping):
            raise GenesisUserError(
                f"{who} takes its schedule from the plans, but the {where} have no '{PLANS_KEY}' "
                f"block. Write a schedule plans variant with "
                f"nnunet_genesis.trainers.demo_schedules.write_schedule_plans (the demo and "
                f"benchmarks/transfer.py do), or use nnUNetTrainerGenesis / nnUNetTrainerScratch.")
        try:
            check_known_keys(cls, block, "it")
            return cls(**dict(block))
        except (TypeError, ValueError) as e:
            raise GenesisUserError(f"The '{PLANS_KEY}' block of the {where} is invalid: {e}.") from None


class PlansScheduleMixin:
    """Reads ``plans["genesis_schedule"]`` and applies it; seeds nnU-Net's generators."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        self.short_schedule = read_trainer_block(ShortSchedule.from_plans, plans, self)
        super().__init__(plans, configuration, fold, dataset_json, device)
        s = self.short_schedule
        self.num_epochs = s.epochs
        self.num_iterations_per_epoch = s.iterations_per_epoch
        self.num_val_iterations_per_epoch = s.val_iterations_per_epoch
        self.warmup_epochs = s.warmup_epochs  # read by nnUNetTrainerWarmupPoly.resolved_warmup_epochs

    def _fold_seed(self, offset: int) -> int:
        return int(np.random.SeedSequence([self.short_schedule.seed, self.fold, offset]).generate_state(1)[0])

    def initialize(self):
        if not self.was_initialized:
            self.print_to_log_file(f"Schedule from the plans ({PLANS_KEY}): {self.short_schedule.to_dict()}")
            use_allowed_cpus()
            seed_nnunet_process(self._fold_seed(0))  # same random init of what is not transferred
        super().initialize()
        if self.device.type == "cpu" and channels_last_pays(self.configuration_manager.network_arch_init_kwargs):
            # the checkpoint's state dict loads into any memory layout
            self.network.to(memory_format=torch.channels_last_3d)
        if self.device.type == "cpu" and self.short_schedule.cpu_bf16:
            self.network.forward = bf16_forward(self.network.forward)  # the state dict is unchanged
            self.print_to_log_file("CPU bfloat16 autocast on the forward pass (loss, weights, gradients float32)"
                                   + ("" if cpu_has_native_bf16() else "; this CPU has no bfloat16 instructions, "
                                      "so this is slower than float32"))

    def get_dataloaders(self):
        seed_nnunet_process(self._fold_seed(1))  # same patch sequence in every arm of a fold
        return super().get_dataloaders()

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if not self.short_schedule.training_mirroring:
            mirror_axes = None  # no mirroring in the training transforms (nnUNetTrainerNoMirroring's way)
        if not self.short_schedule.test_time_mirroring:
            self.inference_allowed_mirroring_axes = None  # saved in the checkpoint, read by the predictor
        return rotation, dummy_2d, initial_patch_size, mirror_axes


CHANNELS_LAST_MAX_FEATURES = 8


def channels_last_pays(arch_kwargs: Mapping[str, Any]) -> bool:
    """Whether a CPU training step runs faster with channels-last 3D weights.

    Measured with ``benchmarks/cpu_step.py`` on the hippocampus plan (docs/benchmark_transfer.md):
    a gain only for the narrowest networks (first stage 8 feature maps, a quarter of nnU-Net's
    width), a loss at half and full width. Read from the plans, so every arm decides alike.
    """
    features = arch_kwargs.get("features_per_stage") or arch_kwargs.get("n_stages_features") or []
    return bool(features) and int(features[0]) <= CHANNELS_LAST_MAX_FEATURES


def bf16_forward(forward):
    """``forward`` under CPU bfloat16 autocast, its floating outputs returned as float32.

    Wrapping the forward (as Hugging Face Accelerate does for mixed precision) rather than the
    whole ``train_step`` keeps nnU-Net's loss (softmax, Dice sums over every voxel) and the
    backward pass out of autocast, and leaves ``train_step`` nnU-Net's own.
    """

    @functools.wraps(forward)
    def run(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = forward(*args, **kwargs)
        if isinstance(outputs, (list, tuple)):  # deep supervision: one output per resolution
            return type(outputs)(o.float() if torch.is_floating_point(o) else o for o in outputs)
        return outputs.float() if torch.is_floating_point(outputs) else outputs

    return run


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX); without them bfloat16 is
    emulated and autocast is slower than float32."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def use_allowed_cpus() -> None:
    """Cap torch's threads at the CPUs this process may run on.

    ``nnUNetv2_train -device cpu`` sets one thread per CPU of the machine; under ``taskset``
    or a CPU-limited container (the benchmark runs two trainings side by side, one core each)
    the extra threads only contend for the allowed cores.
    """
    if hasattr(os, "sched_getaffinity"):
        allowed = len(os.sched_getaffinity(0))
        if 0 < allowed < torch.get_num_threads():
            torch.set_num_threads(allowed)


class nnUNetTrainerGenesis_demo(PlansScheduleMixin, nnUNetTrainerGenesis):
    """Fine-tunes from the plans' Genesis checkpoint with the plans' short schedule (the default start)."""


class nnUNetTrainerScratch_demo(PlansScheduleMixin, nnUNetTrainerScratch):
    """Random initialisation with the plans' short schedule: the partner of nnUNetTrainerGenesis_demo."""


class nnUNetTrainerStock_demo(PlansScheduleMixin, nnUNetTrainer):
    """Stock nnU-Net (its SGD and poly schedule, no warm-up) for the plans' number of epochs and iterations."""


# The other fine-tuning starts of nnunet_genesis.trainers.starts, with the plans' short schedule.
class nnUNetTrainerGenesis_encoderOnly_demo(PlansScheduleMixin, nnUNetTrainerGenesis_encoderOnly):
    pass


class nnUNetTrainerGenesis_asPretrained_demo(PlansScheduleMixin, nnUNetTrainerGenesis_asPretrained):
    pass


class nnUNetTrainerGenesis_resetDecoderNorm_demo(PlansScheduleMixin, nnUNetTrainerGenesis_resetDecoderNorm):
    pass


class nnUNetTrainerGenesis_resetLastNorm_demo(PlansScheduleMixin, nnUNetTrainerGenesis_resetLastNorm):
    pass


class nnUNetTrainerGenesis_resetAllNorm_demo(PlansScheduleMixin, nnUNetTrainerGenesis_resetAllNorm):
    pass


class nnUNetTrainerGenesis_reinitLastStage_demo(PlansScheduleMixin, nnUNetTrainerGenesis_reinitLastStage):
    pass


class nnUNetTrainerGenesis_headWarmup_demo(PlansScheduleMixin, nnUNetTrainerGenesis_headWarmup):
    pass


class nnUNetTrainerGenesis_lowLR_demo(PlansScheduleMixin, nnUNetTrainerGenesis_lowLR):
    pass


class nnUNetTrainerGenesis_nnUNetRecipe_demo(PlansScheduleMixin, nnUNetTrainerGenesis_nnUNetRecipe):
    pass


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
