"""The label-efficiency protocol of ``benchmarks/transfer.py``: settings, arms, case draws, the
shared steps and one unit (K, seed, arm) from training to its record.

The script is the command line around it; the statistics over the records are in
``label_efficiency``. A unit's record is written (atomically) only once the unit is complete, so
a protocol can be completed over several invocations.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from nnunet_genesis.checkpoint import CHECKPOINT_FILE_NAME, sha256_of
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.pretrained_sources import read_pretrained
from nnunet_genesis.evaluation.label_efficiency import first_nonzero_epochs
from nnunet_genesis.workflows.msd_folders import copy_heldout, labelled_cases, make_msd_subset, msd_task_number
from nnunet_genesis.workflows.nnunet_steps import NnunetSteps
from nnunet_genesis.outputs import write_json_atomic
from nnunet_genesis.run_identity import refuse_other_identity
from nnunet_genesis.pinned_jobs import raise_if_stopped
from nnunet_genesis.workflows.pipeline import Step, StepContext, Workspace, remove, run_logged
from nnunet_genesis.splits import seeded_chunks, write_splits
from nnunet_genesis.trainers.short_schedule import ShortSchedule
from nnunet_genesis.trainers.starts import SCRATCH_TRAINER, SHORT_SCHEDULE, STARTS, STOCK_TRAINER, trainer_name
from nnunet_genesis.workflows.cpu_plans import write_schedule_plans
from nnunet_genesis.evaluation.evaluate import load_evaluation
from nnunet_genesis.evaluation.training_curves import pseudo_dice_of_fold

CONFIGURATION = "3d_fullres"

# arm -> (trainer, whether it reads the Genesis plans variant): every start of the registry under the
# short schedule of the plans, and the two partners from random weights
ARMS: dict[str, tuple[str, bool]] = {
    **{start.arm: (trainer_name(start.trainer, SHORT_SCHEDULE), True) for start in STARTS},
    "scratch": (trainer_name(SCRATCH_TRAINER, SHORT_SCHEDULE), False),
    "stock": (trainer_name(STOCK_TRAINER, SHORT_SCHEDULE), False),
}
DEFAULT_ARMS = ("genesis", "encoder", "scratch", "stock")  # "aspretrained" is the default start, i.e. "genesis"
CHECKPOINT_FREE_ARMS = tuple(arm for arm, (_, genesis) in ARMS.items() if not genesis)

# --checkpoint NAME=PATH: one more arm, fine-tuned from PATH with the default start (the "genesis" arm's
# trainer) on plans that attach wrote for PATH; it never reads the benchmark's own pretraining
CHECKPOINT_ARM_TRAINER = ARMS["genesis"][0]
_ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")


def attach_step(name: str) -> str:
    """The shared step that attaches the checkpoint of --checkpoint arm ``name``."""
    return f"attach_ckpt_{name}"


@dataclass(frozen=True)
class CheckpointArm:
    """The arm of one ``--checkpoint NAME=PATH``: the file, read and verified before anything runs."""

    name: str
    path: Path
    sha256: str
    kind: str  # pretrained_sources' kind: genesis, nnunet, nnssl, models-genesis-v1
    description: str = ""

    def to_dict(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "kind": self.kind, "description": self.description}


def parse_checkpoint_arm(spec: str) -> tuple[str, Path]:
    """``NAME=PATH`` of ``--checkpoint``, the name checked: refused (exit 2) unless it is a new arm name."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise GenesisUserError(f"--checkpoint {spec!r}: expected NAME=PATH, the new arm's name and the checkpoint "
                               f"it starts from (e.g. --checkpoint supervised=run/fold_0/checkpoint_final.pth).")
    if not _ARM_NAME.fullmatch(name) or "__" in name:
        raise GenesisUserError(f"--checkpoint {spec!r}: the arm name {name!r} must be 1 to 40 letters, digits, '_' "
                               f"or '-', begin with a letter or digit and hold no '__' (nnU-Net separates "
                               f"trainer, plans and configuration with '__' in its folder names).")
    if name.lower() in {arm.lower() for arm in ARMS}:  # unit files differ by the name's case only otherwise
        raise GenesisUserError(f"--checkpoint {spec!r}: {name!r} is an arm of the benchmark already "
                               f"({', '.join(ARMS)}); give the checkpoint's arm a name of its own.")
    return name, Path(path).expanduser()


