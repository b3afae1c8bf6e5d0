"""What determines the demo's results (stored in OUT/demo_config.json), and its fixed names."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any
from nnunet_genesis.trainers.short_schedule import ShortSchedule

CONFIGURATION = "3d_fullres"
SOURCE_PLANS = "nnUNetPlans"
SCHEDULE_PLANS = "nnUNetPlans_demo"
GENESIS_PLANS = "nnUNetPlans_demo_genesis"
GENESIS_TRAINER = "nnUNetTrainerGenesis_demo"
ENCODER_TRAINER = "nnUNetTrainerGenesis_encoderOnly_demo"
SCRATCH_TRAINER = "nnUNetTrainerScratch_demo"
FOLD = 0


@dataclass(frozen=True)
class DemoSettings:
    """Everything that determines the demo's results."""

    msd_task: str | None = None  # absolute path of an MSD task folder; None: synthetic
    device: str = "cpu"
    seed: int = 0
    labelled: int = 8  # labelled cases the models are fine-tuned on
    val_cases: int = 2  # labelled cases for nnU-Net's own validation during training
    synthetic_train: int = 24  # synthetic: imagesTr cases (all used, unlabelled, for pretraining)
    synthetic_test: int = 8  # synthetic: imagesTs cases (the test set, labels in labelsTs)
    synthetic_size: int = 32  # synthetic: cube side in voxels (1 mm)
    max_cases: int | None = None  # MSD: use only the first N labelled cases of the task
    max_test_images: int | None = None  # MSD: use only the first N imagesTs images
    test_cases: int = 10  # MSD: labelled cases held out as the test set
    pretrain_epochs: int = 20
    pretrain_iterations: int = 40
    finetune_epochs: int = 40
    finetune_iterations: int = 40
    warmup_epochs: int = 2
    width: float = 1.0  # feature maps per stage relative to nnU-Net's plan (0.25 on CPU)
    preset: str = "mild"  # the pretraining's GenesisConfig preset: "mild" (short runs) or "paper"
    transfer: str = "full"  # Genesis arm: "full" (encoder and decoder: the default start, the papers') or "encoder"
    da_workers: int | None = 0  # nnUNet_n_proc_DA; None: nnU-Net's choice

    @property
    def synthetic(self) -> bool:
        return self.msd_task is None

    @property
    def genesis_trainer(self) -> str:
        """The Genesis arm's trainer: the default start (the whole network) or the encoder only."""
        return GENESIS_TRAINER if self.transfer == "full" else ENCODER_TRAINER

    def schedule(self):
        return ShortSchedule(epochs=self.finetune_epochs, iterations_per_epoch=self.finetune_iterations,
                             val_iterations_per_epoch=2, warmup_epochs=self.warmup_epochs, seed=self.seed,
                             test_time_mirroring=self.device != "cpu")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --quick: the smoke sizes (every step runs; the scores mean nothing)
QUICK = dict(synthetic_train=8, synthetic_test=3, synthetic_size=32, labelled=3, val_cases=1,
             test_cases=3, pretrain_epochs=1, pretrain_iterations=3, finetune_epochs=2, finetune_iterations=3,
             warmup_epochs=1)
