"""Schedule-length variants: nnU-Net's ``training_length`` idea as mixins shared by the Genesis
and the scratch trainers (``_100epochs``, ``_250epochs``, ``_smoke``)."""

from __future__ import annotations

import torch

from nnunet_genesis.trainers.genesis import nnUNetTrainerGenesis, nnUNetTrainerScratch
from nnunet_genesis.trainers.starts import nnUNetTrainerGenesis_asPretrained, nnUNetTrainerGenesis_encoderOnly


class EpochsMixin:
    """Sets ``num_epochs`` from the class attribute ``epochs``.

    nnU-Net's ``training_length`` variants (``nnUNetTrainer_100epochs``) as one mixin, so the
    Genesis and the scratch trainers get their lengths from one place.
    """

    epochs: int

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.epochs


class nnUNetTrainerGenesis_100epochs(EpochsMixin, nnUNetTrainerGenesis):
    epochs = 100


class nnUNetTrainerGenesis_250epochs(EpochsMixin, nnUNetTrainerGenesis):
    epochs = 250


class SmokeScheduleMixin:
    """2 epochs of 2 iterations of batch size 1, 1 validation iteration, 1 warm-up epoch,
    no test-time mirroring.

    For CPU smoke tests and demos only: a 3D backward pass on a CPU takes seconds, so the
    batch is 1 (not the plans' batch size) outside DDP, and test-time mirroring (8 flipped
    forward passes per patch in 3D, in the final validation and in nnUNetv2_predict) is
    switched off; training-time mirroring augmentation stays on.
    """

    warmup_epochs = 1

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 2
        self.num_iterations_per_epoch = 2
        self.num_val_iterations_per_epoch = 1

    def _set_batch_size_and_oversample(self):
        super()._set_batch_size_and_oversample()
        if not self.is_ddp:
            self.batch_size = 1

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        result = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return result


class nnUNetTrainerGenesis_smoke(SmokeScheduleMixin, nnUNetTrainerGenesis):
    """Smoke schedule starting from the whole Genesis network (the default start)."""


class nnUNetTrainerGenesis_asPretrained_smoke(SmokeScheduleMixin, nnUNetTrainerGenesis_asPretrained):
    """The same as nnUNetTrainerGenesis_smoke, under the start's own name."""


class nnUNetTrainerGenesis_encoderOnly_smoke(SmokeScheduleMixin, nnUNetTrainerGenesis_encoderOnly):
    """Smoke schedule starting from the Genesis encoder only."""


class nnUNetTrainerScratch_100epochs(EpochsMixin, nnUNetTrainerScratch):
    epochs = 100


class nnUNetTrainerScratch_250epochs(EpochsMixin, nnUNetTrainerScratch):
    epochs = 250


class nnUNetTrainerScratch_smoke(SmokeScheduleMixin, nnUNetTrainerScratch):
    """Smoke schedule from random weights: the fair from-scratch partner of nnUNetTrainerGenesis_smoke."""