def read_checkpoint_arms(specs: list[str]) -> dict[str, CheckpointArm]:
    """The arms of the ``--checkpoint`` options, in their order: every name is checked before any file
    is read; each file is then read as attach reads it (``pretrained_sources.read_pretrained``: loaded
    with ``weights_only=True``, its kind recognised by content and its network checked) and hashed.
    Anything wrong is refused (exit 2, naming the option) before anything runs."""
    parsed = [parse_checkpoint_arm(spec) for spec in specs]
    names = [name for name, _ in parsed]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise GenesisUserError(f"--checkpoint: the arm name(s) {', '.join(twice)} are given more than once; "
                               f"each checkpoint's arm needs a name of its own.")
    arms = {}
    for name, path in parsed:
        path = path.resolve()
        if not path.is_file():
            raise GenesisUserError(f"--checkpoint {name}={path}: no such file.")
        try:
            metadata = read_pretrained(path).metadata
        except GenesisUserError as e:
            raise GenesisUserError(f"--checkpoint {name}: {e}", exit_code=e.exit_code) from None
        arms[name] = CheckpointArm(name, path, sha256_of(path), str(metadata.get("kind", "genesis")),
                                   str(metadata.get("description", "")))
    return arms


def refuse_mixed_checkpoints(out: Path, arms: Mapping[str, CheckpointArm], registry_arms=()) -> None:
    """Refuse (exit 2) a ``--checkpoint NAME=PATH`` whose NAME has finished units in ``out`` that were
    fine-tuned from another file (by sha256): the results of two checkpoints are never mixed under one
    name. A name without finished units takes any file (nothing to mix). Finished units of a
    ``--checkpoint`` arm are never taken for those of a registry arm (``registry_arms``) of that name."""
    for record in load_runs(out) if arms or registry_arms else []:
        recorded = record.get("checkpoint") if isinstance(record.get("checkpoint"), dict) else {}
        if record.get("arm") in registry_arms and recorded:
            raise GenesisUserError(
                f"--arms {record['arm']}: {out} holds finished units of a --checkpoint arm of that name "
                f"({unit_name(record.get('K'), record.get('seed'), record['arm'])}, from {recorded.get('path')}); "
                f"they are not units of the start {record['arm']!r}. Use another -o folder.")
        arm = arms.get(record.get("arm"))
        if arm is None or recorded.get("sha256") == arm.sha256:
            continue
        raise GenesisUserError(
            f"--checkpoint {arm.name}={arm.path}: {out} holds finished units of the arm {arm.name!r} fine-tuned "
            f"from another file ({unit_name(record.get('K'), record.get('seed'), arm.name)}: "
            f"{recorded.get('path', 'no checkpoint recorded')}, sha256 {recorded.get('sha256')}); this file's "
            f"sha256 is {arm.sha256}. The results of two checkpoints are never mixed under one name: give "
            f"this one another NAME, use another -o folder, or pass the file those units started from.")


@dataclass(frozen=True)
class Setting:
    """Plan reduction and schedules of one benchmark setting."""

    batch_size: int | None
    max_patch_voxels: int | None
    width: float
    pretrain_minutes: float  # 0: pretrain_epochs x pretrain_iterations instead of a time budget
    pretrain_epochs: int
    pretrain_iterations: int
    finetune_epochs: int
    finetune_iterations: int
    warmup_epochs: int
    eval_cases: int
    val_cases: int
    test_time_mirroring: bool
    training_mirroring: bool  # ShortSchedule.training_mirroring
    preset: str  # GenesisConfig preset of the pretraining
    cpu_bf16: bool = False  # ShortSchedule.cpu_bf16: fine-tuning's forward pass in bfloat16 on a CPU


