"""``nnUNetTrainerGenesisPretrain``: nnU-Net's trainer, turned into a Genesis restoration trainer.

Everything that is not specific to segmentation stays nnU-Net's: plans, preprocessed blosc2
data read per patch, data loader and background augmentation workers, spatial augmentation,
poly learning rate, AMP, gradient clipping, logging, ``progress.png``,
``checkpoint_latest.pth`` / ``--c`` resume and DDP. What changes:

* target: the uncorrupted patch; loss: MSE; output channels = input channels; no deep
  supervision (the unused lower-resolution heads are frozen so DDP does not wait for them);
* augmentation: only nnU-Net's spatial transforms (rotation, scaling, mirroring); its
  intensity transforms would otherwise become part of the restoration target;
* corruption, after the spatial augmentation, by one of two routes (``corruption`` option):
  - "device" (default on CUDA): ``corrupt_batch`` on the GPU inside ``train_step``; each
    batch gets a generator seeded from (seed, rank, epoch, iteration), so a resumed run
    corrupts exactly like an uninterrupted one, and nnU-Net's workers keep all their time for
    loading and spatial augmentation;
  - "workers" (default on CPU/MPS): ``GenesisCorruptionTransform`` (NumPy) appended to the
    training transforms, so it runs in nnU-Net's background workers in parallel with the
    training step. On a CPU the NumPy path (compiled loops) is far faster than the batched torch path
    (which is built for GPUs), and the training step already uses every core;
* optimiser: AdamW at 1e-3 by default instead of nnU-Net's SGD (momentum 0.99) at 1e-2, which
  is tuned for Dice + cross-entropy and barely lowers the restoration MSE in short runs
  (``optimizer="sgd"`` keeps nnU-Net's); an optional time budget stops training at the end of
  the epoch that crosses it, with the poly decay running over the budget instead of the epochs;
* validation: restoration MSE on a fixed, seeded set of corrupted patches every epoch, no
  segmentation export at the end;
* output: ``genesis_latest.pth`` (periodically) and ``genesis_final.pth`` written with
  ``nnunet_genesis.checkpoint.save_checkpoint``, a loss curve and restoration PNGs;
* checkpoints are written atomically and resumed with ``torch.load(weights_only=True)``.

Run settings come from ``plans["genesis_pretraining"]`` (see ``options.py``), so stock
``nnUNetv2_train DATASET 3d_fullres 0 -tr nnUNetTrainerGenesisPretrain -p PLANS`` works too.
"""

from __future__ import annotations

import os
from pathlib import Path
from time import perf_counter, time
from typing import List, Union

import numpy as np
import torch
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.nnunet_masking import MaskImageTransform
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform, Convert3DTo2DTransform
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context

from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform

from nnunet_genesis.checkpoint import safe_torch_load, save_checkpoint
from nnunet_genesis.network import unwrap_network
from nnunet_genesis.seeding import seed_nnunet_process
from nnunet_genesis.transforms import GenesisCorruptionTransform, corrupt_batch
from nnunet_genesis.pretraining.metadata import pretraining_metadata, read_sources
from nnunet_genesis.pretraining.options import PretrainOptions
from nnunet_genesis.pretraining.plots import plot_loss_curve, plot_restorations
from nnunet_genesis.pretraining.validation_patches import FixedValidationSet, sample_patches

# nnU-Net training transforms that move voxels but do not change intensities.
_SPATIAL_TRANSFORMS = (SpatialTransform, MirrorTransform, Convert3DTo2DTransform, Convert2DTo3DTransform,
                       MaskImageTransform, RemoveLabelTansform)
_PNG_PATCHES = 4


class _TimedLoader:
    """Wraps nnU-Net's loader to measure the time the training loop waits for batches."""

    def __init__(self, loader):
        self.loader = loader
        self.seconds = 0.0

    def __iter__(self):
        return self

    def __next__(self):
        t0 = perf_counter()
        batch = next(self.loader)
        self.seconds += perf_counter() - t0
        return batch


class _TimeBudgetReached(Exception):
    """Raised at the end of the epoch that crosses the time budget; ends the epoch loop."""


