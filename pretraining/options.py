"""The pretraining run's settings: one dataclass, stored in the pretraining plans.

``nnunet-genesis pretrain`` writes these settings into the plans file of the pretraining
dataset under ``plans["genesis_pretraining"]``. The trainer reads them from there, so the same
run can also be started or resumed with the stock ``nnUNetv2_train`` command (for example with
``-num_gpus 4``), and nnU-Net's copy of the plans in the results folder records them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from nnunet_genesis.blocks import check_known_keys
from nnunet_genesis.transforms import GenesisConfig

PLANS_KEY = "genesis_pretraining"
CORRUPTION_MODES = ("auto", "device", "workers")
OPTIMIZERS = ("adamw", "sgd")


@dataclass
class PretrainOptions:
    """Settings of one pretraining run (defaults are nnU-Net-like, for a GPU).

    epochs, iterations_per_epoch: the schedule (nnU-Net's poly learning rate runs over
        ``epochs``).
    seed: seeds the fixed validation patches and their corruption, the train/validation
        split, the initial weights and the training corruptions: on the device route per
        (rank, epoch, iteration), so a resumed run corrupts like an uninterrupted one; on the
        workers route per worker process (mixed with its process id, so not reproducible).
        nnU-Net's patch sampling and spatial augmentation use its own unseeded random
        generators, so two runs are never bit-identical.
    val_patches: number of fixed validation patches scored every epoch (restoration MSE).
    png_every: epochs between the PNGs of original / corrupted / restored slices.
    save_every: epochs between ``checkpoint_latest.pth`` / ``genesis_latest.pth`` writes.
    export_folder: where ``genesis_latest.pth``, ``genesis_final.pth`` and the PNGs go;
        empty means nnU-Net's output folder of the run.
    plans_from: ``{"dataset", "plans", "configuration"}`` of the target dataset whose plans
        were transferred; empty for the universal Genesis plan.
    corruption: where the training batches are corrupted: "device" (``corrupt_batch`` on the
        training device inside ``train_step``), "workers" (``GenesisCorruptionTransform`` in
        nnU-Net's data-augmentation workers) or "auto" (device on CUDA, workers otherwise).
    optimizer, learning_rate: "adamw" (AdamW, no weight decay) or "sgd" (nnU-Net's SGD,
        Nesterov momentum 0.99, weight decay 3e-5) at ``learning_rate``, decayed by nnU-Net's
        poly schedule (over the epochs, or over the time budget when one is set). Why AdamW is
        the default: docs/pretraining.md, "Optimiser".
    time_budget_minutes: 0 for none; otherwise training stops at the end of the epoch whose end
        crosses this much training time, and the learning rate decays over the budget.
    preset: the ``GenesisConfig`` preset the corruption rates started from (a record; the
        rates themselves are in ``genesis``).
    genesis: ``GenesisConfig.to_dict()``.
    """

    epochs: int = 100
    iterations_per_epoch: int = 250
    seed: int = 12345
    val_patches: int = 16
    png_every: int = 5
    save_every: int = 1
    export_folder: str = ""
    plans_from: dict[str, str] = field(default_factory=dict)
    corruption: str = "auto"
    optimizer: str = "adamw"
    learning_rate: float = 1e-3
    time_budget_minutes: float = 0.0
    preset: str = "paper"
    genesis: dict[str, Any] = field(default_factory=lambda: GenesisConfig().to_dict())

    def __post_init__(self) -> None:
        if self.corruption not in CORRUPTION_MODES:
            raise ValueError(f"corruption must be one of {CORRUPTION_MODES}, got {self.corruption!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < 10):
            raise ValueError(f"learning_rate must be in (0, 10), got {self.learning_rate!r}")
        if not (isinstance(self.time_budget_minutes, (int, float)) and 0 <= self.time_budget_minutes < 1e6):
            raise ValueError(f"time_budget_minutes must be >= 0, got {self.time_budget_minutes!r}")

    def genesis_config(self) -> GenesisConfig:
        return GenesisConfig.from_dict(self.genesis)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_plans(cls, plans: Mapping[str, Any]) -> "PretrainOptions":
        """Read the block from a plans dict; absent keys take the defaults, except that a block
        without ``optimizer`` (written before AdamW became the default) keeps nnU-Net's SGD."""
        block = plans.get(PLANS_KEY) or {}
        check_known_keys(cls, block, f"plans['{PLANS_KEY}']")
        block = dict(block)
        if block and "optimizer" not in block:  # a run prepared before AdamW was the default continues as it began
            block.update(optimizer="sgd", learning_rate=1e-2)
        return cls(**block)
