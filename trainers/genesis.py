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

import sys
from os.path import join
import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_genesis.checkpoint import load_training_checkpoint, pretrained_weights_requested
from nnunet_genesis.network import unwrap_network
from nnunet_genesis.outputs import written_then_renamed
from nnunet_genesis.pretrained_sources import read_pretrained
from nnunet_genesis.errors import GenesisUserError, read_trainer_block, refuse_training, stopped_on_a_full_disk

from nnunet_genesis.trainers.freezing import ParameterFreezer
from nnunet_genesis.trainers.plans_block import GenesisPlansBlock
from nnunet_genesis.trainers.schedules import WarmupPolyLRScheduler
from nnunet_genesis.trainers.starts import DEFAULT_START, Start
from nnunet_genesis.weight_transfer import cascade_image_channels, transfer_weights

TRANSFER_REPORT_NAME = "genesis_transfer_report.json"
CONTINUE_WITH_C = "with the same nnUNetv2_train command and --c"


def _norm_modules(module: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._NormBase)
            or isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm))]


def adapt_start(network: torch.nn.Module, reset_norm_affine: str, reinit_last_decoder_stage: bool) -> list[str]:
    """Apply a fine-tuning start's resets to the transferred network in place; says what it did.

    ``reset_norm_affine``: "" keeps every transferred normalisation layer; "last_stage",
    "decoder" or "all" set the affine scale/shift of the normalisation layers there to (1, 0).
    ``reinit_last_decoder_stage``: the decoder's highest-resolution stage gets the
    architecture's own random initialisation again.
    """
    # decoder.stages, not decoder: nnU-Net's decoder module also holds a reference to the encoder
    scopes = {"": None, "last_stage": lambda n: n.decoder.stages[-1], "decoder": lambda n: n.decoder.stages,
              "all": lambda n: n}
    if reset_norm_affine not in scopes:
        raise ValueError(f"reset_norm_affine must be one of {sorted(scopes)}, got {reset_norm_affine!r}")
    notes = []
    with torch.no_grad():
        if scopes[reset_norm_affine] is not None:
            norms = [m for m in _norm_modules(scopes[reset_norm_affine](network)) if getattr(m, "weight", None) is not None]
            for m in norms:
                m.weight.fill_(1.0)
                if m.bias is not None:
                    m.bias.zero_()
            notes.append(f"start: affine parameters of {len(norms)} normalisation layer(s) "
                         f"({reset_norm_affine}) reset to scale 1, shift 0")
        if reinit_last_decoder_stage:
            stage = network.decoder.stages[-1]
            init = getattr(type(network), "initialize", None)
            if init is None:
                raise ValueError(f"{type(network).__name__} has no initialize(module) to re-initialise a stage with")
            stage.apply(init)
            notes.append("start: last decoder stage re-initialised (random, as the architecture initialises)")
    return notes


def head_parameter_ids(network: torch.nn.Module) -> set[int]:
    """ids of the segmentation head's parameters (never transferred)."""
    return {id(p) for p in network.decoder.seg_layers.parameters()}


def frozen_parameters(network: torch.nn.Module, part: str) -> list[torch.nn.Parameter]:
    """The parameters a start freezes at first: the encoder's, or all but the head's ("body")."""
    if part == "encoder":
        return list(network.encoder.parameters())
    head = head_parameter_ids(network)
    return [p for p in network.parameters() if id(p) not in head]


def split_head_learning_rate(optimizer: torch.optim.Optimizer, network: torch.nn.Module, scale: float) -> None:
    """Two parameter groups: the head at the schedule's rate, the transferred layers at ``scale`` times it
    (``lr_scale``, which ``WarmupPolyLRScheduler`` applies)."""
    head = head_parameter_ids(network)
    options = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    optimizer.param_groups.clear()
    optimizer.add_param_group({**options, "params": [p for p in network.parameters() if id(p) in head]})
    optimizer.add_param_group({**options, "params": [p for p in network.parameters() if id(p) not in head],
                               "lr_scale": scale})


def _weight_fingerprint(network: torch.nn.Module) -> torch.Tensor:
    """Per-parameter sums: cheap evidence of whether someone loaded weights into the network."""
    with torch.no_grad():
        return torch.stack([p.detach().double().sum() for p in network.parameters()]).cpu()


