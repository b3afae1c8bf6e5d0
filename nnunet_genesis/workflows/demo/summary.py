"""The demo's one-screen result: the Genesis-vs-scratch table, the difference with its CI and
whether it is significant, what the pretraining learnt, and where everything was written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nnunet_genesis.evaluation.label_efficiency import final_pseudo_dice
from nnunet_genesis.outputs import write_json_atomic
from nnunet_genesis.workflows.pipeline import StepTimes, format_seconds
from nnunet_genesis.evaluation.label_efficiency import LEARNT_DICE, LEARNT_LAST_EPOCHS, unlearnt
from nnunet_genesis.evaluation.statistics import SIGNIFICANCE, seed_case_comparison
from nnunet_genesis.workflows.demo.settings import FOLD
from nnunet_genesis.evaluation.training_curves import pseudo_dice_of_fold
from nnunet_genesis.checkpoint import load_checkpoint

if TYPE_CHECKING:
    from nnunet_genesis.workflows.demo.steps import Demo


def _mean(result: dict, label: str, metric: str):
    return result["summary"][label][metric]["mean"]


def summary_table(genesis: dict, scratch: dict) -> list[str]:
    def f(v):
        return "   n/a" if v is None else f"{v:6.3f}"

    def d(a, b):
        return "   n/a" if a is None or b is None else f"{a - b:+6.3f}"

    tol = genesis.get("nsd_tolerance_mm")
    lines = [f"{'label':<22} {'Dice scratch':>12} {'Dice Genesis':>12} {'diff':>7}   "
             f"{'NSD scratch':>11} {'NSD Genesis':>11} {'diff':>7}   (NSD at {tol:g} mm)"]
    for label in genesis["summary"]:
        name = f"{label} {genesis['label_names'].get(label, '')}"
        gd, sd = _mean(genesis, label, "dice"), _mean(scratch, label, "dice")
        gn, sn = _mean(genesis, label, "nsd"), _mean(scratch, label, "nsd")
        lines.append(f"{name:<22} {f(sd):>12} {f(gd):>12} {d(gd, sd):>7}   {f(sn):>11} {f(gn):>11} {d(gn, sn):>7}")
    return lines


def difference_lines(genesis: dict, scratch: dict, trained: dict[str, list[float] | None]) -> list[str]:
    """Per label: Genesis - scratch Dice with its 95 % CI (bootstrap over the test cases of this
    one seed) and the Wilcoxon p, and plainly whether that is significant on this data.

    ``trained``: per arm ("Genesis", "scratch"), its validation pseudo Dice per label over the last
    epochs (``final_pseudo_dice``; None: unreadable). A label that one arm has not learnt in
    training (that value not above 0.5) gets no verdict: the difference then measures the schedule.
    An arm that learnt a label in training but scores low on the test cases generalises worse;
    that difference is what the comparison is for, so it keeps its verdict."""

    def per_case(result: dict, label: str) -> dict:
        return {c["case"]: (c["labels"].get(label) or {}).get("dice") for c in result["cases"]}

    def as_row(values: dict, cases: list[str]) -> np.ndarray:
        return np.array([[np.nan if values[c] is None else values[c] for c in cases]], dtype=float)

    labels = list(genesis["summary"])
    results = {"scratch": scratch, "Genesis": genesis}
    lines = []
    for j, label in enumerate(labels):
        g, b = per_case(genesis, label), per_case(scratch, label)
        cases = sorted(set(g) & set(b))
        cmp = seed_case_comparison(as_row(b, cases), as_row(g, cases))
        name = f"{label} {genesis['label_names'].get(label, '')}"
        if cmp.mean_diff is None:
            lines.append(f"{name}: no case with a Dice in both arms")
            continue
        verdict = (f"significant (p < {SIGNIFICANCE:g})" if cmp.significant else
                   f"not significant (p {'n/a' if cmp.p_value is None else f'= {cmp.p_value:.2g}'})")
        unknown = [arm for arm in results if trained.get(arm) is None]
        if unknown:
            verdict = (f"NO VERDICT: the training curve of {' and '.join(unknown)} could not be read or has no pseudo "
                       f"Dice per label, so it is not known whether the schedule was long enough to learn the label")
        elif missed := [f"{arm} {trained[arm][j]:.3f}" for arm in unlearnt({arm: trained[arm][j] for arm in results})]:
            verdict = (f"NOT A FAIR COMPARISON: not learnt in training by {' and '.join(missed)} (validation pseudo "
                       f"Dice of the last {LEARNT_LAST_EPOCHS} epochs <= {LEARNT_DICE:g}), so the difference measures "
                       f"the schedule, not the pretraining; lengthen the fine-tuning (--finetune-epochs, "
                       f"--finetune-iterations)")
        else:
            test = {arm: _mean(result, label, "dice") for arm, result in results.items()}
            low = [f"{arm} learnt it in training (validation pseudo Dice {trained[arm][j]:.3f}) but scores "
                   f"{'n/a' if test[arm] is None else f'{test[arm]:.3f}'} on the test cases"
                   for arm in unlearnt(test)]
            if low:
                verdict += "; " + "; ".join(low)
        lines.append(f"{name}: Dice Genesis - scratch {cmp.mean_diff:+.3f}, 95 % CI [{cmp.ci95[0]:+.3f}, "
                     f"{cmp.ci95[1]:+.3f}] over {cmp.n_cases} cases, one seed: {verdict}")
    return lines


def final_pseudo_dice_of(demo: "Demo", arm: str, n_labels: int) -> list[float] | None:
    """Per label, one arm's validation pseudo Dice over its last epochs (None: no readable curve
    with one value per label)."""

    curve = pseudo_dice_of_fold(demo.run_folder(arm) / f"fold_{FOLD}")
    return None if curve is None else final_pseudo_dice(curve, n_labels)


def restoration_summary(checkpoint: Path) -> tuple[str, bool]:
    """One line on what the pretraining learnt, and whether it beat the best constant predictor.

    Short CPU pretraining can end with the network predicting each patch's mean (restoration
    MSE at the data's variance); its weights then carry little for fine-tuning, which a reader
    of the Genesis-vs-scratch table must know.
    """

    meta = load_checkpoint(checkpoint).metadata
    losses, base = meta.get("val_losses") or [], meta.get("val_baselines") or {}
    if not losses or "mean" not in base:
        return "restoration: no validation losses recorded in the checkpoint", True
    learnt = losses[-1] < base["mean"]
    line = (f"restoration MSE on the fixed validation patches {losses[0]:.3f} -> {losses[-1]:.3f} over "
            f"{len(losses)} epochs (constant per-patch mean: {base['mean']:.3f}, corrupted input: "
            f"{base['identity']:.3f})")
    if not learnt:
        line += ("; WARNING: not below the constant predictor, so the pretraining learnt little and the "
                 "Genesis arm starts from nearly uninformative weights (raise --pretrain-epochs)")
    return line, learnt


def print_summary(demo: "Demo", times: StepTimes, wall: float) -> None:
    c = demo.cases()
    genesis = json.loads(demo.evaluation_json("genesis").read_text())
    scratch = json.loads(demo.evaluation_json("scratch").read_text())
    s = demo.settings
    where = "synthetic imagesTs" if s.synthetic else "held-out labelled training cases"
    print()
    print(f"Genesis vs scratch on {genesis['n_cases']} test cases ({where}) of {c.dataset_name}; "
          f"fine-tuned on {len(c.train)} labelled cases, {s.finetune_epochs} epochs x {s.finetune_iterations} "
          f"iterations (identical schedule and seed), device {s.device}.")
    for line in summary_table(genesis, scratch):
        print("  " + line)
    trained = {"scratch": final_pseudo_dice_of(demo, "scratch", len(genesis["summary"])),
               "Genesis": final_pseudo_dice_of(demo, "genesis", len(genesis["summary"]))}
    differences = difference_lines(genesis, scratch, trained)
    for line in differences:
        print("  " + line)
    print("  (one seed and one pretraining: benchmarks/transfer.py measures the spread over seeds)")
    restoration, learnt = restoration_summary(demo.checkpoint)
    print(f"Pretraining {restoration}.")
    print(f"Report:     {demo.report_dir / 'report.md'} (also report.html; plots: {demo.report_dir}/*.png)")
    print(f"Submission: {demo.submission}")
    print(f"Evaluation: {demo.evaluation_json('genesis')}, {demo.evaluation_json('scratch')} (+ .csv)")
    print(f"Pretraining: {demo.checkpoint} (loss curve and restorations: {demo.pretrain_dir}/*.png)")
    print(f"Models:     {demo.run_folder('genesis')}, {demo.run_folder('scratch')}")
    print(f"Logs:       {demo.ws.logs}")
    print(f"Time: {format_seconds(times.wall)} for the steps (the two arms side by side where they ran so); "
          f"this invocation {format_seconds(wall)}.")
    write_json_atomic({"settings": s.to_dict(), "cases": c.to_dict(), "step_seconds": times.seconds,
                       "steps_wall_seconds": round(times.wall, 1),
                       "genesis": {k: genesis[k] for k in ("summary", "foreground_mean", "n_cases")},
                       "scratch": {k: scratch[k] for k in ("summary", "foreground_mean", "n_cases")},
                       "differences": differences,
                       "final_pseudo_dice": trained,
                       "pretraining": {"summary": restoration, "beats_constant_predictor": learnt},
                       "report": str(demo.report_dir / "report.md"), "submission": str(demo.submission)},
                      demo.out / "summary.json")
