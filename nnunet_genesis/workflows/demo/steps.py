"""The demo's steps on one output folder: dataset, preprocessing and split, pretraining, attach,
both trainings, predictions, evaluation, comparison and the submission zip.

The nnU-Net and nnunet-genesis command lines come from ``nnunet_genesis.workflows.nnunet_steps``, the
same ones ``benchmarks/transfer.py`` composes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnunet_genesis.checkpoint import CHECKPOINT_FILE_NAME
from nnunet_genesis.workflows.demo.settings import (CONFIGURATION, FOLD, GENESIS_PLANS, SCHEDULE_PLANS, SCRATCH_TRAINER,
                                          SOURCE_PLANS, DemoSettings)
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.workflows.msd_folders import copy_heldout, labelled_cases, make_msd_subset, msd_task_number
from nnunet_genesis.workflows.nnunet_steps import NnunetSteps
from nnunet_genesis.outputs import write_json_atomic
from nnunet_genesis.workflows.pipeline import Parallel, Step, StepContext, StepOrGroup, Workspace
from nnunet_genesis.splits import seeded_chunks, write_splits
from nnunet_genesis.evaluation.msd_tasks import get_task
from nnunet_genesis.synthetic import DEFAULT_DATASET_ID, SyntheticConfig, write_nnunet_dataset
from nnunet_genesis.workflows.cpu_plans import write_schedule_plans
from nnunet_genesis.evaluation.compare import build_report
from nnunet_genesis.evaluation.runs import load_evaluate_json
from nnunet_genesis.evaluation.training_curves import curves_for_fold
from nnunet_genesis.workflows.pipeline import genesis_command


@dataclass(frozen=True)
class CaseSplit:
    """Which labelled cases train, validate and test (OUT/state/cases.json)."""

    dataset_id: int
    dataset_name: str
    task: str  # MSD task name used by evaluate/package-msd (Task99_GenesisDemo for synthetic)
    train: list[str]
    val: list[str]
    test_images: Path  # nnU-Net-named images (case_0000.nii.gz) of the evaluated test cases
    test_labels: Path
    submission_images: Path  # the images the submission zip is made for

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CaseSplit":
        paths = ("test_images", "test_labels", "submission_images")
        return cls(**{k: (Path(v) if k in paths else v) for k, v in d.items()})


def split_labelled(cases: list[str], n_train: int, n_val: int, n_test: int, seed: int
                   ) -> tuple[list[str], list[str], list[str]]:
    """Seeded, disjoint train/val/test draws from the labelled cases."""
    need = n_train + n_val + n_test
    if len(cases) < need:
        raise GenesisUserError(f"The dataset has {len(cases)} labelled cases but the demo needs {need} "
                               f"({n_train} to train, {n_val} to validate, {n_test} to test); lower "
                               f"--labelled/--test-cases or use more cases.")
    train, val, test, _ = seeded_chunks(sorted(cases), [n_train, n_val, n_test], seed)
    return sorted(train), sorted(val), sorted(test)


def synthetic_task_name() -> str:
    """The task entry of the synthetic dataset in ``evaluation.msd_tasks`` (not a Decathlon task)."""

    return get_task("Task99_GenesisDemo").name


class Demo:
    """Builds the step list for one output folder and settings."""

    def __init__(self, out: Path, settings: DemoSettings, jobs: int = 1):
        self.out = Path(out).resolve()
        self.settings = settings
        self.jobs = jobs  # the two arms' trainings and predictions side by side (2) or in order (1)
        self.ws = Workspace(self.out)
        self.nnunet = NnunetSteps(self.ws, self._dataset_id(), CONFIGURATION, settings.device)
        self.cases_file = self.ws.state / "cases.json"
        self.pretrain_dir = self.out / "pretrain"
        self.checkpoint = self.pretrain_dir / CHECKPOINT_FILE_NAME
        self.report_dir = self.out / "report"
        self.submission = self.out / "submission.zip"
        # Only for nnUNetv2_train: nnU-Net's planner also reads nnUNet_n_proc_DA and fails on 0.
        self.train_env = {} if settings.da_workers is None else {"nnUNet_n_proc_DA": str(settings.da_workers)}

    def _dataset_id(self) -> int:
        if self.settings.synthetic:

            return DEFAULT_DATASET_ID
        return msd_task_number(Path(self.settings.msd_task))

    # folders -------------------------------------------------------------------------------
    def cases(self) -> CaseSplit:
        return CaseSplit.from_dict(json.loads(self.cases_file.read_text()))

    def prediction_dir(self, arm: str) -> Path:
        return self.out / "predictions" / arm

    def evaluation_json(self, arm: str) -> Path:
        return self.out / "evaluation" / f"{arm}.json"

    def arm(self, arm: str) -> tuple[str, str]:
        """(trainer, plans) of the "genesis" or "scratch" arm."""
        if arm == "genesis":
            return self.settings.genesis_trainer, GENESIS_PLANS
        return SCRATCH_TRAINER, SCHEDULE_PLANS

    def run_folder(self, arm: str) -> Path:
        return self.nnunet.run_folder(*self.arm(arm))

    # steps ---------------------------------------------------------------------------------
    def steps(self) -> list[StepOrGroup]:
        s = self.settings
        source = "synthetic dataset" if s.synthetic else f"{Path(s.msd_task).name} (MSD -> nnU-Net)"
        steps = [
            Step("dataset", f"make {source}", self._dataset, self._dataset_partial),
            Step("preprocess", "nnUNetv2_plan_and_preprocess + split", self._preprocess,
                 lambda: [*self.nnunet.preprocessed_partial(), self.out / "heldout", self.cases_file]),
            Step("pretrain", "nnunet-genesis pretrain (labels unused)", self._pretrain,
                 lambda: self.nnunet.pretrain_partial(self.pretrain_dir)),
            Step("attach", "nnunet-genesis attach", self._attach, lambda: [self._genesis_plans_file()]),
            Parallel([
                Step("train_genesis", f"nnUNetv2_train {s.genesis_trainer}", lambda c: self._train(c, "genesis"),
                     lambda: [self.run_folder("genesis") / f"fold_{FOLD}"]),
                Step("train_scratch", f"nnUNetv2_train {SCRATCH_TRAINER}", lambda c: self._train(c, "scratch"),
                     lambda: [self.run_folder("scratch") / f"fold_{FOLD}"])], self.jobs),
            Parallel([
                Step("predict_genesis", "nnUNetv2_predict test set (Genesis)", lambda c: self._predict(c, "genesis"),
                     lambda: [self.prediction_dir("genesis")]),
                Step("predict_scratch", "nnUNetv2_predict test set (scratch)", lambda c: self._predict(c, "scratch"),
                     lambda: [self.prediction_dir("scratch")])], self.jobs),
        ]
        if not s.synthetic:
            steps.append(Step("predict_submission", "nnUNetv2_predict imagesTs (Genesis)",
                              lambda c: self._predict(c, "genesis", submission=True),
                              lambda: [self.prediction_dir("genesis_imagesTs")]))
        steps += [
            Step("evaluate", "nnunet-genesis evaluate (both)", self._evaluate, lambda: [self.out / "evaluation"]),
            Step("compare", "nnunet-genesis compare", self._compare, lambda: [self.report_dir]),
            Step("package", "nnunet-genesis package-msd", self._package, lambda: [self.submission]),
        ]
        return steps

    # 1. dataset
    def _dataset_partial(self):
        return [*self.nnunet.raw_partial(), self.out / "source"]

    def _dataset(self, ctx: StepContext) -> dict:
        s = self.settings
        if s.synthetic:

            config = SyntheticConfig(n_train=s.synthetic_train, n_test=s.synthetic_test,
                                     shape=(s.synthetic_size,) * 3, seed=s.seed)
            folder = write_nnunet_dataset(self.ws.raw, config)
            with open(ctx.log, "a") as f:
                f.write(f"wrote synthetic dataset {folder} ({config})\n")
            return {"dataset": folder.name}
        msd = Path(s.msd_task)
        if s.max_cases is not None or s.max_test_images is not None:
            msd = make_msd_subset(msd, self.out / "source", s.max_cases, s.max_test_images)
        return {"dataset": self.nnunet.convert_msd(ctx, msd)}

    # 2. plan, preprocess, split, schedule plans
    def _preprocess(self, ctx: StepContext) -> dict:
        s = self.settings
        raw = self.nnunet.plan_and_preprocess(ctx)
        labelled = labelled_cases(raw)
        if s.synthetic:
            train, val, _ = split_labelled(labelled, s.labelled, s.val_cases, 0, s.seed)
            task = synthetic_task_name()
            test_images, test_labels, submission_images = raw / "imagesTs", raw / "labelsTs", raw / "imagesTs"
        else:
            train, val, test = split_labelled(labelled, s.labelled, s.val_cases, s.test_cases, s.seed)
            test_images, test_labels = copy_heldout(raw, test, self.out / "heldout")
            task = Path(s.msd_task).name
            submission_images = raw / "imagesTs"
        pre = self.ws.preprocessed / raw.name
        write_splits(pre, [(train, val)])
        write_schedule_plans(pre, SCHEDULE_PLANS, s.schedule(), SOURCE_PLANS, CONFIGURATION, width=s.width)
        split = CaseSplit(self.nnunet.dataset_id, raw.name, task, train, val, test_images, test_labels,
                          submission_images)
        write_json_atomic(split.to_dict(), self.cases_file)
        return {"dataset": raw.name, "train": len(train), "val": len(val)}

    # 3. pretrain
    def _pretrain(self, ctx: StepContext) -> dict:
        s = self.settings
        common = [] if s.da_workers is None else ["--workers", str(s.da_workers)]
        options = ["--epochs", str(s.pretrain_epochs), "--iters-per-epoch", str(s.pretrain_iterations),
                   "--seed", str(s.seed), "--val-patches", "4", "--png-every", str(max(1, s.pretrain_epochs)),
                   "--preset", s.preset]
        checkpoint = self.nnunet.pretrain(ctx, self.pretrain_dir, SCHEDULE_PLANS, options, common)
        return {"checkpoint": str(checkpoint)}

    # 4. attach
    def _genesis_plans_file(self) -> Path:
        return self.ws.preprocessed / self.cases().dataset_name / f"{GENESIS_PLANS}.json"

    def _attach(self, ctx: StepContext) -> dict:
        self.nnunet.attach(ctx, self.checkpoint, SCHEDULE_PLANS, GENESIS_PLANS)
        return {"plans": str(self._genesis_plans_file())}

    # 5./6. train
    def _train(self, ctx: StepContext, arm: str) -> dict:
        ctx.command(self.nnunet.train_command(FOLD, *self.arm(arm)), extra_env=self.train_env)
        final = self.run_folder(arm) / f"fold_{FOLD}" / "checkpoint_final.pth"
        if not final.is_file():
            raise GenesisUserError(f"nnUNetv2_train ended without {final}; see {ctx.log}.", exit_code=1)
        return {"results": str(self.run_folder(arm))}

    # 7./8. predict
    def _predict(self, ctx: StepContext, arm: str, submission: bool = False) -> dict:
        c = self.cases()
        images = c.submission_images if submission else c.test_images
        out = self.prediction_dir("genesis_imagesTs" if submission else arm)
        ctx.command(self.nnunet.predict_command(images, out, FOLD, *self.arm(arm)))
        return {"predictions": str(out)}

    # 9. evaluate
    def _evaluate(self, ctx: StepContext) -> dict:
        c = self.cases()
        for arm in ("genesis", "scratch"):
            ctx.command(self.nnunet.evaluate_command(self.prediction_dir(arm), c.test_labels, c.task,
                                                     self.evaluation_json(arm)))
        return {}

    # 10. compare (the test-set scores of evaluate, with nnU-Net's training curves added)
    def _compare(self, ctx: StepContext) -> dict:
        runs = []
        for arm in ("scratch", "genesis"):  # the first is the baseline
            run = load_evaluate_json(self.evaluation_json(arm), arm)
            fold = self.run_folder(arm) / f"fold_{FOLD}"
            curves, how = curves_for_fold(fold)
            if curves is not None:
                run.curves = {fold.name: curves}
            run.notes.append(f"Trained in {fold}; training curves {how}.")
            runs.append(run)
        report = build_report(runs, self.report_dir)
        with open(ctx.log, "a") as f:
            f.write(f"wrote {report}\n")
        return {"report": str(report)}

    # 11. package
    def _package(self, ctx: StepContext) -> dict:
        c = self.cases()
        pred = self.prediction_dir("genesis" if self.settings.synthetic else "genesis_imagesTs")
        ctx.command(genesis_command("package-msd", "--task", c.task, "--pred", str(pred), "--images",
                                    str(c.submission_images), "-o", str(self.submission)))
        return {"zip": str(self.submission)}
