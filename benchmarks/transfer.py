"""Label efficiency: does Genesis pretraining beat training from scratch when labels are few?

    python benchmarks/transfer.py --msd-task ../shared/data/Task04_Hippocampus --labelled 5 20 --seeds 0 1 2
    python benchmarks/transfer.py --msd-task DIR --labelled 2 5 10 20 --seeds 0 1 2 --device cuda --setting full

1. The Decathlon task is converted (``nnUNetv2_convert_MSD_dataset``), planned and preprocessed;
   a fixed, seeded draw (``--split-seed``) sets aside the evaluation cases (never trained on)
   and a few validation cases for nnU-Net's monitoring; the rest is the training pool.
2. ``nnunet-genesis pretrain`` runs once on ALL images of the task (labels never read); the
   one checkpoint serves every seed and K; ``nnunet-genesis attach`` names it in the plans.
3. Units: one per (K, seed, arm). Each seed draws its own K training cases from the pool,
   nested across K (the 5 cases of K=5 are among the 20 of K=20), and its own initialisation
   (the schedule seeds nnU-Net per fold; one fold per (K, seed)). All arms of a seed train on
   the same cases, from the same random init of what they do not transfer, and see the same
   patches (0 augmentation workers). A unit trains with ``nnUNetv2_train``, predicts the
   evaluation cases with ``nnUNetv2_predict``, scores them with ``nnunet-genesis evaluate``
   (Dice, NSD) and writes ``units/<unit>.json``; finished units are skipped on a re-run, so a
   long protocol can be completed over several invocations (new K, seeds or arms too).
4. ``transfer_results.json`` (``runs``: one record per unit; ``summary``: per K and label each
   arm against scratch with mean difference, 95 % bootstrap CI over seeds x cases and the
   Wilcoxon p), ``transfer_dice_vs_k.png`` and a console table.

Arms (``--arms``): ``genesis`` (the default fine-tuning start of ``nnUNetTrainerGenesis``),
``encoder``, ``scratch`` (random init, same warm-up schedule), ``stock`` (plain nnU-Net schedule),
and the ablation starts ``aspretrained``, ``resetdecodernorm``, ``resetlastnorm``, ``resetallnorm``, ``reinitlast``,
``headwarmup``, ``lowlr``, ``nnunetrecipe`` (see docs/benchmark_transfer.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path


from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.evaluation.label_efficiency import (BASELINE, criteria, first_nonzero_epochs, plot, summarize,
                                                        table)
from nnunet_genesis.msd_folders import check_msd_folder, copy_heldout, labelled_cases, make_msd_subset, msd_task_number
from nnunet_genesis.nnunet_steps import NnunetSteps
from nnunet_genesis.outputs import write_json_atomic
from nnunet_genesis.pinned_jobs import raise_if_stopped, run_pinned
from nnunet_genesis.pipeline import Step, StepContext, Workspace, format_seconds, remove, run_logged, run_steps
from nnunet_genesis.splits import seeded_chunks, write_splits
from nnunet_genesis.trainers.demo_schedules import ShortSchedule, write_schedule_plans

CONFIGURATION = "3d_fullres"
CONFIG_FILE = "benchmark_config.json"
RESULTS_FILE = "transfer_results.json"
PLOT_FILE = "transfer_dice_vs_k.png"

# arm -> (trainer, whether it reads the Genesis plans variant)
ARMS: dict[str, tuple[str, bool]] = {
    "genesis": ("nnUNetTrainerGenesis_demo", True),
    "encoder": ("nnUNetTrainerGenesis_encoderOnly_demo", True),
    "scratch": ("nnUNetTrainerScratch_demo", False),
    "stock": ("nnUNetTrainerStock_demo", False),
    "aspretrained": ("nnUNetTrainerGenesis_asPretrained_demo", True),
    "resetdecodernorm": ("nnUNetTrainerGenesis_resetDecoderNorm_demo", True),
    "resetlastnorm": ("nnUNetTrainerGenesis_resetLastNorm_demo", True),
    "resetallnorm": ("nnUNetTrainerGenesis_resetAllNorm_demo", True),
    "reinitlast": ("nnUNetTrainerGenesis_reinitLastStage_demo", True),
    "headwarmup": ("nnUNetTrainerGenesis_headWarmup_demo", True),
    "lowlr": ("nnUNetTrainerGenesis_lowLR_demo", True),
    "nnunetrecipe": ("nnUNetTrainerGenesis_nnUNetRecipe_demo", True),
}
DEFAULT_ARMS = ("genesis", "encoder", "scratch", "stock")  # "aspretrained" is the default start, i.e. "genesis"


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


SETTINGS = {
    # 2 CPU cores: a quarter of the feature maps, patch at most 64^3, batch 2; 16 x 100 iterations,
    # the shortest schedule in which scratch learnt both hippocampus labels (16 x 50 did not; about
    # 3 h for K = 5, 20 x 3 seeds x 4 arms: docs/benchmark_transfer.md, "A fair schedule").
    "cpu": Setting(batch_size=2, max_patch_voxels=64 ** 3, width=0.25, pretrain_minutes=10, pretrain_epochs=1000,
                   pretrain_iterations=20, finetune_epochs=16, finetune_iterations=100, warmup_epochs=1,
                   eval_cases=40, val_cases=5, test_time_mirroring=False, training_mirroring=False,
                   preset="mild"),
    # nnU-Net's plan unchanged, for a GPU.
    "full": Setting(batch_size=None, max_patch_voxels=None, width=1.0, pretrain_minutes=0, pretrain_epochs=100,
                    pretrain_iterations=250, finetune_epochs=250, finetune_iterations=250, warmup_epochs=3,
                    eval_cases=40, val_cases=5, test_time_mirroring=True, training_mirroring=True,
                    preset="paper"),
}
QUICK = dict(pretrain_minutes=0, pretrain_epochs=1, pretrain_iterations=3, finetune_epochs=2, finetune_iterations=3,
             warmup_epochs=1, eval_cases=4, val_cases=2)


# ---------------------------------------------------------------------------------------------
# Cases


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


# ---------------------------------------------------------------------------------------------
# The benchmark


class TransferBenchmark:
    def __init__(self, out: Path, msd_task: Path, device: str, setting_name: str, setting: Setting,
                 split_seed: int, max_cases: int | None, jobs: int = 1):
        self.out, self.msd, self.device = out, msd_task, device
        self.setting_name, self.setting, self.split_seed, self.max_cases = setting_name, setting, split_seed, max_cases
        self.jobs = jobs
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
        trainer, genesis = ARMS[arm]
        return trainer, self.genesis_plans if genesis else self.plans

    def fold_folder(self, arm: str, fold: int) -> Path:
        return self.nnunet.run_folder(*self.trainer_and_plans(arm)) / f"fold_{fold}"

    def unit_file(self, name: str) -> Path:
        return unit_path(self.out, name)

    # --- shared steps (pipeline steps: skipped when done)
    def shared_steps(self) -> list[Step]:
        return [
            Step("convert", "nnUNetv2_convert_MSD_dataset", self._convert,
                 lambda: [*self.nnunet.raw_partial(), self.out / "source"]),
            Step("preprocess", "nnUNetv2_plan_and_preprocess + held-out draw", self._preprocess,
                 lambda: [*self.nnunet.preprocessed_partial(), self.out / "heldout", self.cases_file,
                          self.folds_file]),
            Step("pretrain", "pretrain once on all images (labels unused)", self._pretrain,
                 lambda: self.nnunet.pretrain_partial(self.pretrain_dir)),
            Step("attach", "nnunet-genesis attach", self._attach, lambda: []),
        ]

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
                             test_time_mirroring=s.test_time_mirroring, training_mirroring=s.training_mirroring)

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
        self.nnunet.attach(ctx, self.pretrain_dir / "genesis_final.pth", self.plans, self.genesis_plans)
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
        from nnunet_genesis.evaluation.evaluate import load_evaluation
        from nnunet_genesis.evaluation.training_curves import curves_for_fold

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
        curves, _ = curves_for_fold(self.fold_folder(arm, fold))
        pseudo = [list(map(float, d)) for d in curves.dice_per_class] if curves is not None else []
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
        write_json_atomic(record, self.unit_file(name))
        return record


def pending_units(out: Path, units: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """The units without a record in ``out/units`` (a record is written only when a unit is complete)."""
    return [u for u in units if not unit_path(out, unit_name(*u)).is_file()]


def run_units(bench: TransferBenchmark, todo: list[tuple[int, int, str]], folds: dict[str, int]) -> None:
    """Run the pending units, ``bench.jobs`` at a time (each pinned to its own CPUs); a progress line each."""
    from tqdm import tqdm

    def work(item, cpus, stop):
        k, seed, arm = item
        log = bench.ws.logs / "units" / f"{unit_name(k, seed, arm)}.log"
        return bench.run_unit(k, seed, arm, folds[f"K{k}_seed{seed}"], cpus, log, stop)

    t_start = time.monotonic()
    with tqdm(total=len(todo), desc="units", unit="unit", dynamic_ncols=True, disable=None) as bar:
        for (k, seed, arm), record, seconds in run_pinned(todo, bench.jobs, work):
            dice = " / ".join(f"{v['dice']:.3f}" if v["dice"] is not None else "n/a" for v in record["labels"].values())
            bar.update(1)
            tqdm.write(f"  K={k:<3} seed {seed:<3} {arm:<14} Dice {dice}   {format_seconds(seconds)} "
                       f"(elapsed {format_seconds(time.monotonic() - t_start)})")


# ---------------------------------------------------------------------------------------------
# Results


def load_runs(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(unit_path(out, "*").parent.glob("*.json"))]


# ---------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--msd-task", type=Path, required=True, help="Decathlon task folder (MSD layout)")
    p.add_argument("--labelled", type=int, nargs="+", default=[5, 20], metavar="K",
                   help="numbers of labelled training cases")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="S",
                   help="seeds: each draws its own training cases (nested across K) and initialisation")
    p.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), choices=list(ARMS), metavar="ARM",
                   help=f"fine-tuning arms ({', '.join(ARMS)}); '{BASELINE}' is always added")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--setting", choices=sorted(SETTINGS), default=None,
                   help="cpu: reduced plan and short schedule; full: nnU-Net's plan (default: cpu on cpu, "
                        "full on cuda)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output folder (default: benchmarks/output/transfer_<task>_<setting>)")
    p.add_argument("--split-seed", type=int, default=0, help="seeds the evaluation/validation draw and the pretraining")
    p.add_argument("--jobs", type=int, default=None,
                   help="units run side by side, each pinned to its share of the CPUs (default: 2 on a CPU "
                        "with at least 2 cores, else 1)")
    p.add_argument("--eval-cases", type=int, help="held-out labelled cases evaluated (default: the setting's)")
    p.add_argument("--val-cases", type=int, help="labelled cases for nnU-Net's validation (default: the setting's)")
    p.add_argument("--max-cases", type=int, help="use only the first N labelled cases of the task")
    p.add_argument("--pretrain-minutes", type=float, help="pretraining time budget (0: use the epochs)")
    p.add_argument("--finetune-epochs", type=int)
    p.add_argument("--finetune-iterations", type=int)
    p.add_argument("--preset", choices=("mild", "paper"), help="the pretraining's corruption preset")
    p.add_argument("--training-mirroring", choices=("on", "off"),
                   help="mirroring augmentation while fine-tuning (default: the setting's; cpu: off)")
    p.add_argument("--quick", action="store_true", help="a few iterations only: checks that every phase runs")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: write the JSON, PNG and table from the units finished so far (a protocol "
                        "completed over several invocations can be read at any point; the folder is not changed "
                        "except for those three outputs)")
    return p.parse_args(argv)


def stored_config(path: Path) -> dict:
    """A run folder's settings; folders written before the preset field was renamed read as now."""
    config = json.loads(path.read_text())
    values = config.get("values", {})
    if "corruption" in values and "preset" not in values:
        values["preset"] = values.pop("corruption")
    return config


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    import signal

    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)  # a kill stops the running commands too
    args = parse_args(argv)
    setting_name = args.setting or ("cpu" if args.device == "cpu" else "full")
    setting = SETTINGS[setting_name]
    if args.quick:
        setting = replace(setting, **QUICK)
    overrides = {k: v for k, v in dict(eval_cases=args.eval_cases, val_cases=args.val_cases,
                                       pretrain_minutes=args.pretrain_minutes, finetune_epochs=args.finetune_epochs,
                                       finetune_iterations=args.finetune_iterations,
                                       preset=args.preset,
                                       training_mirroring=None if args.training_mirroring is None
                                       else args.training_mirroring == "on").items() if v is not None}
    setting = replace(setting, **overrides)
    msd = args.msd_task.expanduser().resolve()
    ks = sorted(set(args.labelled))
    seeds = sorted(set(args.seeds))
    arms = sorted(set(args.arms) | {BASELINE}, key=list(ARMS).index)
    jobs = args.jobs if args.jobs is not None else (2 if args.device == "cpu" and (os.cpu_count() or 1) >= 2 else 1)
    try:
        check_msd_folder(msd)
        if min(ks) < 1:
            raise GenesisUserError("--labelled values must be at least 1.")
        if jobs < 1:
            raise GenesisUserError(f"--jobs {jobs}: must be at least 1.")
        if args.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise GenesisUserError("--device cuda: PyTorch sees no CUDA GPU here.")
            jobs = 1
        suffix = "_quick" if args.quick else ""
        out = (args.output or Path(__file__).resolve().parent / "output" /
               f"transfer_{msd.name}_{setting_name}{suffix}").resolve()
        # what determines every unit's result; K, seeds and arms may grow between invocations
        config = {"msd_task": str(msd), "device": args.device, "setting": setting_name, "values": asdict(setting),
                  "split_seed": args.split_seed, "max_cases": args.max_cases}
        config_file = out / CONFIG_FILE
        if config_file.is_file() and stored_config(config_file) != config:
            raise GenesisUserError(f"{out} holds a benchmark run with other settings ({config_file}); choose "
                                   f"another -o folder or delete that one. (--labelled, --seeds and --arms may "
                                   f"change between runs of one folder.)")
        if out.is_dir() and any(out.iterdir()) and not config_file.is_file():
            raise GenesisUserError(f"{out} is not empty and is not a benchmark folder; choose another -o.")
        bench = TransferBenchmark(out, msd, args.device, setting_name, setting, args.split_seed, args.max_cases, jobs)
        t0 = time.monotonic()
        units = [(k, s, a) for k in ks for s in seeds for a in arms]
        if args.report_only:
            if not bench.cases_file.is_file():
                raise GenesisUserError(f"--report-only: {out} holds no prepared benchmark ({bench.cases_file} is "
                                       f"missing); run without --report-only first.")
            durations = {n: float(bench.ws.done_info(n).get("seconds", 0.0)) for n in ("convert", "preprocess",
                         "pretrain", "attach") if bench.ws.is_done(n)}
            missing = pending_units(out, units)
            if missing:
                print(f"--report-only: {len(missing)} of {len(units)} unit(s) not finished yet, reported without: "
                      + ", ".join(unit_name(*u) for u in missing))
        else:
            out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(config, config_file)
            bench.ws.make()
            print(f"transfer benchmark in {out} (logs: {bench.ws.logs}); K {ks}, seeds {seeds}, arms {arms}, "
                  f"{jobs} job(s) at a time")
            durations = run_steps(bench.ws, bench.shared_steps(), "transfer")
            folds = bench.register_folds(ks, seeds)
            todo = pending_units(out, units)
            print(f"{len(units) - len(todo)} of {len(units)} unit(s) done earlier (skipped); {len(todo)} to run")
            run_units(bench, todo, folds)
        runs = [r for r in load_runs(out) if r["K"] in ks and r["seed"] in seeds and r["arm"] in arms]
        cases = bench.cases()
        results = {"task": msd.name, "setting": setting_name, "device": args.device, "setting_values": asdict(setting),
                   "split_seed": args.split_seed, "plan": cases["plan"], "schedule": cases["schedule"],
                   "n_eval": len(cases["evaluation"]), "n_val": len(cases["val"]), "labelled": ks, "seeds": seeds,
                   "arms": arms, "shared_seconds": {n: round(v, 1) for n, v in durations.items()},
                   "this_invocation_seconds": round(time.monotonic() - t0, 1),
                   "summary": summarize(runs, arm_order=list(ARMS)),
                   "criteria": criteria(runs) if "genesis" in arms else [],
                   "runs": runs}
        write_json_atomic(results, out / RESULTS_FILE)
        plot(results, out / PLOT_FILE, arm_order=list(ARMS))
    except GenesisUserError as e:
        print(f"transfer.py: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("transfer.py: interrupted; finished units are kept, re-run the same command to continue.",
              file=sys.stderr)
        return 130
    print()
    print(table(results))
    print(f"\nresults: {out / RESULTS_FILE}\nplot:    {out / PLOT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
