"""The recipe's own summary of ``--baseline``: nnU-Net's validation Dice per configuration and fold for
both arms, and what each arm's selection chose. Numbers come from nnU-Net's files only
(``fold_X/validation/summary.json`` ``foreground_mean``, ``inference_information.json``); the
per-case statistics are ``compare``'s report next to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nnunet_genesis.evaluation.report import Report
from nnunet_genesis.outputs import atomic_write_text, write_json_atomic
from nnunet_genesis.workflows.recipe.plan import RecipePlan
from nnunet_genesis.workflows.recipe.settings import BASELINE_ARM, GENESIS_ARM


def fold_dice(fold_dir: Path) -> float | None:
    """nnU-Net's mean foreground Dice of one fold's final validation (None if absent)."""
    try:
        value = json.loads((fold_dir / "validation" / "summary.json").read_text())["foreground_mean"]["Dice"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(value) if value is not None else None


def selection_summary(plan: RecipePlan, arm: str) -> dict[str, Any] | None:
    path = plan.work.selection(arm) / "inference_information.json"
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    best = info.get("best_model_or_ensemble", {})
    return {"chosen": [f"{m['trainer']}__{m['plans_identifier']}__{m['configuration']}"
                       for m in best.get("selected_model_or_models", [])],
            "dice_before_postprocessing": best.get("result_on_crossval_pre_pp"),
            "dice_after_postprocessing": best.get("result_on_crossval_post_pp"),
            "all_results": info.get("all_results", {})}


def cross_validation_rows(plan: RecipePlan) -> list[dict[str, Any]]:
    rows = []
    genesis, baseline = plan.arm_models(GENESIS_ARM), plan.arm_models(BASELINE_ARM)
    for g, b in zip(genesis, baseline):
        for fold in plan.settings.folds:
            dg = fold_dice(plan.model_dir(g) / f"fold_{fold}")
            db = fold_dice(plan.model_dir(b) / f"fold_{fold}")
            rows.append({"configuration": g.configuration, "fold": fold, GENESIS_ARM: dg, BASELINE_ARM: db,
                         "difference": None if dg is None or db is None else dg - db, "same_model": g == b})
    return rows


def _fmt(value: float | None, signed: bool = False) -> str:
    return "n/a" if value is None else (f"{value:+.4f}" if signed else f"{value:.4f}")


def write_cross_validation(plan: RecipePlan) -> Path:
    """``compare/cross_validation.md`` and ``.json``; returns the Markdown file."""
    s = plan.settings
    rows = cross_validation_rows(plan)
    selections = {arm: selection_summary(plan, arm) for arm in s.arms()}
    report = Report(f"Cross-validation of {s.dataset}: {s.trainer} vs {s.baseline_trainer}")
    report.paragraph("Mean foreground Dice of nnU-Net's final validation per configuration and fold "
                     "(`fold_X/validation/summary.json`); per-case statistics are in the compare report of each "
                     "configuration next to this file.")
    report.table(["configuration", "fold", s.trainer, str(s.baseline_trainer), "difference"],
                 [[r["configuration"] + (" (same model)" if r["same_model"] else ""), r["fold"], _fmt(r[GENESIS_ARM]),
                   _fmt(r[BASELINE_ARM]), _fmt(r["difference"], signed=True)] for r in rows])
    report.heading("Selection (nnUNetv2_find_best_configuration)")
    report.bullets([f"{arm}: " + ("not run yet" if sel is None else
                                  f"{' + '.join(sel['chosen'])}, Dice {_fmt(sel['dice_before_postprocessing'])} "
                                  f"before and {_fmt(sel['dice_after_postprocessing'])} after post-processing")
                    for arm, sel in selections.items()])
    out = plan.work.compare
    write_json_atomic({"rows": rows, "selections": selections}, out / "cross_validation.json")
    return atomic_write_text(out / "cross_validation.md", report.to_markdown())
