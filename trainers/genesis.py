"""nnU-Net trainers that fine-tune from a Models Genesis checkpoint.

Use them with the stock commands (``nnunet-genesis env`` prints the ``nnUNet_extTrainer``
line that lets nnU-Net find them)::

    nnunet-genesis attach -d 4 -c genesis_final.pth          # writes nnUNetPlans_genesis
    nnUNetv2_train 4 3d_fullres 0 -tr nnUNetTrainerGenesis -p nnUNetPlans_genesis
    nnUNetv2_predict -i IN -o OUT -d 4 -c 3d_fullres -f 0 -tr nnUNetTrainerGenesis -p nnUNetPlans_genesis

The checkpoint comes from the plans (``plans["genesis"]``, see ``plans_block``), so the
results folder's ``plans.json`` records which weights a model started from.

When the weights are transferred: at the start of a *fresh* training only, in
``on_train_start`` after the network is built (and wrapped by torch.compile / DDP; the
transfer works on the bare module, in place, identically on every rank). Continuing
(``--c``), validating (``--val``) and ``nnUNetv2_predict`` load nnU-Net's own checkpoints
and never read the Genesis checkpoint; the predictor only calls the static
``build_network_architecture``, which these trainers do not change.
"""

from __future__ import annotations

from os.path import join

import torch
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_genesis.checkpoint import load_checkpoint
from nnunet_genesis.errors import GenesisUserError

from nnunet_genesis.trainers.freezing import ParameterFreezer
from nnunet_genesis.trainers.plans_block import GenesisPlansBlock
from nnunet_genesis.trainers.schedules import WarmupPolyLRScheduler

TRANSFER_REPORT_NAME = "genesis_transfer_report.json"


def bare_network(network: torch.nn.Module) -> torch.nn.Module:
    """The module under DDP's and torch.compile's wrappers (same parameter objects)."""
    if isinstance(network, DistributedDataParallel):
        network = network.module
    if isinstance(network, OptimizedModule):
        network = network._orig_mod
    return network


def _weight_fingerprint(network: torch.nn.Module) -> torch.Tensor:
    """Per-parameter sums: cheap evidence of whether someone loaded weights into the network."""
    with torch.no_grad():
        return torch.stack([p.detach().double().sum() for p in network.parameters()]).cpu()


class nnUNetTrainerWarmupPoly(nnUNetTrainer):
    """nnU-Net's trainer with a linear learning-rate warm-up before the poly schedule.

    ``warmup_epochs`` (class attribute, default 10) epochs ramp the learning rate linearly up
    to ``initial_lr``; then nnU-Net's poly decay runs over the remaining epochs (see
    ``nnunet_genesis.trainers.schedules``). The optimizer is nnU-Net's own (SGD, Nesterov,
    momentum 0.99).
    """

    warmup_epochs: int = 10

    def configure_optimizers(self):
        optimizer, _ = super().configure_optimizers()
        lr_scheduler = WarmupPolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, self.warmup_epochs)
        return optimizer, lr_scheduler


