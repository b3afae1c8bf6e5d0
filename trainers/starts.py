"""Fine-tuning starts other than the default, one idea per subclass (as nnU-Net's variants).

Each changes one thing about how ``nnUNetTrainerGenesis`` begins: which transferred layers are
kept or reset, a head-only warm-up, a lower learning rate on the transferred layers, nnU-Net's
recipe for pretrained weights, a frozen encoder. Their measured effect is in
docs/benchmark_transfer.md.
"""

from __future__ import annotations

import torch

from nnunet_genesis.network import unwrap_network
from nnunet_genesis.trainers.freezing import ParameterFreezer
from nnunet_genesis.trainers.genesis import nnUNetTrainerGenesis


def _head_parameter_ids(network: torch.nn.Module) -> set[int]:
    """ids of the segmentation head's parameters (never transferred)."""
    return {id(p) for p in network.decoder.seg_layers.parameters()}


class nnUNetTrainerGenesis_encoderOnly(nnUNetTrainerGenesis):
    """Transfers the encoder (and stem) only; decoder and head start random."""

    include_decoder = False


class nnUNetTrainerGenesis_asPretrained(nnUNetTrainerGenesis):
    """The default start under its own name: encoder and decoder as restoration left them."""


class nnUNetTrainerGenesis_resetDecoderNorm(nnUNetTrainerGenesis):
    """The whole network, the decoder's normalisation layers reset (scale 1, shift 0)."""

    reset_norm_affine = "decoder"


class nnUNetTrainerGenesis_resetLastNorm(nnUNetTrainerGenesis):
    """The whole network, only the last decoder stage's normalisation layers reset."""

    reset_norm_affine = "last_stage"


class nnUNetTrainerGenesis_resetAllNorm(nnUNetTrainerGenesis):
    """The whole network, every normalisation layer reset, encoder included."""

    reset_norm_affine = "all"


class nnUNetTrainerGenesis_reinitLastStage(nnUNetTrainerGenesis):
    """The whole network, the highest-resolution decoder stage re-initialised."""

    reinit_last_decoder_stage = True


class nnUNetTrainerGenesis_headWarmup(nnUNetTrainerGenesis):
    """Linear probing, then fine-tuning: only the segmentation head trains for the first
    ``head_warmup_share`` of the epochs (at least one), then everything.

    Frozen through the optimizer (``ParameterFreezer``, see ``freezing``), not ``requires_grad``.
    """

    head_warmup_share: float = 0.1

    def initialize(self):
        super().initialize()
        net = unwrap_network(self.network)
        head = _head_parameter_ids(net)
        self.head_warmup_epochs = max(1, int(round(self.head_warmup_share * self.num_epochs)))
        self.body_freezer = ParameterFreezer(
            [p for p in net.parameters() if id(p) not in head],
            is_frozen=lambda: self.current_epoch < self.head_warmup_epochs,
        ).attach(self.optimizer)


class nnUNetTrainerGenesis_lowLR(nnUNetTrainerGenesis):
    """Transferred layers learn at ``transferred_lr_scale`` (0.1) times the head's learning rate."""

    transferred_lr_scale: float = 0.1

    def configure_optimizers(self):
        optimizer, scheduler = super().configure_optimizers()
        net = unwrap_network(self.network)
        head = _head_parameter_ids(net)
        group = optimizer.param_groups[0]
        options = {k: v for k, v in group.items() if k != "params"}
        optimizer.param_groups.clear()
        optimizer.add_param_group({**options, "params": [p for p in net.parameters() if id(p) in head]})
        optimizer.add_param_group({**options, "params": [p for p in net.parameters() if id(p) not in head],
                                   "lr_scale": self.transferred_lr_scale})
        scheduler.step(0)  # set both groups' learning rates now
        return optimizer, scheduler


class nnUNetTrainerGenesis_nnUNetRecipe(nnUNetTrainerGenesis_encoderOnly):
    """nnU-Net's recipe for pretrained weights: encoder (and stem) only, learning rate 1e-3, a
    long linear warm-up (a fifth of the epochs, whatever ``warmup_epochs`` says)."""

    warmup_share = 0.2

    def resolved_warmup_epochs(self) -> int:
        return max(1, int(round(self.warmup_share * self.num_epochs)))

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 1e-3


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
            unwrap_network(self.network).encoder.parameters(),
            is_frozen=lambda: self.current_epoch < self.freeze_encoder_epochs,
        ).attach(self.optimizer)

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        if self.current_epoch < self.freeze_encoder_epochs:
            self.print_to_log_file(f"Encoder frozen (epochs 0-{self.freeze_encoder_epochs - 1})")
        elif self.current_epoch == self.freeze_encoder_epochs:
            self.print_to_log_file("Encoder unfrozen from this epoch on")
