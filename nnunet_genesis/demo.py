"""``nnunet-genesis demo``: the whole pipeline end to end on a small dataset.

dataset -> nnUNetv2_plan_and_preprocess -> nnunet-genesis pretrain (labels unused) -> attach ->
nnUNetv2_train (Genesis and, with the identical schedule, from scratch) -> nnUNetv2_predict ->
evaluate -> compare -> package-msd.

By default the dataset is the package's own SYNTHETIC one (``nnunet_genesis.synthetic``), so
nothing has to be downloaded; ``--msd-task DIR`` uses a Decathlon task folder instead. Every
nnU-Net folder lives under the output folder, never in the user's nnU-Net environment. Each
step logs to ``OUT/logs`` and leaves a marker in ``OUT/state`` when it is complete: running
the demo again with the same settings skips the finished steps (and redoes an interrupted
one from its start); other settings are refused unless ``--force``. See docs/demo.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.pipeline import (Step, StepContext, Workspace, command_path, dataset_name_for,
                                     format_seconds, genesis_command, remove, results_folder,
                                     run_steps, write_splits)
from nnunet_genesis.outputs import write_json_atomic

CONFIG_FILE = "demo_config.json"
LOCK_FILE = ".demo.lock"
CONFIGURATION = "3d_fullres"
SOURCE_PLANS = "nnUNetPlans"
SCHEDULE_PLANS = "nnUNetPlans_demo"
GENESIS_PLANS = "nnUNetPlans_demo_genesis"
GENESIS_TRAINER = "nnUNetTrainerGenesis_demo"
SCRATCH_TRAINER = "nnUNetTrainerScratch_demo"
PRETRAIN_DATASET_ID = 999
FOLD = 0
# What the demo creates inside its output folder (and what --force may remove).
OWNED = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "logs", "state", "source", "heldout",
         "pretrain", "predictions", "evaluation", "report", "submission.zip", "summary.json", CONFIG_FILE)


@dataclass(frozen=True)
class DemoSettings:
    """Everything that determines the demo's results (stored in OUT/demo_config.json)."""

    msd_task: str | None = None  # absolute path of an MSD task folder; None: synthetic
    device: str = "cpu"
    seed: int = 0
    labelled: int = 8  # labelled cases the models are fine-tuned on
    val_cases: int = 2  # labelled cases for nnU-Net's own validation during training
    synthetic_train: int = 24  # synthetic: imagesTr cases (all used, unlabelled, for pretraining)
    synthetic_test: int = 8  # synthetic: imagesTs cases (the test set, labels in labelsTs)
    synthetic_size: int = 32  # synthetic: cube side in voxels (1 mm)
    max_cases: int | None = None  # MSD: use only the first N labelled cases of the task
    max_test_images: int | None = None  # MSD: use only the first N imagesTs images
    test_cases: int = 10  # MSD: labelled cases held out as the test set
    pretrain_epochs: int = 20
    pretrain_iterations: int = 40
    finetune_epochs: int = 20
    finetune_iterations: int = 30
    warmup_epochs: int = 2
    width: float = 1.0  # feature maps per stage relative to nnU-Net's plan (0.5 on CPU)
    corruption: str = "mild"  # a GenesisConfig preset: "mild" (short runs) or "paper"
    transfer: str = "full"  # Genesis arm: "full" (encoder and decoder: the default start, the papers') or "encoder"
    da_workers: int | None = 0  # nnUNet_n_proc_DA; None: nnU-Net's choice

    @property
    def synthetic(self) -> bool:
        return self.msd_task is None

    def schedule(self):
        from nnunet_genesis.trainers.demo_schedules import ShortSchedule

        return ShortSchedule(epochs=self.finetune_epochs, iterations_per_epoch=self.finetune_iterations,
                             val_iterations_per_epoch=2, warmup_epochs=self.warmup_epochs, seed=self.seed,
                             test_time_mirroring=self.device != "cpu")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def corruption_options(name: str) -> list[str]:
    """``nnunet-genesis pretrain`` options of a corruption preset (``GenesisConfig.preset``)."""
    from nnunet_genesis.transforms.config import PRESETS

    if name not in PRESETS:
        raise ValueError(f"unknown corruption preset {name!r}")
    return ["--preset", name]


