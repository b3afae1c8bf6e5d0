"""Schedules of the trainer classes, as mixins over any start or partner: nnU-Net's
``training_length`` idea (``_100epochs``, ``_250epochs``), a smoke schedule (``_smoke``) and the
short schedule read from the plans (``_demo``, the demo's and the benchmark's).

``variants`` combines each with every start of the registry and with the scratch partner, so a
start and its partner always run the identical schedule.
"""

from __future__ import annotations

import numpy as np
import torch

from nnunet_genesis.cpu_speed import bf16_forward, channels_last_pays, cpu_has_native_bf16, use_allowed_cpus
from nnunet_genesis.errors import read_trainer_block
from nnunet_genesis.seeding import seed_nnunet_process
from nnunet_genesis.trainers.short_schedule import PLANS_KEY, ShortSchedule


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


class PlansScheduleMixin:
    """The short schedule of ``plans["genesis_schedule"]``, seeded, for a fair comparison of arms.

    Every arm of a comparison (the demo's, the benchmark's) differs in its initial weights only:
    same epochs, iterations, learning rate, warm-up, batch, patch, augmentation, cases and seed.
    The warm-up is given to scratch too on purpose: it protects pretrained features from the
    first large gradients, but giving it to one arm only would make the schedule a second
    difference between the arms.

    Seeding: nnU-Net's network initialisation, patch sampling and augmentation draw from the
    process-global ``random``/``numpy``/``torch`` generators of the ``nnUNetv2_train`` process.
    They are seeded (in that process only) from the schedule's seed and the fold before the
    network is built and again before the data loaders start, so all arms of one fold start
    from the same random initialisation of what they do not transfer and, with
    ``nnUNet_n_proc_DA=0`` (augmentation in the main process), see the same sequence of
    training patches, while each fold (the benchmark: one per K and seed) gets its own. With
    background augmentation workers nnU-Net reseeds the workers from the OS, so the patch
    sequences differ between runs.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        self.short_schedule = read_trainer_block(ShortSchedule.from_plans, plans, self)
        super().__init__(plans, configuration, fold, dataset_json, device)
        s = self.short_schedule
        self.num_epochs = s.epochs
        self.num_iterations_per_epoch = s.iterations_per_epoch
        self.num_val_iterations_per_epoch = s.val_iterations_per_epoch
        self.warmup_epochs = s.warmup_epochs  # read by nnUNetTrainerWarmupPoly.resolved_warmup_epochs

    def _fold_seed(self, offset: int) -> int:
        return int(np.random.SeedSequence([self.short_schedule.seed, self.fold, offset]).generate_state(1)[0])

    def initialize(self):
        if not self.was_initialized:
            self.print_to_log_file(f"Schedule from the plans ({PLANS_KEY}): {self.short_schedule.to_dict()}")
            use_allowed_cpus()
            seed_nnunet_process(self._fold_seed(0))  # same random init of what is not transferred
        super().initialize()
        if self.device.type == "cpu" and channels_last_pays(self.configuration_manager.network_arch_init_kwargs):
            # the checkpoint's state dict loads into any memory layout
            self.network.to(memory_format=torch.channels_last_3d)
        if self.device.type == "cpu" and self.short_schedule.cpu_bf16:
            self.network.forward = bf16_forward(self.network.forward)  # the state dict is unchanged
            self.print_to_log_file("CPU bfloat16 autocast on the forward pass (loss, weights, gradients float32)"
                                   + ("" if cpu_has_native_bf16() else "; this CPU has no bfloat16 instructions, "
                                      "so this is slower than float32"))

    def get_dataloaders(self):
        seed_nnunet_process(self._fold_seed(1))  # same patch sequence in every arm of a fold
        return super().get_dataloaders()

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if not self.short_schedule.training_mirroring:
            mirror_axes = None  # no mirroring in the training transforms (nnUNetTrainerNoMirroring's way)
        if not self.short_schedule.test_time_mirroring:
            self.inference_allowed_mirroring_axes = None  # saved in the checkpoint, read by the predictor
        return rotation, dummy_2d, initial_patch_size, mirror_axes


class Epochs100Mixin(EpochsMixin):
    """100 epochs (nnU-Net's nnUNetTrainer_100epochs)."""

    epochs = 100


class Epochs250Mixin(EpochsMixin):
    """250 epochs (nnU-Net's nnUNetTrainer_250epochs)."""

    epochs = 250


# class-name suffix (starts.SCHEDULES) -> the mixin of that schedule ("": nnU-Net's default, 1000 epochs)
SCHEDULE_MIXINS: dict[str, type | None] = {
    "": None,
    "100epochs": Epochs100Mixin,
    "250epochs": Epochs250Mixin,
    "smoke": SmokeScheduleMixin,
    "demo": PlansScheduleMixin,
}
