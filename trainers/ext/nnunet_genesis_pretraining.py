"""Imported by nnU-Net through ``nnUNet_extTrainer``: re-export only (real code: nnunet_genesis.pretraining.trainer)."""

from nnunet_genesis.pretraining.trainer import nnUNetTrainerGenesisPretrain  # noqa: F401
