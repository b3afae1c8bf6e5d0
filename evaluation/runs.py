"""Loading one run for ``compare``: an nnU-Net results folder or an ``evaluate`` JSON.

An nnU-Net results folder is ``nnUNet_results/DatasetXXX_Name/Trainer__Plans__Config``
with ``fold_N`` subfolders. Per-case Dice comes from nnU-Net's own evaluation in
``fold_N/validation/summary.json`` (cross-validation: every case once). NSD needs the
reference segmentations: ``--ref`` or ``$nnUNet_preprocessed/DatasetXXX_Name/
gt_segmentations``; it is computed on the validation predictions with ``evaluate``'s code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_genesis.blocks import read_json
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.evaluation.evaluate import EvaluationConfig, evaluate_folders, load_evaluation
from nnunet_genesis.evaluation.metrics import (STATUS_BOTH_EMPTY, STATUS_OK, STATUS_PRED_EMPTY,
                                               STATUS_REF_EMPTY)
from nnunet_genesis.evaluation.msd_tasks import get_task, task_for_dataset_name
from nnunet_genesis.evaluation.segmentations import DEFAULT_FILE_ENDING, strip_ending
from nnunet_genesis.evaluation.training_curves import TrainingCurves, curves_for_fold

_FOLD = re.compile(r"fold_(\d+)")


@dataclass
class RunResult:
    """Per-case scores of one run: ``scores[metric][label][case]`` (None = undefined)."""

    name: str
    source: Path
    kind: str
    labels: list[str]
    label_names: dict[str, str]
    scores: dict[str, dict[str, dict[str, float | None]]]
    nsd_tolerance_mm: float | None = None
    curves: dict[str, TrainingCurves] = field(default_factory=dict)  # fold -> curves
    notes: list[str] = field(default_factory=list)
    dataset: str | None = None  # the Decathlon task, else the nnU-Net dataset; None: not recorded

    @property
    def metrics(self) -> list[str]:
        return [m for m in ("dice", "nsd") if m in self.scores]


@dataclass
class NSDSettings:
    """Where ``compare`` finds references and the tolerance for NSD on nnU-Net folders."""

    ref_dir: Path | None = None
    tolerance_mm: float | None = None
    task: str | None = None


def _status(n_ref: int, n_pred: int) -> str:
    if n_ref == 0 and n_pred == 0:
        return STATUS_BOTH_EMPTY
    return STATUS_REF_EMPTY if n_ref == 0 else STATUS_PRED_EMPTY if n_pred == 0 else STATUS_OK


def score_value(value, where: Path, case: str, label: str, metric: str) -> float | None:
    """A Dice or NSD value as read from a file: None (undefined) or a number in [0, 1]; anything
    else (NaN, a string, 5.0) is refused naming the file and the case, never averaged."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= 1:
        raise GenesisUserError(f"{where}: case {case}, label {label}: {metric} is {value!r}; a {metric} is a number "
                               f"in [0, 1] (or null when both masks are empty). The file was edited or is not "
                               f"what compare reads; evaluate the predictions again.")
    return float(value)


def load_evaluate_json(path: Path, name: str) -> RunResult:
    data = load_evaluation(path)
    labels = [str(label) for label in data["labels"]]
    scores: dict = {m: {label: {} for label in labels} for m in ("dice", "nsd")}
    for case in data["cases"]:
        for label in labels:
            s = case["labels"].get(label)
            if s is not None and not isinstance(s, dict):
                raise GenesisUserError(f"{path}: case {case['case']}, label {label}: holds {s!r}, not the scores "
                                       f"evaluate writes; evaluate the predictions again.")
            for m in ("dice", "nsd"):
                scores[m][label][case["case"]] = None if s is None else score_value(
                    s.get(m), path, case["case"], label, m)
    task = data.get("task")
    return RunResult(name, Path(path), "evaluate JSON", labels, dict(data.get("label_names", {})), scores,
                     nsd_tolerance_mm=data.get("nsd_tolerance_mm"), dataset=task if isinstance(task, str) else None,
                     notes=[f"Dice and NSD (tolerance {data.get('nsd_tolerance_mm')} mm) from "
                            f"'nnunet-genesis evaluate' ({path.name}); no training curves."])


