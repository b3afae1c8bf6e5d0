"""PNG plots for ``compare`` (matplotlib, Agg backend); each function returns PNG bytes."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from nnunet_genesis.evaluation.runs import RunResult
from nnunet_genesis.outputs import figure_png, new_figure
from nnunet_genesis.evaluation.statistics import PairedComparison

METRIC_TITLES = {"dice": "Dice", "nsd": "NSD"}


def _png(fig) -> bytes:
    fig.tight_layout()
    return figure_png(fig, dpi=110)


def plot_scores(runs: Sequence[RunResult], metric: str, labels: Sequence[str],
                label_names: dict[str, str]) -> bytes:
    """Per label: each run's mean (bar), standard deviation (error bar) and per-case values (dots)."""
    rng = np.random.default_rng(0)  # jitter of the dots only
    fig = new_figure(figsize=(max(5.0, 1.6 * len(labels) * len(runs) ** 0.5 + 2), 4.2))
    ax = fig.subplots()
    width = 0.8 / len(runs)
    for i, run in enumerate(runs):
        x0 = np.arange(len(labels)) - 0.4 + width * (i + 0.5)
        values = [[v for v in run.scores.get(metric, {}).get(label, {}).values() if v is not None]
                  for label in labels]
        means = [np.mean(v) if v else np.nan for v in values]
        stds = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values]
        bars = ax.bar(x0, means, width * 0.9, yerr=stds, capsize=3, alpha=0.55, label=run.name)
        colour = bars.patches[0].get_facecolor() if bars.patches else None
        for x, v in zip(x0, values):
            if v:
                ax.scatter(x + rng.uniform(-width * 0.25, width * 0.25, len(v)), v, s=8,
                           color=colour, alpha=1.0, edgecolors="none", zorder=3)
    ax.set_xticks(np.arange(len(labels)))
    ax.set_xticklabels([f"{label_names.get(l, l)} ({l})" for l in labels])
    ax.set_ylabel(METRIC_TITLES.get(metric, metric))
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{METRIC_TITLES.get(metric, metric)} per label: mean ± SD, dots = cases")
    ax.legend(loc="lower right", fontsize="small")
    return _png(fig)


def plot_differences(comparisons: Sequence[PairedComparison], title: str,
                     label_names: dict[str, str]) -> bytes:
    """Per label: the paired per-case differences (B - A) as box and dots, with the p-value."""
    rng = np.random.default_rng(0)
    fig = new_figure(figsize=(max(5.0, 1.8 * len(comparisons) + 2), 4.2))
    ax = fig.subplots()
    data = [c.differences for c in comparisons]
    positions = np.arange(1, len(comparisons) + 1)
    non_empty = [(p, d) for p, d in zip(positions, data) if d]
    if non_empty:
        ax.boxplot([d for _, d in non_empty], positions=[p for p, _ in non_empty], widths=0.5,
                   showfliers=False)
    for p, d in non_empty:
        ax.scatter(p + rng.uniform(-0.15, 0.15, len(d)), d, s=10, alpha=0.7, zorder=3)
    ax.axhline(0.0, color="grey", lw=1, ls="--")
    ticks = []
    for c in comparisons:
        p = "n/a" if c.p_value is None else f"{c.p_value:.3g}"
        ticks.append(f"{METRIC_TITLES.get(c.metric, c.metric)} {label_names.get(c.label, c.label)}\n"
                     f"n={c.n_pairs}, p={p}")
    ax.set_xticks(positions)
    ax.set_xticklabels(ticks, fontsize="small")
    ax.set_ylabel("per-case difference (B − A)")
    ax.set_title(title)
    return _png(fig)


def plot_training_curves(runs: Sequence[RunResult]) -> bytes | None:
    """Losses (train solid, validation dashed) and pseudo Dice (EMA solid, raw dotted) per epoch."""
    curves = [(run, fold, c) for run in runs for fold, c in sorted(run.curves.items())]
    if not curves:
        return None
    import matplotlib

    fig = new_figure(figsize=(12, 4.5))
    ax_loss, ax_dice = fig.subplots(1, 2)
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    run_colour = {run.name: colours[i % len(colours)] for i, run in enumerate(runs)}
    several_folds = any(len(run.curves) > 1 for run in runs)
    for run, fold, c in curves:
        name = f"{run.name} {fold}" if several_folds else run.name
        colour = run_colour[run.name]
        n = c.n_epochs
        epochs = np.arange(n)
        ax_loss.plot(epochs, c.train_losses[:n], color=colour, ls="-", label=f"{name} train")
        ax_loss.plot(epochs, c.val_losses[:n], color=colour, ls="--", label=f"{name} val")
        ax_dice.plot(epochs, c.mean_fg_dice[:n], color=colour, ls=":", alpha=0.8, label=f"{name} pseudo Dice")
        if len(c.ema_fg_dice) >= n:
            ax_dice.plot(epochs, c.ema_fg_dice[:n], color=colour, ls="-", label=f"{name} EMA")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("nnU-Net train (solid) and validation (dashed) loss")
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("pseudo Dice")
    ax_dice.set_title("pseudo Dice on validation patches (EMA solid)")
    for ax in (ax_loss, ax_dice):
        ax.legend(fontsize="x-small")
        ax.grid(alpha=0.3)
    return _png(fig)
