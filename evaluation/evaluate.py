"""``nnunet-genesis evaluate``: Dice and NSD of a prediction folder against references.

Writes ``OUT.json`` (per case, per label, plus mean/median/std per label and empty-mask
counts) and ``OUT.csv`` next to it. Predictions are matched to references by file name,
as nnU-Net names them (``case.nii.gz`` in both folders).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.evaluation.metrics import (STATUS_BOTH_EMPTY, STATUS_PRED_EMPTY, STATUS_REF_EMPTY,
                                               LabelScore, score_label, summarize)
from nnunet_genesis.evaluation.msd_tasks import MSDTask, get_task
from nnunet_genesis.outputs import atomic_write_text, check_output_file, json_object_with, text_starting_with
from nnunet_genesis.evaluation.segmentations import (DEFAULT_FILE_ENDING, Geometry,
                                                     file_ending_from_dataset_json, list_cases)
from nnunet_genesis.volumes import read_label_map

FORMAT = "nnunet_genesis.evaluation/1"
CSV_COLUMNS = ("case", "label", "label_name", "dice", "nsd", "status", "n_ref_voxels", "n_pred_voxels")
# How an existing output is known to be evaluate's (only those are replaced): the JSON's format key, the CSV's header.
OUR_JSON = json_object_with(format=FORMAT)
OUR_CSV = text_starting_with(",".join(CSV_COLUMNS) + "\n")
METRICS = ("dice", "nsd")
_EMPTY_COUNT_KEYS = {STATUS_BOTH_EMPTY: "n_both_empty", STATUS_REF_EMPTY: "n_ref_empty",
                     STATUS_PRED_EMPTY: "n_pred_empty"}


@dataclass
class EvaluationConfig:
    """Everything one evaluation needs; None means 'take it from the task / the files'."""

    pred_dir: Path
    ref_dir: Path
    task: str | None = None
    labels: list[int] | None = None
    nsd_tolerance_mm: float | None = None
    file_ending: str | None = None
    only_predicted: bool = False  # evaluate only references that have a prediction
    cases: list[str] | None = None  # restrict to these reference cases
    num_processes: int = 1
    progress: bool = True
    label_names: dict[int, str] = field(default_factory=dict)

    def msd_task(self) -> MSDTask | None:
        return get_task(self.task) if self.task else None

    def tolerance(self) -> float:
        if self.nsd_tolerance_mm is not None:
            if not (self.nsd_tolerance_mm >= 0 and math.isfinite(self.nsd_tolerance_mm)):
                raise GenesisUserError(f"--nsd-tolerance must be a finite number >= 0 mm, got {self.nsd_tolerance_mm}.")
            return float(self.nsd_tolerance_mm)
        task = self.msd_task()
        if task is None:
            raise GenesisUserError(
                "NSD needs a tolerance in millimetres: give --task (uses the Decathlon tolerance of "
                "that task, e.g. 1 mm for Task04_Hippocampus) or --nsd-tolerance MM.")
        return task.nsd_tolerance_mm

    def resolved_labels(self) -> list[int] | None:
        """Labels to score; None means every non-zero label found in the files."""
        if self.labels:
            bad = [label for label in self.labels if label <= 0]
            if bad:
                raise GenesisUserError(f"--labels must be foreground labels (> 0); got {bad}.")
            task = self.msd_task()
            unknown = sorted({label for label in self.labels if task and label not in task.labels})
            if unknown:
                raise GenesisUserError(
                    f"--labels {' '.join(map(str, unknown))}: {task.name} has no such label; its labels are "
                    f"{', '.join(f'{v} ({n})' for v, n in sorted(task.labels.items()) if v)}.")
            return sorted(set(int(label) for label in self.labels))
        task = self.msd_task()
        return task.foreground_labels if task else None

    def resolved_file_ending(self) -> str:
        if self.file_ending:
            return self.file_ending
        return (file_ending_from_dataset_json(self.pred_dir)
                or file_ending_from_dataset_json(self.ref_dir) or DEFAULT_FILE_ENDING)


def match_cases(config: EvaluationConfig) -> list[tuple[str, Path, Path]]:
    """(case, reference, prediction) triples; one error listing every unmatched file."""
    ending = config.resolved_file_ending()
    refs = list_cases(config.ref_dir, ending)
    preds = list_cases(config.pred_dir, ending)
    if not refs:
        raise GenesisUserError(f"Reference folder {config.ref_dir} holds no '*{ending}' files.")
    if config.cases is not None:
        unknown = sorted(set(config.cases) - set(refs))
        if unknown:
            raise GenesisUserError(
                f"Reference folder {config.ref_dir} has no file for case(s) {', '.join(unknown)}.")
        refs = {c: refs[c] for c in config.cases}
    if config.only_predicted:
        refs = {c: p for c, p in refs.items() if c in preds}
        if not refs:
            raise GenesisUserError(
                f"No prediction in {config.pred_dir} matches a reference in {config.ref_dir} "
                f"(file ending '{ending}').")
    problems = []
    missing = sorted(set(refs) - set(preds))
    if missing:
        problems.append(f"{len(missing)} reference case(s) have no prediction '<case>{ending}' in "
                        f"{config.pred_dir}: {', '.join(missing)}")
    extra = sorted(set(preds) - set(refs)) if config.cases is None else []
    if extra:
        problems.append(f"{len(extra)} prediction(s) have no reference in {config.ref_dir}: "
                        f"{', '.join(extra)}")
    if problems:
        hint = (" Use --only-predicted to evaluate just the cases that have predictions "
                "(e.g. one cross-validation fold)." if missing and not extra else "")
        raise GenesisUserError("Predictions and references do not match: " + "; ".join(problems) + "." + hint)
    return [(c, refs[c], preds[c]) for c in sorted(refs)]


def evaluate_case(case: str, ref_path: Path, pred_path: Path, labels: Sequence[int] | None,
                  tolerance_mm: float, label_set: Sequence[int] | None = None) -> dict:
    """Scores of every label of one case. Raises GenesisUserError on mismatched geometry and
    on values outside ``label_set`` (a task's labels: they would otherwise count as background)."""
    ref_image, ref = read_label_map(ref_path)
    pred_image, pred = read_label_map(pred_path)
    if label_set is not None:
        for path, array in ((ref_path, ref), (pred_path, pred)):
            outside = np.setdiff1d(np.unique(array), np.asarray(sorted(label_set)))
            if outside.size:
                raise GenesisUserError(
                    f"{path}: holds label(s) {', '.join(f'{v:g}' for v in outside[:10])} outside the task's "
                    f"label set {{{', '.join(str(v) for v in sorted(label_set))}}}; they would silently count "
                    f"as background. Check that the file belongs to this task.")
    ref_geometry, pred_geometry = Geometry.of(ref_image), Geometry.of(pred_image)
    diffs = pred_geometry.differences(ref_geometry)
    if diffs:
        raise GenesisUserError(
            f"Case {case}: prediction {pred_path} does not have the geometry of reference {ref_path} "
            f"(prediction vs reference: {'; '.join(diffs)}). Predictions must be in the reference's "
            f"image space (nnU-Net exports them so).")
    if labels is None:
        found = np.union1d(np.unique(ref), np.unique(pred))
        labels = [int(v) for v in found if v != 0]
    spacing = ref_geometry.spacing_zyx
    return {
        "case": case,
        "reference": str(ref_path),
        "prediction": str(pred_path),
        "spacing_zyx_mm": list(spacing),
        "labels": {str(label): score_label(ref, pred, label, spacing, tolerance_mm).to_dict()
                   for label in labels},
    }


def _evaluate_case_star(args) -> dict:
    return evaluate_case(*args)


def _run_cases(jobs: list[tuple], num_processes: int, progress: bool) -> list[dict]:
    from tqdm import tqdm

    bar = dict(total=len(jobs), desc="evaluate", unit="case", disable=not progress)
    if num_processes <= 1 or len(jobs) <= 1:
        return [evaluate_case(*job) for job in tqdm(jobs, **bar)]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=num_processes, mp_context=ctx) as pool:
        return list(tqdm(pool.map(_evaluate_case_star, jobs), **bar))


