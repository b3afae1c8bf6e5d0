"""What the recipe reads from disk: the dataset's plans and splits (``nnUNet_preprocessed``), how far
each fold's training got (``nnUNet_results``), and the layout of the recipe's own work folder.

A fold is *finished* when nnU-Net wrote ``checkpoint_final.pth`` and the final validation
(``validation/summary.json``) with one ``.npz`` per validated case (``--npz``: ensembling needs
them) and, for a stage another configuration builds on (``3d_lowres``), the segmentations
``predicted_next_stage/<next>/<case>.*`` that the next stage's training reads.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from nnunet_genesis.blocks import read_json
from nnunet_genesis.errors import GenesisUserError

DEFAULT_FOLDS = 5  # nnU-Net's do_split writes a 5-fold splits_final.json when there is none

FRESH, CONTINUE, VALIDATE, FINISHED = "fresh", "continue", "validate", "finished"
# what nnUNetv2_find_best_configuration writes into nnUNet_results/DATASET (one per dataset)
SELECTION_FILES = ("inference_information.json", "inference_instructions.txt")


@dataclass(frozen=True)
class ConfigurationFacts:
    """One configuration of the plans, inheritance resolved by nnU-Net's PlansManager."""

    name: str
    is_3d: bool
    previous_stage: str | None
    next_stages: tuple[str, ...]
    data_identifier: str
    preprocessed: bool


@dataclass(frozen=True)
class DatasetFacts:
    """The dataset as nnU-Net planned and preprocessed it."""

    name: str
    preprocessed_dir: Path
    configurations: dict[str, ConfigurationFacts]  # in the order of the plans
    n_splits: int
    splits_file: bool  # False: nnU-Net writes a 5-fold splits_final.json at the first training

    def configuration(self, name: str) -> ConfigurationFacts:
        return self.configurations[name]


def read_dataset_facts(preprocessed_dir: Path, source_plans: str) -> DatasetFacts:
    """Read ``<source_plans>.json`` and ``splits_final.json`` of a preprocessed dataset."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_file = preprocessed_dir / f"{source_plans}.json"
    if not plans_file.is_file():
        raise GenesisUserError(
            f"Dataset {preprocessed_dir.name} has no plans: {plans_file} does not exist. Plan and preprocess it "
            f"first (nnUNetv2_plan_and_preprocess -d {preprocessed_dir.name}), or name other source plans with "
            f"--plans.")
    plans = read_json(plans_file, "Plans")
    if not isinstance(plans, dict) or not isinstance(plans.get("configurations"), dict) or not plans["configurations"]:
        raise GenesisUserError(f"Plans {plans_file} list no configurations; is it nnU-Net's plans file?")
    manager = PlansManager(copy.deepcopy(plans))
    configurations = {}
    for name in plans["configurations"]:
        try:
            cm = manager.get_configuration(name)
            facts = ConfigurationFacts(name, len(cm.patch_size) == 3, cm.previous_stage_name,
                                       tuple(cm.next_stage_names or ()), cm.data_identifier,
                                       _has_files(preprocessed_dir / cm.data_identifier))
        except (KeyError, ValueError, RuntimeError, TypeError) as e:
            raise GenesisUserError(f"Plans {plans_file}: configuration {name!r} cannot be read ({e}).") from None
        configurations[name] = facts
    splits_path = preprocessed_dir / "splits_final.json"
    n_splits = DEFAULT_FOLDS
    if splits_path.is_file():
        splits = read_json(splits_path, "Splits")
        if not isinstance(splits, list) or not splits:
            raise GenesisUserError(f"{splits_path} is not a list of folds; is it nnU-Net's splits_final.json?")
        n_splits = len(splits)
    return DatasetFacts(preprocessed_dir.name, preprocessed_dir, configurations, n_splits, splits_path.is_file())


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() for p in folder.iterdir())


@dataclass(frozen=True)
class FoldStatus:
    """How far one fold's training got, and why the recipe thinks so."""

    state: str  # FRESH, CONTINUE (--c), VALIDATE (--val) or FINISHED
    reason: str


def fold_status(fold_dir: Path, next_stages: Sequence[str] = ()) -> FoldStatus:
    """Read a ``fold_X`` folder: what ``nnUNetv2_train`` still has to do there."""
    final = fold_dir / "checkpoint_final.pth"
    summary = fold_dir / "validation" / "summary.json"
    if final.is_file():
        if not summary.is_file():
            return FoldStatus(VALIDATE, "checkpoint_final.pth present, final validation missing")
        try:
            validated = len(json.loads(summary.read_text()).get("metric_per_case", []))
        except (OSError, ValueError, AttributeError):
            return FoldStatus(VALIDATE, f"{summary} unreadable")
        cases = sorted(p.name[: -len(".npz")] for p in (fold_dir / "validation").glob("*.npz"))
        if len(cases) < validated:
            return FoldStatus(VALIDATE, f"validation has {len(cases)} of {validated} .npz probabilities "
                                        f"(trained without --npz?)")
        for stage in next_stages:
            folder = fold_dir.parent / "predicted_next_stage" / stage
            missing = [c for c in cases if not any(folder.glob(f"{c}.*"))]
            if missing:
                return FoldStatus(VALIDATE, f"{len(missing)} validation case(s) lack the segmentation "
                                            f"predicted_next_stage/{stage} needs")
        return FoldStatus(FINISHED, "checkpoint_final.pth and validation/summary.json present")
    started = [name for name in ("checkpoint_latest.pth", "checkpoint_best.pth") if (fold_dir / name).is_file()]
    if started:
        return FoldStatus(CONTINUE, f"interrupted ({started[0]} present)")
    return FoldStatus(FRESH, "not started")


def trained_checkpoint_sha256(model_dir: Path) -> str | None:
    """sha256 of the Genesis checkpoint a results folder's models started from (its plans.json)."""
    plans = model_dir / "plans.json"
    if not plans.is_file():
        return None
    try:
        block = json.loads(plans.read_text()).get("genesis")
    except (OSError, ValueError, AttributeError):
        return None
    return block.get("sha256") if isinstance(block, dict) else None


@dataclass(frozen=True)
class WorkDir:
    """The recipe's own folder (default ``nnUNet_results/DATASET/genesis_recipe``)."""

    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "recipe_state.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def selection(self, arm: str) -> Path:
        """Copies of the inference_information.json find_best_configuration wrote for ``arm``
        (nnU-Net writes one per dataset: the next selection would overwrite it)."""
        return self.root / "selection" / arm

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def compare(self) -> Path:
        return self.root / "compare"

    @property
    def default_zip(self) -> Path:
        return self.root / "submission.zip"