class TimeBudgetPolyLRScheduler(PolyLRScheduler):
    """nnU-Net's poly decay with training time, not epochs, as its progress.

    ``elapsed()`` returns the training seconds done so far (from nnU-Net's logged epoch
    timestamps, so a resumed run continues the decay where it stopped).
    """

    def __init__(self, optimizer, initial_lr: float, budget_seconds: float, elapsed, exponent: float = 0.9):
        self.budget_seconds = float(budget_seconds)
        self.elapsed = elapsed
        super().__init__(optimizer, initial_lr, max_steps=1, exponent=exponent)

    def step(self, current_step=None):
        progress = min(self.elapsed() / self.budget_seconds, 0.999) if self.budget_seconds > 0 else 0.0
        new_lr = self.initial_lr * (1 - progress) ** self.exponent
        for group in self.optimizer.param_groups:
            group["lr"] = new_lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class RestorationTargetAsSegmentation(BasicTransform):
    """Carry the restoration target in ``segmentation``: nnU-Net's loader batches only
    ``image`` and ``segmentation`` (as ``data`` and ``target``)."""

    def apply(self, data_dict: dict, **params) -> dict:
        data_dict["segmentation"] = data_dict.pop("target")
        return data_dict


def freeze_unused_heads(network: torch.nn.Module) -> None:
    """Without deep supervision only the last decoder head produces output; freeze the others.

    DDP otherwise waits for gradients of parameters that never get any. The frozen heads are
    segmentation-sized 1x1x1 convolutions that fine-tuning never loads.
    """
    heads = getattr(getattr(network, "decoder", None), "seg_layers", None)
    if heads is None:
        return
    for head in list(heads)[:-1]:
        for p in head.parameters():
            p.requires_grad_(False)


