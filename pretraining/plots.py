"""PNG figures of a pretraining run: the loss curve and restored validation slices."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_genesis.outputs import new_figure, save_figure


def plot_loss_curve(train: Sequence[float], val: Sequence[float], path: Path) -> None:
    """Train and fixed-validation restoration MSE per epoch."""
    import matplotlib.style

    with matplotlib.style.context("default"):  # nnU-Net's progress plot changes the global style (seaborn)
        _loss_figure(train, val, path)


def _loss_figure(train, val, path: Path) -> None:
    fig = new_figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(range(len(train)), train, "o-", label="train (corrupted batches)")
    ax.plot(range(len(val)), val, "s-", label="validation (fixed patches)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("restoration MSE")
    if all(v > 0 for v in list(train) + list(val)):
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title("Models Genesis restoration loss")
    fig.tight_layout()
    save_figure(fig, path)


def plot_restorations(original: np.ndarray, corrupted: np.ndarray, restored: np.ndarray,
                      path: Path, title: str) -> None:
    """Middle slice (first axis, channel 0) of each patch: original | corrupted | restored.

    Arrays are (N, C, Z, Y, X). Each row shares one grey scale, taken from the original.
    """
    import matplotlib.style

    with matplotlib.style.context("default"):
        _restoration_figure(original, corrupted, restored, path, title)


def _restoration_figure(original, corrupted, restored, path: Path, title: str) -> None:
    n = original.shape[0]
    fig = new_figure(figsize=(9, 3 * n))
    axes = fig.subplots(n, 3, squeeze=False)
    z = original.shape[2] // 2
    for row in range(n):
        ref = original[row, 0, z]
        lo, hi = np.percentile(ref, [0.5, 99.5]) if ref.size else (0, 1)
        hi = hi if hi > lo else lo + 1
        for col, (name, arr) in enumerate((("original", original), ("corrupted", corrupted), ("restored", restored))):
            ax = axes[row, col]
            ax.imshow(arr[row, 0, z], cmap="gray", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