SETTINGS = {
    # 2 CPU cores: a quarter of the feature maps, patch at most 64^3, batch 2, 16 x 100 iterations,
    # the forward pass in bfloat16 (why each: docs/benchmark_transfer.md, the settings section).
    "cpu": Setting(batch_size=2, max_patch_voxels=64 ** 3, width=0.25, pretrain_minutes=10, pretrain_epochs=1000,
                   pretrain_iterations=20, finetune_epochs=16, finetune_iterations=100, warmup_epochs=1,
                   eval_cases=40, val_cases=5, test_time_mirroring=False, training_mirroring=False,
                   preset="mild", cpu_bf16=True),
    # nnU-Net's plan unchanged, for a GPU.
    "full": Setting(batch_size=None, max_patch_voxels=None, width=1.0, pretrain_minutes=0, pretrain_epochs=100,
                    pretrain_iterations=250, finetune_epochs=250, finetune_iterations=250, warmup_epochs=3,
                    eval_cases=40, val_cases=5, test_time_mirroring=True, training_mirroring=True,
                    preset="paper"),
}
QUICK = dict(pretrain_minutes=0, pretrain_epochs=1, pretrain_iterations=3, finetune_epochs=2, finetune_iterations=3,
             warmup_epochs=1, eval_cases=4, val_cases=2)


def draw_heldout(cases: list[str], n_eval: int, n_val: int, split_seed: int) -> tuple[list[str], list[str], list[str]]:
    """Seeded (evaluation, validation, training pool); the pool keeps the drawn order."""
    if len(cases) < n_eval + n_val + 1:
        raise GenesisUserError(f"The task has {len(cases)} labelled cases; {n_eval} evaluation + {n_val} "
                               f"validation cases leave none to train on. Lower --eval-cases or --val-cases.")
    evaluation, val, pool = seeded_chunks(sorted(cases), [n_eval, n_val], split_seed)
    return sorted(evaluation), sorted(val), pool


def training_cases(pool: list[str], k: int, seed: int) -> list[str]:
    """The K training cases of a seed: the first K of the seed's own permutation of the pool,
    so they are nested across K."""
    if k > len(pool):
        raise GenesisUserError(f"--labelled {k}: the training pool has only {len(pool)} cases.")
    return sorted(seeded_chunks(list(pool), [k], [seed, 7])[0])


def unit_name(k: int, seed: int, arm: str) -> str:
    return f"K{k}_seed{seed}_{arm}"


def unit_path(out: Path, name: str) -> Path:
    """A unit's record: written (atomically) only once the unit is complete."""
    return out / "units" / f"{name}.json"