def genesis_trainer(transfer: str) -> str:
    """The Genesis arm's trainer: the default start (the whole network, "full") or the encoder only."""
    return GENESIS_TRAINER if transfer == "full" else "nnUNetTrainerGenesis_encoderOnly_demo"


QUICK = dict(synthetic_train=8, synthetic_test=3, synthetic_size=32, labelled=3, val_cases=1,
             test_cases=3, pretrain_epochs=1, pretrain_iterations=3, finetune_epochs=2, finetune_iterations=3,
             warmup_epochs=1)


# ---------------------------------------------------------------------------------------------
# Which cases train, validate and test


@dataclass(frozen=True)
class CasePlan:
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
    def from_dict(cls, d: dict[str, Any]) -> "CasePlan":
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
    order = np.random.default_rng(seed).permutation(len(cases))
    picked = [sorted(cases)[i] for i in order]
    return (sorted(picked[:n_train]), sorted(picked[n_train:n_train + n_val]),
            sorted(picked[n_train + n_val:need]))


def labelled_cases(raw_dataset: Path) -> list[str]:
    dataset_json = json.loads((raw_dataset / "dataset.json").read_text())
    ending = dataset_json.get("file_ending", ".nii.gz")
    return sorted(p.name[: -len(ending)] for p in (raw_dataset / "labelsTr").iterdir() if p.name.endswith(ending))


# ---------------------------------------------------------------------------------------------
# The steps