class nnUNetTrainerGenesis(nnUNetTrainerWarmupPoly):
    """Fine-tunes every transferred layer from the Genesis checkpoint named in the plans.

    Raises ``GenesisUserError`` (training does not start) when the plans name no checkpoint,
    the file is missing, its sha256 differs from the one recorded by ``attach``, or its
    weights cannot be mapped onto this configuration's network.
    """

    include_decoder: bool = True  # False: only the encoder is transferred, the decoder starts random

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # Checked before nnU-Net creates any output folder: a Genesis trainer needs a checkpoint.
        self.genesis_block = GenesisPlansBlock.from_plans(plans, who=f"Trainer {type(self).__name__}")
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.genesis_transfer_report = None
        self._fingerprint_after_init = None

    def initialize(self):
        super().initialize()
        self._fingerprint_after_init = _weight_fingerprint(bare_network(self.network))

    def on_train_start(self):
        if not self.was_initialized:
            self.initialize()
        # current_epoch > 0 means nnU-Net loaded one of its checkpoints (--c): nothing to transfer.
        if self.current_epoch == 0:
            self._refuse_foreign_pretrained_weights()
            self.transfer_genesis_weights()
        super().on_train_start()

    def _refuse_foreign_pretrained_weights(self) -> None:
        if not torch.equal(_weight_fingerprint(bare_network(self.network)), self._fingerprint_after_init):
            raise self._stopping(
                f"The network weights of {type(self).__name__} were changed before training started, "
                f"most likely by nnUNetv2_train's -pretrained_weights option. A Genesis trainer takes "
                f"its weights from the checkpoint named in the plans ({self.genesis_block.checkpoint}); "
                f"drop -pretrained_weights, or use a stock trainer to start from other weights."
            )

    def transfer_genesis_weights(self):
        """Verify, load and transfer the plans' Genesis checkpoint; print and save the report."""
        from nnunet_genesis.weight_transfer import transfer_weights

        try:
            path = self.genesis_block.verified_checkpoint()
            checkpoint = load_checkpoint(path)
            report = transfer_weights(bare_network(self.network), checkpoint,
                                      include_decoder=self.include_decoder)
        except GenesisUserError as e:
            raise self._stopping(str(e)) from None
        self.print_to_log_file(f"Genesis weights from {path} (sha256 {self.genesis_block.sha256}):\n"
                               f"{report.summary_text()}", add_timestamp=False)
        if self.local_rank == 0:
            report.save_json(join(self.output_folder, TRANSFER_REPORT_NAME))
        self.genesis_transfer_report = report
        return report

    def _stopping(self, message: str) -> GenesisUserError:
        """Log why training stops (training log and console); returns the error to raise."""
        self.print_to_log_file(f"\nnnU-Net Genesis: training not started.\n{message}\n", add_timestamp=False)
        return GenesisUserError(message)


class nnUNetTrainerGenesis_encoderOnly(nnUNetTrainerGenesis):
    """Transfers the encoder only; decoder and head start from nnU-Net's random init."""

    include_decoder = False


class nnUNetTrainerGenesis_freezeEncoder(nnUNetTrainerGenesis):
    """Encoder frozen for the first ``freeze_encoder_epochs`` epochs, then trained with the rest.

    Frozen means the optimizer skips the encoder parameters (no step, no weight decay, no
    momentum; see ``nnunet_genesis.trainers.freezing`` for why this is done in the optimizer
    rather than with ``requires_grad``). The learning-rate schedule is unchanged.
    """

    freeze_encoder_epochs: int = 50

    def initialize(self):
        super().initialize()
        self.encoder_freezer = ParameterFreezer(
            bare_network(self.network).encoder.parameters(),
            is_frozen=lambda: self.current_epoch < self.freeze_encoder_epochs,
        ).attach(self.optimizer)

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        if self.current_epoch < self.freeze_encoder_epochs:
            self.print_to_log_file(f"Encoder frozen (epochs 0-{self.freeze_encoder_epochs - 1})")
        elif self.current_epoch == self.freeze_encoder_epochs:
            self.print_to_log_file("Encoder unfrozen from this epoch on")


class nnUNetTrainerGenesis_100epochs(nnUNetTrainerGenesis):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 100


class nnUNetTrainerGenesis_250epochs(nnUNetTrainerGenesis):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 250


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
    """Smoke schedule starting from the Genesis checkpoint."""


class nnUNetTrainerScratch(nnUNetTrainerWarmupPoly):
    """From-scratch baseline with exactly the Genesis schedule (warm-up + poly), no checkpoint."""


class nnUNetTrainerScratch_100epochs(nnUNetTrainerScratch):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 100


class nnUNetTrainerScratch_250epochs(nnUNetTrainerScratch):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 250


class nnUNetTrainerScratch_smoke(SmokeScheduleMixin, nnUNetTrainerScratch):
    """Smoke schedule from random weights: the fair from-scratch partner of nnUNetTrainerGenesis_smoke."""
