"""``nnunet-genesis compare``: did the Genesis initialisation beat training from scratch?

The first RESULT is the baseline (e.g. scratch, run A); every further RESULT (e.g. Genesis,
run B) is compared with it case by case. Writes ``report.md``, ``report.html``,
``comparison.json`` and PNG plots into REPORT_DIR; the first lines of the report give the
answer per label with the mean difference and the Wilcoxon signed-rank p-value.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path
from typing import Sequence

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.outputs import (atomic_write_bytes, atomic_write_text, check_output_dir, check_output_file,
                                    json_object_with, png_written_by_us, text_starting_with)
from nnunet_genesis.evaluation.plots import (METRIC_TITLES, plot_differences, plot_scores,
                                             plot_training_curves)
from nnunet_genesis.evaluation.report import Report
from nnunet_genesis.evaluation.runs import NSDSettings, RunResult, default_name, load_run
from nnunet_genesis.evaluation.statistics import SIGNIFICANCE, PairedComparison, paired_comparison
from nnunet_genesis.evaluation.metrics import summarize


REPORT_TITLE = "nnunet-genesis comparison"
# The files compare writes into REPORT_DIR besides its PNGs, and how each is known as compare's (only those are replaced).
OUR_FILES = {"report.md": text_starting_with(f"# {REPORT_TITLE}\n"),
             "report.html": text_starting_with(f'<!DOCTYPE html>\n<html><head><meta charset="utf-8">\n'
                                               f'<title>{REPORT_TITLE}</title>'),
             "comparison.json": json_object_with(baseline=..., runs=..., comparisons=...)}


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "run"


def unique_names(paths: Sequence[Path], names: Sequence[str] | None) -> list[str]:
    if names:
        if len(names) != len(paths):
            raise GenesisUserError(f"--names has {len(names)} name(s) for {len(paths)} RESULT(s); give one per RESULT.")
        if len(set(names)) != len(names):
            raise GenesisUserError(f"--names must be unique, got {list(names)}.")
        return list(names)
    out = [default_name(p) for p in paths]
    out = [Path(p).name if out.count(n) > 1 else n for p, n in zip(paths, out)]
    return [f"{n}#{i + 1}" if out.count(n) > 1 else n for i, n in enumerate(out)]


def _differences_png(name: str, baseline: str) -> str:
    return f"differences_{_file_safe(name)}_vs_{_file_safe(baseline)}.png"


def check_outputs(out_dir: Path, names: Sequence[str], inputs: Sequence[Path]) -> None:
    """Refuse, before any work, a REPORT_DIR where a file compare would write exists and is not
    compare's (or is one of the RESULTs)."""
    check_output_dir(out_dir, "-o")
    pngs = ["scores_dice.png", "scores_nsd.png", "training_curves.png",
            *(_differences_png(n, names[0]) for n in names[1:])]
    for name, ours in [*OUR_FILES.items(), *((png, png_written_by_us) for png in pngs)]:
        check_output_file(Path(out_dir) / name, "-o", inputs=inputs, ours=ours)


def check_same_dataset(runs: Sequence[RunResult]) -> None:
    """Refuse runs of different tasks or datasets: their cases would be paired by name, label by label,
    as if they were comparable."""
    known = {r.name: r.dataset for r in runs if r.dataset}
    if len(set(known.values())) > 1:
        raise GenesisUserError(
            "The RESULTs are of different tasks or datasets (" + ", ".join(f"{n}: {d}" for n, d in known.items())
            + "); compare pairs the cases of one task label by label. Compare runs of the same task.")


def nsd_tolerances_differ(a: RunResult, b: RunResult) -> bool:
    """NSD at different tolerances is not comparable; such pairs compare Dice only."""
    return (a.nsd_tolerance_mm is not None and b.nsd_tolerance_mm is not None
            and abs(a.nsd_tolerance_mm - b.nsd_tolerance_mm) > 1e-9)


def compare_pair(a: RunResult, b: RunResult) -> list[PairedComparison]:
    """Every metric and label the two runs share, B against A."""
    out = []
    for metric in [m for m in a.metrics if m in b.metrics and not (m == "nsd" and nsd_tolerances_differ(a, b))]:
        for label in [l for l in a.labels if l in b.labels]:
            out.append(paired_comparison(metric, label, a.scores[metric].get(label, {}),
                                         b.scores[metric].get(label, {})))
    return out


