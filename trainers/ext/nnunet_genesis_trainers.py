"""Imported by nnU-Net through ``nnUNet_extTrainer``: re-exports only (real code:
nnunet_genesis.trainers.genesis, .starts and .lengths)."""

from nnunet_genesis.trainers.genesis import (  # noqa: F401
    nnUNetTrainerGenesis,
    nnUNetTrainerScratch,
    nnUNetTrainerWarmupPoly,
)
from nnunet_genesis.trainers.lengths import (  # noqa: F401
    nnUNetTrainerGenesis_100epochs,
    nnUNetTrainerGenesis_250epochs,
    nnUNetTrainerGenesis_asPretrained_smoke,
    nnUNetTrainerGenesis_encoderOnly_smoke,
    nnUNetTrainerGenesis_smoke,
    nnUNetTrainerScratch_100epochs,
    nnUNetTrainerScratch_250epochs,
    nnUNetTrainerScratch_smoke,
)
from nnunet_genesis.trainers.starts import (  # noqa: F401
    nnUNetTrainerGenesis_asPretrained,
    nnUNetTrainerGenesis_encoderOnly,
    nnUNetTrainerGenesis_freezeEncoder,
    nnUNetTrainerGenesis_headWarmup,
    nnUNetTrainerGenesis_lowLR,
    nnUNetTrainerGenesis_nnUNetRecipe,
    nnUNetTrainerGenesis_reinitLastStage,
    nnUNetTrainerGenesis_resetAllNorm,
    nnUNetTrainerGenesis_resetDecoderNorm,
    nnUNetTrainerGenesis_resetLastNorm,
)
