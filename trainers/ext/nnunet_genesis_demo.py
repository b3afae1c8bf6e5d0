"""Imported by nnU-Net through ``nnUNet_extTrainer``: re-exports only (real code: nnunet_genesis.trainers.demo_schedules)."""

from nnunet_genesis.trainers.demo_schedules import nnUNetTrainerGenesis_demo, nnUNetTrainerScratch_demo  # noqa: F401
