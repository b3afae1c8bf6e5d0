"""Imported by nnU-Net through ``nnUNet_extTrainer``: re-exports only (real code: nnunet_genesis.trainers.genesis)."""

from nnunet_genesis.trainers.genesis import (  # noqa: F401
    nnUNetTrainerGenesis,
    nnUNetTrainerGenesis_100epochs,
    nnUNetTrainerGenesis_250epochs,
    nnUNetTrainerGenesis_asPretrained,
    nnUNetTrainerGenesis_asPretrained_smoke,
    nnUNetTrainerGenesis_encoderOnly,
    nnUNetTrainerGenesis_freezeEncoder,
    nnUNetTrainerGenesis_headWarmup,
    nnUNetTrainerGenesis_lowLR,
    nnUNetTrainerGenesis_nnUNetRecipe,
    nnUNetTrainerGenesis_reinitLastStage,
    nnUNetTrainerGenesis_resetDecoderNorm,
    nnUNetTrainerGenesis_resetAllNorm,
    nnUNetTrainerGenesis_resetLastNorm,
    nnUNetTrainerGenesis_smoke,
    nnUNetTrainerScratch,
    nnUNetTrainerScratch_100epochs,
    nnUNetTrainerScratch_250epochs,
    nnUNetTrainerScratch_smoke,
    nnUNetTrainerWarmupPoly,
)