class nnUNetTrainerGenesisPretrain(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.options = PretrainOptions.from_plans(self.plans_manager.plans)
        self.genesis_config = self.options.genesis_config()
        self.num_epochs = self.options.epochs
        self.initial_lr = self.options.learning_rate
        self.num_iterations_per_epoch = self.options.iterations_per_epoch
        self.save_every = max(1, self.options.save_every)
        self.enable_deep_supervision = False
        self.oversample_foreground_percent = 0.0  # no foreground: patches are drawn uniformly
        if self.is_ddp:
            # nnU-Net's DDP assumes one GPU per rank, indexed by the global rank. Keep CPU ranks
            # on the CPU (gloo) and index GPUs by the node-local rank (torchrun, several nodes).
            if device.type != "cuda":
                self.device = device
                self.grad_scaler = None
            elif "LOCAL_RANK" in os.environ:
                self.device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        self.world_size = dist.get_world_size() if self.is_ddp else 1
        mode = self.options.corruption
        self.corrupt_on_device = mode == "device" or (mode == "auto" and self.device.type == "cuda")
        self.export_folder = Path(self.options.export_folder or self.output_folder)
        self.validation_set: FixedValidationSet | None = None
        self.val_baselines: dict[str, float] = {}
        self._pbar = None
        self._epoch_iteration = 0
        self._step_seconds = 0.0
        self._epoch_t0 = perf_counter()

    # ----------------------------------------------------------------- network and loss
    @staticmethod
    def build_network_architecture(plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> torch.nn.Module:
        """The plans' network with one output per input channel (restoration) and no deep supervision."""
        network = nnUNetTrainer.build_network_architecture(
            plans_manager, configuration_manager, num_input_channels, num_input_channels, False)
        freeze_unused_heads(network)
        return network

    def _build_loss(self):
        return torch.nn.MSELoss()

    def configure_optimizers(self):
        """AdamW (no weight decay) unless ``optimizer="sgd"``; poly decay over the time budget if set.

        Overridden because nnU-Net's SGD with momentum 0.99 at 1e-2 is tuned for segmentation
        losses: on the restoration MSE it learnt nothing measurable in short CPU runs
        (docs/pretraining.md, "Optimiser").
        """
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

    def run_training(self):
        """nnU-Net's loop; the time budget ends it early (then ``on_train_end`` as usual)."""
        try:
            super().run_training()
        except _TimeBudgetReached:
            self.on_train_end()

    def initialize(self):
        is_ddp = self.is_ddp
        self.is_ddp = False  # build and compile without nnU-Net's DDP wrapping; wrapped below
        try:
            with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG untouched
                torch.manual_seed(self.options.seed)
                super().initialize()
        finally:
            self.is_ddp = is_ddp
        if is_ddp:
            self._set_batch_size_and_oversample()
            self.network = DDP(self.network, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def set_deep_supervision_enabled(self, enabled: bool):
        unwrap_network(self.network).decoder.deep_supervision = enabled

    # ----------------------------------------------------------------- data
    def get_training_transforms(self, patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                do_dummy_2d_data_aug, use_mask_for_norm=None, is_cascaded=False,
                                foreground_labels=None, regions=None, ignore_label=None):
        """nnU-Net's training pipeline with only its spatial transforms kept, then (workers
        route) the Genesis corruption."""
        full = nnUNetTrainer.get_training_transforms(
            patch_size, rotation_for_DA, None, mirror_axes, do_dummy_2d_data_aug,
            use_mask_for_norm=use_mask_for_norm, is_cascaded=False, foreground_labels=foreground_labels,
            regions=None, ignore_label=ignore_label)
        transforms = [t for t in full.transforms if isinstance(t, _SPATIAL_TRANSFORMS)]
        if not self.corrupt_on_device:
            seed = int(np.random.SeedSequence([self.options.seed, self.local_rank, 3]).generate_state(1)[0])
            transforms += [GenesisCorruptionTransform(self.genesis_config, seed=seed),
                           RestorationTargetAsSegmentation()]
        return ComposeTransforms(transforms)

    def get_dataloaders(self):
        """nnU-Net's training loader; validation uses the fixed patches instead of its loader.

        The global generators are seeded first (per rank), so that with ``--workers 0`` the
        patch sequence, and so the whole run, repeats from ``--seed``.
        """
        seed_nnunet_process(int(np.random.SeedSequence([self.options.seed, self.local_rank, 5]).generate_state(1)[0]))
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
        self.validation_set = FixedValidationSet(clean, self.genesis_config, self.options.seed + 1,
                                                 self.batch_size, self.local_rank, self.world_size)
        self.num_val_iterations_per_epoch = len(self.validation_set)
        self.val_baselines = self.validation_set.trivial_baselines()
        self.print_to_log_file(f"Fixed validation set: {count} patches from {len(val_keys)} validation case(s), "
                               f"{len(self.validation_set)} batch(es) on this rank; MSE of trivial predictors: "
                               f"corrupted input {self.val_baselines['identity']:.5f}, per-patch mean "
                               f"{self.val_baselines['mean']:.5f} (the val loss should fall below the latter)")
        return self.validation_set

    def on_train_start(self):
        super().on_train_start()
        self.dataloader_train = _TimedLoader(self.dataloader_train)
        self.print_to_log_file(
            f"Genesis pretraining: {self.num_epochs} epochs x {self.num_iterations_per_epoch} iterations, "
            f"batch {self.batch_size} per rank x {self.world_size} rank(s), patch "
            f"{list(self.configuration_manager.patch_size)}, corruption "
            f"{'on ' + str(self.device) + ' in train_step' if self.corrupt_on_device else 'in the data workers'}, "
            f"outputs in {self.export_folder}")

    def on_train_end(self):
        if isinstance(self.dataloader_train, _TimedLoader):
            self.dataloader_train = self.dataloader_train.loader
        super().on_train_end()
        if self.local_rank == 0:
            self.export_genesis_checkpoint(self.export_folder / "genesis_final.pth")
            latest = self.export_folder / "genesis_latest.pth"
            if latest.is_file():
                latest.unlink()
            self._write_pngs(final=True)
            self.print_to_log_file(f"Genesis checkpoint: {self.export_folder / 'genesis_final.pth'}")

    # ----------------------------------------------------------------- training
    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self._epoch_iteration = 0
        self._step_seconds = 0.0
        self._epoch_t0 = perf_counter()
        if isinstance(self.dataloader_train, _TimedLoader):
            self.dataloader_train.seconds = 0.0
        self._pbar = tqdm(total=self.num_iterations_per_epoch, desc=f"epoch {self.current_epoch}",
                          unit="it", disable=self.local_rank != 0, leave=False, dynamic_ncols=True)

    def _corruption_generator(self, device: torch.device) -> torch.Generator:
        """A generator seeded from (seed, rank, epoch, iteration): resumable and distinct per rank."""
        seed = np.random.SeedSequence([self.options.seed, self.local_rank, self.current_epoch, self._epoch_iteration])
        return torch.Generator(device=device).manual_seed(int(seed.generate_state(1, np.uint64)[0] >> 1))

    def train_step(self, batch: dict) -> dict:
        t0 = perf_counter()
        if self.corrupt_on_device:
            clean = batch["data"].to(self.device, non_blocking=True)
            with torch.no_grad():
                corrupted, target = corrupt_batch(clean, self._corruption_generator(clean.device), self.genesis_config)
            batch = {"data": corrupted, "target": target}
        out = super().train_step(batch)  # nnU-Net's step: AMP, gradient clipping, optimiser
        self._step_seconds += perf_counter() - t0
        self._epoch_iteration += 1
        if self._pbar is not None:
            rate = self._epoch_iteration * self.batch_size * self.world_size / max(perf_counter() - self._epoch_t0, 1e-9)
            self._pbar.set_postfix(loss=f"{float(out['loss']):.4f}", patches_per_s=f"{rate:.1f}", refresh=False)
            self._pbar.update()
        return out

    def on_train_epoch_end(self, train_outputs: List[dict]):
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        losses = [float(o["loss"]) for o in train_outputs]
        if self.is_ddp:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, losses)
            losses = [x for part in gathered for x in part]
        self.logger.log("train_losses", float(np.mean(losses)), self.current_epoch)
        data_s = self.dataloader_train.seconds if isinstance(self.dataloader_train, _TimedLoader) else float("nan")
        total = data_s + self._step_seconds
        patches = len(train_outputs) * self.batch_size * self.world_size
        self.print_to_log_file(
            f"data loading {data_s:.2f} s ({100 * data_s / max(total, 1e-9):.0f}%), training steps "
            f"{self._step_seconds:.2f} s, {patches / max(total, 1e-9):.1f} patches/s over {self.world_size} rank(s)")

    # ----------------------------------------------------------------- validation
    def validation_step(self, batch) -> dict:
        corrupted, target = (t.to(self.device, non_blocking=True) for t in batch)
        with torch.autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            restored = unwrap_network(self.network)(corrupted)
        err = (restored.float() - target.float()).pow(2).sum()
        return {"sum": float(err), "count": int(target.numel())}

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        totals = [sum(o["sum"] for o in val_outputs), sum(o["count"] for o in val_outputs)]
        if self.is_ddp:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, totals)
            totals = [sum(g[0] for g in gathered), sum(g[1] for g in gathered)]
        self.logger.log("val_losses", float(totals[0] / max(totals[1], 1)), self.current_epoch)
        # nnU-Net's logger keeps one value per epoch for its segmentation metrics; there are none here
        self.logger.log("mean_fg_dice", float("nan"), self.current_epoch)
        self.logger.log("dice_per_class_or_region", [], self.current_epoch)

    def on_epoch_end(self):
        """nnU-Net's epoch end without the Dice-based best checkpoint, plus the Genesis outputs."""
        epoch = self.current_epoch
        self.logger.log("epoch_end_timestamps", time(), epoch)
        train_loss = self.logger.get_value("train_losses", step=-1)
        val_loss = self.logger.get_value("val_losses", step=-1)
        seconds = self.logger.get_value("epoch_end_timestamps", step=-1) - self.logger.get_value(
            "epoch_start_timestamps", step=-1)
        self.print_to_log_file(f"train_loss {train_loss:.5f}  val_loss (fixed patches) {val_loss:.5f}  "
                               f"epoch time {seconds:.1f} s")
        if (epoch + 1) % self.save_every == 0 and epoch != self.num_epochs - 1:
            self.save_checkpoint(os.path.join(self.output_folder, "checkpoint_latest.pth"))
            if self.local_rank == 0:
                self.export_genesis_checkpoint(self.export_folder / "genesis_latest.pth", epochs_done=epoch + 1)
        if self.local_rank == 0:
            import matplotlib

            with matplotlib.rc_context():  # nnU-Net's plot sets a global seaborn style; keep it local
                self.logger.plot_progress_png(self.output_folder)
            self._write_pngs(final=False, epoch=epoch)
        self.current_epoch += 1
        if self._budget_crossed() and self.current_epoch < self.num_epochs:
            self.print_to_log_file(f"Time budget of {self.options.time_budget_minutes:g} min reached after "
                                   f"{self.current_epoch} epoch(s) ({self.training_seconds() / 60:.1f} min of "
                                   f"training): stopping.")
            self.num_epochs = self.current_epoch  # recorded as the planned epochs of the final checkpoint
            raise _TimeBudgetReached()

    def _budget_crossed(self) -> bool:
        """True once the training time passes the budget; rank 0 decides for every rank."""
        if self.options.time_budget_minutes <= 0:
            return False
        crossed = [self.training_seconds() >= 60 * self.options.time_budget_minutes]
        if self.is_ddp:
            dist.broadcast_object_list(crossed, src=0)
        return bool(crossed[0])

    def perform_actual_validation(self, save_probabilities: bool = False):
        """No segmentation to export: the restoration loss was validated every epoch."""
        self.print_to_log_file("Genesis pretraining: no segmentation validation (restoration MSE was "
                               "computed on the fixed validation patches every epoch).")

    # ----------------------------------------------------------------- outputs
    def _write_pngs(self, final: bool, epoch: int | None = None) -> None:
        train = self.logger.get_value("train_losses", step=None)
        val = self.logger.get_value("val_losses", step=None)
        if train:
            plot_loss_curve(train, val, self.export_folder / "genesis_loss.png")
        every = max(1, self.options.png_every)
        if self.validation_set is None or not (final or epoch == 0 or (epoch + 1) % every == 0):
            return
        n = min(_PNG_PATCHES, len(self.validation_set.clean))
        if n == 0:
            return
        net = unwrap_network(self.network)
        was_training = net.training
        net.eval()
        with torch.no_grad():
            restored = net(self.validation_set.corrupted[:n].to(self.device)).float().cpu().numpy()
        net.train(was_training)
        name = "genesis_restoration_final.png" if final else f"restoration/epoch_{epoch:04d}.png"
        done = self.current_epoch if final else epoch + 1
        plot_restorations(self.validation_set.target[:n].numpy(), self.validation_set.corrupted[:n].numpy(),
                          restored, self.export_folder / name,
                          f"fixed validation patches after {done} epoch(s)")

    def export_genesis_checkpoint(self, path: Path, epochs_done: int | None = None) -> Path:
        """Weights (no module./_orig_mod. prefixes) + the full ``genesis`` metadata block."""
        metadata = pretraining_metadata(
            plans=self.plans_manager.plans, configuration_name=self.configuration_name,
            configuration=self.configuration_manager.configuration, dataset_json=self.dataset_json,
            input_channels=self.num_input_channels, options=self.options.to_dict(),
            sources=read_sources(Path(self.preprocessed_dataset_folder_base),
                                 self.dataset_class.get_identifiers(self.preprocessed_dataset_folder)),
            epochs_done=self.current_epoch if epochs_done is None else epochs_done,
            batch_size=self.configuration_manager.batch_size,
            train_losses=self.logger.get_value("train_losses", step=None),
            val_losses=self.logger.get_value("val_losses", step=None),
            world_size=self.world_size, device=self.device.type, val_baselines=self.val_baselines)
        return save_checkpoint(path, unwrap_network(self.network).state_dict(), metadata)

    # ----------------------------------------------------------------- checkpoints
    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written to a temp file and renamed (never half-written)."""
        if self.local_rank != 0 or self.disable_checkpointing:
            return super().save_checkpoint(filename)
        tmp = f"{filename}.tmp"
        super().save_checkpoint(tmp)
        os.replace(tmp, filename)

    def load_checkpoint(self, filename_or_checkpoint: Union[dict, str]) -> None:
        """Resume from an nnU-Net checkpoint of this trainer, loaded with ``weights_only=True``."""
        if not self.was_initialized:
            self.initialize()
        checkpoint = filename_or_checkpoint
        if not isinstance(checkpoint, dict):
            checkpoint = safe_torch_load(filename_or_checkpoint, "Pretraining checkpoint", map_location=self.device)
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
        self.print_to_log_file(f"Resuming Genesis pretraining at epoch {self.current_epoch} "
                               f"(of {self.num_epochs}) from {filename_or_checkpoint if isinstance(filename_or_checkpoint, str) else 'a checkpoint dict'}")