def summarize_cases(case_results: list[dict], labels: Iterable[int | str],
                    metrics: Sequence[str] = METRICS) -> dict:
    """Per-label mean/median/std of each metric and counts of empty-mask cases.

    Cases missing a label (it occurs in neither file) are filled in as ``both_empty``.
    """
    labels = [str(label) for label in labels]
    for result in case_results:
        for label in labels:
            result["labels"].setdefault(label, LabelScore(None, None, STATUS_BOTH_EMPTY, 0, 0).to_dict())
    summary = {}
    for label in labels:
        scores = [r["labels"][label] for r in case_results]
        entry = {m: summarize([s.get(m) for s in scores]) for m in metrics}
        entry["n_cases"] = len(scores)
        for status, key in _EMPTY_COUNT_KEYS.items():
            entry[key] = sum(1 for s in scores if s["status"] == status)
        summary[label] = entry
    return summary


def foreground_mean(summary: dict, metrics: Sequence[str] = METRICS) -> dict:
    """Mean over labels of the per-label means (labels with no defined value left out)."""
    out = {}
    for m in metrics:
        means = [s[m]["mean"] for s in summary.values() if s[m]["mean"] is not None]
        out[m] = float(np.mean(means)) if means else None
    return out


def evaluate_folders(config: EvaluationConfig) -> dict:
    """Evaluate every matched case; returns the result dict that ``evaluate`` writes as JSON."""
    tolerance = config.tolerance()
    labels = config.resolved_labels()
    task = config.msd_task()
    triples = match_cases(config)
    label_set = sorted(task.labels) if task else None
    jobs = [(case, ref, pred, labels, tolerance, label_set) for case, ref, pred in triples]
    case_results = _run_cases(jobs, max(1, int(config.num_processes)), config.progress)
    if labels is None:
        labels = sorted({int(k) for r in case_results for k in r["labels"]})
    names = dict(task.labels) if task else {}
    names.update(config.label_names)
    summary = summarize_cases(case_results, labels)
    return {
        "format": FORMAT,
        "pred_dir": str(config.pred_dir),
        "ref_dir": str(config.ref_dir),
        "task": task.name if task else None,
        "labels": [int(label) for label in labels],
        "label_names": {str(label): names.get(label, str(label)) for label in labels},
        "nsd_tolerance_mm": tolerance,
        "nsd_definition": "voxel surfaces (6-neighbourhood), Euclidean distances in mm with the "
                          "image spacing; NSD = fraction of both surfaces within the tolerance",
        "empty_policy": "both empty: Dice/NSD null, left out of statistics, counted; one empty: 0",
        "n_cases": len(case_results),
        "summary": summary,
        "foreground_mean": foreground_mean(summary),
        "cases": case_results,
    }


