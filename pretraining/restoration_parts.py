"""The pieces ``nnUNetTrainerRestoration`` plugs into nnU-Net's trainer.

A timed loader wrapper, the time-budget LR schedule, a logger whose progress plot has no Dice
axis, and the freezing of the unused deep-supervision heads.
"""

from __future__ import annotations

from pathlib import Path
from time import perf_counter

import torch
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.nnunet_masking import MaskImageTransform
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform, Convert3DTo2DTransform
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform
from nnunetv2.training.logging.nnunet_logger import LocalLogger
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

from nnunet_genesis.outputs import new_figure, save_figure

# nnU-Net training transforms that move voxels but do not change intensities.
SPATIAL_TRANSFORMS = (SpatialTransform, MirrorTransform, Convert3DTo2DTransform, Convert2DTo3DTransform,
                      MaskImageTransform, RemoveLabelTansform)


class TimedLoader:
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


class TimeBudgetReached(Exception):
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


class RestorationLogger(LocalLogger):
    """nnU-Net's local logger whose ``progress.png`` draws losses, epoch times and learning rate.

    nnU-Net's plot also draws the pseudo Dice and takes the epoch count from every logged list,
    so it would need a (fake) Dice value every epoch; restoration has none.
    """

    def plot_progress_png(self, output_folder):
        log = self.my_fantastic_logging
        keys = ("train_losses", "val_losses", "lrs", "epoch_start_timestamps", "epoch_end_timestamps")
        n = min(len(log[k]) for k in keys)
        epochs = range(n)
        fig = new_figure(figsize=(9, 10))
        loss_ax, time_ax, lr_ax = fig.subplots(3, 1, sharex=True)
        loss_ax.plot(epochs, log["train_losses"][:n], "b-", label="train loss")
        loss_ax.plot(epochs, log["val_losses"][:n], "r-", label="val loss (fixed patches)")
        loss_ax.set_ylabel("restoration MSE")
        loss_ax.legend()
        time_ax.plot(epochs, [e - s for s, e in zip(log["epoch_start_timestamps"][:n],
                                                    log["epoch_end_timestamps"][:n])], "b-")
        time_ax.set_ylim(bottom=0)
        time_ax.set_ylabel("epoch time [s]")
        lr_ax.plot(epochs, log["lrs"][:n], "b-")
        lr_ax.set_ylabel("learning rate")
        lr_ax.set_xlabel("epoch")
        fig.tight_layout()
        save_figure(fig, Path(output_folder) / "progress.png")


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
