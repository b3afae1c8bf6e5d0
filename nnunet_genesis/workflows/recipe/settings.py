"""What ``nnunet-genesis recipe`` was asked to do: the settings, the models they imply, and the
table of plain partners (the trainer of the same schedule without the Genesis start).

Genesis networks are 3D, so 2D configurations are trained with the Genesis trainer's plain
partner on the source plans; the partner is also the default ``--baseline``. The registry of
starts (``trainers/starts.py``) pairs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.trainers.starts import genesis_trainers, scratch_partner

DEFAULT_TRAINER = "nnUNetTrainerGenesis"
GENESIS_ARM, BASELINE_ARM = "genesis", "baseline"

def plain_partner(trainer: str, override: str | None = None) -> str:
    """The plain trainer of ``trainer``'s schedule (``override`` if given): the registry's scratch
    partner (``trainers.starts.scratch_partner``)."""
    if override:
        return override
    partner = scratch_partner(trainer)
    if partner is None:
        with_partner = sorted(name for name in genesis_trainers() if scratch_partner(name))
        raise GenesisUserError(
            f"Trainer {trainer} has no plain partner (a trainer of the same schedule from random weights: "
            f"trainers/starts.py, scratch_partner), which is needed for 2D configurations and as the default "
            f"--baseline. Name the trainer with the same schedule and random weights with --plain-trainer, or "
            f"choose a trainer that has one: {', '.join(with_partner)}.")
    return partner


@dataclass(frozen=True, order=True)
class Model:
    """One nnU-Net model: what ``nnUNet_results/DATASET/TRAINER__PLANS__CONFIGURATION`` holds."""

    trainer: str
    plans: str
    configuration: str

    @property
    def identifier(self) -> str:
        return f"{self.trainer}__{self.plans}__{self.configuration}"

    def as_nnunet_dict(self) -> dict[str, str]:
        """The form find_best_configuration takes (``allowed_trained_models``)."""
        return {"plans": self.plans, "configuration": self.configuration, "trainer": self.trainer}


@dataclass(frozen=True)
class OtherTask:
    """Another Decathlon task's finished recipe, whose predictions go into this recipe's zip."""

    task: str
    predictions: Path
    images: Path
    work_dir: Path

    def to_dict(self) -> dict[str, str]:
        return {"task": self.task, "predictions": str(self.predictions), "images": str(self.images),
                "work_dir": str(self.work_dir)}


@dataclass(frozen=True)
class RecipeSettings:
    """Everything the recipe was asked for, resolved (dataset name, checkpoint digest, folds)."""

    dataset: str  # DatasetXXX_Name
    checkpoint: Path
    checkpoint_sha256: str
    configurations: tuple[str, ...]
    folds: tuple[int, ...]
    trainer: str = DEFAULT_TRAINER
    plain_trainer: str = "nnUNetTrainerScratch"
    baseline_trainer: str | None = None
    source_plans: str = "nnUNetPlans"
    variant: str = "nnUNetPlans_genesis"
    device: str = "cuda"
    images_ts: Path | None = None
    task: str | None = None  # Decathlon task name; None: predictions are not packaged
    other_tasks: tuple[OtherTask, ...] = ()  # further tasks packaged into the same zip
    output: Path | None = None  # the submission zip
    work_dir: Path = Path(".")

    def identity(self) -> dict[str, Any]:
        """The settings that decide which models are trained and selected: a work folder holding
        another identity belongs to another recipe."""
        return {"dataset": self.dataset, "checkpoint_sha256": self.checkpoint_sha256,
                "configurations": list(self.configurations), "folds": list(self.folds),
                "trainer": self.trainer, "plain_trainer": self.plain_trainer,
                "baseline_trainer": self.baseline_trainer, "source_plans": self.source_plans,
                "variant": self.variant}

    def to_dict(self) -> dict[str, Any]:
        return {**self.identity(), "checkpoint": str(self.checkpoint), "device": self.device,
                "images_ts": None if self.images_ts is None else str(self.images_ts), "task": self.task,
                "other_tasks": [t.to_dict() for t in self.other_tasks],
                "output": None if self.output is None else str(self.output), "work_dir": str(self.work_dir)}

    def arms(self) -> tuple[str, ...]:
        return (GENESIS_ARM, BASELINE_ARM) if self.baseline_trainer else (GENESIS_ARM,)

    def arm_trainer(self, arm: str) -> str:
        return self.trainer if arm == GENESIS_ARM else str(self.baseline_trainer)

    def model_for(self, arm: str, configuration: str, is_3d: bool) -> Model:
        """The Genesis arm trains 3D configurations from the checkpoint (the variant's plans) and
        2D ones with the plain partner; the baseline arm trains everything from scratch."""
        if arm == GENESIS_ARM:
            if is_3d:
                return Model(self.trainer, self.variant, configuration)
            return Model(self.plain_trainer, self.source_plans, configuration)
        return Model(str(self.baseline_trainer), self.source_plans, configuration)