def _num(value) -> str:
    return "" if value is None else f"{value:.6g}"


def to_csv(result: dict) -> str:
    """One row per case and label, then (mean)/(median)/(std) rows per label."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    names = result.get("label_names", {})
    for case in result["cases"]:
        for label, s in case["labels"].items():
            writer.writerow([case["case"], label, names.get(label, label), _num(s["dice"]), _num(s["nsd"]),
                             s["status"], s["n_ref"], s["n_pred"]])
    for stat in ("mean", "median", "std"):
        for label, s in result["summary"].items():
            writer.writerow([f"({stat})", label, names.get(label, label), _num(s["dice"][stat]),
                             _num(s["nsd"][stat]), "summary", "", ""])
    return buf.getvalue()


def write_evaluation(result: dict, out_json: Path) -> tuple[Path, Path]:
    """Write the JSON and the CSV next to it (same stem), each atomically."""
    out_json = Path(out_json)
    out_csv = out_json.with_suffix(".csv")
    atomic_write_text(out_csv, to_csv(result))
    try:
        atomic_write_text(out_json, json.dumps(result, indent=2, allow_nan=False) + "\n")
    except BaseException:
        out_csv.unlink(missing_ok=True)  # both or neither
        raise
    return out_json, out_csv


def load_evaluation(path: Path) -> dict:
    """Read an ``evaluate`` JSON back, checking it is one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenesisUserError(f"{path}: could not be read as JSON ({e}).") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise GenesisUserError(
            f"{path}: is not an 'nnunet-genesis evaluate' result (expected \"format\": \"{FORMAT}\").")
    cases = data.get("cases")
    if not isinstance(data.get("labels"), list) or not isinstance(cases, list) or not all(
            isinstance(c, dict) and isinstance(c.get("case"), str) and isinstance(c.get("labels"), dict)
            for c in cases):
        raise GenesisUserError(f"{path}: has the evaluate format but lacks its 'labels' list or a 'cases' list of "
                               f"{{case, labels}} entries; it was edited or truncated. Run evaluate again.")
    return data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, type=Path, metavar="DIR",
                        help="folder of predicted label maps (case.nii.gz, nnU-Net's naming)")
    parser.add_argument("--ref", required=True, type=Path, metavar="DIR",
                        help="folder of reference label maps with the same file names")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUT.json",
                        help="result JSON; a CSV with the same stem is written next to it")
    parser.add_argument("--task", metavar="TaskXX_Name",
                        help="Decathlon task: sets the labels and the NSD tolerance (e.g. Task04_Hippocampus)")
    parser.add_argument("--labels", type=int, nargs="+", metavar="L",
                        help="foreground labels to score (default: the task's, else every label found)")
    parser.add_argument("--nsd-tolerance", type=float, metavar="MM",
                        help="NSD tolerance in millimetres (overrides the task's)")
    parser.add_argument("--file-ending", metavar="EXT",
                        help="file ending of the label maps (default: from a dataset.json in --pred "
                             "or --ref, else .nii.gz)")
    parser.add_argument("--only-predicted", action="store_true",
                        help="score only the references that have a prediction (default: a missing "
                             "prediction is an error)")
    parser.add_argument("-np", "--num-processes", type=int, default=1, metavar="N",
                        help="worker processes (default: 1)")


