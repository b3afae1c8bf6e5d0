"""``nnUNetTrainerRestoration``: nnU-Net's trainer for corrupt-and-restore pretraining.

The base owns what any restoration pretraining needs on top of nnU-Net's trainer: a network
with one output per input channel and no deep supervision, MSE loss, the optimiser and time
budget, spatial-only augmentation, a fixed validation set, loss and timing logs, checkpoints
and DDP. A pretraining method is a subclass that fills in four hooks:

* ``corruption_transforms()``: batchgeneratorsv2 transforms that corrupt one sample in nnU-Net's
  data workers (``corruption="workers"``); they leave the input in ``image`` and the
  restoration target in ``regression_target``;
* ``corrupt_device_batch(clean)``: the same for a batch on the training device
  (``corruption="device"``), returning ``(input, target)``;
* ``make_validation_set(clean)``: the fixed validation patches, corrupted once (a
  ``FixedValidationSet``);
* ``on_export(epochs_done, final, checkpoint_saved)``: the method's own outputs (rank 0).

Run settings come from ``plans["genesis_pretraining"]`` (``options.py``); why each choice was
made: docs/pretraining.md, "Training" and "Optimiser, presets and time budget".
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from time import perf_counter, time
from typing import List, Union

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context

from nnunet_genesis.checkpoint import load_training_checkpoint, pretrained_weights_requested
from nnunet_genesis.errors import GenesisUserError, refuse_training, stopped_on_a_full_disk
from nnunet_genesis.network import unwrap_network
from nnunet_genesis.outputs import written_then_renamed
from nnunet_genesis.pretraining.options import PretrainOptions
from nnunet_genesis.pretraining.restoration_parts import (
    SPATIAL_TRANSFORMS, RestorationLogger, TimeBudgetPolyLRScheduler, TimeBudgetReached, TimedLoader,
    freeze_unused_heads)
from nnunet_genesis.pretraining.validation_patches import FixedValidationSet, sample_patches
from nnunet_genesis.seeding import seed_nnunet_process
from nnunet_genesis.transforms import RegressionTargetAsSegmentation


class nnUNetTrainerRestoration(nnUNetTrainer):
    """nnU-Net's trainer turned into a restoration trainer; subclasses add the corruption (hooks below)."""

    method_name = "Restoration"  # names the run in the log

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        """Settings from the plans; under DDP keeps the given device, as nnU-Net assumes one GPU per
        global rank (wrong for CPU/gloo ranks and beyond one node)."""
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.options = PretrainOptions.from_plans(self.plans_manager.plans)
        self.num_epochs = self.options.epochs
        self.initial_lr = self.options.learning_rate
        self.num_iterations_per_epoch = self.options.iterations_per_epoch
        self.save_every = max(1, self.options.save_every)
        self.enable_deep_supervision = False
        self.oversample_foreground_percent = 0.0  # no foreground: patches are drawn uniformly
        if self.is_ddp:
            if device.type != "cuda":
                self.device = device
                self.grad_scaler = None
            elif "LOCAL_RANK" in os.environ:
                self.device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        self.world_size = dist.get_world_size() if self.is_ddp else 1
        mode = self.options.corruption
        self.corrupt_on_device = mode == "device" or (mode == "auto" and self.device.type == "cuda")
        self.export_folder = Path(self.options.export_folder or self.output_folder)
        self.logger.local_logger = RestorationLogger(self.logger.local_logger.verbose)
        self.validation_set: FixedValidationSet | None = None
        self.val_baselines: dict[str, float] = {}
        self._pbar = None
        self._epoch_iteration = 0
        self._step_seconds = 0.0
        self._epoch_t0 = perf_counter()

    # ----------------------------------------------------------------- hooks of a pretraining method
    def corruption_transforms(self) -> List[BasicTransform]:
        """Workers route: transforms that set ``image`` to the input, ``regression_target`` to the target."""
        raise NotImplementedError

    def corrupt_device_batch(self, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Device route: ``(input, target)`` for a clean batch on the training device."""
        raise NotImplementedError

    def make_validation_set(self, clean: torch.Tensor) -> FixedValidationSet:
        """The fixed validation patches ``clean`` (N, C, *patch), corrupted once, seeded."""
        raise NotImplementedError

    def on_export(self, epochs_done: int, final: bool, checkpoint_saved: bool) -> None:
        """Rank 0, after every epoch and once at the end (``final``): the method's own outputs."""

    # ----------------------------------------------------------------- helpers for the hooks
    def derived_seed(self, *keys: int) -> int:
        """A seed derived from the run's seed and ``keys`` (e.g. the rank)."""
        return int(np.random.SeedSequence([self.options.seed, *keys]).generate_state(1)[0])

    def batch_generator(self, device: torch.device) -> torch.Generator:
        """A generator seeded from (seed, rank, epoch, iteration): resumable and distinct per rank."""
        seed = np.random.SeedSequence([self.options.seed, self.local_rank, self.current_epoch, self._epoch_iteration])
        return torch.Generator(device=device).manual_seed(int(seed.generate_state(1, np.uint64)[0] >> 1))

    def restore(self, inputs: torch.Tensor) -> np.ndarray:
        """The network's output for ``inputs`` in eval mode (float32, on the CPU)."""
        net = unwrap_network(self.network)
        was_training = net.training
        net.eval()
        with torch.no_grad():
            restored = net(inputs.to(self.device)).float().cpu().numpy()
        net.train(was_training)
        return restored

    # ----------------------------------------------------------------- network, loss, optimiser
    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> torch.nn.Module:
        """The plans' network with one output per input channel and no deep supervision."""
        network = nnUNetTrainer.build_network_architecture(
            plans_manager, configuration_manager, num_input_channels, num_input_channels, False)
        freeze_unused_heads(network)
        return network

    def _build_loss(self):
        """Restoration loss instead of Dice + cross-entropy."""
        return torch.nn.MSELoss()

    def configure_optimizers(self):
        """AdamW (no weight decay) unless ``optimizer="sgd"``: nnU-Net's SGD is tuned for segmentation
        losses (docs/pretraining.md, "Optimiser"); poly decay over the time budget if one is set."""
        if self.options.optimizer == "sgd":
            optimizer, scheduler = super().configure_optimizers()
        else:
            optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.initial_lr, weight_decay=0.0)
            scheduler = PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)
        if self.options.time_budget_minutes > 0:
            scheduler = TimeBudgetPolyLRScheduler(optimizer, self.initial_lr, 60 * self.options.time_budget_minutes,
                                                  self.training_seconds)
        return optimizer, scheduler

    def training_seconds(self) -> float:
        """Seconds of the finished epochs (training and validation), from nnU-Net's logged timestamps."""
        starts = self.logger.get_value("epoch_start_timestamps", step=None) or []
        ends = self.logger.get_value("epoch_end_timestamps", step=None) or []
        return float(sum(e - s for s, e in zip(starts, ends)))

    def initialize(self):
        """Seeded initial weights, and the DDP wrap done here: nnU-Net's passes ``device_ids=[global rank]``,
        which DDP rejects for CPU (gloo) modules and which names the wrong GPU beyond one node.
        nnUNetv2_train's ``-pretrained_weights`` is refused first: nnU-Net would unpickle that file
        with ``weights_only=False`` right after this method."""
        if pretrained_weights_requested(sys.argv):
            raise self._stopping(
                f"{type(self).__name__} pretrains from random weights and does not take nnUNetv2_train's "
                f"-pretrained_weights option: nnU-Net would unpickle that file with weights_only=False (code in "
                f"it would run). Drop -pretrained_weights; continue a pretraining with --c (or 'nnunet-genesis "
                f"pretrain -o OUT --resume').")
        is_ddp, self.is_ddp = self.is_ddp, False
        try:
            with torch.random.fork_rng(devices=[]):  # global RNG untouched
                torch.manual_seed(self.options.seed)
                super().initialize()
        finally:
            self.is_ddp = is_ddp
        if is_ddp:
            self._set_batch_size_and_oversample()  # the per-rank batch, skipped while is_ddp was off
            self.network = DDP(self.network, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def run_training(self):
        """nnU-Net's loop; the time budget ends it early (then ``on_train_end`` as usual)."""
        with stopped_on_a_full_disk(self.output_folder, "with 'nnunet-genesis pretrain -o OUT --resume' (or "
                                                        "nnUNetv2_train ... --c)"):
            try:
                super().run_training()
            except TimeBudgetReached:
                self.on_train_end()

    # ----------------------------------------------------------------- data
    def get_training_transforms(self, patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                do_dummy_2d_data_aug, use_mask_for_norm=None, is_cascaded=False,
                                foreground_labels=None, regions=None, ignore_label=None):
        """Only nnU-Net's spatial transforms (its intensity ones would become part of the target),
        then, on the workers route, the method's corruption."""
        full = nnUNetTrainer.get_training_transforms(
            patch_size, rotation_for_DA, None, mirror_axes, do_dummy_2d_data_aug,
            use_mask_for_norm=use_mask_for_norm, is_cascaded=False, foreground_labels=foreground_labels,
            regions=None, ignore_label=ignore_label)
        transforms = [t for t in full.transforms if isinstance(t, SPATIAL_TRANSFORMS)]
        if not self.corrupt_on_device:
            # nnU-Net's loader batches only image and segmentation
            transforms += [*self.corruption_transforms(), RegressionTargetAsSegmentation()]
        return ComposeTransforms(transforms)

    def get_dataloaders(self):
        """nnU-Net's training loader (global generators seeded per rank first, so that with
        ``--workers 0`` the run repeats from ``--seed``); validation uses the fixed patches."""
        seed_nnunet_process(self.derived_seed(self.local_rank, 5))
        train, val = super().get_dataloaders()
        if hasattr(val, "_finish"):
            val._finish()
        return train, self._build_validation_set()

    def _build_validation_set(self) -> FixedValidationSet:
        _, val_keys = self.do_split()
        dataset = self.dataset_class(self.preprocessed_dataset_folder, val_keys)
        count = max(self.options.val_patches, self.world_size)
        rng = np.random.default_rng([self.options.seed, 1])
        clean = sample_patches(dataset, val_keys, self.configuration_manager.patch_size, count, rng)
        self.validation_set = self.make_validation_set(clean)
        self.num_val_iterations_per_epoch = len(self.validation_set)
        self.val_baselines = self.validation_set.trivial_baselines()
        self.print_to_log_file(f"Fixed validation set: {count} patches from {len(val_keys)} validation case(s), "
                               f"{len(self.validation_set)} batch(es) on this rank; MSE of trivial predictors: "
                               f"corrupted input {self.val_baselines['identity']:.5f}, per-patch mean "
                               f"{self.val_baselines['mean']:.5f} (the val loss should fall below the latter)")
        return self.validation_set

    # ----------------------------------------------------------------- training
    def on_train_start(self):
        """Times the training loader and logs the run's shape."""
        super().on_train_start()
        self.dataloader_train = TimedLoader(self.dataloader_train)
        self.print_to_log_file(
            f"{self.method_name} pretraining: {self.num_epochs} epochs x {self.num_iterations_per_epoch} iterations, "
            f"batch {self.batch_size} per rank x {self.world_size} rank(s), patch "
            f"{list(self.configuration_manager.patch_size)}, corruption "
            f"{'on ' + str(self.device) + ' in train_step' if self.corrupt_on_device else 'in the data workers'}, "
            f"outputs in {self.export_folder}")

    def on_train_epoch_start(self):
        """Resets the epoch's timing and opens its progress bar."""
        super().on_train_epoch_start()
        self._epoch_iteration = 0
        self._step_seconds = 0.0
        self._epoch_t0 = perf_counter()
        if isinstance(self.dataloader_train, TimedLoader):
            self.dataloader_train.seconds = 0.0
        self._pbar = tqdm(total=self.num_iterations_per_epoch, desc=f"epoch {self.current_epoch}",
                          unit="it", disable=self.local_rank != 0, leave=False, dynamic_ncols=True)

    def train_step(self, batch: dict) -> dict:
        """nnU-Net's step (AMP, clipping, optimiser), after the device route's corruption; timed."""
        t0 = perf_counter()
        if self.corrupt_on_device:
            clean = batch["data"].to(self.device, non_blocking=True)
            with torch.no_grad():
                corrupted, target = self.corrupt_device_batch(clean)
            batch = {"data": corrupted, "target": target}
        out = super().train_step(batch)
        self._step_seconds += perf_counter() - t0
        self._epoch_iteration += 1
        if self._pbar is not None:
            rate = self._epoch_iteration * self.batch_size * self.world_size / max(perf_counter() - self._epoch_t0, 1e-9)
            self._pbar.set_postfix(loss=f"{float(out['loss']):.4f}", patches_per_s=f"{rate:.1f}", refresh=False)
            self._pbar.update()
        return out

    def on_train_epoch_end(self, train_outputs: List[dict]):
        """The mean train loss over all ranks as a Python float (nnU-Net's logs a NumPy scalar, which
        a plain ``torch.load(weights_only=True)`` of the checkpoint refuses), and the epoch's timing."""
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        losses = [float(o["loss"]) for o in train_outputs]
        if self.is_ddp:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, losses)
            losses = [x for part in gathered for x in part]
        self.logger.log("train_losses", float(np.mean(losses)), self.current_epoch)
        data_s = self.dataloader_train.seconds if isinstance(self.dataloader_train, TimedLoader) else float("nan")
        total = data_s + self._step_seconds
        patches = len(train_outputs) * self.batch_size * self.world_size
        self.print_to_log_file(
            f"data loading {data_s:.2f} s ({100 * data_s / max(total, 1e-9):.0f}%), training steps "
            f"{self._step_seconds:.2f} s, {patches / max(total, 1e-9):.1f} patches/s over {self.world_size} rank(s)")

    # ----------------------------------------------------------------- validation
    def validation_step(self, batch) -> dict:
        """Squared error of the restoration (nnU-Net's computes Dice counts)."""
        corrupted, target = (t.to(self.device, non_blocking=True) for t in batch)
        with torch.autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            restored = unwrap_network(self.network)(corrupted)
        err = (restored.float() - target.float()).pow(2).sum()
        return {"sum": float(err), "count": int(target.numel())}

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        """The MSE over all ranks' voxels (independent of how patches were split); no Dice."""
        totals = [sum(o["sum"] for o in val_outputs), sum(o["count"] for o in val_outputs)]
        if self.is_ddp:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, totals)
            totals = [sum(g[0] for g in gathered), sum(g[1] for g in gathered)]
        self.logger.log("val_losses", float(totals[0] / max(totals[1], 1)), self.current_epoch)

    def on_epoch_end(self):
        """nnU-Net's epoch end without its pseudo-Dice best checkpoint, plus the method's outputs and
        the time budget (nnU-Net's body reads Dice values that restoration does not have)."""
        epoch = self.current_epoch
        self.logger.log("epoch_end_timestamps", time(), epoch)
        seconds = self.logger.get_value("epoch_end_timestamps", step=-1) - self.logger.get_value(
            "epoch_start_timestamps", step=-1)
        self.print_to_log_file(f"train_loss {self.logger.get_value('train_losses', step=-1):.5f}  "
                               f"val_loss (fixed patches) {self.logger.get_value('val_losses', step=-1):.5f}  "
                               f"epoch time {seconds:.1f} s")
        saved = (epoch + 1) % self.save_every == 0 and epoch != self.num_epochs - 1
        if saved:
            self.save_checkpoint(os.path.join(self.output_folder, "checkpoint_latest.pth"))
        if self.local_rank == 0:
            self.on_export(epoch + 1, final=False, checkpoint_saved=saved)
            self.logger.plot_progress_png(self.output_folder)
        self.current_epoch += 1
        if self._budget_crossed() and self.current_epoch < self.num_epochs:
            self.print_to_log_file(f"Time budget of {self.options.time_budget_minutes:g} min reached after "
                                   f"{self.current_epoch} epoch(s) ({self.training_seconds() / 60:.1f} min of "
                                   f"training): stopping.")
            self.num_epochs = self.current_epoch  # recorded as the planned epochs of the final checkpoint
            raise TimeBudgetReached()

    def _budget_crossed(self) -> bool:
        """True once the training time passes the budget; rank 0 decides for every rank."""
        if self.options.time_budget_minutes <= 0:
            return False
        crossed = [self.training_seconds() >= 60 * self.options.time_budget_minutes]
        if self.is_ddp:
            dist.broadcast_object_list(crossed, src=0)
        return bool(crossed[0])

    def on_train_end(self):
        """nnU-Net's end (final checkpoint, loaders stopped), then the method's final outputs."""
        if isinstance(self.dataloader_train, TimedLoader):
            self.dataloader_train = self.dataloader_train.loader  # nnU-Net stops the loader it made
        super().on_train_end()
        if self.local_rank == 0:
            self.on_export(self.current_epoch, final=True, checkpoint_saved=not self.disable_checkpointing)

    def perform_actual_validation(self, save_probabilities: bool = False):
        """No segmentation to predict and export: the restoration loss was validated every epoch."""
        self.print_to_log_file(f"{self.method_name} pretraining: no segmentation validation (restoration MSE "
                               f"was computed on the fixed validation patches every epoch).")

    # ----------------------------------------------------------------- checkpoints
    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written to a temp file and renamed (never half-written)."""
        if self.local_rank != 0 or self.disable_checkpointing:
            return super().save_checkpoint(filename)
        try:
            with written_then_renamed(filename) as tmp:
                super().save_checkpoint(str(tmp))
        except GenesisUserError as e:  # a full disk: the last complete checkpoint stays, and the stop says so
            raise refuse_training(f"{e} The last complete checkpoint in {self.output_folder} is kept: continue "
                                  f"with 'nnunet-genesis pretrain -o OUT --resume' (or nnUNetv2_train ... --c).",
                                  "training stopped") from None

    def load_checkpoint(self, filename_or_checkpoint: Union[dict, str]) -> None:
        """nnU-Net's resume with the file read by ``torch.load(weights_only=True)`` and verified against this
        network (``load_training_checkpoint``: CRCs, keys, shapes, dtypes, finite values); a bad file stops
        ``--c`` / ``--resume`` with the message, exit 2. nnU-Net's reads with ``weights_only=False`` and
        (2.8.1) fails on a dict, so its body cannot be reused."""
        if not self.was_initialized:
            self.initialize()
        checkpoint = filename_or_checkpoint
        if not isinstance(checkpoint, dict):
            try:
                checkpoint = load_training_checkpoint(filename_or_checkpoint,
                                                      unwrap_network(self.network).state_dict(),
                                                      "Pretraining checkpoint", map_location=self.device)
            except GenesisUserError as e:
                raise self._stopping(f"{e} Delete it and start the pretraining again, or restore the checkpoint "
                                     f"this run wrote.") from None
        weights = {k[7:] if k.startswith("module.") else k: v for k, v in checkpoint["network_weights"].items()}
        self.my_init_kwargs = checkpoint["init_args"]
        self.current_epoch = checkpoint["current_epoch"]
        self.logger.load_checkpoint(checkpoint["logging"])
        self._best_ema = checkpoint["_best_ema"]
        self.inference_allowed_mirroring_axes = checkpoint.get("inference_allowed_mirroring_axes",
                                                               self.inference_allowed_mirroring_axes)
        unwrap_network(self.network).load_state_dict(weights)
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        if self.grad_scaler is not None and checkpoint.get("grad_scaler_state") is not None:
            self.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])
        source = filename_or_checkpoint if isinstance(filename_or_checkpoint, str) else "a checkpoint dict"
        self.print_to_log_file(f"Resuming {self.method_name} pretraining at epoch {self.current_epoch} "
                               f"(of {self.num_epochs}) from {source}")

    def _stopping(self, message: str) -> GenesisUserError:
        """Log why training stops (training log and stderr); returns the error to raise (exit 2, no traceback
        also inside ``nnUNetv2_train``, which does not catch its trainers' errors)."""
        self.print_to_log_file(f"\nnnU-Net Genesis: training not started.\n{message}\n", add_timestamp=False,
                               also_print_to_console=False)
        return refuse_training(message)
