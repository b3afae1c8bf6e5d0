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
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from nnunet_genesis.demo import (check_msd_folder, copy_heldout, corruption_options, labelled_cases, make_msd_subset,
                                 msd_task_number)
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.pipeline import (Step, StepContext, Workspace, command_path, dataset_name_for, format_seconds,
                                     genesis_command, remove, results_folder, run_logged, run_steps,
                                     write_splits)
from nnunet_genesis.outputs import save_figure, write_json_atomic
from nnunet_genesis.trainers.demo_schedules import ShortSchedule, write_schedule_plans

CONFIGURATION = "3d_fullres"
PRETRAIN_DATASET_ID = 999
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
BASELINE = "scratch"


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
    corruption: str  # GenesisConfig preset of the pretraining


SETTINGS = {
    # 2 CPU cores: a quarter of the feature maps, patch at most 64^3, batch 2; 16 x 100 iterations,
    # the shortest schedule in which scratch learnt both hippocampus labels (16 x 50 did not; about
    # 3 h for K = 5, 20 x 3 seeds x 4 arms: docs/benchmark_transfer.md, "A fair schedule").
    "cpu": Setting(batch_size=2, max_patch_voxels=64 ** 3, width=0.25, pretrain_minutes=10, pretrain_epochs=1000,
                   pretrain_iterations=20, finetune_epochs=16, finetune_iterations=100, warmup_epochs=1,
                   eval_cases=40, val_cases=5, test_time_mirroring=False, training_mirroring=False,
                   corruption="mild"),
    # nnU-Net's plan unchanged, for a GPU.
    "full": Setting(batch_size=None, max_patch_voxels=None, width=1.0, pretrain_minutes=0, pretrain_epochs=100,
                    pretrain_iterations=250, finetune_epochs=250, finetune_iterations=250, warmup_epochs=3,
                    eval_cases=40, val_cases=5, test_time_mirroring=True, training_mirroring=True,
                    corruption="paper"),
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
    order = [sorted(cases)[i] for i in np.random.default_rng(split_seed).permutation(len(cases))]
    return sorted(order[:n_eval]), sorted(order[n_eval:n_eval + n_val]), order[n_eval + n_val:]


def training_cases(pool: list[str], k: int, seed: int) -> list[str]:
    """The K training cases of a seed: the first K of the seed's own permutation of the pool,
    so they are nested across K."""
    if k > len(pool):
        raise GenesisUserError(f"--labelled {k}: the training pool has only {len(pool)} cases.")
    perm = np.random.default_rng([seed, 7]).permutation(len(pool))
    return sorted(pool[i] for i in perm[:k])


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
        return dataset_name_for(self.ws.raw, self.dataset_id)

    def trainer_and_plans(self, arm: str) -> tuple[str, str]:
        trainer, genesis = ARMS[arm]
        return trainer, self.genesis_plans if genesis else self.plans

    def fold_folder(self, arm: str, fold: int) -> Path:
        return results_folder(self.ws.results, self.dataset_name, *self.trainer_and_plans(arm), CONFIGURATION) / f"fold_{fold}"

    def unit_file(self, name: str) -> Path:
        return unit_path(self.out, name)

    # --- shared steps (pipeline steps: skipped when done)
    def shared_steps(self) -> list[Step]:
        return [
            Step("convert", "nnUNetv2_convert_MSD_dataset", self._convert,
                 lambda: [*self.ws.raw.glob(f"Dataset{self.dataset_id:03d}_*"), self.out / "source"]),
            Step("preprocess", "nnUNetv2_plan_and_preprocess + held-out draw", self._preprocess,
                 lambda: [*self.ws.preprocessed.glob(f"Dataset{self.dataset_id:03d}_*"), self.out / "heldout",
                          self.cases_file, self.folds_file]),
            Step("pretrain", "pretrain once on all images (labels unused)", self._pretrain, self._pretrain_partial),
            Step("attach", "nnunet-genesis attach", self._attach, lambda: []),
        ]

    def _convert(self, ctx: StepContext) -> dict:
        msd = self.msd
        if self.max_cases is not None:
            msd = make_msd_subset(msd, self.out / "source", self.max_cases, None)
        ctx.command([command_path("nnUNetv2_convert_MSD_dataset"), "-i", str(msd), "-np", "1"])
        return {"dataset": self.dataset_name}

    def schedule(self) -> ShortSchedule:
        s = self.setting
        return ShortSchedule(epochs=s.finetune_epochs, iterations_per_epoch=s.finetune_iterations,
                             val_iterations_per_epoch=min(5, max(1, s.finetune_iterations // 10)),
                             warmup_epochs=s.warmup_epochs, seed=self.split_seed,
                             test_time_mirroring=s.test_time_mirroring, training_mirroring=s.training_mirroring)

    def _preprocess(self, ctx: StepContext) -> dict:
        s = self.setting
        ctx.command([command_path("nnUNetv2_plan_and_preprocess"), "-d", str(self.dataset_id), "-c", CONFIGURATION,
                     "-np", "1", "--verify_dataset_integrity"])
        raw = self.ws.raw / self.dataset_name
        evaluation, val, pool = draw_heldout(labelled_cases(raw), s.eval_cases, s.val_cases, self.split_seed)
        pre = self.ws.preprocessed / self.dataset_name
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

    def _pretrain_partial(self):
        from nnunet_genesis.pretraining.launch import STATE_FILE

        folder = self.out / "pretrain"
        if (folder / STATE_FILE).is_file():
            return []
        return [folder, *[p for b in (self.ws.raw, self.ws.preprocessed, self.ws.results)
                          for p in b.glob(f"Dataset{PRETRAIN_DATASET_ID:03d}_*")]]

    def _pretrain(self, ctx: StepContext) -> dict:
        from nnunet_genesis.pretraining.launch import STATE_FILE

        folder = self.out / "pretrain"
        common = ["--device", self.device] + (["--workers", "0"] if self.device == "cpu" else [])
        if (folder / STATE_FILE).is_file():
            ctx.command(genesis_command("pretrain", "-o", str(folder), "--resume", *common))
        else:
            s = self.setting
            length = (["--time-budget", str(s.pretrain_minutes)] if s.pretrain_minutes > 0 else
                      ["--epochs", str(s.pretrain_epochs)])
            ctx.command(genesis_command(
                "pretrain", "-d", str(self.dataset_id), "-o", str(folder), "--plans-from", str(self.dataset_id),
                "-p", self.plans, "-c", CONFIGURATION, *length, "--iters-per-epoch", str(s.pretrain_iterations),
                "--seed", str(self.split_seed), "--dataset-id", str(PRETRAIN_DATASET_ID),
                *corruption_options(s.corruption), *common))
        if not (folder / "genesis_final.pth").is_file():
            raise GenesisUserError(f"pretrain wrote no {folder / 'genesis_final.pth'}; see {ctx.log}.", exit_code=1)
        return {}

    def _attach(self, ctx: StepContext) -> dict:
        ctx.command(genesis_command("attach", "-d", str(self.dataset_id), "-c", str(self.out / "pretrain" / "genesis_final.pth"),
                                    "-p", self.plans, "-n", self.genesis_plans, "--force"))
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
            run_logged(cmd, log, env, status=lambda _line: _raise_if(stop), cwd=self.ws.root)

        seconds = {}
        t0 = time.monotonic()
        run([*pin, command_path("nnUNetv2_train"), str(self.dataset_id), CONFIGURATION, str(fold),
             "-tr", trainer, "-p", plans, "-device", self.device])
        seconds["train"] = time.monotonic() - t0
        t0 = time.monotonic()
        run([*pin, command_path("nnUNetv2_predict"), "-i", self.cases()["eval_images"], "-o", str(predictions),
             "-d", str(self.dataset_id), "-c", CONFIGURATION, "-tr", trainer, "-p", plans, "-f", str(fold),
             "-device", self.device, "-npp", "1", "-nps", "1", "--disable_progress_bar"])
        seconds["predict"] = time.monotonic() - t0
        t0 = time.monotonic()
        run([*pin, *genesis_command("evaluate", "--pred", str(predictions), "--ref", self.cases()["eval_labels"],
                                    "--task", self.msd.name, "-o", str(evaluation))])
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


class UnitsStopped(Exception):
    """Raised inside a unit's command loop when the benchmark is interrupted."""


def _raise_if(stop: threading.Event | None) -> None:
    if stop is not None and stop.is_set():
        raise UnitsStopped()


def first_nonzero_epochs(pseudo_dice: list[list[float]], n_labels: int) -> list[int | None]:
    """Per label, the first epoch whose pseudo Dice (nnU-Net's validation estimate) is above 0."""
    out = []
    for j in range(n_labels):
        out.append(next((e for e, row in enumerate(pseudo_dice) if j < len(row) and row[j] > 0), None))
    return out


def pending_units(out: Path, units: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """The units without a record in ``out/units`` (a record is written only when a unit is complete)."""
    return [u for u in units if not unit_path(out, unit_name(*u)).is_file()]


def cpu_sets(jobs: int) -> list[str | None]:
    """One CPU set per parallel job (``taskset -c``), or None (no pinning) for one job."""
    if jobs <= 1 or not hasattr(os, "sched_getaffinity"):
        return [None]
    cpus = sorted(os.sched_getaffinity(0))
    if jobs > len(cpus):
        raise GenesisUserError(f"--jobs {jobs}: only {len(cpus)} CPU(s) are available to this process.")
    groups = np.array_split(np.asarray(cpus), jobs)
    return [",".join(str(c) for c in g) for g in groups]


def run_units(bench: TransferBenchmark, todo: list[tuple[int, int, str]], folds: dict[str, int]) -> None:
    """Run the pending units, ``bench.jobs`` at a time (each pinned to its own CPUs); a progress line each."""
    from tqdm import tqdm

    slots = cpu_sets(bench.jobs)
    free = list(slots)
    lock = threading.Lock()
    bar = tqdm(total=len(todo), desc="units", unit="unit", dynamic_ncols=True, disable=None)
    t_start = time.monotonic()
    stop = threading.Event()

    def one(item):
        k, seed, arm = item
        with lock:
            cpus = free.pop()
        try:
            log = bench.ws.logs / "units" / f"{unit_name(k, seed, arm)}.log"
            t0 = time.monotonic()
            record = bench.run_unit(k, seed, arm, folds[f"K{k}_seed{seed}"], cpus, log, stop)
            return item, record, time.monotonic() - t0
        finally:
            with lock:
                free.append(cpus)

    pool = ThreadPoolExecutor(max_workers=len(slots))
    futures = [pool.submit(one, item) for item in todo]
    try:
        for future in as_completed(futures):
            (k, seed, arm), record, seconds = future.result()
            dice = " / ".join(f"{v['dice']:.3f}" if v["dice"] is not None else "n/a" for v in record["labels"].values())
            bar.update(1)
            tqdm.write(f"  K={k:<3} seed {seed:<3} {arm:<14} Dice {dice}   {format_seconds(seconds)} "
                       f"(elapsed {format_seconds(time.monotonic() - t_start)})")
    except BaseException:
        # interrupted (Ctrl-C, SIGTERM) or a unit failed: stop the other units' commands too; their
        # partial outputs are removed when they run again, and no record is written for them
        stop.set()
        for f in futures:
            f.cancel()
        raise
    finally:
        pool.shutdown(wait=True)
        bar.close()


# ---------------------------------------------------------------------------------------------
# Results


def load_runs(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(unit_path(out, "*").parent.glob("*.json"))]


def _matrix(runs: list[dict], metric: str, label: str, seeds: list[int], cases: list[str]) -> np.ndarray:
    by_seed = {r["seed"]: r for r in runs}
    m = np.full((len(seeds), len(cases)), np.nan)
    for i, s in enumerate(seeds):
        for j, c in enumerate(cases):
            v = by_seed[s]["cases"].get(c, {}).get(label, {}).get(metric)
            if v is not None:
                m[i, j] = v
    return m


def summarize(runs: list[dict], baseline: str = BASELINE, n_boot: int = 10_000) -> dict:
    """Per K, label and arm: the arm's mean (and seed spread) and, against the baseline over the
    seeds both have, the mean difference, its 95 % CI (bootstrap over seeds x cases) and Wilcoxon p."""
    from nnunet_genesis.evaluation.statistics import bootstrap_mean_ci, seed_case_comparison

    summary: dict = {}
    for k in sorted({r["K"] for r in runs}):
        at_k = [r for r in runs if r["K"] == k]
        arms = sorted({r["arm"] for r in at_k}, key=lambda a: list(ARMS).index(a))
        labels = list(at_k[0]["labels"])
        cases = sorted(at_k[0]["cases"])
        entry = {}
        for label in labels:
            per_arm = {}
            for arm in arms:
                mine = [r for r in at_k if r["arm"] == arm]
                seeds = sorted(r["seed"] for r in mine)
                row = {"n_seeds": len(seeds), "seeds": seeds}
                for metric in ("dice", "nsd"):
                    m = _matrix(mine, metric, label, seeds, cases)
                    seed_means = np.nanmean(m, axis=1)
                    row[metric] = {"mean": float(np.nanmean(m)), "seed_sd": float(np.std(seed_means, ddof=1))
                                   if len(seeds) > 1 else None, "ci95": bootstrap_mean_ci(m, n_boot=n_boot)}
                    if arm != baseline:
                        base = [r for r in at_k if r["arm"] == baseline and r["seed"] in seeds]
                        common = sorted(r["seed"] for r in base)
                        if common:
                            cmp = seed_case_comparison(_matrix(base, metric, label, common, cases),
                                                       _matrix(mine, metric, label, common, cases), n_boot=n_boot)
                            row[metric]["vs_" + baseline] = {"mean_diff": cmp.mean_diff, "ci95": cmp.ci95 and list(cmp.ci95),
                                                             "p": cmp.p_value, "n_seeds": cmp.n_seeds,
                                                             "n_cases": cmp.n_cases, "note": cmp.note}
                per_arm[arm] = row
            entry[label] = {"name": at_k[0]["label_names"].get(label, label), "arms": per_arm}
        summary[str(k)] = entry
    return summary


def criteria(runs: list[dict], arm: str = "genesis", baseline: str = BASELINE) -> list[dict]:
    """The default start's criteria per (K, seed): its pseudo Dice leaves 0 on every label no later
    than the baseline's, and its final mean Dice (over labels) is at least the baseline's."""
    out = []
    index = {(r["K"], r["seed"], r["arm"]): r for r in runs}
    for (k, seed, a), r in sorted(index.items()):
        b = index.get((k, seed, baseline))
        if a != arm or b is None:
            continue
        never = 10 ** 9
        leaves = all((x if x is not None else never) <= (y if y is not None else never)
                     for x, y in zip(r["first_nonzero_epoch"], b["first_nonzero_epoch"]))
        mean_r = float(np.mean([v["dice"] for v in r["labels"].values()]))
        mean_b = float(np.mean([v["dice"] for v in b["labels"].values()]))
        out.append({"K": k, "seed": seed, "first_nonzero": r["first_nonzero_epoch"],
                    "first_nonzero_baseline": b["first_nonzero_epoch"], "leaves_zero_no_later": leaves,
                    "mean_dice": mean_r, "mean_dice_baseline": mean_b, "mean_dice_not_lower": mean_r >= mean_b})
    return out


def table(results: dict) -> str:
    def f(v):
        return "  n/a" if v is None else f"{v:.3f}"

    lines = [f"{results['task']}, setting {results['setting']} on {results['device']}; Dice on "
             f"{results['n_eval']} held-out cases; mean over seeds x cases; diff vs {BASELINE} with 95 % CI "
             f"(bootstrap over seeds x cases) and Wilcoxon p",
             f"{'K':>3}  {'label':<14} {'arm':<14} {'seeds':>5} {'Dice':>6} {'seed SD':>7} {'diff':>7} "
             f"{'95% CI':>17} {'p':>8}"]
    for k, entry in results["summary"].items():
        for label, e in entry.items():
            for arm, row in e["arms"].items():
                d = row["dice"]
                vs = d.get("vs_" + BASELINE)
                diff = f"{vs['mean_diff']:+.3f}" if vs and vs["mean_diff"] is not None else ""
                ci = f"[{vs['ci95'][0]:+.3f}, {vs['ci95'][1]:+.3f}]" if vs and vs["ci95"] else ""
                p = (f"{vs['p']:.2g}" if vs["p"] is not None else "n/a") if vs else ""
                sd = f"{d['seed_sd']:.3f}" if d["seed_sd"] is not None else "  n/a"
                lines.append(f"{k:>3}  {label + ' ' + e['name']:<14} {arm:<14} {row['n_seeds']:>5} {f(d['mean']):>6} "
                             f"{sd:>7} {diff:>7} {ci:>17} {p:>8}")
    if results["criteria"]:
        lines.append("")
        lines.append(f"default start vs {BASELINE}, per (K, seed): pseudo Dice leaves 0 on every label no later; "
                     f"final mean Dice not lower")
        for c in results["criteria"]:
            lines.append(f"  K={c['K']:<3} seed {c['seed']:<3} first epoch > 0: {c['first_nonzero']} vs "
                         f"{c['first_nonzero_baseline']}  {'ok ' if c['leaves_zero_no_later'] else 'NO '}   "
                         f"mean Dice {c['mean_dice']:.3f} vs {c['mean_dice_baseline']:.3f}  "
                         f"{'ok' if c['mean_dice_not_lower'] else 'NO'}")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = results["summary"]
    ks = sorted(int(k) for k in summary)
    if not ks:
        return
    labels = list(summary[str(ks[0])])
    arms = sorted({a for k in summary for lab in summary[k].values() for a in lab["arms"]}, key=list(ARMS).index)
    fig, axes = plt.subplots(1, len(labels), figsize=(5 * len(labels), 4), squeeze=False)
    for ax, label in zip(axes[0], labels):
        for arm in arms:
            xs, mean, lo, hi = [], [], [], []
            for k in ks:
                row = summary[str(k)][label]["arms"].get(arm)
                if row is None:
                    continue
                xs.append(k)
                mean.append(row["dice"]["mean"])
                ci = row["dice"]["ci95"] or [row["dice"]["mean"]] * 2
                lo.append(ci[0])
                hi.append(ci[1])
            line, = ax.plot(xs, mean, "o-" if arm != BASELINE else "s--", label=arm)
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15)
        ax.set_title(f"{summary[str(ks[0])][label]['name']} (label {label})")
        ax.set_xlabel("labelled training cases K")
        ax.set_ylabel("Dice (mean, 95 % CI over seeds x cases)")
        ax.set_xscale("log")
        ax.set_xticks(ks)
        ax.set_xticklabels([str(k) for k in ks])
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{results['task']}: label efficiency ({results['setting']} setting)")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


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
    p.add_argument("--corruption", choices=("mild", "paper"), help="pretraining corruption preset")
    p.add_argument("--training-mirroring", choices=("on", "off"),
                   help="mirroring augmentation while fine-tuning (default: the setting's; cpu: off)")
    p.add_argument("--quick", action="store_true", help="a few iterations only: checks that every phase runs")
    return p.parse_args(argv)


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
                                       corruption=args.corruption,
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
        if config_file.is_file() and json.loads(config_file.read_text()) != config:
            raise GenesisUserError(f"{out} holds a benchmark run with other settings ({config_file}); choose "
                                   f"another -o folder or delete that one. (--labelled, --seeds and --arms may "
                                   f"change between runs of one folder.)")
        if out.is_dir() and any(out.iterdir()) and not config_file.is_file():
            raise GenesisUserError(f"{out} is not empty and is not a benchmark folder; choose another -o.")
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(config, config_file)
        bench = TransferBenchmark(out, msd, args.device, setting_name, setting, args.split_seed, args.max_cases, jobs)
        bench.ws.make()
        print(f"transfer benchmark in {out} (logs: {bench.ws.logs}); K {ks}, seeds {seeds}, arms {arms}, "
              f"{jobs} job(s) at a time")
        t0 = time.monotonic()
        durations = run_steps(bench.ws, bench.shared_steps(), "transfer")
        folds = bench.register_folds(ks, seeds)
        units = [(k, s, a) for k in ks for s in seeds for a in arms]
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
                   "summary": summarize(runs), "criteria": criteria(runs) if "genesis" in arms else [],
                   "runs": runs}
        write_json_atomic(results, out / RESULTS_FILE)
        plot(results, out / PLOT_FILE)
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
