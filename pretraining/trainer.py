"""``nnUNetTrainerGenesisPretrain``: Models Genesis restoration pretraining on nnU-Net.

A thin subclass of the restoration trainer (``restoration_trainer.py``, which keeps
nnU-Net's data loading, augmentation workers, AMP, logging, checkpoints, resume and DDP); it
adds only what is Genesis-specific:

* the corruption: ``GenesisCorruptionTransform`` (NumPy) in nnU-Net's data workers, or
  ``corrupt_batch`` (torch) on the training device, per the ``corruption`` option;
* the fixed validation patches corrupted with the NumPy ``corrupt``;
* the outputs: ``genesis_latest.pth`` / ``genesis_final.pth`` (weights + ``genesis``
  metadata, ``nnunet_genesis.checkpoint.save_checkpoint``), the loss curve and restoration PNGs.

Run settings come from ``plans["genesis_pretraining"]`` (see ``options.py``), so stock
``nnUNetv2_train DATASET 3d_fullres 0 -tr nnUNetTrainerGenesisPretrain -p PLANS`` works too.
See docs/pretraining.md.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch

from nnunet_genesis.checkpoint import CHECKPOINT_FILE_NAME, LATEST_FILE_NAME, save_checkpoint
from nnunet_genesis.network import unwrap_network
from nnunet_genesis.transforms import GenesisConfig, GenesisCorruptionTransform, corrupt_batch
from nnunet_genesis.pretraining.metadata import pretraining_metadata, read_sources
from nnunet_genesis.pretraining.plots import plot_loss_curve, plot_restorations
from nnunet_genesis.pretraining.restoration_parts import TimeBudgetPolyLRScheduler
from nnunet_genesis.pretraining.restoration_trainer import nnUNetTrainerRestoration
from nnunet_genesis.pretraining.validation_patches import FixedValidationSet

__all__ = ["nnUNetTrainerGenesisPretrain", "TimeBudgetPolyLRScheduler"]  # the scheduler: its old import path

_PNG_PATCHES = 4


class nnUNetTrainerGenesisPretrain(nnUNetTrainerRestoration):
    """Restores Models Genesis corruptions; exports Genesis checkpoints and restoration PNGs."""

    method_name = "Genesis"

    @cached_property
    def genesis_config(self) -> GenesisConfig:
        return self.options.genesis_config()

    def corruption_transforms(self):
        """Genesis corruption in the workers, one seeded stream per rank (each worker mixes in its pid)."""
        return [GenesisCorruptionTransform(self.genesis_config, seed=self.derived_seed(self.local_rank, 3))]

    def corrupt_device_batch(self, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Genesis corruption on the device, seeded per (rank, epoch, iteration) so a resume repeats it."""
        return corrupt_batch(clean, self.batch_generator(clean.device), self.genesis_config)

    def make_validation_set(self, clean: torch.Tensor) -> FixedValidationSet:
        """The fixed patches corrupted once with the NumPy ``corrupt`` (seed + 1)."""
        return FixedValidationSet(clean, self.genesis_config, self.options.seed + 1, self.batch_size,
                                  self.local_rank, self.world_size)

    def on_export(self, epochs_done: int, final: bool, checkpoint_saved: bool) -> None:
        """``genesis_latest.pth`` next to each nnU-Net checkpoint, ``genesis_final.pth`` at the end, PNGs."""
        final_path, latest = self.export_folder / CHECKPOINT_FILE_NAME, self.export_folder / LATEST_FILE_NAME
        if final:
            self.export_genesis_checkpoint(final_path, epochs_done)
            latest.unlink(missing_ok=True)
        elif checkpoint_saved:
            self.export_genesis_checkpoint(latest, epochs_done)
        self._write_pngs(epochs_done, final)
        if final:
            self.print_to_log_file(f"Genesis checkpoint: {final_path}")

    def _write_pngs(self, epochs_done: int, final: bool) -> None:
        train = self.logger.get_value("train_losses", step=None)
        if train:
            plot_loss_curve(train, self.logger.get_value("val_losses", step=None),
                            self.export_folder / "genesis_loss.png")
        every = max(1, self.options.png_every)
        if self.validation_set is None or not (final or epochs_done == 1 or epochs_done % every == 0):
            return
        n = min(_PNG_PATCHES, len(self.validation_set.clean))
        if n == 0:
            return
        corrupted = self.validation_set.corrupted[:n]
        name = "genesis_restoration_final.png" if final else f"restoration/epoch_{epochs_done - 1:04d}.png"
        plot_restorations(self.validation_set.target[:n].numpy(), corrupted.numpy(), self.restore(corrupted),
                          self.export_folder / name, f"fixed validation patches after {epochs_done} epoch(s)")

    def export_genesis_checkpoint(self, path: Path, epochs_done: int) -> Path:
        """Weights (no module./_orig_mod. prefixes) + the full ``genesis`` metadata block."""
        metadata = pretraining_metadata(
            plans=self.plans_manager.plans, configuration_name=self.configuration_name,
            configuration=self.configuration_manager.configuration, dataset_json=self.dataset_json,
            input_channels=self.num_input_channels, options=self.options.to_dict(),
            sources=read_sources(Path(self.preprocessed_dataset_folder_base),
                                 self.dataset_class.get_identifiers(self.preprocessed_dataset_folder)),
            epochs_done=epochs_done, batch_size=self.configuration_manager.batch_size,
            train_losses=self.logger.get_value("train_losses", step=None),
            val_losses=self.logger.get_value("val_losses", step=None),
            world_size=self.world_size, device=self.device.type, val_baselines=self.val_baselines)
        return save_checkpoint(path, unwrap_network(self.network).state_dict(), metadata)
