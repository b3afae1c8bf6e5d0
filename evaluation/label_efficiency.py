"""Label efficiency across seeds: per K, label and arm, the mean Dice/NSD over seeds x cases and
each arm against a baseline (mean difference, 95 % bootstrap CI over seeds x cases, Wilcoxon p),
the default start's criteria per (K, seed), a console table and the Dice-vs-K figure.

A *run* is one record of ``benchmarks/transfer.py`` (one K, seed and arm): per-label means, the
per-case values on the held-out cases, nnU-Net's pseudo Dice per epoch and the first epoch it
left 0 per label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_genesis.outputs import new_figure, save_figure
from nnunet_genesis.evaluation.statistics import bootstrap_mean_ci, seed_case_comparison

BASELINE = "scratch"
LEARNT_DICE = 0.5  # an arm has learnt a label when its mean Dice is above this


def unlearnt(mean_dice: dict[str, float | None], threshold: float = LEARNT_DICE) -> list[str]:
    """Labels whose mean Dice is not above ``threshold``. A comparison on a label one arm has not
    learnt measures the schedule, not the pretraining (the fairness rule, docs/benchmark_transfer.md)."""
    return [label for label, v in mean_dice.items() if v is None or v <= threshold]


LEARNT_LAST_EPOCHS = 5  # a label is learnt in training when its pseudo Dice over these last epochs is above LEARNT_DICE


def final_pseudo_dice(pseudo_dice: list[list[float]], n_labels: int,
                      last: int = LEARNT_LAST_EPOCHS) -> list[float] | None:
    """Per label, the mean pseudo Dice (nnU-Net's estimate on its validation cases) of the last
    ``last`` epochs; None when the curve does not have one value per label in each epoch.

    Whether the schedule was long enough for an arm to learn a label is a property of its
    training, not of the test cases: an arm that learnt a label but scores low on the test cases
    generalises worse, which is what the comparison is meant to show."""
    rows = pseudo_dice[-last:]
    if not rows or any(len(row) != n_labels for row in rows):
        return None
    return [float(np.mean([row[j] for row in rows])) for j in range(n_labels)]


def unfair_runs(runs: list[dict], baseline: str = BASELINE) -> list[dict]:
    """The baseline's runs that did not learn every label: (K, seed, labels with their Dice)."""
    out = []
    for r in sorted((r for r in runs if r["arm"] == baseline), key=lambda r: (r["K"], r["seed"])):
        dice = {label: v["dice"] for label, v in r["labels"].items()}
        missed = unlearnt(dice)
        if missed:
            out.append({"K": r["K"], "seed": r["seed"], "labels": {label: dice[label] for label in missed}})
    return out


def _rank(arm: str, order: Sequence[str]) -> tuple[int, str]:
    """Arms in the caller's order, unknown ones after them by name."""
    return (list(order).index(arm), "") if arm in order else (len(order), arm)


def first_nonzero_epochs(pseudo_dice: list[list[float]], n_labels: int) -> list[int | None]:
    """Per label, the first epoch whose pseudo Dice (nnU-Net's validation estimate) is above 0."""
    out = []
    for j in range(n_labels):
        out.append(next((e for e, row in enumerate(pseudo_dice) if j < len(row) and row[j] > 0), None))
    return out


def _matrix(runs: list[dict], metric: str, label: str, seeds: list[int], cases: list[str]) -> np.ndarray:
    by_seed = {r["seed"]: r for r in runs}
    m = np.full((len(seeds), len(cases)), np.nan)
    for i, s in enumerate(seeds):
        for j, c in enumerate(cases):
            v = by_seed[s]["cases"].get(c, {}).get(label, {}).get(metric)
            if v is not None:
                m[i, j] = v
    return m


def summarize(runs: list[dict], baseline: str = BASELINE, n_boot: int = 10_000, arm_order: Sequence[str] = ()) -> dict:
    """Per K, label and arm: the arm's mean (and seed spread) and, against the baseline over the
    seeds both have, the mean difference, its 95 % CI (bootstrap over seeds x cases) and Wilcoxon p."""

    summary: dict = {}
    for k in sorted({r["K"] for r in runs}):
        at_k = [r for r in runs if r["K"] == k]
        arms = sorted({r["arm"] for r in at_k}, key=lambda a: _rank(a, arm_order))
        labels = list(at_k[0]["labels"])
        cases = sorted(at_k[0]["cases"])
        entry = {}
        for label in labels:
            per_arm = {}
            for arm in arms:
                mine = [r for r in at_k if r["arm"] == arm]
                seeds = sorted(r["seed"] for r in mine)
                row = {"n_seeds": len(seeds), "seeds": seeds}
                for metric in ("dice", "nsd"):
                    m = _matrix(mine, metric, label, seeds, cases)
                    seed_means = np.nanmean(m, axis=1)
                    row[metric] = {"mean": float(np.nanmean(m)), "seed_sd": float(np.std(seed_means, ddof=1))
                                   if len(seeds) > 1 else None, "ci95": bootstrap_mean_ci(m, n_boot=n_boot)}
                    if arm != baseline:
                        base = [r for r in at_k if r["arm"] == baseline and r["seed"] in seeds]
                        common = sorted(r["seed"] for r in base)
                        if common:
                            cmp = seed_case_comparison(_matrix(base, metric, label, common, cases),
                                                       _matrix(mine, metric, label, common, cases), n_boot=n_boot)
                            row[metric]["vs_" + baseline] = {"mean_diff": cmp.mean_diff, "ci95": cmp.ci95 and list(cmp.ci95),
                                                             "p": cmp.p_value, "n_seeds": cmp.n_seeds,
                                                             "n_cases": cmp.n_cases, "note": cmp.note}
                per_arm[arm] = row
            entry[label] = {"name": at_k[0]["label_names"].get(label, label), "arms": per_arm}
        summary[str(k)] = entry
    return summary


def first_epoch_all_above(pseudo_dice: list[list[float]], threshold: float = 0.5) -> int | None:
    """The first epoch whose pseudo Dice is above ``threshold`` on every label: how fast a start
    learns, where the final Dice of a long enough schedule may no longer tell starts apart."""
    return next((e for e, row in enumerate(pseudo_dice) if row and min(row) > threshold), None)


def criteria(runs: list[dict], arm: str = "genesis", baseline: str = BASELINE) -> list[dict]:
    """A fine-tuning start's criteria for the default per (K, seed): its pseudo Dice leaves 0 on
    every label no later than the baseline's, and its final mean Dice (over labels) is at least the
    baseline's."""
    out = []
    index = {(r["K"], r["seed"], r["arm"]): r for r in runs}
    for (k, seed, a), r in sorted(index.items()):
        b = index.get((k, seed, baseline))
        if a != arm or b is None:
            continue
        never = 10 ** 9
        leaves = all((x if x is not None else never) <= (y if y is not None else never)
                     for x, y in zip(r["first_nonzero_epoch"], b["first_nonzero_epoch"]))
        mean_r = float(np.mean([v["dice"] for v in r["labels"].values()]))
        mean_b = float(np.mean([v["dice"] for v in b["labels"].values()]))
        out.append({"arm": arm, "K": k, "seed": seed, "first_nonzero": r["first_nonzero_epoch"],
                    "first_nonzero_baseline": b["first_nonzero_epoch"], "leaves_zero_no_later": leaves,
                    "mean_dice": mean_r, "mean_dice_baseline": mean_b, "mean_dice_not_lower": mean_r >= mean_b,
                    "first_epoch_above_0.5": first_epoch_all_above(r.get("pseudo_dice") or []),
                    "first_epoch_above_0.5_baseline": first_epoch_all_above(b.get("pseudo_dice") or [])})
    return out


def table(results: dict) -> str:
    def f(v):
        return "  n/a" if v is None else f"{v:.3f}"

    lines = [f"{results['task']}, setting {results['setting']} on {results['device']}; Dice on "
             f"{results['n_eval']} held-out cases; mean over seeds x cases; diff vs {BASELINE} with 95 % CI "
             f"(bootstrap over seeds x cases) and Wilcoxon p",
             f"{'K':>3}  {'label':<14} {'arm':<14} {'seeds':>5} {'Dice':>6} {'seed SD':>7} {'diff':>7} "
             f"{'95% CI':>17} {'p':>8}"]
    for k, entry in results["summary"].items():
        for label, e in entry.items():
            for arm, row in e["arms"].items():
                d = row["dice"]
                vs = d.get("vs_" + BASELINE)
                diff = f"{vs['mean_diff']:+.3f}" if vs and vs["mean_diff"] is not None else ""
                ci = f"[{vs['ci95'][0]:+.3f}, {vs['ci95'][1]:+.3f}]" if vs and vs["ci95"] else ""
                p = (f"{vs['p']:.2g}" if vs["p"] is not None else "n/a") if vs else ""
                sd = f"{d['seed_sd']:.3f}" if d["seed_sd"] is not None else "  n/a"
                lines.append(f"{k:>3}  {label + ' ' + e['name']:<14} {arm:<14} {row['n_seeds']:>5} {f(d['mean']):>6} "
                             f"{sd:>7} {diff:>7} {ci:>17} {p:>8}")
    if results["criteria"]:
        lines.append("")
        lines.append(f"criteria for the default, each start vs {BASELINE} per (K, seed): pseudo Dice leaves 0 on "
                     f"every label no later; final mean Dice not lower; first epoch with pseudo Dice > 0.5 on every "
                     f"label")
        met: dict[str, list[bool]] = {}
        for c in results["criteria"]:
            met.setdefault(c["arm"], []).append(c["leaves_zero_no_later"] and c["mean_dice_not_lower"])
            lines.append(f"  {c['arm']:<16} K={c['K']:<3} seed {c['seed']:<3} first epoch > 0: "
                         f"{c['first_nonzero']} vs "
                         f"{c['first_nonzero_baseline']}  {'ok ' if c['leaves_zero_no_later'] else 'NO '}   "
                         f"mean Dice {c['mean_dice']:.4f} vs {c['mean_dice_baseline']:.4f}  "
                         f"{'ok' if c['mean_dice_not_lower'] else 'NO'}   > 0.5 from epoch "
                         f"{c.get('first_epoch_above_0.5')} vs {c.get('first_epoch_above_0.5_baseline')}")
        lines.append("  meets both on every run: " + "; ".join(f"{arm} {sum(ok)} of {len(ok)}"
                                                          for arm, ok in met.items()))
    unfair = results.get("unfair_runs") or []
    if unfair:
        lines.append("")
        lines.append(f"NOT FAIR: {BASELINE} did not learn every label (mean Dice > {LEARNT_DICE:g}) in "
                     + "; ".join(f"K={u['K']} seed {u['seed']} (" + ", ".join(f"label {lab} {d:.3f}" for lab, d
                                                                              in u["labels"].items()) + ")"
                                 for u in unfair)
                     + ": the comparisons on those runs measure the schedule, not the pretraining.")
    return "\n".join(lines)


def plot(results: dict, path: Path, arm_order: Sequence[str] = ()) -> None:
    """Dice vs K per label: each arm's mean with its 95 % CI as an error bar.

    Arms are dodged sideways so that overlapping intervals stay readable, and the Dice axis spans
    the data rather than 0-1: the differences that matter here are a few hundredths.
    """
    summary = results["summary"]
    ks = sorted(int(k) for k in summary)
    if not ks:
        return
    labels = list(summary[str(ks[0])])
    arms = sorted({a for k in summary for lab in summary[k].values() for a in lab["arms"]},
                  key=lambda a: _rank(a, arm_order))
    legend_rows = -(-len(arms) // 6)
    fig = new_figure(figsize=(5 * len(labels), 4 + 0.3 * legend_rows))
    axes = fig.subplots(1, len(labels), squeeze=False)
    step = min(1.06, 1.35 ** (1 / max(len(arms) - 1, 1)))  # all arms of one K within a factor 1.35
    dodge = step ** (np.arange(len(arms)) - (len(arms) - 1) / 2)  # multiplicative: the K axis is log
    colours = [f"C{i}" for i in range(10)] if len(arms) <= 10 else [f"tab:{c}" for c in (
        "blue", "orange", "green", "red", "purple", "brown", "pink", "gray", "olive", "cyan")] + ["black", "gold"]
    for ax, label in zip(axes[0], labels):
        for i, (arm, shift) in enumerate(zip(arms, dodge)):
            xs, mean, err = [], [], [[], []]
            for k in ks:
                row = summary[str(k)][label]["arms"].get(arm)
                if row is None:
                    continue
                m = row["dice"]["mean"]
                lo, hi = row["dice"]["ci95"] or [m, m]
                xs.append(k * shift)
                mean.append(m)
                err[0].append(m - lo)
                err[1].append(hi - m)
            ax.errorbar(xs, mean, yerr=err, fmt="o-" if arm != BASELINE else "s--", capsize=3, label=arm,
                        color=colours[i % len(colours)])
        ax.set_title(f"{summary[str(ks[0])][label]['name']} (label {label})")
        ax.set_xlabel("labelled training cases K")
        ax.set_ylabel("Dice (mean, 95 % CI over seeds x cases)")
        ax.set_xscale("log")
        ax.minorticks_off()  # the log axis would label minor ticks such as 6 x 10^0
        ax.set_xticks(ks)
        ax.set_xticklabels([str(k) for k in ks])
        ax.set_xlim(min(ks) / 1.4, max(ks) * 1.4)
        ax.grid(alpha=0.3)
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=min(len(arms), 6), fontsize=8)
    fig.suptitle(f"{results['task']}: label efficiency ({results['setting']} setting)")
    fig.tight_layout(rect=(0, 0.07 * legend_rows, 1, 1))
    save_figure(fig, path, dpi=110)