def _fold_dirs(folder: Path) -> tuple[Path, list[Path]]:
    """(run folder, its numbered fold folders); a single fold folder is accepted too."""
    if _FOLD.fullmatch(folder.name) and (folder / "validation").is_dir():
        return folder.parent, [folder]
    folds = sorted((p for p in folder.iterdir() if p.is_dir() and _FOLD.fullmatch(p.name)),
                   key=lambda p: int(p.name.split("_")[1]))
    return folder, folds


def _case_name(entry: dict, file_ending: str) -> str:
    name = Path(entry.get("prediction_file") or entry["reference_file"]).name
    stem = strip_ending(name, file_ending)
    if stem is None:
        stem = strip_ending(name, DEFAULT_FILE_ENDING) or Path(name).stem
    return stem


def load_nnunet_results(folder: Path, name: str, nsd: NSDSettings, progress: bool = True) -> RunResult:
    run_dir, folds = _fold_dirs(folder)
    if not folds:
        raise GenesisUserError(
            f"{folder}: is neither an 'nnunet-genesis evaluate' JSON nor an nnU-Net results folder "
            f"(a Trainer__Plans__Configuration folder holding fold_N subfolders).")
    dataset_json = read_json(run_dir / "dataset.json") if (run_dir / "dataset.json").is_file() else {}
    plans = read_json(run_dir / "plans.json") if (run_dir / "plans.json").is_file() else {}
    file_ending = dataset_json.get("file_ending", DEFAULT_FILE_ENDING)
    dataset_name = plans.get("dataset_name") or run_dir.parent.name
    label_names = {str(v): k for k, v in dataset_json.get("labels", {}).items() if isinstance(v, int)}
    notes: list[str] = []
    dice: dict[str, dict[str, float | None]] = {}
    cases_per_fold: dict[Path, list[str]] = {}
    fold_of_case: dict[str, str] = {}
    curves: dict[str, TrainingCurves] = {}
    for fold in folds:
        fold_curves, how = curves_for_fold(fold)
        if fold_curves:
            curves[fold.name] = fold_curves
        notes.append(f"{fold.name}: training curves {how}.")
        summary_path = fold / "validation" / "summary.json"
        if not summary_path.is_file():
            notes.append(f"{fold.name}: no validation/summary.json (validation not run yet?); its cases are left out.")
            continue
        summary = read_json(summary_path)
        per_case = summary.get("metric_per_case")
        if not isinstance(per_case, list):
            raise GenesisUserError(f"{summary_path}: has no 'metric_per_case' list; is it nnU-Net's summary.json?")
        cases_per_fold[fold] = []
        for entry in per_case:
            case = _case_name(entry, file_ending)
            if case in fold_of_case:
                raise GenesisUserError(
                    f"{folder}: case {case} is validated in both {fold_of_case[case]} and {fold.name}; "
                    f"cross-validation folds must not overlap.")
            fold_of_case[case] = fold.name
            cases_per_fold[fold].append(case)
            if not isinstance(entry.get("metrics"), dict):
                raise GenesisUserError(f"{summary_path}: case {case} has no 'metrics' object; is it nnU-Net's "
                                       f"summary.json?")
            for label, m in entry["metrics"].items():
                value = m.get("Dice") if isinstance(m, dict) else m
                if isinstance(value, float) and math.isnan(value):
                    value = None  # nnU-Net writes NaN when reference and prediction are both empty
                value = score_value(value, summary_path, case, label, "Dice")
                if value is not None and "n_ref" in m and "n_pred" in m and \
                        _status(int(m["n_ref"]), int(m["n_pred"])) == STATUS_BOTH_EMPTY:
                    value = None
                dice.setdefault(label, {})[case] = value
    if not dice:
        raise GenesisUserError(
            f"{folder}: none of {', '.join(f.name for f in folds)} has validation/summary.json with "
            f"per-case results; run the validation (nnUNetv2_train ... --val) first.")
    labels = sorted(dice, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
    notes.insert(0, f"Dice: nnU-Net's validation summary.json of {len(cases_per_fold)} fold(s), "
                    f"{len(fold_of_case)} case(s).")
    task = task_for_dataset_name(dataset_name)
    run = RunResult(name, Path(folder), "nnU-Net results", labels,
                    {k: label_names.get(k, k) for k in labels}, {"dice": dice}, curves=curves, notes=notes,
                    dataset=task.name if task else dataset_name)
    _add_nsd(run, cases_per_fold, dataset_name, file_ending, nsd, progress)
    return run


def _add_nsd(run: RunResult, cases_per_fold: dict[Path, list[str]], dataset_name: str, file_ending: str,
             nsd: NSDSettings, progress: bool) -> None:
    """Compute NSD on the validation predictions when references and a tolerance are known."""
    from nnunetv2.paths import nnUNet_preprocessed

    ref_dir = nsd.ref_dir
    if ref_dir is None and nnUNet_preprocessed:
        candidate = Path(nnUNet_preprocessed) / dataset_name / "gt_segmentations"
        ref_dir = candidate if candidate.is_dir() else None
    if ref_dir is None:
        run.notes.append(f"NSD not computed: no reference segmentations (give --ref, or set nnUNet_preprocessed "
                         f"so that {dataset_name}/gt_segmentations is found). Dice only.")
        return
    if nsd.tolerance_mm is not None:
        tolerance, why = nsd.tolerance_mm, "--nsd-tolerance"
    elif nsd.task:
        tolerance, why = get_task(nsd.task).nsd_tolerance_mm, f"--task {get_task(nsd.task).name}"
    else:
        task = task_for_dataset_name(dataset_name)
        if task is None:
            run.notes.append(f"NSD not computed: no tolerance (give --nsd-tolerance or --task; {dataset_name} "
                             f"is not named like a Decathlon task). Dice only.")
            return
        tolerance, why = task.nsd_tolerance_mm, f"{task.name}, matched by the dataset name {dataset_name}"
    numeric = [label for label in run.labels if label.isdigit()]
    if len(numeric) != len(run.labels):
        run.notes.append("NSD not computed: the run is trained on regions, which 'evaluate' does not score.")
        return
    nsd_scores: dict[str, dict[str, float | None]] = {label: {} for label in run.labels}
    for fold, cases in cases_per_fold.items():
        if not cases:
            continue
        result = evaluate_folders(EvaluationConfig(
            pred_dir=fold / "validation", ref_dir=ref_dir, labels=[int(label) for label in numeric],
            nsd_tolerance_mm=tolerance, file_ending=file_ending, cases=cases, progress=progress))
        for case in result["cases"]:
            for label in run.labels:
                nsd_scores[label][case["case"]] = case["labels"][label]["nsd"]
    run.scores["nsd"] = nsd_scores
    run.nsd_tolerance_mm = tolerance
    run.notes.append(f"NSD: computed on the validation predictions against {ref_dir}, tolerance "
                     f"{tolerance:g} mm ({why}).")


def load_run(path: Path, name: str, nsd: NSDSettings, progress: bool = True) -> RunResult:
    """Load one RESULT argument of ``compare``."""
    path = Path(path)
    if path.is_file():
        return load_evaluate_json(path, name)
    if path.is_dir():
        return load_nnunet_results(path, name, nsd, progress)
    raise GenesisUserError(f"{path} does not exist.")


def default_name(path: Path) -> str:
    """A short run name: the trainer of an nnU-Net folder, the stem of a JSON."""
    path = Path(path)
    if path.is_file():
        return path.stem
    folder = path.parent if _FOLD.fullmatch(path.name) else path
    return folder.name.split("__")[0] or folder.name