def pending_units(out: Path, units: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """The units without a record in ``out/units`` (a record is written only when a unit is complete)."""
    return [u for u in units if not unit_path(out, unit_name(*u)).is_file()]


def importable_runs(results_file: Path, expected: dict) -> list[dict]:
    """The records of another run's ``transfer_results.json``, refused (exit 2) unless that run had
    the same task, device, setting values and split seed (``expected``); read before anything runs."""
    try:
        results = json.loads(results_file.read_text())
        other = {key: results[key] for key in expected}
        runs = list(results["runs"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise GenesisUserError(f"--import-runs {results_file}: not a readable transfer_results.json ({e}).") from None
    refuse_other_identity(other, expected, f"--import-runs {results_file}", "a run",
                          "Only records of the same task, device, setting values and split seed can be imported.")
    return runs


def import_runs(runs: list[dict], source: Path, out: Path, pool: list[str],
                units: list[tuple[int, int, str]]) -> list[str]:
    """Copies into ``out/units`` the records (from ``importable_runs``) of arms that never read the
    checkpoint (scratch, stock), so that a new pretraining does not retrain them.

    Only requested units without a record here are copied, each naming its ``source``; refused
    (nothing written) when a record trained on other cases than this folder draws for its K and seed.
    """
    wanted = {u for u in pending_units(out, units) if u[2] in CHECKPOINT_FREE_ARMS}
    imported = []
    for record in runs:
        unit = (record.get("K"), record.get("seed"), record.get("arm"))
        if unit not in wanted:
            continue
        if record.get("train_cases") != training_cases(pool, unit[0], unit[1]):
            raise GenesisUserError(f"--import-runs {source}: {unit_name(*unit)} trained on other cases than "
                                   f"this folder draws for K={unit[0]}, seed {unit[1]}; nothing imported.")
        imported.append((unit, dict(record, imported_from=str(source))))
    for unit, record in imported:
        write_json_atomic(record, unit_path(out, unit_name(*unit)))
    return [unit_name(*unit) for unit, _ in imported]


def load_runs(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(unit_path(out, "*").parent.glob("*.json"))]


class TransferBenchmark:
    def __init__(self, out: Path, msd_task: Path, device: str, setting_name: str, setting: Setting,
                 split_seed: int, max_cases: int | None, jobs: int = 1,
                 checkpoint_arms: Mapping[str, CheckpointArm] | None = None):
        self.out, self.msd, self.device = out, msd_task, device
        self.setting_name, self.setting, self.split_seed, self.max_cases = setting_name, setting, split_seed, max_cases
        self.jobs = jobs
        self.checkpoint_arms = dict(checkpoint_arms or {})
        self.ws = Workspace(out)
        self.dataset_id = msd_task_number(msd_task)
        self.nnunet = NnunetSteps(self.ws, self.dataset_id, CONFIGURATION, device)
        self.plans = f"nnUNetPlans_bench_{setting_name}"
        self.genesis_plans = f"{self.plans}_genesis"
        self.train_env = {"nnUNet_n_proc_DA": "0"} if device == "cpu" else {}

    # --- paths and records
    @property
    def cases_file(self) -> Path:
        return self.ws.state / "cases.json"

    @property
    def folds_file(self) -> Path:
        return self.ws.state / "folds.json"

    def cases(self) -> dict:
        return json.loads(self.cases_file.read_text())

    @property
    def dataset_name(self) -> str:
        return self.nnunet.dataset_name

    def trainer_and_plans(self, arm: str) -> tuple[str, str]:
        if arm in self.checkpoint_arms:
            return CHECKPOINT_ARM_TRAINER, self.checkpoint_plans(arm)
        trainer, genesis = ARMS[arm]
        return trainer, self.genesis_plans if genesis else self.plans

    def checkpoint_plans(self, name: str) -> str:
        """The plans variant attach writes for the checkpoint of arm ``name`` (a results folder of its own)."""
        return f"{self.plans}_ckpt_{name}"

    def reads_checkpoint(self, arm: str) -> bool:
        """Whether the arm starts from pretrained weights (the Genesis checkpoint or a --checkpoint file)."""
        return arm in self.checkpoint_arms or ARMS[arm][1]

    def fold_folder(self, arm: str, fold: int) -> Path:
        return self.nnunet.run_folder(*self.trainer_and_plans(arm)) / f"fold_{fold}"

    def unit_file(self, name: str) -> Path:
        return unit_path(self.out, name)

    # --- shared steps (pipeline steps: skipped when done)
    def shared_steps(self, pretrain: bool = True) -> list[Step]:
        """Convert, preprocess, then (``pretrain``: some arm reads the Genesis checkpoint) the pretraining
        and its attach, and one attach per ``--checkpoint`` arm."""
        steps = [
            Step("convert", "nnUNetv2_convert_MSD_dataset", self._convert,
                 lambda: [*self.nnunet.raw_partial(), self.out / "source"]),
            Step("preprocess", "nnUNetv2_plan_and_preprocess + held-out draw", self._preprocess,
                 lambda: [*self.nnunet.preprocessed_partial(), self.out / "heldout", self.cases_file,
                          self.folds_file]),
        ]
        if pretrain:
            steps += [Step("pretrain", "pretrain once on all images (labels unused)", self._pretrain,
                           lambda: self.nnunet.pretrain_partial(self.pretrain_dir)),
                      Step("attach", "nnunet-genesis attach", self._attach, lambda: [])]
        return steps + [self._checkpoint_step(arm) for arm in self.checkpoint_arms.values()]

    def _checkpoint_step(self, arm: CheckpointArm) -> Step:
        """attach of a --checkpoint arm's file onto the benchmark's plans; done only for this very file
        at this path (a marker of another one is dropped, so the variant is written again)."""
        name = attach_step(arm.name)
        if self.ws.is_done(name):
            info = self.ws.done_info(name)
            if (info.get("checkpoint"), info.get("sha256")) != (str(arm.path), arm.sha256):
                self.ws.marker(name).unlink()

        def run(ctx: StepContext) -> dict:
            self.nnunet.attach(ctx, arm.path, self.plans, self.checkpoint_plans(arm.name))
            return {"checkpoint": str(arm.path), "sha256": arm.sha256}

        return Step(name, f"nnunet-genesis attach {arm.name} ({arm.kind})", run, lambda: [])

    @property
    def pretrain_dir(self) -> Path:
        return self.out / "pretrain"

    def _convert(self, ctx: StepContext) -> dict:
        msd = self.msd
        if self.max_cases is not None:
            msd = make_msd_subset(msd, self.out / "source", self.max_cases, None)
        return {"dataset": self.nnunet.convert_msd(ctx, msd)}

    def schedule(self) -> ShortSchedule:
        s = self.setting
        return ShortSchedule(epochs=s.finetune_epochs, iterations_per_epoch=s.finetune_iterations,
                             val_iterations_per_epoch=min(5, max(1, s.finetune_iterations // 10)),
                             warmup_epochs=s.warmup_epochs, seed=self.split_seed,
                             test_time_mirroring=s.test_time_mirroring, training_mirroring=s.training_mirroring,
                             cpu_bf16=s.cpu_bf16)

    def _preprocess(self, ctx: StepContext) -> dict:
        s = self.setting
        raw = self.nnunet.plan_and_preprocess(ctx)
        evaluation, val, pool = draw_heldout(labelled_cases(raw), s.eval_cases, s.val_cases, self.split_seed)
        pre = self.ws.preprocessed / raw.name
        plans_file = write_schedule_plans(pre, self.plans, self.schedule(), "nnUNetPlans", CONFIGURATION,
                                          batch_size=s.batch_size, max_patch_voxels=s.max_patch_voxels, width=s.width)
        images, labels = copy_heldout(raw, evaluation, self.out / "heldout")
        config = json.loads(plans_file.read_text())["configurations"][CONFIGURATION]
        arch = config["architecture"]["arch_kwargs"]
        write_json_atomic({"evaluation": evaluation, "val": val, "pool": pool,
                           "eval_images": str(images), "eval_labels": str(labels),
                           "plan": {"patch_size": config["patch_size"], "batch_size": config["batch_size"],
                                    "features_per_stage": arch["features_per_stage"]},
                           "schedule": self.schedule().to_dict()}, self.cases_file)
        return {}

    def _pretrain(self, ctx: StepContext) -> dict:
        s = self.setting
        length = (["--time-budget", str(s.pretrain_minutes)] if s.pretrain_minutes > 0 else
                  ["--epochs", str(s.pretrain_epochs)])
        options = [*length, "--iters-per-epoch", str(s.pretrain_iterations), "--seed", str(self.split_seed),
                   "--preset", s.preset]
        self.nnunet.pretrain(ctx, self.pretrain_dir, self.plans, options,
                             ["--workers", "0"] if self.device == "cpu" else [])
        return {}

    def _attach(self, ctx: StepContext) -> dict:
        self.nnunet.attach(ctx, self.pretrain_dir / CHECKPOINT_FILE_NAME, self.plans, self.genesis_plans)
        return {}

    # --- folds: one per (K, seed), numbered in the order they were first requested
    def register_folds(self, ks: list[int], seeds: list[int]) -> dict[str, int]:
        folds = json.loads(self.folds_file.read_text()) if self.folds_file.is_file() else {}
        cases = self.cases()
        for k in ks:
            for seed in seeds:
                training_cases(cases["pool"], k, seed)  # refuses a K larger than the pool, before anything runs
                folds.setdefault(f"K{k}_seed{seed}", len(folds))
        order = sorted(folds.items(), key=lambda kv: kv[1])
        splits = []
        for key, _ in order:
            k, seed = (int(x) for x in key[1:].split("_seed"))
            splits.append((training_cases(cases["pool"], k, seed), cases["val"]))
        write_splits(self.ws.preprocessed / self.dataset_name, splits)
        write_json_atomic(folds, self.folds_file)
        return folds

    # --- units
    def run_unit(self, k: int, seed: int, arm: str, fold: int, cpus: str | None, log: Path,
                 stop: threading.Event | None = None) -> dict:
        """Train, predict and evaluate one (K, seed, arm); returns its record (also written to disk).

        ``stop``: once set, the running command is terminated (run_logged polls once a second).
        """

        name = unit_name(k, seed, arm)
        trainer, plans = self.trainer_and_plans(arm)
        predictions = self.out / "predictions" / name
        evaluation = self.out / "evaluation" / f"{name}.json"
        remove([self.fold_folder(arm, fold), predictions, evaluation, evaluation.with_suffix(".csv")])
        env = self.ws.env()
        env.update(self.train_env)
        pin = ["taskset", "-c", cpus] if cpus else []

        def run(cmd):
            run_logged(cmd, log, env, status=lambda _line: raise_if_stopped(stop), cwd=self.ws.root)

        seconds = {}
        t0 = time.monotonic()
        run([*pin, *self.nnunet.train_command(fold, trainer, plans)])
        seconds["train"] = time.monotonic() - t0
        t0 = time.monotonic()
        run([*pin, *self.nnunet.predict_command(Path(self.cases()["eval_images"]), predictions, fold, trainer, plans)])
        seconds["predict"] = time.monotonic() - t0
        t0 = time.monotonic()
        run([*pin, *self.nnunet.evaluate_command(predictions, Path(self.cases()["eval_labels"]), self.msd.name,
                                                 evaluation)])
        seconds["evaluate"] = time.monotonic() - t0
        result = load_evaluation(evaluation)
        pseudo = pseudo_dice_of_fold(self.fold_folder(arm, fold)) or []
        labels = [str(label) for label in result["labels"]]
        record = {
            "K": k, "seed": seed, "arm": arm, "trainer": trainer, "plans": plans, "fold": fold,
            "train_cases": training_cases(self.cases()["pool"], k, seed),
            "label_names": result.get("label_names", {}),
            "labels": {label: {"dice": result["summary"][label]["dice"]["mean"],
                               "nsd": result["summary"][label]["nsd"]["mean"]} for label in labels},
            "cases": {c["case"]: {label: {m: (c["labels"].get(label) or {}).get(m) for m in ("dice", "nsd")}
                                  for label in labels} for c in result["cases"]},
            "pseudo_dice": pseudo,
            "first_nonzero_epoch": first_nonzero_epochs(pseudo, len(labels)),
            "seconds": {n: round(v, 1) for n, v in seconds.items()},
        }
        if arm in self.checkpoint_arms:  # the file it started from: a re-run with another one is refused
            record["checkpoint"] = self.checkpoint_arms[arm].to_dict()
        write_json_atomic(record, self.unit_file(name))
        return record
