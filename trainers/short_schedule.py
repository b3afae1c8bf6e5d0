"""The short, seeded schedule carried in the plans (``plans["genesis_schedule"]``).

nnU-Net chooses trainers by class name, so a schedule cannot be a command-line option. The demo
and ``benchmarks/transfer.py`` write it into a plans variant instead
(``nnunet_genesis.workflows.cpu_plans.write_schedule_plans``); ``attach`` copies it into the
Genesis variant and nnU-Net copies the plans into every results folder, so a trained model records
the schedule it ran. The ``_demo`` trainers read it (``schedule_variants.PlansScheduleMixin``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from nnunet_genesis.blocks import check_known_keys
from nnunet_genesis.errors import GenesisUserError

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
                f"nnunet_genesis.workflows.cpu_plans.write_schedule_plans (the demo and "
                f"benchmarks/transfer.py do), or use nnUNetTrainerGenesis / nnUNetTrainerScratch.")
        try:
            check_known_keys(cls, block, "it")
            return cls(**dict(block))
        except (TypeError, ValueError) as e:
            raise GenesisUserError(f"The '{PLANS_KEY}' block of the {where} is invalid: {e}.") from None