class Demo:
    """Builds the step list for one output folder and settings."""

    def __init__(self, out: Path, settings: DemoSettings):
        self.out = Path(out).resolve()
        self.s = settings
        self.ws = Workspace(self.out)
        # Only for nnUNetv2_train: nnU-Net's planner also reads nnUNet_n_proc_DA and fails on 0.
        self.train_env = {} if settings.da_workers is None else {"nnUNet_n_proc_DA": str(settings.da_workers)}

    # folders -------------------------------------------------------------------------------
    @property
    def cases_file(self) -> Path:
        return self.ws.state / "cases.json"

    def cases(self) -> CasePlan:
        return CasePlan.from_dict(json.loads(self.cases_file.read_text()))

    @property
    def pretrain_dir(self) -> Path:
        return self.out / "pretrain"

    @property
    def checkpoint(self) -> Path:
        return self.pretrain_dir / "genesis_final.pth"

    def prediction_dir(self, arm: str) -> Path:
        return self.out / "predictions" / arm

    def evaluation_json(self, arm: str) -> Path:
        return self.out / "evaluation" / f"{arm}.json"

    def arm(self, arm: str) -> tuple[str, str]:
        """(trainer, plans) of the "genesis" or "scratch" arm."""
        if arm == "genesis":
            return genesis_trainer(self.s.transfer), GENESIS_PLANS
        return SCRATCH_TRAINER, SCHEDULE_PLANS

    def run_folder(self, arm: str) -> Path:
        c = self.cases()
        trainer, plans = self.arm(arm)
        return results_folder(self.ws.results, c.dataset_name, trainer, plans, CONFIGURATION)

    @property
    def report_dir(self) -> Path:
        return self.out / "report"

    @property
    def submission(self) -> Path:
        return self.out / "submission.zip"

    # steps ---------------------------------------------------------------------------------
    def steps(self) -> list[Step]:
        s = self.s
        source = "synthetic dataset" if s.synthetic else f"{Path(s.msd_task).name} (MSD -> nnU-Net)"
        steps = [
            Step("dataset", f"make {source}", self._dataset, self._dataset_partial),
            Step("preprocess", "nnUNetv2_plan_and_preprocess + split", self._preprocess, self._preprocess_partial),
            Step("pretrain", "nnunet-genesis pretrain (labels unused)", self._pretrain, self._pretrain_partial),
            Step("attach", "nnunet-genesis attach", self._attach, lambda: [self._genesis_plans_file()]),
            Step("train_genesis", f"nnUNetv2_train {genesis_trainer(self.s.transfer)}", lambda c: self._train(c, "genesis"),
                 lambda: [self.run_folder("genesis") / f"fold_{FOLD}"]),
            Step("train_scratch", f"nnUNetv2_train {SCRATCH_TRAINER}", lambda c: self._train(c, "scratch"),
                 lambda: [self.run_folder("scratch") / f"fold_{FOLD}"]),
            Step("predict_genesis", "nnUNetv2_predict test set (Genesis)", lambda c: self._predict(c, "genesis"),
                 lambda: [self.prediction_dir("genesis")]),
            Step("predict_scratch", "nnUNetv2_predict test set (scratch)", lambda c: self._predict(c, "scratch"),
                 lambda: [self.prediction_dir("scratch")]),
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
    def _dataset_id(self) -> int:
        if self.s.synthetic:
            from nnunet_genesis.synthetic import DEFAULT_DATASET_ID

            return DEFAULT_DATASET_ID
        return msd_task_number(Path(self.s.msd_task))

    def _dataset_partial(self):
        return [*self.ws.raw.glob(f"Dataset{self._dataset_id():03d}_*"), self.out / "source"]

    def _dataset(self, ctx: StepContext) -> dict:
        s = self.s
        if s.synthetic:
            from nnunet_genesis.synthetic import SyntheticConfig, write_nnunet_dataset

            config = SyntheticConfig(n_train=s.synthetic_train, n_test=s.synthetic_test,
                                     shape=(s.synthetic_size,) * 3, seed=s.seed)
            folder = write_nnunet_dataset(self.ws.raw, config)
            with open(ctx.log, "a") as f:
                f.write(f"wrote synthetic dataset {folder} ({config})\n")
            return {"dataset": folder.name}
        msd = Path(s.msd_task)
        if s.max_cases is not None or s.max_test_images is not None:
            msd = make_msd_subset(msd, self.out / "source", s.max_cases, s.max_test_images)
        ctx.command([command_path("nnUNetv2_convert_MSD_dataset"), "-i", str(msd), "-np", "1"])
        return {"dataset": dataset_name_for(self.ws.raw, self._dataset_id())}

    # 2. plan, preprocess, split, schedule plans
    def _preprocess_partial(self):
        return [*self.ws.preprocessed.glob(f"Dataset{self._dataset_id():03d}_*"), self.out / "heldout",
                self.cases_file]

    def _preprocess(self, ctx: StepContext) -> dict:
        from nnunet_genesis.trainers.demo_schedules import write_schedule_plans

        s = self.s
        dataset_id = self._dataset_id()
        name = dataset_name_for(self.ws.raw, dataset_id)
        ctx.command([command_path("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", CONFIGURATION,
                     "-np", "1", "--verify_dataset_integrity"])
        raw = self.ws.raw / name
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
        pre = self.ws.preprocessed / name
        write_splits(pre, [(train, val)])
        write_schedule_plans(pre, SCHEDULE_PLANS, s.schedule(), SOURCE_PLANS, CONFIGURATION, width=s.width)
        plan = CasePlan(dataset_id, name, task, train, val, test_images, test_labels, submission_images)
        write_json_atomic(plan.to_dict(), self.cases_file)
        return {"dataset": name, "train": len(train), "val": len(val)}

    # 3. pretrain
    def _pretrain_partial(self):
        from nnunet_genesis.pretraining.launch import STATE_FILE

        if (self.pretrain_dir / STATE_FILE).is_file():
            return []  # a prepared or interrupted run: continued with --resume
        return [self.pretrain_dir, *[p for base in (self.ws.raw, self.ws.preprocessed, self.ws.results)
                                     for p in base.glob(f"Dataset{PRETRAIN_DATASET_ID:03d}_*")]]

    def _pretrain(self, ctx: StepContext) -> dict:
        from nnunet_genesis.pretraining.launch import STATE_FILE

        s = self.s
        c = self.cases()
        common = ["--device", s.device]
        if s.da_workers is not None:
            common += ["--workers", str(s.da_workers)]
        if (self.pretrain_dir / STATE_FILE).is_file():
            cmd = genesis_command("pretrain", "-o", str(self.pretrain_dir), "--resume", *common)
        else:
            cmd = genesis_command(
                "pretrain", "-d", str(c.dataset_id), "-o", str(self.pretrain_dir),
                "--plans-from", str(c.dataset_id), "-p", SCHEDULE_PLANS, "-c", CONFIGURATION,
                "--epochs", str(s.pretrain_epochs), "--iters-per-epoch", str(s.pretrain_iterations),
                "--seed", str(s.seed), "--dataset-id", str(PRETRAIN_DATASET_ID), "--val-patches", "4",
                "--png-every", str(max(1, s.pretrain_epochs)), *corruption_options(s.corruption), *common)
        ctx.command(cmd)
        if not self.checkpoint.is_file():
            raise GenesisUserError(f"pretrain finished without writing {self.checkpoint}; see {ctx.log}.",
                                   exit_code=1)
        return {"checkpoint": str(self.checkpoint)}

    # 4. attach
    def _genesis_plans_file(self) -> Path:
        return self.ws.preprocessed / self.cases().dataset_name / f"{GENESIS_PLANS}.json"

    def _attach(self, ctx: StepContext) -> dict:
        c = self.cases()
        ctx.command(genesis_command("attach", "-d", str(c.dataset_id), "-c", str(self.checkpoint),
                                    "-p", SCHEDULE_PLANS, "-n", GENESIS_PLANS, "--force"))
        return {"plans": str(self._genesis_plans_file())}

    # 5./6. train
    def _train(self, ctx: StepContext, arm: str) -> dict:
        c = self.cases()
        trainer, plans = self.arm(arm)
        ctx.command([command_path("nnUNetv2_train"), str(c.dataset_id), CONFIGURATION, str(FOLD),
                     "-tr", trainer, "-p", plans, "-device", self.s.device], extra_env=self.train_env)
        final = self.run_folder(arm) / f"fold_{FOLD}" / "checkpoint_final.pth"
        if not final.is_file():
            raise GenesisUserError(f"nnUNetv2_train ended without {final}; see {ctx.log}.", exit_code=1)
        return {"results": str(self.run_folder(arm))}

    # 7./8. predict
    def _predict(self, ctx: StepContext, arm: str, submission: bool = False) -> dict:
        c = self.cases()
        trainer, plans = self.arm(arm)
        images = c.submission_images if submission else c.test_images
        out = self.prediction_dir("genesis_imagesTs" if submission else arm)
        ctx.command([command_path("nnUNetv2_predict"), "-i", str(images), "-o", str(out), "-d", str(c.dataset_id),
                     "-c", CONFIGURATION, "-tr", trainer, "-p", plans, "-f", str(FOLD), "-device", self.s.device,
                     "-npp", "1", "-nps", "1", "--disable_progress_bar"])
        return {"predictions": str(out)}

    # 9. evaluate
    def _evaluate(self, ctx: StepContext) -> dict:
        c = self.cases()
        for arm in ("genesis", "scratch"):
            ctx.command(genesis_command("evaluate", "--pred", str(self.prediction_dir(arm)), "--ref",
                                        str(c.test_labels), "--task", c.task, "-o", str(self.evaluation_json(arm))))
        return {}

    # 10. compare (the test-set scores of evaluate, with nnU-Net's training curves added)
    def _compare(self, ctx: StepContext) -> dict:
        from nnunet_genesis.evaluation.compare import build_report
        from nnunet_genesis.evaluation.runs import load_evaluate_json
        from nnunet_genesis.evaluation.training_curves import curves_for_fold

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
        pred = self.prediction_dir("genesis" if self.s.synthetic else "genesis_imagesTs")
        ctx.command(genesis_command("package-msd", "--task", c.task, "--pred", str(pred), "--images",
                                    str(c.submission_images), "-o", str(self.submission)))
        return {"zip": str(self.submission)}


# ---------------------------------------------------------------------------------------------
# Helpers


def synthetic_task_name() -> str:
    """The task entry of the synthetic dataset in ``evaluation.msd_tasks`` (not a Decathlon task)."""
    from nnunet_genesis.evaluation.msd_tasks import get_task

    return get_task("Task99_GenesisDemo").name


def msd_task_number(folder: Path) -> int:
    name = folder.name
    if not (name.startswith("Task") and name[4:6].isdigit()):
        raise GenesisUserError(f"--msd-task {folder}: the folder must be named like a Decathlon task "
                               f"(TaskXX_Name, e.g. Task04_Hippocampus), as nnUNetv2_convert_MSD_dataset expects.")
    return int(name[4:6])


def check_msd_folder(folder: Path) -> None:
    problems = [f"{folder / sub} is missing" for sub in ("imagesTr", "labelsTr", "dataset.json")
                if not (folder / sub).exists()]
    if problems:
        raise GenesisUserError(f"--msd-task {folder} is not a Decathlon task folder in the MSD layout: "
                               + "; ".join(problems) + ".")
    msd_task_number(folder)


def make_msd_subset(msd: Path, out: Path, n_train: int | None, n_test: int | None) -> Path:
    """The first cases of an MSD task as a new MSD folder (symbolic links, not copies)."""
    meta = json.loads((msd / "dataset.json").read_text())
    dst = out / msd.name
    training = meta["training"][:n_train] if n_train is not None else meta["training"]
    test = meta.get("test", [])[:n_test] if n_test is not None else meta.get("test", [])
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    for rel in [c[k] for c in training for k in ("image", "label")] + list(test):
        link = dst / rel
        if not link.exists():
            link.symlink_to((msd / rel).resolve())
    meta.update(training=training, test=test, numTraining=len(training), numTest=len(test))
    write_json_atomic(meta, dst / "dataset.json")
    return dst


def copy_heldout(raw: Path, cases: list[str], out: Path) -> tuple[Path, Path]:
    """Copy held-out labelled cases (images in nnU-Net naming, labels) into OUT/images, OUT/labels."""
    dataset_json = json.loads((raw / "dataset.json").read_text())
    ending = dataset_json.get("file_ending", ".nii.gz")
    images, labels = out / "images", out / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for case in cases:
        for img in sorted((raw / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9]{ending}")):
            shutil.copy2(img, images / img.name)
        shutil.copy2(raw / "labelsTr" / f"{case}{ending}", labels / f"{case}{ending}")
    return images, labels


class FolderLock:
    """An exclusive lock on the output folder, so two demos never write into the same one."""

    def __init__(self, folder: Path):
        self.path = folder / LOCK_FILE

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "w")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.close()
            raise GenesisUserError(f"Another nnunet-genesis demo is running in {self.path.parent} "
                                   f"(it holds {self.path}); wait for it or choose another -o folder.") from None
        return self

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def refuse_foreign_folder(out: Path) -> None:
    """The demo writes only into a new or empty folder, or one holding an earlier demo."""
    if out.exists() and not out.is_dir():
        raise GenesisUserError(f"-o {out} exists and is not a folder.")
    entries = [p.name for p in out.iterdir() if p.name != LOCK_FILE] if out.is_dir() else []
    if entries and not (out / CONFIG_FILE).is_file():
        raise GenesisUserError(f"-o {out} is not empty and holds no earlier demo ({CONFIG_FILE} is missing); "
                               f"the demo does not write into other folders. Choose a new or empty folder.")


def prepare_output(out: Path, settings: DemoSettings, force: bool) -> None:
    """Check that OUT is new, empty, or an earlier demo with the same settings (or --force)."""
    config = out / CONFIG_FILE
    wanted = settings.to_dict()
    refuse_foreign_folder(out)
    if config.is_file():
        previous = json.loads(config.read_text())
        if previous != wanted:
            if not force:
                changed = sorted(k for k in set(previous) | set(wanted) if previous.get(k) != wanted.get(k))
                raise GenesisUserError(
                    f"{out} holds a demo run with other settings (differing: {', '.join(changed)}). Re-run "
                    f"with the same options to continue or reuse it, choose another -o folder, or add --force "
                    f"to delete that run and start again.")
        if force:
            remove(out / name for name in OWNED)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(wanted, config)


# ---------------------------------------------------------------------------------------------
# Summary


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


def difference_lines(genesis: dict, scratch: dict) -> list[str]:
    """Per label: Genesis - scratch Dice with its 95 % CI (bootstrap over the test cases of this
    one seed) and the Wilcoxon p, and plainly whether that is significant on this data."""
    from nnunet_genesis.evaluation.statistics import SIGNIFICANCE, seed_case_comparison

    def per_case(result: dict, label: str) -> dict:
        return {c["case"]: (c["labels"].get(label) or {}).get("dice") for c in result["cases"]}

    def as_row(values: dict, cases: list[str]) -> np.ndarray:
        return np.array([[np.nan if values[c] is None else values[c] for c in cases]], dtype=float)

    lines = []
    for label in genesis["summary"]:
        g, b = per_case(genesis, label), per_case(scratch, label)
        cases = sorted(set(g) & set(b))
        cmp = seed_case_comparison(as_row(b, cases), as_row(g, cases))
        name = f"{label} {genesis['label_names'].get(label, '')}"
        if cmp.mean_diff is None:
            lines.append(f"{name}: no case with a Dice in both arms")
            continue
        verdict = (f"significant (p < {SIGNIFICANCE:g})" if cmp.significant else
                   f"not significant (p {'n/a' if cmp.p_value is None else f'= {cmp.p_value:.2g}'})")
        lines.append(f"{name}: Dice Genesis - scratch {cmp.mean_diff:+.3f}, 95 % CI [{cmp.ci95[0]:+.3f}, "
                     f"{cmp.ci95[1]:+.3f}] over {cmp.n_cases} cases, one seed: {verdict}")
    return lines


def restoration_summary(checkpoint: Path) -> tuple[str, bool]:
    """One line on what the pretraining learnt, and whether it beat the best constant predictor.

    Short CPU pretraining can end with the network predicting each patch's mean (restoration
    MSE at the data's variance); its weights then carry little for fine-tuning, which a reader
    of the Genesis-vs-scratch table must know.
    """
    from nnunet_genesis.checkpoint import load_checkpoint

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


def print_summary(demo: Demo, durations: dict[str, float], wall: float) -> None:
    c = demo.cases()
    genesis = json.loads(demo.evaluation_json("genesis").read_text())
    scratch = json.loads(demo.evaluation_json("scratch").read_text())
    s = demo.s
    where = "synthetic imagesTs" if s.synthetic else "held-out labelled training cases"
    print()
    print(f"Genesis vs scratch on {genesis['n_cases']} test cases ({where}) of {c.dataset_name}; "
          f"fine-tuned on {len(c.train)} labelled cases, {s.finetune_epochs} epochs x {s.finetune_iterations} "
          f"iterations (identical schedule and seed), device {s.device}.")
    for line in summary_table(genesis, scratch):
        print("  " + line)
    differences = difference_lines(genesis, scratch)
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
    print(f"Time: {format_seconds(sum(durations.values()))} of steps in total; this invocation {format_seconds(wall)}.")
    write_json_atomic({"settings": s.to_dict(), "cases": c.to_dict(), "step_seconds": durations,
                       "genesis": {k: genesis[k] for k in ("summary", "foreground_mean", "n_cases")},
                       "scratch": {k: scratch[k] for k in ("summary", "foreground_mean", "n_cases")},
                       "differences": differences,
                       "pretraining": {"summary": restoration, "beats_constant_predictor": learnt},
                       "report": str(demo.report_dir / "report.md"), "submission": str(demo.submission)},
                      demo.out / "summary.json")


# ---------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DemoSettings()
    parser.description = (
        "Run the whole pipeline end to end: make a dataset (the package's small SYNTHETIC one, or "
        "--msd-task), plan and preprocess it with nnU-Net, pretrain a Genesis network on its images "
        "(labels unused), attach it, fine-tune nnUNetTrainerGenesis and train from scratch with the same "
        "short schedule through nnUNetv2_train, predict the test set with nnUNetv2_predict, evaluate, "
        "compare and package a Decathlon-style zip. Re-running continues or reuses OUT.")
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument("-o", "--output", type=Path, default=Path("demo_output"), metavar="DIR",
                        help="output folder (holds its own nnUNet_raw/preprocessed/results)")
    parser.add_argument("--msd-task", type=Path, metavar="DIR",
                        help="a Decathlon task folder in the MSD layout (e.g. Task04_Hippocampus) instead of "
                             "the synthetic dataset")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="device for nnU-Net and pretraining (default: cuda if available, else cpu)")
    parser.add_argument("--force", action="store_true",
                        help="delete an earlier demo in DIR that used other settings, and start again")
    parser.add_argument("--seed", type=int, default=d.seed, help="seeds the data, the split and both trainings")
    parser.add_argument("--labelled", type=int, default=d.labelled, metavar="K",
                        help="labelled cases the two models are trained on")
    parser.add_argument("--val-cases", type=int, default=d.val_cases,
                        help="labelled cases for nnU-Net's validation during training")
    parser.add_argument("--test-cases", type=int, default=d.test_cases,
                        help="--msd-task: labelled cases held out as the test set (imagesTs has no labels)")
    parser.add_argument("--max-cases", type=int, default=None,
                        help="--msd-task: use only the first N labelled cases (faster)")
    parser.add_argument("--max-test-images", type=int, default=None,
                        help="--msd-task: use only the first N imagesTs images (the zip then covers only those)")
    parser.add_argument("--synthetic-cases", type=int, nargs=2, default=(d.synthetic_train, d.synthetic_test),
                        metavar=("TRAIN", "TEST"), help="synthetic: number of imagesTr and imagesTs cases")
    parser.add_argument("--synthetic-size", type=int, default=d.synthetic_size,
                        help="synthetic: volume side in voxels")
    parser.add_argument("--pretrain-epochs", type=int, default=d.pretrain_epochs)
    parser.add_argument("--pretrain-iterations", type=int, default=d.pretrain_iterations,
                        help="pretraining iterations per epoch")
    parser.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs,
                        help="epochs of both trainings (Genesis and scratch)")
    parser.add_argument("--finetune-iterations", type=int, default=d.finetune_iterations,
                        help="iterations per epoch of both trainings")
    parser.add_argument("--warmup-epochs", type=int, default=d.warmup_epochs,
                        help="linear learning-rate warm-up epochs of both trainings")
    parser.add_argument("--width", type=float, default=None,
                        help="feature maps per stage relative to nnU-Net's plan, for pretraining and both "
                             "trainings alike (default: 0.5 on cpu, 1 on cuda)")
    parser.add_argument("--corruption", choices=("mild", "paper"), default=d.corruption,
                        help="pretraining corruption: 'paper' = the Models Genesis rates; 'mild' = no inverted "
                             "intensity mappings and less painting, which a short CPU pretraining can learn")
    parser.add_argument("--transfer", choices=("encoder", "full"), default=d.transfer,
                        help="weights the Genesis arm takes from the checkpoint: 'full' (encoder and decoder, "
                             "as in the papers) or 'encoder' (the decoder starts as in the scratch arm; see "
                             "docs/demo.md for when each did better)")
    parser.add_argument("--da-workers", type=int, default=None,
                        help="nnU-Net data-augmentation processes (nnUNet_n_proc_DA); default: 0 on cpu (the "
                             "two trainings then see identical patch sequences), nnU-Net's choice on cuda")
    parser.add_argument("--quick", action="store_true",
                        help="a few iterations of every step on a tiny dataset: checks the installation in a "
                             "few minutes; the scores mean nothing")


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise GenesisUserError("--device cuda: PyTorch sees no CUDA GPU here; use --device cpu.")
    values: dict[str, Any] = dict(
        device=device, seed=args.seed, labelled=args.labelled, val_cases=args.val_cases,
        test_cases=args.test_cases, max_cases=args.max_cases, max_test_images=args.max_test_images,
        synthetic_train=args.synthetic_cases[0], synthetic_test=args.synthetic_cases[1],
        synthetic_size=args.synthetic_size, pretrain_epochs=args.pretrain_epochs,
        pretrain_iterations=args.pretrain_iterations, finetune_epochs=args.finetune_epochs,
        finetune_iterations=args.finetune_iterations, warmup_epochs=args.warmup_epochs,
        width=args.width if args.width is not None else (0.5 if device == "cpu" else 1.0),
        corruption=args.corruption, transfer=args.transfer,
        da_workers=args.da_workers if args.da_workers is not None else (0 if device == "cpu" else None))
    if args.quick:  # the smoke sizes, except where an option was given explicitly
        defaults = DemoSettings()
        values.update({k: v for k, v in QUICK.items() if values[k] == getattr(defaults, k)})
    if args.msd_task is not None:
        folder = args.msd_task.expanduser().resolve()
        check_msd_folder(folder)
        values["msd_task"] = str(folder)
    for key in ("labelled", "val_cases", "pretrain_epochs", "pretrain_iterations", "finetune_epochs",
                "finetune_iterations", "synthetic_train", "synthetic_test"):
        if values[key] < 1:
            raise GenesisUserError(f"--{key.replace('_', '-')} must be at least 1, got {values[key]}.")
    if values["test_cases"] < 1 and "msd_task" in values:
        raise GenesisUserError("--test-cases must be at least 1.")
    if not 0 < values["width"] <= 1:
        raise GenesisUserError(f"--width must be in (0, 1], got {values['width']}.")
    if values["synthetic_size"] < 24:
        raise GenesisUserError(f"--synthetic-size must be at least 24 voxels, got {values['synthetic_size']}.")
    if not 0 <= values["warmup_epochs"] < values["finetune_epochs"]:
        raise GenesisUserError("--warmup-epochs must be at least 0 and less than --finetune-epochs.")
    if values["synthetic_train"] < values["labelled"] + values["val_cases"]:
        raise GenesisUserError(f"--synthetic-cases: {values['synthetic_train']} training cases cannot hold "
                               f"--labelled {values['labelled']} plus --val-cases {values['val_cases']}.")
    return DemoSettings(**values)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    out = args.output.expanduser().resolve()
    t0 = time.monotonic()
    refuse_foreign_folder(out)  # before the lock file is created in it
    out.mkdir(parents=True, exist_ok=True)
    with FolderLock(out):
        prepare_output(out, settings, args.force)
        demo = Demo(out, settings)
        demo.ws.make()
        source = "synthetic dataset (nnunet_genesis.synthetic)" if settings.synthetic else settings.msd_task
        print(f"nnunet-genesis demo in {out}\n  data: {source}; device: {settings.device}; logs: {demo.ws.logs}")
        durations = run_steps(demo.ws, demo.steps(), "demo")
        print_summary(demo, durations, time.monotonic() - t0)
    return 0
