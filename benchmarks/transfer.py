"""Does Genesis pretraining beat training from scratch when labels are few?

    python benchmarks/transfer.py --msd-task ../shared/data/Task04_Hippocampus --labelled 5
    python benchmarks/transfer.py --msd-task DIR --labelled 5 20 --device cuda --setting full

1. The Decathlon task is converted (``nnUNetv2_convert_MSD_dataset``), planned and preprocessed.
2. ``nnunet-genesis pretrain`` runs on ALL images of the task (imagesTr and imagesTs); labels
   are never read.
3. The labelled cases are split once, seeded: an evaluation set (never trained on), a small
   validation set for nnU-Net's own monitoring, and a pool from which the K labelled training
   cases are drawn, nested (the 5 cases of K=5 are among the 20 of K=20). nnU-Net's
   ``splits_final.json`` holds one fold per K.
4. For each K, with the identical schedule and seed (``nnunet_genesis.trainers.demo_schedules``):
   ``nnUNetTrainerGenesis_demo`` (fine-tuned from the checkpoint) and ``nnUNetTrainerScratch_demo``
   (random initialisation) through ``nnUNetv2_train``; both predict the evaluation set with
   ``nnUNetv2_predict``; ``nnunet-genesis evaluate`` scores Dice and NSD (the task's tolerance).
5. A table (K, Dice and NSD per label for both arms, the difference, wall time of each phase) is
   printed; ``transfer_results.json`` and ``transfer_dice_vs_k.png`` are written to the output
   folder, with a ``compare`` report per K under ``report_K<k>/``.

Settings: ``cpu`` writes a reduced plans variant (batch 2, patch at most 64^3 voxels, half the
feature maps per stage) and a short schedule, sized to finish within an hour on 2 cores for
Task04_Hippocampus with ``--labelled 5``; ``full`` keeps nnU-Net's plan unchanged (for a GPU)
with a longer schedule. ``--quick`` is a smoke run (a few iterations): the numbers mean nothing.
The run is resumable: finished phases are skipped when the same command is repeated.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from nnunet_genesis.demo import (check_msd_folder, copy_heldout, corruption_options, labelled_cases, make_msd_subset,
                                 msd_task_number)
from nnunet_genesis.errors import GenesisUserError
from nnunet_genesis.pipeline import (Step, StepContext, Workspace, command_path, dataset_name_for,
                                     format_seconds, genesis_command, results_folder, run_steps,
                                     write_json_atomic, write_splits)
from nnunet_genesis.trainers.demo_schedules import ShortSchedule, write_schedule_plans

CONFIGURATION = "3d_fullres"
GENESIS_TRAINER = "nnUNetTrainerGenesis_demo"
SCRATCH_TRAINER = "nnUNetTrainerScratch_demo"
PRETRAIN_DATASET_ID = 999
CONFIG_FILE = "benchmark_config.json"


@dataclass(frozen=True)
class Setting:
    """Plan reduction and schedules of one benchmark setting."""

    batch_size: int | None
    max_patch_voxels: int | None
    width: float
    pretrain_epochs: int
    pretrain_iterations: int
    finetune_epochs: int
    finetune_iterations: int
    warmup_epochs: int
    eval_cases: int
    val_cases: int
    test_time_mirroring: bool
    corruption: str  # pretraining corruption preset: "mild" (short runs) or "paper" (nnunet_genesis.demo)
    transfer: str  # Genesis arm: "encoder" (encoder only) or "full" (encoder and decoder)


SETTINGS = {
    # Under an hour on 2 CPU cores for Task04_Hippocampus --labelled 5 (see docs/benchmark_transfer.md).
    # Encoder-only transfer: with the whole network the Genesis arm stayed all-background for the
    # 500 fine-tuning iterations (Dice 0.00); measured side by side, docs/benchmark_transfer.md.
    "cpu": Setting(batch_size=2, max_patch_voxels=64 ** 3, width=0.5, pretrain_epochs=8, pretrain_iterations=100,
                   finetune_epochs=10, finetune_iterations=50, warmup_epochs=1, eval_cases=40, val_cases=5,
                   test_time_mirroring=False, corruption="mild", transfer="encoder"),
    # nnU-Net's plan unchanged, for a GPU.
    "full": Setting(batch_size=None, max_patch_voxels=None, width=1.0, pretrain_epochs=100, pretrain_iterations=250,
                    finetune_epochs=250, finetune_iterations=250, warmup_epochs=10, eval_cases=40, val_cases=5,
                    test_time_mirroring=True, corruption="paper", transfer="full"),
}
QUICK = dict(pretrain_epochs=1, pretrain_iterations=5, finetune_epochs=2, finetune_iterations=5, warmup_epochs=1,
             eval_cases=5, val_cases=2)


def draw_cases(cases: list[str], ks: list[int], n_eval: int, n_val: int, seed: int
               ) -> tuple[list[str], list[str], dict[int, list[str]]]:
    """Seeded evaluation set, validation set and nested training sets (one per K)."""
    need = n_eval + n_val + max(ks)
    if len(cases) < need:
        raise GenesisUserError(f"The task has {len(cases)} labelled cases; {n_eval} evaluation + {n_val} "
                               f"validation + {max(ks)} training cases are needed. Lower --labelled, "
                               f"--eval-cases or --val-cases.")
    order = [sorted(cases)[i] for i in np.random.default_rng(seed).permutation(len(cases))]
    evaluation, val, pool = order[:n_eval], order[n_eval:n_eval + n_val], order[n_eval + n_val:]
    return sorted(evaluation), sorted(val), {k: sorted(pool[:k]) for k in ks}


class TransferBenchmark:
    def __init__(self, out: Path, msd_task: Path, ks: list[int], device: str, setting_name: str,
                 setting: Setting, seed: int, max_cases: int | None):
        self.out, self.msd, self.ks, self.device = out, msd_task, ks, device
        self.setting_name, self.setting, self.seed, self.max_cases = setting_name, setting, seed, max_cases
        self.ws = Workspace(out)
        self.dataset_id = msd_task_number(msd_task)
        self.plans = f"nnUNetPlans_bench_{setting_name}"
        self.genesis_plans = f"{self.plans}_genesis"
        self.train_env = {"nnUNet_n_proc_DA": "0"} if device == "cpu" else {}

    # --- paths
    @property
    def cases_file(self) -> Path:
        return self.ws.state / "cases.json"

    def cases(self) -> dict:
        return json.loads(self.cases_file.read_text())

    @property
    def dataset_name(self) -> str:
        return dataset_name_for(self.ws.raw, self.dataset_id)

    def arm(self, arm: str) -> tuple[str, str]:
        return (GENESIS_TRAINER, self.genesis_plans) if arm == "genesis" else (SCRATCH_TRAINER, self.plans)

    def run_folder(self, arm: str) -> Path:
        return results_folder(self.ws.results, self.dataset_name, *self.arm(arm), CONFIGURATION)

    def predictions(self, arm: str, k: int) -> Path:
        return self.out / "predictions" / f"K{k}" / arm

    def evaluation(self, arm: str, k: int) -> Path:
        return self.out / "evaluation" / f"K{k}" / f"{arm}.json"

    # --- steps
    def steps(self) -> list[Step]:
        steps = [
            Step("convert", "nnUNetv2_convert_MSD_dataset", self._convert,
                 lambda: [*self.ws.raw.glob(f"Dataset{self.dataset_id:03d}_*"), self.out / "source"]),
            Step("preprocess", "nnUNetv2_plan_and_preprocess + split", self._preprocess,
                 lambda: [*self.ws.preprocessed.glob(f"Dataset{self.dataset_id:03d}_*"), self.out / "heldout",
                          self.cases_file]),
            Step("pretrain", "pretrain on all images (labels unused)", self._pretrain, self._pretrain_partial),
            Step("attach", "nnunet-genesis attach", self._attach, lambda: []),
        ]
        for fold, k in enumerate(self.ks):
            for arm in ("genesis", "scratch"):
                steps.append(Step(f"train_{arm}_K{k}", f"K={k}: nnUNetv2_train {self.arm(arm)[0]}",
                                  lambda c, a=arm, f=fold: self._train(c, a, f),
                                  lambda a=arm, f=fold: [self.run_folder(a) / f"fold_{f}"]))
            for arm in ("genesis", "scratch"):
                steps.append(Step(f"predict_{arm}_K{k}", f"K={k}: nnUNetv2_predict ({arm})",
                                  lambda c, a=arm, f=fold, kk=k: self._predict(c, a, f, kk),
                                  lambda a=arm, kk=k: [self.predictions(a, kk)]))
            steps.append(Step(f"evaluate_K{k}", f"K={k}: evaluate + compare", lambda c, f=fold, kk=k: self._evaluate(c, f, kk),
                              lambda kk=k: [self.out / "evaluation" / f"K{kk}", self.out / f"report_K{kk}"]))
        return steps

    def _convert(self, ctx: StepContext) -> dict:
        msd = self.msd
        if self.max_cases is not None:
            msd = make_msd_subset(msd, self.out / "source", self.max_cases, None)
        ctx.command([command_path("nnUNetv2_convert_MSD_dataset"), "-i", str(msd), "-np", "1"])
        return {"dataset": self.dataset_name}

    def _preprocess(self, ctx: StepContext) -> dict:
        s = self.setting
        ctx.command([command_path("nnUNetv2_plan_and_preprocess"), "-d", str(self.dataset_id), "-c", CONFIGURATION,
                     "-np", "1", "--verify_dataset_integrity"])
        raw = self.ws.raw / self.dataset_name
        evaluation, val, trains = draw_cases(labelled_cases(raw), self.ks, s.eval_cases, s.val_cases, self.seed)
        pre = self.ws.preprocessed / self.dataset_name
        write_splits(pre, [(trains[k], val) for k in self.ks])
        schedule = ShortSchedule(epochs=s.finetune_epochs, iterations_per_epoch=s.finetune_iterations,
                                 val_iterations_per_epoch=min(5, max(1, s.finetune_iterations // 10)),
                                 warmup_epochs=s.warmup_epochs, seed=self.seed,
                                 test_time_mirroring=s.test_time_mirroring, transfer_decoder=s.transfer == "full")
        plans_file = write_schedule_plans(pre, self.plans, schedule, "nnUNetPlans", CONFIGURATION,
                                          batch_size=s.batch_size, max_patch_voxels=s.max_patch_voxels, width=s.width)
        images, labels = copy_heldout(raw, evaluation, self.out / "heldout")
        config = json.loads(plans_file.read_text())["configurations"][CONFIGURATION]
        arch = config["architecture"]["arch_kwargs"]
        write_json_atomic({"evaluation": evaluation, "val": val, "train": {str(k): v for k, v in trains.items()},
                           "eval_images": str(images), "eval_labels": str(labels),
                           "plan": {"patch_size": config["patch_size"], "batch_size": config["batch_size"],
                                    "features_per_stage": arch["features_per_stage"]},
                           "schedule": schedule.to_dict()}, self.cases_file)
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
            ctx.command(genesis_command(
                "pretrain", "-d", str(self.dataset_id), "-o", str(folder), "--plans-from", str(self.dataset_id),
                "-p", self.plans, "-c", CONFIGURATION, "--epochs", str(s.pretrain_epochs),
                "--iters-per-epoch", str(s.pretrain_iterations), "--seed", str(self.seed),
                "--dataset-id", str(PRETRAIN_DATASET_ID), *corruption_options(s.corruption), *common))
        if not (folder / "genesis_final.pth").is_file():
            raise GenesisUserError(f"pretrain wrote no {folder / 'genesis_final.pth'}; see {ctx.log}.", exit_code=1)
        return {}

    def _attach(self, ctx: StepContext) -> dict:
        ctx.command(genesis_command("attach", "-d", str(self.dataset_id), "-c", str(self.out / "pretrain" / "genesis_final.pth"),
                                    "-p", self.plans, "-n", self.genesis_plans, "--force"))
        return {}

    def _train(self, ctx: StepContext, arm: str, fold: int) -> dict:
        trainer, plans = self.arm(arm)
        ctx.command([command_path("nnUNetv2_train"), str(self.dataset_id), CONFIGURATION, str(fold), "-tr", trainer,
                     "-p", plans, "-device", self.device], extra_env=self.train_env)
        return {}

    def _predict(self, ctx: StepContext, arm: str, fold: int, k: int) -> dict:
        trainer, plans = self.arm(arm)
        ctx.command([command_path("nnUNetv2_predict"), "-i", self.cases()["eval_images"], "-o",
                     str(self.predictions(arm, k)), "-d", str(self.dataset_id), "-c", CONFIGURATION, "-tr", trainer,
                     "-p", plans, "-f", str(fold), "-device", self.device, "-npp", "1", "-nps", "1",
                     "--disable_progress_bar"])
        return {}

    def _evaluate(self, ctx: StepContext, fold: int, k: int) -> dict:
        from nnunet_genesis.evaluation.compare import build_report
        from nnunet_genesis.evaluation.runs import load_evaluate_json
        from nnunet_genesis.evaluation.training_curves import curves_for_fold

        for arm in ("genesis", "scratch"):
            ctx.command(genesis_command("evaluate", "--pred", str(self.predictions(arm, k)), "--ref",
                                        self.cases()["eval_labels"], "--task", self.msd.name, "-o",
                                        str(self.evaluation(arm, k))))
        runs = []
        for arm in ("scratch", "genesis"):
            run = load_evaluate_json(self.evaluation(arm, k), f"{arm} K={k}")
            curves, how = curves_for_fold(self.run_folder(arm) / f"fold_{fold}")
            if curves is not None:
                run.curves = {f"fold_{fold}": curves}
            run.notes.append(f"training curves {how}")
            runs.append(run)
        build_report(runs, self.out / f"report_K{k}")
        return {}


# ---------------------------------------------------------------------------------------------
# Results


def collect(bench: TransferBenchmark, durations: dict[str, float]) -> dict:
    cases = bench.cases()
    rows = []
    for k in bench.ks:
        arms = {arm: json.loads(bench.evaluation(arm, k).read_text()) for arm in ("genesis", "scratch")}
        labels = {}
        for label, s in arms["genesis"]["summary"].items():
            entry = {"name": arms["genesis"]["label_names"].get(label, label)}
            for arm in ("genesis", "scratch"):
                for metric in ("dice", "nsd"):
                    entry[f"{metric}_{arm}"] = arms[arm]["summary"][label][metric]["mean"]
                    entry[f"{metric}_{arm}_std"] = arms[arm]["summary"][label][metric]["std"]
            labels[label] = entry
        rows.append({"K": k, "labels": labels, "n_eval": arms["genesis"]["n_cases"],
                     "nsd_tolerance_mm": arms["genesis"]["nsd_tolerance_mm"],
                     "seconds": {name[: -len(f"_K{k}")]: round(durations[name], 1)
                                 for name in durations if name.endswith(f"_K{k}")}})
    return {"task": bench.msd.name, "setting": bench.setting_name, "device": bench.device, "seed": bench.seed,
            "setting_values": asdict(bench.setting), "plan": cases["plan"], "schedule": cases["schedule"],
            "n_eval": len(cases["evaluation"]), "n_val": len(cases["val"]), "train_cases": cases["train"],
            "shared_seconds": {n: round(durations[n], 1) for n in ("convert", "preprocess", "pretrain", "attach")},
            "total_seconds": round(sum(durations.values()), 1), "results": rows}


def table(results: dict) -> str:
    def f(v):
        return "  n/a" if v is None else f"{v:.3f}"

    def d(a, b):
        return "   n/a" if a is None or b is None else f"{a - b:+.3f}"

    tol = results["results"][0]["nsd_tolerance_mm"] if results["results"] else 0
    lines = [f"{results['task']}, setting {results['setting']} on {results['device']}; evaluated on "
             f"{results['n_eval']} held-out labelled cases; NSD at {tol:g} mm",
             f"{'K':>3}  {'label':<14} {'Dice scr':>8} {'Dice Gen':>8} {'diff':>7}   {'NSD scr':>7} "
             f"{'NSD Gen':>7} {'diff':>7}"]
    for row in results["results"]:
        for label, e in row["labels"].items():
            lines.append(f"{row['K']:>3}  {label + ' ' + e['name']:<14} {f(e['dice_scratch']):>8} "
                         f"{f(e['dice_genesis']):>8} {d(e['dice_genesis'], e['dice_scratch']):>7}   "
                         f"{f(e['nsd_scratch']):>7} {f(e['nsd_genesis']):>7} {d(e['nsd_genesis'], e['nsd_scratch']):>7}")
    lines.append("")
    lines.append("wall time per phase: " + ", ".join(f"{n} {format_seconds(s)}"
                                                     for n, s in results["shared_seconds"].items()))
    for row in results["results"]:
        lines.append(f"  K={row['K']}: " + ", ".join(f"{n} {format_seconds(s)}" for n, s in row["seconds"].items()))
    lines.append(f"total {format_seconds(results['total_seconds'])}")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["results"]
    labels = list(rows[0]["labels"]) if rows else []
    fig, axes = plt.subplots(1, max(1, len(labels)), figsize=(4.5 * max(1, len(labels)), 3.8), squeeze=False)
    ks = [r["K"] for r in rows]
    for ax, label in zip(axes[0], labels):
        for arm, style in (("scratch", "s--"), ("genesis", "o-")):
            mean = [r["labels"][label][f"dice_{arm}"] for r in rows]
            std = [r["labels"][label][f"dice_{arm}_std"] or 0.0 for r in rows]
            mean = [np.nan if m is None else m for m in mean]
            ax.errorbar(ks, mean, yerr=std, fmt=style, capsize=3, label="Genesis" if arm == "genesis" else "scratch")
        ax.set_title(f"{rows[0]['labels'][label]['name']} (label {label})")
        ax.set_xlabel("labelled training cases K")
        ax.set_ylabel("Dice (mean ± SD over held-out cases)")
        ax.set_xticks(ks)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{results['task']}: Genesis vs scratch ({results['setting']} setting)")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--msd-task", type=Path, required=True, help="Decathlon task folder (MSD layout)")
    p.add_argument("--labelled", type=int, nargs="+", default=[5, 20], metavar="K",
                   help="numbers of labelled training cases")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--setting", choices=sorted(SETTINGS), default=None,
                   help="cpu: reduced plan and short schedule; full: nnU-Net's plan (default: cpu on cpu, "
                        "full on cuda)")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="output folder (default: benchmarks/output/transfer_<task>_<setting>)")
    p.add_argument("--seed", type=int, default=0, help="seeds the case draw and both trainings")
    p.add_argument("--eval-cases", type=int, help="held-out labelled cases evaluated (default: the setting's)")
    p.add_argument("--val-cases", type=int, help="labelled cases for nnU-Net's validation (default: the setting's)")
    p.add_argument("--max-cases", type=int, help="use only the first N labelled cases of the task")
    p.add_argument("--pretrain-epochs", type=int)
    p.add_argument("--pretrain-iterations", type=int)
    p.add_argument("--finetune-epochs", type=int)
    p.add_argument("--finetune-iterations", type=int)
    p.add_argument("--corruption", choices=("mild", "paper"),
                   help="pretraining corruption (default: the setting's: mild for cpu, paper for full)")
    p.add_argument("--transfer", choices=("encoder", "full"),
                   help="weights the Genesis arm takes: encoder only, or encoder and decoder "
                        "(default: the setting's: encoder for cpu, full for full)")
    p.add_argument("--quick", action="store_true", help="a few iterations only: checks that everything runs")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setting_name = args.setting or ("cpu" if args.device == "cpu" else "full")
    setting = SETTINGS[setting_name]
    if args.quick:
        setting = replace(setting, **QUICK)
    overrides = {k: v for k, v in dict(eval_cases=args.eval_cases, val_cases=args.val_cases,
                                       pretrain_epochs=args.pretrain_epochs, pretrain_iterations=args.pretrain_iterations,
                                       finetune_epochs=args.finetune_epochs,
                                       finetune_iterations=args.finetune_iterations,
                                       corruption=args.corruption, transfer=args.transfer).items() if v is not None}
    setting = replace(setting, **overrides)
    msd = args.msd_task.expanduser().resolve()
    ks = sorted(set(args.labelled))
    try:
        check_msd_folder(msd)
        if min(ks) < 1:
            raise GenesisUserError("--labelled values must be at least 1.")
        if args.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise GenesisUserError("--device cuda: PyTorch sees no CUDA GPU here.")
        suffix = "_quick" if args.quick else ""
        out = (args.output or Path(__file__).resolve().parent / "output" /
               f"transfer_{msd.name}_{setting_name}{suffix}").resolve()
        config = {"msd_task": str(msd), "labelled": ks, "device": args.device, "setting": setting_name,
                  "values": asdict(setting), "seed": args.seed, "max_cases": args.max_cases}
        config_file = out / CONFIG_FILE
        if config_file.is_file() and json.loads(config_file.read_text()) != config:
            raise GenesisUserError(f"{out} holds a benchmark run with other settings ({config_file}); choose "
                                   f"another -o folder or delete that one.")
        if out.is_dir() and any(out.iterdir()) and not config_file.is_file():
            raise GenesisUserError(f"{out} is not empty and is not a benchmark folder; choose another -o.")
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(config, config_file)
        bench = TransferBenchmark(out, msd, ks, args.device, setting_name, setting, args.seed, args.max_cases)
        bench.ws.make()
        print(f"transfer benchmark in {out} (logs: {bench.ws.logs})")
        t0 = time.monotonic()
        durations = run_steps(bench.ws, bench.steps(), "transfer")
        results = collect(bench, durations)
        results["this_invocation_seconds"] = round(time.monotonic() - t0, 1)
        write_json_atomic(results, out / "transfer_results.json")
        plot(results, out / "transfer_dice_vs_k.png")
    except GenesisUserError as e:
        print(f"transfer.py: error: {e}", file=sys.stderr)
        return e.exit_code
    print()
    print(table(results))
    print(f"\nresults: {out / 'transfer_results.json'}\nplot:    {out / 'transfer_dice_vs_k.png'}\n"
          f"reports: {', '.join(str(out / f'report_K{k}' / 'report.md') for k in ks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
