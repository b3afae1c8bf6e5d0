"""Imported by nnU-Net through ``nnUNet_extTrainer``: re-exports only (every trainer is made in
nnunet_genesis.trainers.variants from the registry of starts)."""

from nnunet_genesis.trainers.variants import *  # noqa: F401,F403
from nnunet_genesis.trainers.variants import __all__  # noqa: F401