def verdict(a: RunResult, b: RunResult, comparisons: list[PairedComparison],
            label_names: dict[str, str]) -> tuple[str, list[str]]:
    """Headline (did B beat A on mean Dice?) and one line per metric: difference per label, p."""
    dice = [c for c in comparisons if c.metric == "dice" and c.n_pairs]
    if dice:
        better = sum(1 for c in dice if c.mean_difference > 0)
        significant = sum(1 for c in dice if c.significant)
        answer = "Yes" if better == len(dice) else "No" if better == 0 else "Partly"
        headline = (f"**Did {b.name} beat {a.name}? {answer}**: mean Dice higher for {better} of {len(dice)} "
                    f"label(s); significant (p < {SIGNIFICANCE:g}) for {significant} of {len(dice)}.")
    else:
        headline = f"**Did {b.name} beat {a.name}? Unknown**: no case has a Dice value in both runs."
    lines = []
    for metric in dict.fromkeys(c.metric for c in comparisons):
        comps = [c for c in comparisons if c.metric == metric and c.n_pairs]
        if not comps:
            continue
        per_label = "; ".join(
            f"{label_names.get(c.label, c.label)} {_fmt(c.mean_difference, signed=True)} "
            f"(p={_p(c.p_value)}, n={c.n_pairs})" for c in comps)
        tol = f"@{b.nsd_tolerance_mm:g}mm" if metric == "nsd" and b.nsd_tolerance_mm is not None else ""
        lines.append(f"{METRIC_TITLES.get(metric, metric)}{tol}, {b.name} − {a.name}: {per_label}")
    return headline, lines


def _all_labels(runs: Sequence[RunResult]) -> tuple[list[str], dict[str, str]]:
    labels: list[str] = []
    names: dict[str, str] = {}
    for run in runs:
        for label in run.labels:
            if label not in labels:
                labels.append(label)
            names.setdefault(label, run.label_names.get(label, label))
    return labels, names


