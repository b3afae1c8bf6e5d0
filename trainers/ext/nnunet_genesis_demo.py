"""Imported by nnU-Net through ``nnUNet_extTrainer``: re-exports only (real code: nnunet_genesis.trainers.demo_schedules)."""

from nnunet_genesis.trainers.demo_schedules import (  # noqa: F401
    nnUNetTrainerGenesis_asPretrained_demo,
    nnUNetTrainerGenesis_demo,
    nnUNetTrainerGenesis_encoderOnly_demo,
    nnUNetTrainerGenesis_headWarmup_demo,
    nnUNetTrainerGenesis_lowLR_demo,
    nnUNetTrainerGenesis_nnUNetRecipe_demo,
    nnUNetTrainerGenesis_reinitLastStage_demo,
    nnUNetTrainerGenesis_resetAllNorm_demo,
    nnUNetTrainerGenesis_resetDecoderNorm_demo,
    nnUNetTrainerGenesis_resetLastNorm_demo,
    nnUNetTrainerScratch_demo,
    nnUNetTrainerStock_demo,
)