def run(args: argparse.Namespace) -> int:
    config = EvaluationConfig(pred_dir=args.pred, ref_dir=args.ref, task=args.task, labels=args.labels,
                              nsd_tolerance_mm=args.nsd_tolerance, file_ending=args.file_ending,
                              only_predicted=args.only_predicted, num_processes=args.num_processes)
    if args.output.suffix.lower() != ".json":
        raise GenesisUserError(f"-o {args.output}: the output must be a .json file (a .csv is written next to it).")
    check_output_file(args.output, "-o", inputs=(args.pred, args.ref), ours=OUR_JSON)
    check_output_file(args.output.with_suffix(".csv"), "-o (its .csv sibling)", inputs=(args.pred, args.ref),
                      ours=OUR_CSV)
    if args.num_processes < 1:
        raise GenesisUserError(f"--num-processes {args.num_processes}: must be 1 or more.")
    result = evaluate_folders(config)
    out_json, out_csv = write_evaluation(result, args.output)
    for label, s in result["summary"].items():
        name = result["label_names"].get(label, label)
        dice, nsd = s["dice"], s["nsd"]
        empties = ", ".join(f"{k[2:]}={s[k]}" for k in _EMPTY_COUNT_KEYS.values() if s[k])
        print(f"label {label} ({name}): Dice {_num(dice['mean'])} +- {_num(dice['std'])}, "
              f"NSD@{result['nsd_tolerance_mm']:g}mm {_num(nsd['mean'])} +- {_num(nsd['std'])} "
              f"over {dice['n']} case(s)" + (f" [{empties}]" if empties else ""))
    print(f"wrote {out_json} and {out_csv}")
    return 0