def build_report(runs: Sequence[RunResult], out_dir: Path) -> Path:
    """Compute the comparisons, write plots, report.md, report.html and comparison.json."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise GenesisUserError(f"-o {out_dir}: exists and is not a folder.")
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _write_report(runs, out_dir)
    except BaseException:
        if created:  # a failed write (full disk) leaves no half report; only this run's files are in it
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _write_report(runs: Sequence[RunResult], out_dir: Path) -> Path:
    baseline, others = runs[0], runs[1:]
    labels, label_names = _all_labels(runs)
    pairs = {b.name: compare_pair(baseline, b) for b in others}

    report = Report(REPORT_TITLE)
    for b in others:
        headline, lines = verdict(baseline, b, pairs[b.name], label_names)
        report.paragraph(headline)
        report.bullets(lines)
    report.paragraph(f"Baseline (run A): **{baseline.name}**. Differences are B − A per case, paired by case "
                     f"name; only cases scored in both runs count. p: Wilcoxon signed-rank test, two-sided.")

    report.heading("Scores per label")
    metrics = [m for m in ("dice", "nsd") if any(m in r.metrics for r in runs)]
    for metric in metrics:
        rows = []
        for run in runs:
            for label in labels:
                if metric not in run.scores or label not in run.scores[metric]:
                    continue
                s = summarize(list(run.scores[metric][label].values()))
                undefined = sum(1 for v in run.scores[metric][label].values() if v is None)
                rows.append([run.name, f"{label_names.get(label, label)} ({label})", _fmt(s["mean"]),
                             _fmt(s["median"]), _fmt(s["std"]), s["n"], undefined])
        report.table([f"run ({METRIC_TITLES[metric]})", "label", "mean", "median", "SD", "n cases",
                      "both empty"], rows)
        png = f"scores_{metric}.png"
        atomic_write_bytes(out_dir / png, plot_scores([r for r in runs if metric in r.metrics], metric, labels,
                                                       label_names))
        report.image(png, f"{METRIC_TITLES[metric]} per label and run (bars: mean ± SD; dots: cases)")

    report.heading("Paired per-case differences")
    for b in others:
        comps = pairs[b.name]
        report.heading(f"{b.name} vs {baseline.name}", level=3)
        report.table(["metric", "label", "n pairs", f"mean {baseline.name}", f"mean {b.name}", "Δ mean",
                      "Δ median", "B better", "A better", "ties", "p", "test"],
                     [[METRIC_TITLES.get(c.metric, c.metric), f"{label_names.get(c.label, c.label)} ({c.label})",
                       c.n_pairs, _fmt(c.mean_a), _fmt(c.mean_b), _fmt(c.mean_difference, True),
                       _fmt(c.median_difference, True), c.n_b_better, c.n_a_better, c.n_ties, _p(c.p_value),
                       c.test_note] for c in comps])
        only_a = {c for m in baseline.metrics for l in baseline.labels for c in baseline.scores[m].get(l, {})}
        only_b = {c for m in b.metrics for l in b.labels for c in b.scores[m].get(l, {})}
        if "nsd" in baseline.metrics and "nsd" in b.metrics and nsd_tolerances_differ(baseline, b):
            report.paragraph(f"NSD not compared: {baseline.name} used {baseline.nsd_tolerance_mm:g} mm and "
                             f"{b.name} {b.nsd_tolerance_mm:g} mm.")
        if only_a ^ only_b:
            report.paragraph(f"Unpaired cases left out: {len(only_a - only_b)} only in {baseline.name}, "
                             f"{len(only_b - only_a)} only in {b.name}.")
        if comps:
            png = _differences_png(b.name, baseline.name)
            atomic_write_bytes(out_dir / png, plot_differences(comps, f"{b.name} − {baseline.name} per case",
                                                               label_names))
            report.image(png, f"Per-case differences {b.name} − {baseline.name} (above 0: {b.name} better)")

    report.heading("Training curves")
    curves_png = plot_training_curves(runs)
    if curves_png is None:
        report.paragraph("No run has training curves (evaluate JSONs carry none; nnU-Net folders need "
                         "checkpoint_final.pth, checkpoint_latest.pth or a training_log_*.txt).")
    else:
        atomic_write_bytes(out_dir / "training_curves.png", curves_png)
        report.image("training_curves.png", "nnU-Net's logged losses and pseudo Dice per epoch")

    report.heading("Runs")
    for run in runs:
        report.paragraph(f"**{run.name}** ({run.kind}): `{run.source}`")
        report.bullets(run.notes)

    atomic_write_text(out_dir / "report.md", report.to_markdown())
    atomic_write_text(out_dir / "report.html", report.to_html())
    data = {
        "baseline": baseline.name,
        "runs": [{"name": r.name, "source": str(r.source), "kind": r.kind, "labels": r.labels,
                  "nsd_tolerance_mm": r.nsd_tolerance_mm, "notes": r.notes,
                  "scores": r.scores, "training_curves": {f: c.to_dict() for f, c in r.curves.items()}}
                 for r in runs],
        "comparisons": {name: [c.to_dict() for c in comps] for name, comps in pairs.items()},
    }
    atomic_write_text(out_dir / "comparison.json", json.dumps(data, indent=2, allow_nan=False) + "\n")
    return out_dir / "report.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", type=Path, metavar="RESULT",
                        help="nnU-Net results folder (Trainer__Plans__Config with fold_N) or 'evaluate' JSON; "
                             "the first is the baseline (e.g. scratch)")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="REPORT_DIR",
                        help="folder for report.md, report.html, comparison.json and the PNGs")
    parser.add_argument("--names", nargs="+", metavar="NAME", help="one display name per RESULT")
    parser.add_argument("--ref", type=Path, metavar="DIR",
                        help="reference segmentations for NSD of nnU-Net folders (default: "
                             "$nnUNet_preprocessed/DatasetXXX_Name/gt_segmentations)")
    parser.add_argument("--task", metavar="TaskXX_Name", help="Decathlon task whose NSD tolerance to use")
    parser.add_argument("--nsd-tolerance", type=float, metavar="MM", help="NSD tolerance in millimetres")


def run(args: argparse.Namespace) -> int:
    if len(args.results) < 2:
        raise GenesisUserError("compare needs at least two RESULTs: the baseline first, then the run(s) to compare.")
    names = unique_names(args.results, args.names)
    check_outputs(args.output, names, args.results)
    nsd = NSDSettings(ref_dir=args.ref, tolerance_mm=args.nsd_tolerance, task=args.task)
    runs = [load_run(path, name, nsd) for path, name in zip(args.results, names)]
    check_same_dataset(runs)
    report = build_report(runs, args.output)
    for b in runs[1:]:
        headline, lines = verdict(runs[0], b, compare_pair(runs[0], b), _all_labels(runs)[1])
        print("\n".join([headline.replace("**", "")] + [f"  {line}" for line in lines]))
    print(f"wrote {report}, {report.with_suffix('.html')} and plots in {report.parent}")
    return 0