class nnUNetTrainerSafeLoading(nnUNetTrainer):
    """nnU-Net's trainer that never unpickles code from a file: the base of every trainer class shipped here.

    ``nnUNetv2_train -pretrained_weights FILE`` is refused in ``initialize`` (which nnU-Net calls
    right before it loads FILE with ``torch.load(weights_only=False)``): nothing in FILE runs.
    nnU-Net's ``load_checkpoint`` (``--c``, ``--val``) reads with ``weights_only=False`` too, so
    the file is first loaded with ``weights_only=True`` and verified (CRCs, dtypes, finite values,
    keys and shapes of this trainer's network; ``checkpoint.load_training_checkpoint``) and
    refused with a clear message if that fails; only then does nnU-Net's own method load it.
    (Passing the loaded dict instead is not possible: nnU-Net 2.8's ``load_checkpoint`` only
    works with a file name.)
    """

    def initialize(self):
        if pretrained_weights_requested(sys.argv):
            raise self._stopping(self.pretrained_weights_refusal())
        super().initialize()

    def pretrained_weights_refusal(self) -> str:
        """Why ``-pretrained_weights`` is refused, and what to do instead."""
        return (f"{type(self).__name__} does not take nnUNetv2_train's -pretrained_weights option: nnU-Net would "
                f"unpickle that file with weights_only=False (code in it would run). To start from pretrained "
                f"weights, attach a Genesis checkpoint ('nnunet-genesis attach') and train nnUNetTrainerGenesis; "
                f"to start from random weights, drop -pretrained_weights.")

    def load_checkpoint(self, filename_or_checkpoint):
        if isinstance(filename_or_checkpoint, str):
            if not self.was_initialized:
                self.initialize()
            try:
                load_training_checkpoint(filename_or_checkpoint, unwrap_network(self.network).state_dict())
            except GenesisUserError as e:
                raise self._stopping(f"{e} Delete it and train without --c, or restore the checkpoint this "
                                     f"training wrote.") from None
        super().load_checkpoint(filename_or_checkpoint)

    def run_training(self):
        # nnU-Net's own writes (log, progress.png) end in a traceback on a full disk: a stop instead
        with stopped_on_a_full_disk(self.output_folder, CONTINUE_WITH_C):
            super().run_training()

    def perform_actual_validation(self, save_probabilities: bool = False):
        with stopped_on_a_full_disk(self.output_folder, CONTINUE_WITH_C):
            super().perform_actual_validation(save_probabilities)

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written to a temp file and renamed: a full disk or a kill never leaves
        a half-written file over the last complete checkpoint, and the stop says how to continue."""
        if self.local_rank != 0 or self.disable_checkpointing:
            return super().save_checkpoint(filename)
        try:
            with written_then_renamed(filename) as tmp:
                super().save_checkpoint(str(tmp))
        except GenesisUserError as e:
            raise refuse_training(f"{e} The last complete checkpoint in {self.output_folder} is kept: continue "
                                  f"{CONTINUE_WITH_C}.", "training stopped") from None

    def _stopping(self, message: str) -> GenesisUserError:
        """Log why training stops (training log and stderr); returns the error to raise (exit 2)."""
        self.print_to_log_file(f"\nnnU-Net Genesis: training not started.\n{message}\n", add_timestamp=False,
                               also_print_to_console=False)
        return refuse_training(message)


class nnUNetTrainerWarmupPoly(nnUNetTrainerSafeLoading):
    """nnU-Net's trainer with a linear learning-rate warm-up before the poly schedule.

    The warm-up ramps the learning rate linearly up to ``initial_lr``; then nnU-Net's poly
    decay runs over the remaining epochs (see ``nnunet_genesis.trainers.schedules``). Its
    length scales with the schedule: ``warmup_fraction`` (1 %, nnU-Net's 10 of 1000 epochs) of
    ``num_epochs``, at least one epoch, unless ``warmup_epochs`` is set. A fixed 10-epoch
    warm-up would be half of a 20-epoch run. The optimizer is nnU-Net's own (SGD, Nesterov,
    momentum 0.99).
    """

    warmup_epochs: int | None = None
    warmup_fraction: float = 0.01

    def resolved_warmup_epochs(self) -> int:
        if self.warmup_epochs is not None:
            return int(self.warmup_epochs)
        return max(1, int(round(self.warmup_fraction * self.num_epochs)))

    def configure_optimizers(self):
        optimizer, _ = super().configure_optimizers()
        self.warmup_epochs = self.resolved_warmup_epochs()
        lr_scheduler = WarmupPolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, self.warmup_epochs)
        return optimizer, lr_scheduler


class nnUNetTrainerGenesis(nnUNetTrainerWarmupPoly):
    """Fine-tunes from the Genesis checkpoint named in the plans, as its ``start`` says.

    ``start`` is an entry of the registry (``starts.STARTS``): which transferred layers are kept,
    reset or frozen, and its learning-rate settings. This class has the default, the papers'
    start: encoder, stem and decoder as restoration left them, only the segmentation head random;
    ``variants`` makes one class per start and schedule. How the starts compare with each other
    and with scratch, and where they do not help, is measured in docs/benchmark_transfer.md.

    Raises ``GenesisUserError`` (training does not start) when the plans name no checkpoint,
    the file is missing, its sha256 differs from the one recorded by ``attach``, or its
    weights cannot be mapped onto this configuration's network.
    """

    start: Start = DEFAULT_START

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # Checked before nnU-Net creates any output folder: a Genesis trainer needs a checkpoint.
        self.genesis_block = read_trainer_block(GenesisPlansBlock.from_plans, plans, self)
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.start.initial_lr is not None:
            self.initial_lr = self.start.initial_lr
        self.genesis_transfer_report = None
        self._fingerprint_after_init = None
        self.frozen_epochs = 0

    def resolved_warmup_epochs(self) -> int:
        # a start with a warm-up of its own (nnU-Net's recipe) keeps it whatever the schedule says
        own = self.start.warmup_epochs(self.num_epochs)
        return super().resolved_warmup_epochs() if own is None else own

    def pretrained_weights_refusal(self) -> str:
        return (f"{type(self).__name__} takes its weights from the Genesis checkpoint named in the plans "
                f"({self.genesis_block.checkpoint}); nnUNetv2_train's -pretrained_weights option would "
                f"unpickle another file with weights_only=False (its code would run) and overwrite them. "
                f"Drop -pretrained_weights, or attach other weights with 'nnunet-genesis attach'.")

    def initialize(self):
        super().initialize()
        self._fingerprint_after_init = _weight_fingerprint(unwrap_network(self.network))
        if self.start.frozen:
            # frozen through the optimizer, not requires_grad (freezing.py says why)
            self.frozen_epochs = self.start.frozen_epochs(self.num_epochs)
            self.freezer = ParameterFreezer(frozen_parameters(unwrap_network(self.network), self.start.frozen),
                                            is_frozen=lambda: self.current_epoch < self.frozen_epochs
                                            ).attach(self.optimizer)

    def configure_optimizers(self):
        optimizer, scheduler = super().configure_optimizers()
        if self.start.transferred_lr_scale != 1:
            split_head_learning_rate(optimizer, unwrap_network(self.network), self.start.transferred_lr_scale)
            scheduler.step(0)  # set both groups' learning rates now
        return optimizer, scheduler

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        if self.current_epoch < self.frozen_epochs:
            self.print_to_log_file(f"{self.start.frozen} frozen (epochs 0-{self.frozen_epochs - 1})")
        elif self.frozen_epochs and self.current_epoch == self.frozen_epochs:
            self.print_to_log_file(f"{self.start.frozen} unfrozen from this epoch on")

    def on_train_start(self):
        if not self.was_initialized:
            self.initialize()
        # current_epoch > 0 means nnU-Net loaded one of its checkpoints (--c): nothing to transfer.
        if self.current_epoch == 0:
            self._refuse_foreign_pretrained_weights()
            self.transfer_genesis_weights()
        super().on_train_start()

    def _refuse_foreign_pretrained_weights(self) -> None:
        if not torch.equal(_weight_fingerprint(unwrap_network(self.network)), self._fingerprint_after_init):
            raise self._stopping(
                f"The network weights of {type(self).__name__} were changed before training started, "
                f"most likely by nnUNetv2_train's -pretrained_weights option. A Genesis trainer takes "
                f"its weights from the checkpoint named in the plans ({self.genesis_block.checkpoint}); "
                f"drop -pretrained_weights, or use a stock trainer to start from other weights."
            )

    def transfer_genesis_weights(self):
        """Verify, load (any kind ``pretrained_sources`` reads) and transfer the plans' checkpoint; print and
        save the report."""

        try:
            path = self.genesis_block.verified_checkpoint()
            checkpoint = read_pretrained(path, self.genesis_block.verified_checkpoint_plans())
            # a cascade's input is the image followed by the previous stage's one-hot segmentation:
            # only the image channels get pretrained weights, the segmentation channels start at zero
            report = transfer_weights(unwrap_network(self.network), checkpoint, include_decoder=self.start.include_decoder,
                                      allow_partial=self.genesis_block.allow_partial_transfer,
                                      image_channels=cascade_image_channels(self.dataset_json, self.is_cascaded))
        except GenesisUserError as e:
            raise self._stopping(str(e)) from None
        changes = adapt_start(unwrap_network(self.network), self.start.reset_norm_affine,
                              self.start.reinit_last_decoder_stage)
        report.notes.extend(changes)
        self.print_to_log_file(f"Genesis weights from {path} (sha256 {self.genesis_block.sha256}):\n"
                               f"{report.summary_text()}", add_timestamp=False)
        if self.local_rank == 0:
            report.save_json(join(self.output_folder, TRANSFER_REPORT_NAME))
        self.genesis_transfer_report = report
        return report


class nnUNetTrainerScratch(nnUNetTrainerWarmupPoly):
    """From-scratch baseline with exactly the Genesis schedule (warm-up + poly), no checkpoint."""
